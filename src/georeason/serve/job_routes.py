"""The asynchronous job routes of `georeason serve`: POST /v1/jobs, GET and DELETE /v1/jobs/{id}.

Web demo and REST service (docs/serve.md, "Jobs"); not in the paper. A job is /v1/predict that answers
at once with an id; the client polls its progress (per tile in tiled mode) and may cancel it.
"""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import Future
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from georeason.errors import GeoreasonError
from georeason.geo import plan_tiles
from georeason.serve.settings import ServeSettings
from georeason.serve.jobs import Checkpoint, JobRequest, JobResult, run_job
from georeason.serve.routes import (
    _ERRORS, _check_form, _client_message, _error, queued_upload, result_response,
)
from georeason.serve.schemas import ErrorResponse, JobError, JobLinks, JobResponse
from georeason.serve.store import ResultStore
from georeason.serve.tiled_job import run_tiled_job
from georeason.serve.tracker import CANCELLED, DONE, FAILED, JobCancelled, JobTracker, TrackedJob
from georeason.serve.upload import Upload, UploadError

log = logging.getLogger("georeason.serve")

MAX_TILE_SIZE = 8192
MAX_SOURCE_CHARS = 1024
JOB_FIELDS = ("question", "answer", "vectors", "bands", "source", "tile_size", "overlap")

_JOB_FORM = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["image", "question"],
            "properties": {
                "image": {"type": "string", "format": "binary", "description": "As for POST /v1/predict."},
                "question": {"type": "string", "description": "As for POST /v1/predict."},
                "answer": {"type": "boolean", "default": True, "description": "As for POST /v1/predict."},
                "vectors": {"type": "boolean", "default": True, "description": "As for POST /v1/predict."},
                "bands": {"type": "string", "example": "3,2,1", "description": "As for POST /v1/predict."},
                "source": {"type": "string", "example": "rmnp-rgb",
                           "description": "A label for the image (e.g. the GIS layer's name), recorded as the "
                                          "`source` of the polygons and the mask's tags instead of upload.tif; "
                                          f"at most {MAX_SOURCE_CHARS} printable characters."},
                "tile_size": {"type": "integer", "example": 1024,
                              "description": "Tiled inference with tiles of this many pixels (16.."
                                             f"{MAX_TILE_SIZE}; TIFF/GeoTIFF uploads only): full resolution for "
                                             "scenes larger than the model input, progress per tile, cancel "
                                             "between tiles. Omit for whole-image mode."},
                "overlap": {"type": "integer", "default": 128,
                            "description": "Overlap of neighbouring tiles in pixels, 0..tile_size/2."},
            },
        }}},
    }
}
_NOT_FOUND = {404: {"model": ErrorResponse, "description": "Unknown or expired job id."}}
_START_ERRORS = {**_ERRORS, 422: {"model": ErrorResponse, "description": "As for POST /v1/predict, plus a bad source, "
                                  "tile_size or overlap. Errors found while the job runs are in the job's `error`."}}


def _int_field(fields: dict[str, str], name: str) -> int | None:
    value = fields.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UploadError(422, f"{name}: expected a whole number of pixels, got {value[:20]!r}") from None


def _tiling(fields: dict[str, str], suffix: str) -> tuple[int | None, int]:
    """(tile_size or None for whole-image mode, overlap) from the form, or UploadError 422."""
    tile_size = _int_field(fields, "tile_size")
    overlap = _int_field(fields, "overlap")
    if tile_size is None:
        if overlap is not None:
            raise UploadError(422, "overlap: only used with tile_size; send tile_size too, or leave overlap out")
        return None, 128
    overlap = min(128, tile_size // 2) if overlap is None else overlap
    if tile_size > MAX_TILE_SIZE:
        raise UploadError(422, f"tile_size: expected at most {MAX_TILE_SIZE} pixels, got {tile_size}")
    try:
        plan_tiles(tile_size, tile_size, tile_size, overlap)
    except GeoreasonError as error:
        raise UploadError(422, str(error)) from None
    if suffix != ".tif":
        raise UploadError(422, "tile_size: tiled inference needs a TIFF/GeoTIFF upload; send a GeoTIFF or leave "
                               "tile_size out")
    return tile_size, overlap


def _source(fields: dict[str, str]) -> str | None:
    value = fields.get("source", "").strip()
    if not value:
        return None
    if len(value) > MAX_SOURCE_CHARS or not value.isprintable():
        raise UploadError(422, f"source: expected a label of at most {MAX_SOURCE_CHARS} printable characters "
                               f"(e.g. the layer name), got {len(value)} characters")
    return value


def _run_tracked(reasoner: Any, job: JobRequest, checkpoint: Checkpoint, features: Any = None) -> JobResult:
    """A tiled job, or a whole-image one reusing a recent upload's features (`features`: FeatureCache)."""
    if job.tile_size is not None:
        return run_tiled_job(reasoner, job, checkpoint)
    return run_job(reasoner, job, checkpoint, features)


def job_response(tracked: TrackedJob) -> JobResponse:
    base = f"/v1/jobs/{tracked.id}"
    end = tracked.finished if tracked.finished is not None else time.monotonic()
    error = None
    if tracked.error_status is not None:
        error = JobError(status=tracked.error_status, detail=tracked.error_detail or "")
    return JobResponse(id=tracked.id, status=tracked.status, stage=tracked.stage, progress=round(tracked.progress, 4),
                       tiles_done=tracked.tiles_done, tiles_total=tracked.tiles_total,
                       elapsed_seconds=round(end - tracked.created, 3), error=error, result=tracked.result,
                       links=JobLinks(status=base, cancel=base))


def add_job_routes(app: FastAPI) -> None:
    settings: ServeSettings = app.state.settings
    store: ResultStore = app.state.store
    tracker = app.state.jobs = JobTracker(max_finished=settings.max_results, ttl_seconds=settings.result_ttl)

    def record_outcome(tracked: TrackedJob, job: JobRequest, upload: Upload, received: float, started: float,
                       future: Future) -> None:
        """Runs when the worker finishes the job (or it is cancelled): store the response or the error."""
        if future.cancelled():
            return  # JobTracker.cancel already cleaned up and marked it
        error = future.exception()
        if error is None:
            result: JobResult = future.result()
            response = result_response(tracked.id, tracked.question, result, received, started, settings)
            tracker.finish(tracked, DONE, result=response)
            log.info("job %s: %dx%d%s, %.2f s", tracked.id[:8], result.width, result.height,
                     f", tiles of {job.tile_size} px" if job.tile_size else "", response.timings.total)
        elif isinstance(error, JobCancelled):
            tracker.finish(tracked, CANCELLED)
            log.info("job %s: cancelled at %s", tracked.id[:8], tracked.stage)
        elif isinstance(error, GeoreasonError):
            tracker.finish(tracked, FAILED, error=(422, _client_message(error, job, upload)))
        else:
            log.error("job %s failed", tracked.id[:8], exc_info=error)
            tracker.finish(tracked, FAILED, error=(500, "internal error while processing the image; the server "
                                                        "log has the details"))

    @app.post("/v1/jobs", status_code=202, response_model=JobResponse, openapi_extra=_JOB_FORM,
              summary="Start a prediction as a job; poll its progress, cancel it",
              responses=_START_ERRORS)
    async def start_job(request: Request) -> Any:
        """The /v1/predict form plus `source`, `tile_size` and `overlap`; answers 202 with the job's id at once."""
        started = time.perf_counter()
        async with queued_upload(request, app, text_fields=JOB_FIELDS) as (upload, submit):
            question, answer, vectors, bands, image_path = _check_form(upload, settings)
            tile_size, overlap = _tiling(upload.fields, image_path.suffix)
            source = _source(upload.fields)
            result_id, folder = store.new_folder()
            job = JobRequest(image_path, question, answer, vectors, folder, settings.preview_max_side, bands,
                             source=source, tile_size=tile_size, overlap=overlap)
            tracked = TrackedJob(result_id, question, tiled=tile_size is not None)
            run = functools.partial(_run_tracked, checkpoint=functools.partial(tracker.checkpoint, tracked),
                                    features=getattr(app.state, "features", None))
            future = submit(job, run)
        received = job.submitted - started

        def drop_queued() -> None:  # the worker never runs a cancelled job, so its files are removed here
            upload.discard()
            store.discard(folder)

        tracked.future, tracked.on_cancel_queued = future, drop_queued
        tracker.add(tracked)
        future.add_done_callback(functools.partial(record_outcome, tracked, job, upload, received, started))
        body = job_response(tracked)
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": body.links.status})

    @app.get("/v1/jobs/{job_id}", response_model=JobResponse, responses=_NOT_FOUND,
             summary="A job's state and progress; its result once done")
    async def job_status(job_id: str) -> Any:
        tracked = tracker.get(job_id)
        if tracked is None:
            return _error(404, "no such job (unknown or expired id)")
        return job_response(tracked)

    @app.delete("/v1/jobs/{job_id}", response_model=JobResponse,
                responses={**_NOT_FOUND, 409: {"model": ErrorResponse, "description": "The job already finished."}},
                summary="Cancel a job (queued: at once; running: after the current step or tile)")
    async def cancel_job(job_id: str) -> Any:
        tracked = tracker.get(job_id)
        if tracked is None:
            return _error(404, "no such job (unknown or expired id)")
        if tracker.cancel(tracked) in (DONE, FAILED):
            return _error(409, f"the job has already finished ({tracked.status}); there is nothing to cancel")
        return job_response(tracked)

