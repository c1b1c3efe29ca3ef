"""What the inference thread does for one request: predict, then write the result files.

Web demo and REST service (docs/serve.md); not in the paper. Runs only on the InferenceWorker thread, so
decoding, the model and the file writers never run concurrently and memory stays bounded.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from georeason.errors import GeoreasonError
from georeason.geo.georef import NONE, Georeferencing, NoLonLatError
from georeason.geo.prediction_files import write_prediction_files

# The result folder's names of the files the shared prediction writer produces.
RESULT_NAMES = {"mask_png": "mask.png", "overlay_png": "overlay.png", "mask_geotiff": "mask.tif",
                "vectors": "vectors.gpkg"}
# GeoJSON larger than this is not inlined in the JSON response (it stays downloadable).
MAX_INLINE_GEOJSON_BYTES = 5_000_000
# checkpoint(stage, progress 0..1): progress reports from the inference thread; may raise to cancel the job.
Checkpoint = Callable[[str, float], None]


@dataclass
class JobRequest:
    image_path: Path
    question: str
    answer: bool
    vectors: bool
    result_folder: Path
    preview_max_side: int
    bands: list[int] | None = None
    source: str | None = None  # the client's label for its image (e.g. a QGIS layer name); never a path here
    tile_size: int | None = None  # None: whole-image mode; else tiled inference (serve.tiled_job)
    overlap: int = 128
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class JobResult:
    answer: str | None
    empty: bool
    target_pixels: int
    width: int
    height: int
    mask_png_base64: str
    georeferenced: bool
    crs: str | None
    georeferencing: str  # a kind of georeason.geo.georef.KINDS
    geojson: dict[str, Any] | None
    files: list[str]
    warnings: list[str]
    queue_seconds: float
    inference_seconds: float
    outputs_seconds: float
    model_seconds: dict[str, float]


def _save_preview(image: np.ndarray, path: Path, max_side: int) -> None:
    from PIL import Image

    preview = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if max(preview.size) > max_side:
        scale = max_side / max(preview.size)
        preview = preview.resize((max(1, round(preview.width * scale)), max(1, round(preview.height * scale))),
                                 Image.Resampling.BILINEAR)
    preview.save(path, format="PNG", compress_level=3)


def _georeferencing(prediction: Any) -> Georeferencing:
    raster = getattr(prediction, "raster", None)
    return NONE if raster is None else raster.georef


def _geojson(prediction: Any, georef: Georeferencing, folder: Path, written: dict[str, Any],
             warnings: list[str]) -> dict[str, Any] | None:
    """After vectors.gpkg (`written`, the writer's report): vectors.geojson when the polygons can be lon/lat;
    returns the inline GeoJSON.

    What cannot be written as GeoJSON (a local CRS, a geotransform without CRS) becomes a warning, never
    an error: the request still succeeds with the GeoPackage.
    """
    if written.get("warning"):
        warnings.append(written["warning"].replace(f"{folder / 'vectors.gpkg'}: ", "vectors.gpkg: "))
    if georef.pixel_to_map is None:
        warnings.append("no GeoJSON: the polygons are in pixel coordinates, and GeoJSON means lon/lat")
        return None
    target = folder / "vectors.geojson"
    try:
        prediction.save_vectors(target, driver="GeoJSON")
    except NoLonLatError as error:  # e.g. a local/engineering CRS: the GeoPackage already written keeps it
        warnings.append(f"no GeoJSON: {error.reason}; vectors.gpkg has the polygons")
        return None
    except GeoreasonError as error:  # any other refusal of the GeoJSON writer: the request keeps the GeoPackage
        warnings.append("no GeoJSON: " + str(error).replace(f"{target}: ", ""))
        return None
    size = target.stat().st_size
    if size > MAX_INLINE_GEOJSON_BYTES:
        warnings.append(f"the GeoJSON ({size / 1e6:.1f} MB) is too large to inline; download vectors_geojson")
        return None
    return json.loads(target.read_text(encoding="utf-8"))


def source_label(job: JobRequest) -> str:
    """What the files record as their source: the client's label, else upload.<suffix>.

    The server's temporary path means nothing to the client, and must not leak.
    """
    return job.source or f"upload{job.image_path.suffix}"


def run_job(reasoner: Any, job: JobRequest, checkpoint: Checkpoint | None = None,
            features: Any = None) -> JobResult:
    """Predict and write mask.png, overlay.png, mask.tif (raster inputs), vectors (optionally) and image.png.

    The prediction's files go through the writer `georeason predict` uses (geo.prediction_files: all or
    none, a GeoTIFF only for rasters); then the GeoJSON copy and the preview the page shows.
    `checkpoint(stage, progress)` is called before the model and before the outputs; it may raise
    (a cancelled job), which leaves the result folder for the caller to discard.
    `features` (serve.features.FeatureCache): reuse a recent upload's image features (same mask), for
    a GeoReasoner; any other predictor (a wrapper with predict() only) is called as it is.
    """
    started = time.perf_counter()
    if checkpoint is not None:
        checkpoint("running the model", 0.05)
    if features is None or not all(hasattr(reasoner, name) for name in ("encode", "predict_questions")):
        prediction = reasoner.predict(str(job.image_path), job.question, answer=job.answer, bands=job.bands)
    else:
        from georeason.serve.features import predict_cached

        prediction = predict_cached(reasoner, job.image_path, job.question, job.answer, job.bands, features)
    predicted = time.perf_counter()
    if checkpoint is not None:
        checkpoint("writing the outputs", 0.9)
    prediction.source = source_label(job)
    folder = job.result_folder
    targets = {kind: folder / name for kind, name in RESULT_NAMES.items()}
    _, written = write_prediction_files(prediction, targets, vector_driver="GPKG" if job.vectors else None)
    _save_preview(prediction.image, folder / "image.png", job.preview_max_side)
    georef = _georeferencing(prediction)
    geojson, warnings = result_warnings(prediction, job, georef, written)
    mask = np.asarray(prediction.mask, dtype=bool)
    return job_result(prediction, job, georef, geojson, warnings, target_pixels=int(mask.sum()),
                      width=int(mask.shape[1]), height=int(mask.shape[0]), started=started, predicted=predicted)


def job_result(prediction: Any, job: JobRequest, georef: Georeferencing, geojson: dict[str, Any] | None,
               warnings: list[str], *, target_pixels: int, width: int, height: int, started: float,
               predicted: float) -> JobResult:
    """The JobResult of a finished job, plain or tiled, once its files are in job.result_folder.

    `target_pixels`, `width`, `height`: the mask's positive pixel count and size (pixels); `started`,
    `predicted`: time.perf_counter() before and after the model (seconds); the outputs' time ends now.
    Reads mask.png (base64 in the response) and lists the folder's files, so call it last.
    """
    finished = time.perf_counter()
    folder = job.result_folder
    return JobResult(
        answer=prediction.answer,
        empty=bool(prediction.empty),
        target_pixels=target_pixels,
        width=width,
        height=height,
        mask_png_base64=base64.b64encode((folder / "mask.png").read_bytes()).decode("ascii"),
        georeferenced=georef.georeferenced,
        crs=None if georef.map_crs is None else georef.map_crs.to_string(),
        georeferencing=georef.kind,
        geojson=geojson,
        files=sorted(p.name for p in folder.iterdir()),
        warnings=warnings,
        queue_seconds=started - job.submitted,
        inference_seconds=predicted - started,
        outputs_seconds=finished - predicted,
        model_seconds={str(k): round(float(v), 4) for k, v in dict(getattr(prediction, "seconds", {}) or {}).items()},
    )

def result_warnings(prediction: Any, job: JobRequest, georef: Georeferencing,
                    written: dict[str, Any] | None) -> tuple[dict[str, Any] | None, list[str]]:
    """The job's warnings and, when job.vectors (vectors.gpkg already written, `written` its report), the
    GeoJSON copy; returns (inline GeoJSON or None, warnings). Used by plain and tiled jobs alike."""
    # How the image was read (complex amplitude, EXIF orientation), with the server's path taken out.
    warnings = [note.replace(str(job.image_path), "the uploaded image") for note in getattr(prediction, "notes", [])]
    if not job.vectors or written is None:
        return None, warnings
    return _geojson(prediction, georef, job.result_folder, written, warnings), warnings
