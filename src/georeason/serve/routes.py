"""The HTTP routes of `georeason serve`: page, /v1/predict, results, health, model, samples; error bodies.

Web demo and REST service (docs/serve.md); not in the paper. Every refusal is JSON {"detail": message}
with the status docs/serve.md documents (400/404/413/415/422/503); tracebacks go to the log only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from georeason.errors import GeoreasonError
from georeason.serve.settings import FORMATS, SAMPLES, SAMPLES_DIR, STATIC, ServeSettings
from georeason.serve.jobs import JobRequest, JobResult, run_job
from georeason.serve.schemas import (
    Downloads, ErrorResponse, HealthResponse, ImageSize, Limits, ModelResponse, PredictResponse, QueueStatus,
    SampleInfo, Timings,
)
from georeason.serve.store import RESULT_FILES, ResultStore
from georeason.serve.upload import (
    SUFFIXES, ClientDisconnected, Upload, UploadError, image_dimensions, read_form, sniff_image,
)
from georeason.serve.worker import InferenceWorker, QueueFull

log = logging.getLogger("georeason.serve")

_CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}

_FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["image", "question"],
            "properties": {
                "image": {"type": "string", "format": "binary",
                          "description": "The image: PNG, JPEG or TIFF/GeoTIFF (recognised by its magic bytes, "
                                         "not its name), at most max_upload_bytes and max_pixels (GET /v1/model)."},
                "question": {"type": "string", "description": "The question or instruction about the image, "
                                                              "1..max_question_chars characters."},
                "answer": {"type": "boolean", "default": True,
                           "description": "Also generate the text answer (slower); false returns answer=null."},
                "vectors": {"type": "boolean", "default": True,
                            "description": "Also polygonise the mask (GeoPackage, and GeoJSON in EPSG:4326 when "
                                           "the polygons can be lon/lat)."},
                "bands": {"type": "string", "example": "3,2,1",
                          "description": "Bands to show the model as R,G,B (1-based, e.g. 4,3,2 for a "
                                         "multispectral GeoTIFF; one number = gray). Default: 1,2,3."},
            },
        }}},
    }
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Malformed multipart body."},
    408: {"model": ErrorResponse, "description": "The body did not arrive within upload_timeout seconds."},
    413: {"model": ErrorResponse, "description": "Upload larger than max_upload_bytes, or more pixels than "
                                                 "max_pixels (a decompression-bomb guard)."},
    415: {"model": ErrorResponse, "description": "Not multipart/form-data, or the file is not PNG, JPEG or TIFF."},
    422: {"model": ErrorResponse, "description": "Missing/empty/over-long question, missing image, bad option "
                                                 "value, or an image that cannot be decoded."},
    503: {"model": ErrorResponse, "description": "The inference queue is full; retry after the Retry-After "
                                                 "header's seconds."},
}


class SecurityHeaders:
    """ASGI middleware adding no-sniff, no-referrer, no-framing and (outside /docs) a same-origin CSP."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        strict = not scope.get("path", "").startswith(("/docs", "/redoc"))

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY")]
                if strict:
                    headers.append((b"content-security-policy", _CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def _busy(full: QueueFull) -> UploadError:
    return UploadError(503, f"the server is busy: {full}", {"Retry-After": str(full.retry_after)})


def _flag(fields: dict[str, str], name: str, default: bool) -> bool:
    value = fields.get(name)
    if value is None or value.strip() == "":
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise UploadError(422, f"{name}: expected true or false, got {value[:20]!r}")


def _bands(fields: dict[str, str]) -> list[int] | None:
    value = fields.get("bands", "").strip()
    if not value:
        return None
    try:
        bands = [int(part) for part in value.split(",")]
    except ValueError:
        bands = []
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise UploadError(422, f"bands: expected 1 or 3 comma-separated band numbers from 1, such as 3,2,1; "
                               f"got {value[:20]!r}")
    return bands


def _check_form(upload: Upload, settings: ServeSettings) -> tuple[str, bool, bool, list[int] | None, Path]:
    """The question, the two flags, the bands and the image path (renamed by its sniffed type), or UploadError."""
    question = upload.fields.get("question")
    if question is None:
        raise UploadError(422, "missing form field 'question': send the question about the image")
    question = question.strip()
    if not question:
        raise UploadError(422, "question: must not be empty; type a question about the image")
    if len(question) > settings.max_question_chars:
        raise UploadError(422, f"question: {len(question)} characters is above the limit of "
                               f"{settings.max_question_chars} characters (--max-question-chars)")
    answer = _flag(upload.fields, "answer", True)
    vectors = _flag(upload.fields, "vectors", True)
    bands = _bands(upload.fields)
    if upload.file_path is None:
        raise UploadError(422, "missing form field 'image': attach a PNG, JPEG or TIFF/GeoTIFF file")
    if upload.file_bytes == 0:
        raise UploadError(422, "image: the uploaded file is empty (0 bytes)")
    kind = sniff_image(upload.file_path)
    if kind is None:
        raise UploadError(415, "image: the file is not a PNG, JPEG or TIFF/GeoTIFF image (checked by its "
                               "first bytes, not its name or Content-Type)")
    path = upload.file_path.rename(upload.file_path.with_suffix(SUFFIXES[kind]))
    width, height = image_dimensions(path, kind)
    if width * height > settings.max_pixels:
        raise UploadError(413, f"image: {width} x {height} = {width * height} pixels is above the server limit of "
                               f"{settings.max_pixels} pixels (--max-pixels; a decompression-bomb guard)")
    if width * height == 0:
        raise UploadError(422, "image: the image has no pixels")
    return question, answer, vectors, bands, path


def _job_in_worker(reasoner: Any, job: JobRequest, upload: Upload, store: ResultStore,
                   run: Callable[[Any, JobRequest], JobResult] = run_job) -> JobResult:
    """run(reasoner, job), then always delete the upload; a failed job's result folder is deleted too.

    The result is committed here, not by the request handler, so a client that disconnects while
    waiting still leaves a result the store will expire (rather than an orphaned folder).
    """
    try:
        result = run(reasoner, job)
        store.commit(job.result_folder.name, job.result_folder)
        return result
    except BaseException:
        store.discard(job.result_folder)
        raise
    finally:
        upload.discard()


@contextlib.asynccontextmanager
async def queued_upload(request: Request, app: FastAPI, text_fields: tuple[str, ...] | None = None,
                        ) -> AsyncIterator[tuple[Upload, Callable[[JobRequest, Callable[..., JobResult]], Future]]]:
    """Receive a job's upload and queue the job: `async with queued_upload(...) as (upload, submit)`.

    Refuses a full queue (503) before reading the body, then reads the multipart form (`text_fields`:
    read_form's, default /v1/predict's). `submit(job, run)` queues run(reasoner, job) on the inference
    worker, which from then on owns the upload and job.result_folder (see _job_in_worker); a full queue
    deletes the folder and raises the 503. Until submit succeeds, any error in the block (a bad form field,
    a full queue) deletes the upload here.
    """
    worker: InferenceWorker = app.state.worker
    store: ResultStore = app.state.store
    settings: ServeSettings = app.state.settings
    try:
        worker.refuse_if_full()  # before reading the body: no bandwidth or disk spent on it
    except QueueFull as full:
        raise _busy(full) from None
    options = {} if text_fields is None else {"text_fields": text_fields}
    upload = await read_form(request, settings.max_upload_bytes, timeout=settings.upload_timeout, **options)
    owned_by_worker = False

    def submit(job: JobRequest, run: Callable[..., JobResult]) -> Future:
        nonlocal owned_by_worker
        try:
            future = worker.submit(_job_in_worker, app.state.reasoner, job, upload, store, run)
        except QueueFull as full:
            store.discard(job.result_folder)
            raise _busy(full) from None
        owned_by_worker = True
        return future

    try:
        yield upload, submit
    finally:
        if not owned_by_worker:
            upload.discard()


def _client_message(error: Exception, job: JobRequest, upload: Upload) -> str:
    """The error text without server paths: the upload's location becomes 'the uploaded image'."""
    text = str(error)
    for path in (job.image_path, upload.file_path, upload.folder):
        if path is not None:
            text = text.replace(str(path), "the uploaded image")
    return text


def result_response(result_id: str, question: str, result: JobResult, received: float, started: float,
                    settings: ServeSettings) -> PredictResponse:
    """The PredictResponse of a finished job; `received` = upload seconds, `started` = perf_counter at arrival."""
    base = f"/v1/results/{result_id}"
    downloads = Downloads(
        mask_png=f"{base}/mask.png", mask_tif=f"{base}/mask.tif" if "mask.tif" in result.files else None,
        overlay_png=f"{base}/overlay.png",
        image_png=f"{base}/image.png",
        vectors_gpkg=f"{base}/vectors.gpkg" if "vectors.gpkg" in result.files else None,
        vectors_geojson=f"{base}/vectors.geojson" if "vectors.geojson" in result.files else None,
    )
    timings = Timings(upload=round(received, 4), queue=round(result.queue_seconds, 4),
                      inference=round(result.inference_seconds, 4), outputs=round(result.outputs_seconds, 4),
                      total=round(time.perf_counter() - started, 4), model=result.model_seconds)
    return PredictResponse(
        id=result_id, question=question, answer=result.answer, empty=result.empty,
        target_pixels=result.target_pixels, image=ImageSize(width=result.width, height=result.height),
        mask_png_base64=result.mask_png_base64, georeferenced=result.georeferenced, crs=result.crs,
        georeferencing=result.georeferencing,
        geojson=result.geojson, timings=timings, downloads=downloads,
        expires_in_seconds=settings.result_ttl, warnings=result.warnings,
    )


def add_routes(app: FastAPI) -> None:
    settings: ServeSettings = app.state.settings
    worker: InferenceWorker = app.state.worker
    store: ResultStore = app.state.store
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UploadError)
    async def upload_error(_request: Request, error: UploadError) -> JSONResponse:
        return _error(error.status, error.message, error.headers)

    @app.exception_handler(ClientDisconnected)
    async def client_disconnected(request: Request, error: ClientDisconnected) -> Response:
        # Not a server fault: one line, no traceback; nobody is left to read a response.
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.info("%s %s from %s: %s; the partial upload was deleted", request.method, request.url.path, client, error)
        return Response(status_code=400)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in error.errors()]
        return _error(422, "; ".join(parts) or "invalid request")

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/v1/health", response_model=HealthResponse, summary="Liveness and queue state")
    async def health() -> HealthResponse:
        stats = worker.stats()
        queue = QueueStatus(waiting=stats.waiting, capacity=stats.capacity, busy=stats.busy,
                            completed=stats.completed, failed=stats.failed, refused=stats.refused)
        return HealthResponse(status="ok", uptime_seconds=round(time.monotonic() - app.state.started, 3),
                              queue=queue, results_stored=len(store))

    @app.get("/v1/model", response_model=ModelResponse, summary="The loaded model and the server's limits")
    async def model_info() -> ModelResponse:
        info = app.state.reasoner.info()
        limits = Limits(max_upload_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels,
                        max_question_chars=settings.max_question_chars, queue_size=settings.queue_size,
                        result_ttl_seconds=settings.result_ttl, formats=FORMATS)
        return ModelResponse(preset=str(info["preset"]), parameters=int(info["parameters"]),
                             device=str(info["device"]), dtype=str(info["dtype"]),
                             num_beams=int(info["num_beams"]), image_size=int(info["image_size"]),
                             max_question_tokens=int(info["max_question_tokens"]), limits=limits)

    @app.get("/v1/samples", response_model=list[SampleInfo], summary="The bundled sample images")
    async def samples() -> list[SampleInfo]:
        return [SampleInfo(name=name, title=title, question=question, url=f"/v1/samples/{name}")
                for name, (title, question) in SAMPLES.items() if (SAMPLES_DIR / name).is_file()]

    @app.get("/v1/samples/{name}", summary="Download a bundled sample image",
             responses={200: {"content": {"image/png": {}, "image/tiff": {}}}, 404: {"model": ErrorResponse}})
    async def sample_file(name: str) -> Any:
        if name not in SAMPLES or not (SAMPLES_DIR / name).is_file():
            return _error(404, f"no bundled sample named {name[:60]!r}; GET /v1/samples lists them")
        media = "image/tiff" if name.endswith(".tif") else "image/png"
        return FileResponse(SAMPLES_DIR / name, media_type=media, filename=name)

    @app.get("/v1/results/{result_id}/{name}", summary="Download a result file",
             responses={200: {"content": {media: {} for media in set(RESULT_FILES.values())}},
                        404: {"model": ErrorResponse, "description": "Unknown or expired id, or a file this "
                                                                     "result does not have."}})
    async def result_file(result_id: str, name: str) -> Any:
        """`name` is one of mask.png, mask.tif, overlay.png, image.png, vectors.gpkg, vectors.geojson."""
        path = store.path(result_id, name)
        if path is None:
            if name not in RESULT_FILES:
                return _error(404, f"unknown result file {name[:40]!r}; expected one of {', '.join(RESULT_FILES)}")
            return _error(404, "no such result (unknown or expired id, or a file this result does not have)")
        return FileResponse(path, media_type=RESULT_FILES[name], filename=f"georeason-{result_id[:8]}-{name}",
                            headers={"Cache-Control": "private, max-age=60"})

    @app.post("/v1/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_FORM_SCHEMA,
              summary="Segment what the question asks for, and answer it")
    async def predict(request: Request) -> Any:
        """Multipart form: `image` (file), `question`, optional `answer`, `vectors` (true/false) and `bands`."""
        started = time.perf_counter()
        async with queued_upload(request, app) as (upload, submit):
            question, answer, vectors, bands, image_path = _check_form(upload, settings)
            result_id, folder = store.new_folder()
            job = JobRequest(image_path, question, answer, vectors, folder, settings.preview_max_side, bands)
            future = submit(job, functools.partial(run_job, features=getattr(app.state, "features", None)))
        received = job.submitted - started
        try:
            # shield: a client that disconnects must not cancel the job, which also deletes the upload.
            result: JobResult = await asyncio.shield(asyncio.wrap_future(future))
        except GeoreasonError as error:
            return _error(422, _client_message(error, job, upload))
        except Exception:  # noqa: BLE001 - logged with its traceback; the client gets a plain message
            log.exception("prediction failed")
            return _error(500, "internal error while processing the image; the server log has the details")
        response = result_response(result_id, question, result, received, started, settings)
        log.info("predict %s: %dx%d, %d question chars, %.2f s", result_id[:8], result.width, result.height,
                 len(question), response.timings.total)
        return response
