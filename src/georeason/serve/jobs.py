"""What the inference thread does for one request: predict, then write the result files.

Web demo and REST service (issue 6); not in the paper. Runs only on the InferenceWorker thread, so
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


def _georeferencing(prediction: Any) -> tuple[bool, str | None]:
    raster = getattr(prediction, "raster", None)
    if raster is None or getattr(raster, "crs", None) is None:
        return False, None
    if not getattr(raster, "georeferenced", True):
        return False, None
    return True, raster.crs.to_string()


def source_label(job: JobRequest) -> str:
    """What the files record as their source: the client's label, else upload.<suffix>.

    The server's temporary path means nothing to the client, and must not leak.
    """
    return job.source or f"upload{job.image_path.suffix}"


def run_job(reasoner: Any, job: JobRequest, checkpoint: Checkpoint | None = None) -> JobResult:
    """Predict and write mask.png, mask.tif, overlay.png, image.png and (optionally) vectors.

    `checkpoint(stage, progress)` is called before the model and before the outputs; it may raise
    (a cancelled job), which leaves the result folder for the caller to discard.
    """
    started = time.perf_counter()
    if checkpoint is not None:
        checkpoint("running the model", 0.05)
    prediction = reasoner.predict(str(job.image_path), job.question, answer=job.answer, bands=job.bands)
    predicted = time.perf_counter()
    if checkpoint is not None:
        checkpoint("writing the outputs", 0.9)
    prediction.source = source_label(job)
    folder = job.result_folder
    prediction.save_mask_png(folder / "mask.png")
    prediction.save_geotiff(folder / "mask.tif")
    prediction.save_overlay(folder / "overlay.png")
    _save_preview(prediction.image, folder / "image.png", job.preview_max_side)
    georeferenced, crs = _georeferencing(prediction)
    geojson, warnings = write_result_vectors(prediction, job, georeferenced)
    mask = np.asarray(prediction.mask, dtype=bool)
    finished = time.perf_counter()
    return JobResult(
        answer=prediction.answer,
        empty=bool(prediction.empty),
        target_pixels=int(mask.sum()),
        width=int(mask.shape[1]),
        height=int(mask.shape[0]),
        mask_png_base64=base64.b64encode((folder / "mask.png").read_bytes()).decode("ascii"),
        georeferenced=georeferenced,
        crs=crs,
        geojson=geojson,
        files=sorted(p.name for p in folder.iterdir()),
        warnings=warnings,
        queue_seconds=started - job.submitted,
        inference_seconds=predicted - started,
        outputs_seconds=finished - predicted,
        model_seconds={str(k): round(float(v), 4) for k, v in dict(getattr(prediction, "seconds", {}) or {}).items()},
    )


def write_result_vectors(prediction: Any, job: JobRequest, georeferenced: bool) -> tuple[dict | None, list[str]]:
    """vectors.gpkg (and vectors.geojson when georeferenced) if job.vectors; the inline GeoJSON and warnings."""
    folder = job.result_folder
    warnings: list[str] = []
    geojson = None
    if job.vectors:
        prediction.save_vectors(folder / "vectors.gpkg", driver="GPKG")
        if georeferenced:
            prediction.save_vectors(folder / "vectors.geojson", driver="GeoJSON")
            size = (folder / "vectors.geojson").stat().st_size
            if size <= MAX_INLINE_GEOJSON_BYTES:
                geojson = json.loads((folder / "vectors.geojson").read_text())
            else:
                warnings.append(f"the GeoJSON ({size / 1e6:.1f} MB) is too large to inline; download vectors_geojson")
        else:
            warnings.append("the image has no georeferencing: vectors.gpkg is in pixel coordinates (x = column, "
                            "y = row) without a CRS, and no GeoJSON is produced")
    return geojson, warnings
