"""What the inference thread does for one request: predict, then write the result files.

Web demo and REST service (issue 6); not in the paper. Runs only on the InferenceWorker thread, so
decoding, the model and the file writers never run concurrently and memory stays bounded.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from georeason.errors import GeoreasonError
from georeason.geo.georef import NONE, Georeferencing

# GeoJSON larger than this is not inlined in the JSON response (it stays downloadable).
MAX_INLINE_GEOJSON_BYTES = 5_000_000


@dataclass
class JobRequest:
    image_path: Path
    question: str
    answer: bool
    vectors: bool
    result_folder: Path
    preview_max_side: int
    bands: list[int] | None = None
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


def _vectors(prediction: Any, georef: Georeferencing, folder: Path, warnings: list[str]) -> dict[str, Any] | None:
    """Write vectors.gpkg and, when the polygons can be lon/lat, vectors.geojson; returns the inline GeoJSON.

    What cannot be written as GeoJSON (a local CRS, a geotransform without CRS) becomes a warning, never
    an error: the request still succeeds with the GeoPackage.
    """
    written = prediction.save_vectors(folder / "vectors.gpkg", driver="GPKG")
    if written.get("warning"):
        warnings.append(written["warning"].replace(f"{folder / 'vectors.gpkg'}: ", "vectors.gpkg: "))
    if georef.pixel_to_map is None:
        warnings.append("no GeoJSON: the polygons are in pixel coordinates, and GeoJSON means lon/lat")
        return None
    target = folder / "vectors.geojson"
    try:
        prediction.save_vectors(target, driver="GeoJSON")
    except GeoreasonError as error:  # e.g. a local/engineering CRS: the GeoPackage keeps it
        warnings.append("no GeoJSON: " + str(error).replace(f"{target}: ", ""))
        return None
    size = target.stat().st_size
    if size > MAX_INLINE_GEOJSON_BYTES:
        warnings.append(f"the GeoJSON ({size / 1e6:.1f} MB) is too large to inline; download vectors_geojson")
        return None
    return json.loads(target.read_text(encoding="utf-8"))


def run_job(reasoner: Any, job: JobRequest, features: Any = None) -> JobResult:
    """Predict and write mask.png, mask.tif, overlay.png, image.png and (optionally) vectors.

    `features` (serve.features.FeatureCache): reuse a recent upload's image features (same mask), for
    a GeoReasoner; any other predictor (a wrapper with predict() only) is called as it is.
    """
    started = time.perf_counter()
    if features is None or not all(hasattr(reasoner, name) for name in ("encode", "predict_questions")):
        prediction = reasoner.predict(str(job.image_path), job.question, answer=job.answer, bands=job.bands)
    else:
        from georeason.serve.features import predict_cached

        prediction = predict_cached(reasoner, job.image_path, job.question, job.answer, job.bands, features)
    predicted = time.perf_counter()
    # The files record their source; the server's temporary path means nothing to the client.
    prediction.source = f"upload{job.image_path.suffix}"
    folder = job.result_folder
    prediction.save_mask_png(folder / "mask.png")
    prediction.save_geotiff(folder / "mask.tif")
    prediction.save_overlay(folder / "overlay.png")
    _save_preview(prediction.image, folder / "image.png", job.preview_max_side)
    georef = _georeferencing(prediction)
    # How the image was read (complex amplitude, EXIF orientation), with the server's path taken out.
    warnings = [note.replace(str(job.image_path), "the uploaded image") for note in getattr(prediction, "notes", [])]
    geojson = _vectors(prediction, georef, folder, warnings) if job.vectors else None
    mask = np.asarray(prediction.mask, dtype=bool)
    finished = time.perf_counter()
    return JobResult(
        answer=prediction.answer,
        empty=bool(prediction.empty),
        target_pixels=int(mask.sum()),
        width=int(mask.shape[1]),
        height=int(mask.shape[0]),
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
