"""A service job in tiled mode: GeoReasoner.predict_tiled on the upload, then the same result files as /v1/predict.

Web demo and REST service (docs/serve.md, "Jobs"); tiled inference reuses one description embedding p
(docs/predict.md). Progress is reported per tile, and a cancelled job stops between two tiles.
"""

from __future__ import annotations

import time
from typing import Any

from georeason.serve.jobs import (
    Checkpoint,
    JobRequest,
    JobResult,
    _georeferencing,
    _save_preview,
    job_result,
    source_label,
    result_warnings,
)

# Share of the progress bar before the tiles (overview, description embedding, answer) and after them.
_BEFORE_TILES, _AFTER_TILES = 0.1, 0.9


def run_tiled_job(reasoner: Any, job: JobRequest, checkpoint: Checkpoint | None = None) -> JobResult:
    """Predict `job` tile by tile (job.tile_size, job.overlap) and write mask.tif, mask.png, overlay.png,
    image.png and (if job.vectors) the vectors. `checkpoint(stage, progress, tiles=(done, total))` may raise
    to cancel; the mask GeoTIFF is written atomically, so a cancelled job leaves no partial mask.
    """
    assert job.tile_size is not None
    report = checkpoint or (lambda *_args, **_kwargs: None)
    folder = job.result_folder
    started = time.perf_counter()
    report("reading the overview, the description embedding and the answer", 0.02)

    def tiles_done(done: int, total: int) -> None:
        report(f"tile {done} of {total}", _BEFORE_TILES + (_AFTER_TILES - _BEFORE_TILES) * done / total,
               tiles=(done, total))

    prediction = reasoner.predict_tiled(job.image_path, job.question, folder / "mask.tif", tile_size=job.tile_size,
                                        overlap=job.overlap, answer=job.answer, bands=job.bands, progress=tiles_done)
    predicted = time.perf_counter()
    report("writing the outputs", _AFTER_TILES)
    prediction.source = source_label(job)
    _replace_source_tag(folder / "mask.tif", prediction.source)
    prediction.save_mask_png(folder / "mask.png")
    prediction.save_overlay(folder / "overlay.png")
    _save_preview(prediction.preview, folder / "image.png", job.preview_max_side)
    georef = _georeferencing(prediction)
    written = prediction.save_vectors(folder / "vectors.gpkg", driver="GPKG") if job.vectors else None
    geojson, warnings = result_warnings(prediction, job, georef, written)
    return job_result(prediction, job, georef, geojson, warnings, target_pixels=int(prediction.positive_pixels),
                      width=int(prediction.raster.width), height=int(prediction.raster.height), started=started,
                      predicted=predicted)

def _replace_source_tag(path: Any, source: str) -> None:
    """predict_tiled tags the mask with the path it read, here the server's temporary upload: replace it."""
    import rasterio

    with rasterio.open(path, "r+") as dataset:
        dataset.update_tags(georeason_source=source)
