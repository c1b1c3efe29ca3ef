"""The Python inference API: GeoReasoner (image + question -> Prediction with mask, answer and outputs).

Inference of paper Sec. 4 (docs/released_code.md#inference) (mask from the prompt alone, answer generated from the
same KV
cache, mask back at the original size); tiled GeoTIFF inference reuses one description embedding p.
"""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from georeason.config import ANSWER_WEIGHTS
from georeason.data.pixels import open_pixels
from georeason.errors import GeoreasonError
from georeason.filenames import printable
from georeason.geo import (
    RasterInfo,
    TiledOutput,
    mask_to_polygons,
    open_raster,
    plan_tiles,
    read_rgb,
    run_tiled_outputs,
    scene_limits,
    write_mask_geotiff,
    write_mask_png,
    write_vectors,
)
from georeason.geo.atomic import atomic_output
from georeason.geo.georef import NONE as NO_GEOREFERENCING
from georeason.geo.raster import capped_block_cache, needs_stretch, source_info
from georeason.processor import Question, SegEarthProcessor
from georeason.render import overlay_png

# The pixel budget (--max-pixels): whole-image mode decodes the scene at once, and so does tiled mode for
# formats that cannot be read by windows (PNG, JPEG, ...); above it they are refused from the header.
WHOLE_MAX_PIXELS = 64_000_000
OVERLAY_MAX_SIDE = 2048  # overlays and the tiled-mode overview are at most this long
DEFAULT_TILE, DEFAULT_OVERLAP = 1024, 128
# GDAL block cache while reading a tiled result or the overview of a big scene (see capped_block_cache).
TILED_GDAL_CACHE_BYTES = 32 * 2**20
TIFF_SUFFIXES = {".tif", ".tiff", ".gtiff", ".vrt", ".img", ".jp2"}
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16"}


@dataclass
class Prediction:
    """One answer to one question about one image, at the image's original size."""

    mask: np.ndarray  # bool [H, W]
    probability: np.ndarray  # float32 [H, W]; 0 on nodata pixels
    empty: bool
    answer: str | None
    question: str
    seconds: dict[str, float]
    image: np.ndarray  # uint8 [H, W, 3] as shown to the model
    raster: RasterInfo | None  # set when the input was read as a raster (CRS, transform, nodata)
    source: str
    valid: np.ndarray | None = None  # bool [H, W]: False on nodata pixels; None = all valid
    model: str = ""
    notes: list[str] = field(default_factory=list)  # how the input was read, when the user should know

    def tags(self) -> dict[str, str]:
        return {"georeason_question": self.question, "georeason_answer": self.answer or "",
                "georeason_model": self.model, "georeason_source": printable(self.source)}

    def save_mask_png(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """8-bit PNG at the original size: 255 = answer, 0 = background (and nodata)."""
        return write_mask_png(path, self.mask, overwrite=overwrite)

    def save_overlay(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """The mask filled and outlined over the image, the question and answer in the caption."""
        return overlay_png(path, self.image, self.mask, caption(self.question, self.answer, self.empty),
                           max_side=OVERLAY_MAX_SIDE, overwrite=overwrite)

    def save_geotiff(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """uint8 GeoTIFF (1 = answer, 0 = background, 255 = nodata) with the source's georeferencing.

        CRS and geotransform, GCPs and their CRS, RPCs: whatever the source has (Georeferencing.geotiff_items).
        """
        return write_mask_geotiff(path, self.mask, profile_from=self.raster, valid=self.valid,
                                  overwrite=overwrite, tags=self.tags(),
                                  description="georeason mask: 1 = answer, 0 = background, 255 = no data")

    def save_vectors(self, path: str | os.PathLike[str], driver: str = "GPKG", simplify: float = 0.0,
                     min_area: float = 0.0, overwrite: bool = False) -> dict[str, Any]:
        """Polygons of the mask with question/answer/model/source/area; see save_mask_vectors."""
        return save_mask_vectors(path, self.mask, self.raster, self._attributes(), driver, simplify, min_area,
                                 overwrite)

    def _attributes(self) -> dict[str, str]:
        return {"question": self.question, "answer": self.answer or "", "model": self.model,
                "source": printable(self.source)}


@dataclass
class TiledPrediction:
    """A scene predicted tile by tile; the full-resolution mask lives in the GeoTIFF at `geotiff`."""

    geotiff: Path
    question: str
    answer: str | None
    empty: bool
    raster: RasterInfo
    source: str
    model: str
    preview: np.ndarray  # uint8 [h, w, 3] overview of the scene (long side <= OVERLAY_MAX_SIDE)
    preview_mask: np.ndarray  # bool [h, w], the mask at the preview size
    tiles: int
    valid_pixels: int
    positive_pixels: int
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # how the input was read, when the user should know

    def save_mask_png(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        """Full-resolution 0/255 PNG streamed from the GeoTIFF block row by block row (flat memory)."""
        with capped_block_cache(TILED_GDAL_CACHE_BYTES), open_raster(self.geotiff) as src:
            return write_png_rows(path, src.width, src.height, _mask_rows(src), overwrite)

    def save_overlay(self, path: str | os.PathLike[str], overwrite: bool = False) -> Path:
        return overlay_png(path, self.preview, self.preview_mask, caption(self.question, self.answer, self.empty),
                           max_side=OVERLAY_MAX_SIDE, overwrite=overwrite)

    def save_vectors(self, path: str | os.PathLike[str], driver: str = "GPKG", simplify: float = 0.0,
                     min_area: float = 0.0, overwrite: bool = False) -> dict[str, Any]:
        """Polygons of the full-resolution mask (needs about 3 bytes per scene pixel while polygonising)."""
        with capped_block_cache(TILED_GDAL_CACHE_BYTES), open_raster(self.geotiff) as src:
            mask = src.read(1) == 1
        attributes = {"question": self.question, "answer": self.answer or "", "model": self.model,
                      "source": printable(self.source)}
        return save_mask_vectors(path, mask, self.raster, attributes, driver, simplify, min_area, overwrite)


def _mask_rows(src, rows: int = 512):
    """uint8 0/255 blocks of `rows` rows of a georeason mask GeoTIFF (1 = answer)."""
    for top in range(0, src.height, rows):
        window = ((top, min(top + rows, src.height)), (0, src.width))
        yield np.where(src.read(1, window=window) == 1, 255, 0).astype(np.uint8)


def caption(question: str, answer: str | None, empty: bool) -> list[str]:
    lines = [f"Q: {question}", f"A: {answer}" if answer is not None else "A: (not generated)"]
    if empty:
        lines.append("(empty mask: nothing in the image answers the question)")
    return lines


def save_mask_vectors(path: str | os.PathLike[str], mask: np.ndarray, raster: RasterInfo | None,
                      attributes: dict[str, str], driver: str = "GPKG", simplify: float = 0.0,
                      min_area: float = 0.0, overwrite: bool = False) -> dict[str, Any]:
    """Polygonise a mask in the coordinates the raster's georeferencing gives (georeason.geo.georef) and write it.

    A geotransform or GCPs give map coordinates, anything else pixel coordinates; `warning` says what
    the user must know. GeoJSON of coordinates that cannot be put in EPSG:4326 (a local CRS, a
    geotransform without CRS) raises GeoreasonError before anything is written.
    """
    drivers = {"gpkg": "GPKG", "geojson": "GeoJSON"}
    if str(driver).lower() not in drivers:
        raise GeoreasonError(f"driver: expected GPKG or GeoJSON, got {driver!r}")
    driver = drivers[str(driver).lower()]
    georef = NO_GEOREFERENCING if raster is None else raster.georef
    note = georef.vector_note(path, driver)  # raises for GeoJSON that cannot be lon/lat
    mapping = georef.pixel_to_map
    polygons = mask_to_polygons(mask, mapping, simplify, min_area)
    written = write_vectors(path, polygons, attributes, georef.map_crs, driver=driver, overwrite=overwrite,
                            coordinates="pixel" if mapping is None else "map", note=note)
    return {"path": str(written.path), "count": written.count, "georeferenced": written.georeferenced,
            "coordinates": written.coordinates, "crs": written.crs, "warning": written.warning,
            "dropped_small": polygons.dropped_small}


def write_png_rows(path: str | os.PathLike[str], width: int, height: int, row_blocks, overwrite: bool) -> Path:
    """Write an 8-bit grayscale PNG from an iterable of uint8 [rows, width] blocks, never holding the image."""

    def chunk(stream, kind: bytes, data: bytes) -> None:
        stream.write(struct.pack(">I", len(data)) + kind + data)
        stream.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    with atomic_output(path, overwrite=overwrite) as temporary, open(temporary, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n")
        chunk(stream, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        compressor = zlib.compressobj(6)
        written = 0
        for block in row_blocks:
            block = np.ascontiguousarray(block, dtype=np.uint8)
            filtered = np.zeros((block.shape[0], width + 1), dtype=np.uint8)  # filter byte 0 = none
            filtered[:, 1:] = block
            written += block.shape[0]
            data = compressor.compress(filtered.tobytes())
            if data:
                chunk(stream, b"IDAT", data)
        chunk(stream, b"IDAT", compressor.flush())
        chunk(stream, b"IEND", b"")
        if written != height:
            raise GeoreasonError(f"{path}: wrote {written} rows for a {height}-row PNG")
    return Path(path)


@dataclass
class LoadedImage:
    """An input read and converted to what the model sees."""

    rgb: np.ndarray
    valid: np.ndarray | None
    raster: RasterInfo | None
    source: str
    seconds: float
    notes: list[str] = field(default_factory=list)


def load_input(image: Any, bands: Sequence[int] | None = None, max_pixels: int = WHOLE_MAX_PIXELS) -> LoadedImage:
    """Read a path, PIL image, numpy array or open rasterio dataset as RGB uint8 (+ validity, raster info).

    Through the one pixel reader (georeason.data.pixels), as tiled mode and the dataset loaders read;
    open datasets, TIFF-family files and georeferenced rasters keep their raster info (CRS, transform,
    nodata) for the mask GeoTIFF. Refuses images above `max_pixels` from their header.
    """
    started = time.perf_counter()
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    with open_pixels(image, max_pixels, "whole") as source:
        rgb, valid = read_rgb(source, bands=bands)
        raster = None
        if source.header is not None:
            info = source_info(source)
            # Any georeferencing (a world file's transform, GCPs ...) must reach the outputs.
            if (source.header is image or Path(source.name).suffix.lower() in TIFF_SUFFIXES
                    or info.georef.kind != NO_GEOREFERENCING.kind):
                raster = info
    return LoadedImage(rgb, None if valid.all() else valid, raster, source.name, time.perf_counter() - started,
                       list(source.notes))


def resolve_device(device: str) -> str:
    """'cpu', 'cuda', 'cuda:N', 'mps' or 'auto' -> a device torch accepts; a clear error when absent."""
    import torch

    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise GeoreasonError(f"device: {device!r} was requested but no CUDA GPU is available "
                                 "(torch.cuda.is_available() is False); use --device cpu")
        index = int(name.split(":")[1]) if ":" in name and name.split(":")[1].isdigit() else 0
        if index >= torch.cuda.device_count():
            raise GeoreasonError(f"device: {device!r} does not exist; {torch.cuda.device_count()} GPU(s) found")
        return name
    if name == "mps":
        if not torch.backends.mps.is_available():
            raise GeoreasonError("device: 'mps' was requested but the Apple GPU backend is not available")
        return name
    raise GeoreasonError(f"device: expected cpu, cuda, cuda:N, mps or auto, got {device!r}")


def _check_num_beams(num_beams: Any) -> None:
    if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
        raise GeoreasonError(f"num_beams: expected an integer of at least 1, got {num_beams!r}")


def _answer_weights(answer_weights: Any, answer_int8: bool) -> str | None:
    """The answer weight format asked for: None (float), "int8" or "int4"; answer_int8 is "int8"."""
    if answer_weights is not None and answer_weights not in ANSWER_WEIGHTS:
        raise GeoreasonError(f"answer_weights: expected one of {', '.join(ANSWER_WEIGHTS)} or None, "
                             f"got {answer_weights!r}")
    if answer_int8 and answer_weights not in (None, "int8"):
        raise GeoreasonError(f"answer_int8 and answer_weights={answer_weights!r} disagree; give one of them")
    return "int8" if answer_int8 else answer_weights


class GeoReasoner:
    """A loaded SegEarth-R1 model answering questions about images: masks, answers and map outputs.

    Paper Sec. 4 (geospatial pixel reasoning; docs/released_code.md#inference): every call is
    processor(images, questions) -> model.segment -> processor.post_process (georeason.processor), so a
    mask is a bool [H,W] at the image's original size (probability float32 [H,W] in [0, 1], > 0.5 =
    target, 0 on nodata) and an answer is cleaned text. Images: paths (GDAL or Pillow formats), PIL
    images, numpy arrays [H,W] / [H,W,C] of any dtype (non-uint8 stretched 2-98 %) or open rasterio
    datasets, at most `max_pixels` width x height (larger scenes: predict_tiled). Questions: non-empty
    UTF-8 of at most `max_question_tokens` tokens. Bad input raises georeason.errors.GeoreasonError
    naming the image, question or argument. Build one with from_pretrained.
    """

    def __init__(self, model, processor: SegEarthProcessor, folder: Path, device: str, dtype: str,
                 max_pixels: int = WHOLE_MAX_PIXELS, num_beams: int = 1) -> None:
        _check_num_beams(num_beams)
        self.model = model
        self.processor = processor
        self.folder = folder
        self.device = device
        self.dtype = dtype
        self.max_pixels = max_pixels
        self.num_beams = num_beams  # 1 = greedy answers from the mask's KV cache; more = beam search
        self.image_size = int(model.config.image_size)
        self.name = f"{model.config.preset}@{folder.name}"
        self.source = str(folder)  # the folder, or the hub id and revision it came from
        self._torch_dtype = getattr(__import__("torch"), dtype)
        self.max_question_tokens = processor.max_question_tokens
        self._fingerprint: dict[str, Any] | None = None

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str], device: str = "cpu", dtype: str = "float32",
                        max_pixels: int = WHOLE_MAX_PIXELS, num_beams: int = 1,
                        revision: str | None = None, answer_int8: bool = False,
                        compile_image: bool = False, answer_weights: str | None = None) -> GeoReasoner:
        """Load a model folder (config.json + weights + tokenizer) or a hub id for inference.

        answer_weights: "int8" or "int4": greedy answer steps run a copy of the LLM with those weights
        (CPU, float32; masks unchanged; model.quantise_answers); answer_int8=True is answer_weights="int8".
        compile_image: torch.compile the encoder and pixel decoder (model.compile_image_part; the first
        image pays the compilation).

        A hub id ("earth-insights/SegEarth-R1-EarthReason", at `revision`: branch, tag or commit) is
        downloaded through huggingface_hub and, in the authors' released layout, converted once into
        a cached folder (docs/model.md). Weights load directly in `dtype`.
        """
        import torch

        from georeason.model import SegEarthModel
        from georeason.model.hub import is_hub_id, resolve_model

        dtype_name = DTYPES.get(str(dtype).lower().removeprefix("torch."))
        if dtype_name is None:
            raise GeoreasonError(f"dtype: expected float32 or bfloat16 (or float16 on a GPU), got {dtype!r}")
        device_name = resolve_device(device)
        if dtype_name == "float16" and device_name == "cpu":
            raise GeoreasonError("dtype: float16 is not supported on the CPU; use float32 or bfloat16")
        _check_num_beams(num_beams)  # before the (slow) load
        answer_weights = _answer_weights(answer_weights, answer_int8)
        if answer_weights and (device_name != "cpu" or dtype_name != "float32"):
            raise GeoreasonError(f"{answer_weights} answers: need dtype float32 on the CPU, got {dtype_name} on "
                                 f"{device_name}")
        hub_id = folder if is_hub_id(folder) else None
        folder = resolve_model(folder, revision)
        source = f"{hub_id}@{folder.name}" if hub_id else None  # the folder of a hub id is named by its commit
        model = SegEarthModel.from_pretrained(folder, device=device_name, dtype=getattr(torch, dtype_name))
        if answer_weights:
            model.quantise_answers(answer_weights)
        if compile_image:
            model.compile_image_part()
        processor = SegEarthProcessor.from_pretrained(folder, config=model.config)
        reasoner = cls(model, processor, folder, device_name, dtype_name, max_pixels, num_beams)
        if source is not None:
            reasoner.source, reasoner.name = source, f"{model.config.preset}@{source}"
        return reasoner

    # -- description ------------------------------------------------------------------------------
    def check_question(self, question: Any) -> str:
        """The question stripped; a GeoreasonError for an empty, non-UTF-8 or over-long one (naming the
        limit). To check once and keep the tokens, use self.processor.question()."""
        return self.processor.question(question).text

    def info(self) -> dict[str, Any]:
        return {"preset": self.model.config.preset, "parameters": int(self.model.num_parameters()),
                "device": self.device, "dtype": self.dtype, "image_size": self.image_size,
                "num_beams": self.num_beams, "max_question_tokens": self.max_question_tokens,
                "folder": str(self.folder), "source": self.source}

    def fingerprint(self) -> dict[str, Any]:
        """info() plus SHA-256 of the weights and config, to tie outputs to the exact model."""
        if self._fingerprint is None:
            from georeason.model.weights import model_fingerprint

            self._fingerprint = {**self.info(), "name": self.name, **model_fingerprint(self.folder)}
        return self._fingerprint

    def _segment(self, pixels, prompt, answer: bool):
        """model.segment, plus the time the mask was ready (the answer is generated after it)."""
        import torch

        marks: list[float] = []
        # The mask decoder is the last step of the mask; a forward hook times it without touching the model.
        hook = self.model.mask_decoder.register_forward_hook(lambda *_: marks.append(time.perf_counter()))
        try:
            with torch.inference_mode():
                out = self.model.segment(pixels, prompt, answer=answer, num_beams=self.num_beams,
                                         stop_ids=self.processor.stop_ids)
        finally:
            hook.remove()
        done = time.perf_counter()
        return out, marks[-1] if marks else done

    # -- whole-image inference --------------------------------------------------------------------
    def predict_loaded(self, loaded: Sequence[LoadedImage], questions: Sequence[str | Question],
                       answer: bool = True) -> list[Prediction]:
        """One model call for already loaded images (a batch) and their questions (text, or a Question
        from self.processor.question(), which is not tokenised again).

        processor(images, questions) -> model.segment -> processor.post_process (masks at the original size,
        0 probability on nodata, answers cleaned). Raises GeoreasonError for a bad question.
        """
        started = time.perf_counter()
        inputs = self.processor([item.rgb for item in loaded], questions).to(self.device, self._torch_dtype)
        prepared = time.perf_counter()
        out, mask_done = self._segment(inputs.pixel_values, inputs.prompt, answer)
        segmented = time.perf_counter()
        share = 1.0 / len(loaded)  # the batch's model time, split evenly
        predictions = []
        for row, item in enumerate(loaded):
            restore_started = time.perf_counter()
            (result,) = self.processor.post_process(_row(out, row), [inputs.geometries[row]], [item.valid])
            seconds = {"load": item.seconds, "preprocess": (prepared - started) * share,
                       "mask": (mask_done - prepared) * share, "answer": (segmented - mask_done) * share,
                       "restore": time.perf_counter() - restore_started}
            seconds["total"] = sum(seconds.values())
            predictions.append(Prediction(result.mask, result.probability, not result.mask.any(), result.answer,
                                          inputs.questions[row].text, seconds, item.rgb, item.raster, item.source,
                                          item.valid, self.name, list(item.notes)))
        return predictions

    def predict(self, image: Any, question: str | Question | Sequence[str | Question], answer: bool = True,
                bands: Sequence[int] | None = None) -> Prediction | list[Prediction]:
        """Segment what answers `question` in `image` (path, PIL image, numpy array or rasterio dataset).

        The question is checked before the image is read (GeoreasonError naming the token limit). A list
        of questions gives a list of Predictions, in order: the image is read and encoded once
        (predict_questions), and every mask equals the one a single-question call gives.
        """
        if not isinstance(question, (str, Question)) and isinstance(question, Sequence):
            checked = self._questions(question)
            return self.predict_questions(load_input(image, bands, self.max_pixels), checked, answer)
        question = self.processor.question(question)
        return self.predict_loaded([load_input(image, bands, self.max_pixels)], [question], answer)[0]

    def _questions(self, questions: Any) -> list[Question]:
        """Each question checked once (processor.question); a GeoreasonError for an empty list."""
        if isinstance(questions, (str, Question)) or not questions:
            raise GeoreasonError("questions: expected a non-empty list of questions")
        return [self.processor.question(q) for q in questions]

    def predict_questions(self, item: LoadedImage, questions: Sequence[str | Question], answer: bool = True,
                          features: Any = None) -> list[Prediction]:
        """Several questions about one loaded image, its features computed once (model.encode_image).

        Questions run one at a time on the shared features, so each mask is bit-identical to a
        single-question call. `features` (model.features.ImageFeatures of this image, e.g. from a cache)
        skips the encoding. seconds["features"] is the encoding time split evenly over the questions.
        Raises GeoreasonError for an empty list or a bad question, before any model work.
        """
        import torch

        questions = self._questions(questions)
        started = time.perf_counter()
        pixels, (geometry,) = self.processor.pixel_values([item.rgb])
        pixels = pixels.to(self.device, self._torch_dtype)
        prepared = time.perf_counter()
        if features is None:
            with torch.inference_mode():
                features = self.model.encode_image(pixels)
        encoded = time.perf_counter()
        share = 1.0 / len(questions)
        predictions = []
        for question in questions:
            step = time.perf_counter()
            prompt = self.processor.prompt([question]).to(self.device)
            out, mask_done = self._segment_features(features, prompt, answer)
            segmented = time.perf_counter()
            restore_started = time.perf_counter()
            (result,) = self.processor.post_process(out, [geometry], [item.valid])
            seconds = {"load": item.seconds * share, "preprocess": (prepared - started) * share,
                       "features": (encoded - prepared) * share, "mask": mask_done - step,
                       "answer": segmented - mask_done, "restore": time.perf_counter() - restore_started}
            seconds["total"] = sum(seconds.values())
            predictions.append(Prediction(result.mask, result.probability, not result.mask.any(), result.answer,
                                          question.text, seconds, item.rgb, item.raster, item.source,
                                          item.valid, self.name, list(item.notes)))
        return predictions

    def encode(self, item: LoadedImage):
        """The image's features (model.features.ImageFeatures), to share between questions about it."""
        import torch

        pixels, _ = self.processor.pixel_values([item.rgb])
        with torch.inference_mode():
            return self.model.encode_image(pixels.to(self.device, self._torch_dtype))

    def _segment_features(self, features, prompt, answer: bool):
        """model.segment_features, plus the time the mask was ready (see _segment)."""
        import torch

        marks: list[float] = []
        hook = self.model.mask_decoder.register_forward_hook(lambda *_: marks.append(time.perf_counter()))
        try:
            with torch.inference_mode():
                out = self.model.segment_features(features, prompt, answer=answer, num_beams=self.num_beams,
                                                  stop_ids=self.processor.stop_ids)
        finally:
            hook.remove()
        done = time.perf_counter()
        return out, marks[-1] if marks else done

    def predict_batch(self, images: Sequence[Any], questions: str | Sequence[str | Question], answer: bool = True,
                      batch_size: int = 4, bands: Sequence[int] | None = None) -> list[Prediction]:
        """predict() for many images (one question for all, or one per image), batch_size per model call."""
        if isinstance(questions, str):
            questions = [questions] * len(images)
        if len(questions) != len(images):
            raise GeoreasonError(f"questions: {len(questions)} questions for {len(images)} images; "
                                 "give one question or one per image")
        if batch_size < 1:
            raise GeoreasonError(f"batch_size: expected at least 1, got {batch_size}")
        questions = [self.processor.question(q) for q in questions]
        predictions: list[Prediction] = []
        for start in range(0, len(images), batch_size):
            chunk = [load_input(image, bands, self.max_pixels) for image in images[start : start + batch_size]]
            predictions += self.predict_loaded(chunk, questions[start : start + batch_size], answer)
        return predictions

    # -- tiled inference --------------------------------------------------------------------------
    def predict_tiled(self, path: str | os.PathLike[str], question: str | Question,
                      geotiff_path: str | os.PathLike[str], tile_size: int = DEFAULT_TILE,
                      overlap: int = DEFAULT_OVERLAP, answer: bool = True,
                      bands: Sequence[int] | None = None, overwrite: bool = False,
                      progress: Callable[[int, int], None] | None = None) -> TiledPrediction:
        """Predict a scene of any size tile by tile, streaming the mask GeoTIFF to `geotiff_path`.

        The description embedding p is computed once, by the model on an overview of the whole scene
        (the answer comes from that call too); every tile is then encoded and its mask decoded from p
        (model.mask_from_description). A scene that fits in one tile uses the full-resolution scene as
        overview, which reproduces whole-image mode exactly. The one-question case of
        predict_tiled_questions; raises its GeoreasonError.
        """
        return self.predict_tiled_questions(path, [question], [geotiff_path], tile_size, overlap, answer, bands,
                                            overwrite, progress)[0]

    def predict_tiled_questions(self, path: str | os.PathLike[str], questions: Sequence[str | Question],
                                geotiff_paths: Sequence[str | os.PathLike[str]], tile_size: int = DEFAULT_TILE,
                                overlap: int = DEFAULT_OVERLAP, answer: bool = True,
                                bands: Sequence[int] | None = None, overwrite: bool = False,
                                progress: Callable[[int, int], None] | None = None,
                                return_errors: bool = False) -> list[TiledPrediction | GeoreasonError]:
        """Several questions about one scene, tile by tile: every tile is encoded once for all of them.

        The overview is encoded once and gives each question its p and answer (as predict_questions);
        then one pass over the tiles encodes each tile once (model.encode_image without visual tokens)
        and decodes one mask per question from it (model.mask_from_description), streaming question i's
        mask GeoTIFF to geotiff_paths[i] (geo.run_tiled_outputs). Each mask is bit-identical to asking
        that question alone. Returns one TiledPrediction per question, in order. An output that fails
        alone (its file exists without `overwrite`, is the input, a refused write) leaves no file; the
        other questions are still written, and its GeoreasonError is raised afterwards or, with
        return_errors=True, returned in its place. seconds["overview"] and seconds["tiles"] are the
        shared passes split evenly over the questions. Raises GeoreasonError, before any model work, for
        an empty list, a bad question, or a number of paths other than the number of questions.
        """
        questions = self._questions(questions)
        if isinstance(geotiff_paths, (str, os.PathLike)) or len(geotiff_paths) != len(questions):
            raise GeoreasonError(f"geotiff_paths: expected one output path per question ({len(questions)})")
        plan_tiles(tile_size, tile_size, tile_size, overlap)  # validates tile/overlap before any work
        # The same reader as whole-image mode: tiled GeoTIFFs are read by windows, formats that must be
        # decoded whole (PNG, JPEG, ...) once, within the pixel budget.
        with capped_block_cache(TILED_GDAL_CACHE_BYTES), \
                open_pixels(os.fspath(path), self.max_pixels, "tiled") as src:
            overviews = self._describe_source(src, questions, tile_size, answer, bands)
            descriptions = [overview.description.to(self.device) for overview in overviews]

            def predict_fn(rgb: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
                return self.tile_probabilities(rgb, descriptions)

            results = _write_tiled(src, path, overviews, predict_fn, list(geotiff_paths), tile_size, overlap,
                                   bands, overwrite, progress, self.name)
        failed = next((r for r in results if isinstance(r, GeoreasonError)), None)
        if failed is not None and not return_errors:
            raise failed
        return results

    def describe_scene(self, path: str | os.PathLike[str], question: str | Question, tile_size: int = DEFAULT_TILE,
                       answer: bool = True, bands: Sequence[int] | None = None) -> SceneOverview:
        """The overview pass of tiled inference (predict_tiled's first half): p, the answer and the preview.

        The one-question case of describe_scene_questions; raises its GeoreasonError.
        """
        question = self.processor.question(question)  # a bad question is refused before any work
        (overview,) = self.describe_scene_questions(path, [question], tile_size, answer, bands)
        if isinstance(overview, Exception):
            raise overview
        return overview

    def describe_scene_questions(self, path: str | os.PathLike[str], questions: Sequence[str | Question],
                                 tile_size: int = DEFAULT_TILE, answer: bool = True,
                                 bands: Sequence[int] | None = None) -> list[SceneOverview | Exception]:
        """The overview pass for several questions about one scene: read and encoded once, then each
        question's p ([1, H_llm] tensor) and answer from those features, equal to describe_scene alone.

        Distributed runs (georeason.batch) call this once per scene and its questions, then
        tile_probabilities per tile with the description embeddings, elsewhere; write_tiled_questions
        assembles the result. Returns one SceneOverview per question, in order, or the exception that
        failed that question alone (a bad question, its LLM pass); raises GeoreasonError when the scene
        cannot be read.
        """
        with capped_block_cache(TILED_GDAL_CACHE_BYTES), \
                open_pixels(os.fspath(path), self.max_pixels, "tiled") as src:
            return self._describe_source(src, list(questions), tile_size, answer, bands, return_errors=True)

    def _describe_source(self, src, questions: list, tile_size, answer, bands,
                         return_errors: bool = False) -> list[SceneOverview | Exception]:
        """The overview read and encoded once; each question's p and answer from those features, one at a
        time (so each equals a single-question model.segment). With return_errors, a question that fails
        gives its exception in its place and the others go on."""
        import torch

        seconds: dict[str, float] = {}
        started = time.perf_counter()
        info = source_info(src)
        notes = list(src.notes)
        limits = scene_limits(src, bands) if needs_stretch(src, bands) else None
        one_tile = info.height <= tile_size and info.width <= tile_size
        scale = 1.0 if one_tile else min(1.0, OVERLAY_MAX_SIDE / max(info.height, info.width))
        shape = None if scale == 1.0 else (max(1, round(info.height * scale)), max(1, round(info.width * scale)))
        preview, _ = read_rgb(src, None, bands, limits, out_shape=shape)
        share = 1.0 / len(questions)
        seconds["overview"] = (time.perf_counter() - started) * share

        step = time.perf_counter()
        pixels, _ = self.processor.pixel_values([preview])
        with torch.inference_mode():
            features = self.model.encode_image(pixels.to(self.device, self._torch_dtype))
        encoded = (time.perf_counter() - step) * share
        overviews = []
        for question in questions:
            step = time.perf_counter()
            try:
                question = self.processor.question(question)
                prompt = self.processor.prompt([question]).to(self.device)
                out, mask_done = self._segment_features(features, prompt, answer)
                text = self.processor.decode_answer(out.answer_ids[0]) if answer else None
            except Exception as error:  # noqa: BLE001 - with return_errors, this question fails alone
                if not return_errors:
                    raise
                overviews.append(error)
                continue
            timing = {**seconds, "description": encoded + mask_done - step,
                      "answer": time.perf_counter() - mask_done}
            overviews.append(SceneOverview(question.text, out.description_embedding, text, preview, limits,
                                           info.height, info.width, notes, timing))
        return overviews

    def tile_probability(self, rgb: np.ndarray, description) -> np.ndarray:
        """Probability float32 [h, w] in [0, 1] of one tile (uint8 RGB [h, w, 3]) given p ([1, H_llm] tensor)."""
        return self.tile_probabilities(rgb, [description])[0]

    def tile_probabilities(self, rgb: np.ndarray, descriptions: Sequence[Any]) -> list[np.ndarray]:
        """One probability float32 [h, w] in [0, 1] per description embedding p ([1, H_llm] tensors) for one
        tile (uint8 RGB [h, w, 3]): the tile is encoded once (model.encode_image without visual tokens) and
        each mask decoded from its p alone (model.mask_from_description), bit-identical to one p at a time."""
        import torch

        tile_pixels, (geometry,) = self.processor.pixel_values([rgb])
        with torch.inference_mode():
            features = self.model.encode_image(tile_pixels.to(self.device, self._torch_dtype), visual_tokens=False)
            logits = [self.model.mask_from_description(features, description.to(self.device))
                      for description in descriptions]
        return [self.processor.restore(one[0].float().cpu().numpy(), geometry) for one in logits]


def _row(out, row: int):
    """Row `row` of a SegmentOutput, as a SegmentOutput of one."""
    return type(out)(out.logits[row:row + 1], out.description_embedding[row:row + 1],
                     None if out.answer_ids is None else [out.answer_ids[row]])


@dataclass
class SceneOverview:
    """What the overview pass of tiled inference gives every tile of one (scene, question) pair."""

    question: str
    description: Any  # torch.Tensor [1, H_llm]: the description embedding p
    answer: str | None
    preview: np.ndarray  # uint8 [h, w, 3] overview of the scene (long side <= OVERLAY_MAX_SIDE)
    limits: tuple[np.ndarray, np.ndarray] | None  # the scene's stretch, shared by every tile; None = 8-bit
    height: int  # the scene's size in pixels
    width: int
    notes: list[str]
    seconds: dict[str, float]


def write_tiled_scene(path: str | os.PathLike[str], overview: SceneOverview,
                      predict_fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
                      geotiff_path: str | os.PathLike[str], tile_size: int = DEFAULT_TILE,
                      overlap: int = DEFAULT_OVERLAP, bands: Sequence[int] | None = None, overwrite: bool = False,
                      progress: Callable[[int, int], None] | None = None, model_name: str = "",
                      max_pixels: int = WHOLE_MAX_PIXELS) -> TiledPrediction:
    """predict_tiled's second half: stream the blended mask GeoTIFF, with tiles from `predict_fn`.

    `predict_fn(rgb uint8 [h, w, 3], valid bool [h, w]) -> float32 [h, w]` is called in plan_tiles
    order for every tile with a valid pixel (GeoReasoner.tile_probability with the overview's p, or
    its result computed elsewhere). The one-question case of write_tiled_questions; raises its
    GeoreasonError as run_tiled does.
    """
    (result,) = write_tiled_questions(path, [overview], lambda rgb, valid: (predict_fn(rgb, valid),),
                                      [geotiff_path], tile_size, overlap, bands, overwrite, progress, model_name,
                                      max_pixels)
    if isinstance(result, GeoreasonError):
        raise result
    return result


def write_tiled_questions(path: str | os.PathLike[str], overviews: Sequence[SceneOverview],
                          predict_fn: Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]],
                          geotiff_paths: Sequence[str | os.PathLike[str]], tile_size: int = DEFAULT_TILE,
                          overlap: int = DEFAULT_OVERLAP, bands: Sequence[int] | None = None,
                          overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                          model_name: str = "", max_pixels: int = WHOLE_MAX_PIXELS
                          ) -> list[TiledPrediction | GeoreasonError]:
    """predict_tiled_questions' second half: one pass over the tiles streams every overview's mask GeoTIFF.

    `predict_fn(rgb uint8 [h, w, 3], valid bool [h, w])` returns one float32 [h, w] probability per
    overview, in order (GeoReasoner.tile_probabilities with their p, or results computed elsewhere).
    Returns per overview its TiledPrediction, or the GeoreasonError that failed its output alone (as
    run_tiled_outputs); raises GeoreasonError when the scene or a tile fails, leaving no file.
    """
    plan_tiles(tile_size, tile_size, tile_size, overlap)
    with capped_block_cache(TILED_GDAL_CACHE_BYTES), \
            open_pixels(os.fspath(path), max_pixels, "tiled") as src:
        return _write_tiled(src, path, list(overviews), predict_fn, list(geotiff_paths), tile_size, overlap, bands,
                            overwrite, progress, model_name)


def _write_tiled(src, path, overviews: list[SceneOverview], predict_fn, geotiff_paths: list, tile_size, overlap,
                 bands, overwrite, progress, model_name) -> list[TiledPrediction | GeoreasonError]:
    """One pass over the tiles for every overview's question (run_tiled_outputs); per question its
    TiledPrediction, or the GeoreasonError that failed its output alone."""
    info = source_info(src)
    step = time.perf_counter()
    outputs = [TiledOutput(geotiff_path, tags={
        "georeason_question": overview.question, "georeason_answer": overview.answer or "",
        "georeason_model": model_name, "georeason_source": printable(path),
        "georeason_tile_size": str(tile_size), "georeason_overlap": str(overlap)})
        for overview, geotiff_path in zip(overviews, geotiff_paths, strict=True)]
    results = run_tiled_outputs(src, predict_fn, outputs, tile=tile_size, overlap=overlap, bands=bands,
                                limits=overviews[0].limits, overwrite=overwrite, progress=progress)
    share = 1.0 / len(overviews)
    tiles_seconds = (time.perf_counter() - step) * share
    predictions: list[TiledPrediction | GeoreasonError] = []
    for overview, geotiff_path, result in zip(overviews, geotiff_paths, results):
        if isinstance(result, GeoreasonError):
            predictions.append(result)
            continue
        started = time.perf_counter()
        seconds = {**overview.seconds, "tiles": tiles_seconds}
        with open_raster(geotiff_path) as written:
            preview_mask = written.read(1, out_shape=overview.preview.shape[:2]) == 1
        seconds["total"] = sum(seconds[k] for k in ("overview", "description", "answer", "tiles")) \
            + time.perf_counter() - started
        predictions.append(TiledPrediction(
            Path(geotiff_path), overview.question, overview.answer, result.positive_pixels == 0, info, str(path),
            model_name, overview.preview, preview_mask, result.tiles, result.valid_pixels, result.positive_pixels,
            seconds, list(overview.notes)))
    return predictions


__all__ = ["GeoReasoner", "LoadedImage", "Prediction", "SceneOverview", "TiledPrediction", "load_input",
           "resolve_device", "save_mask_vectors", "write_png_rows", "write_tiled_questions", "write_tiled_scene"]
