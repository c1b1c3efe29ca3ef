"""`georeason serve`: the web demo page and REST API over one loaded model (FastAPI + uvicorn).

Web demo and REST service (docs/serve.md); not in the paper. Inference runs on one worker thread behind a
bounded queue (serve.worker); uploads are streamed with limits (serve.upload); results are kept by
random id for a while (serve.store).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from georeason.errors import GeoreasonError
from georeason.serve.settings import ServeSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

CLI_DESCRIPTION = """Start the web demo and REST service: one process loads the model once and serves a page
(upload an image or GeoTIFF, ask a question, see the mask) and a JSON API (POST /v1/predict).
Inference runs one request at a time behind a bounded queue; a full queue answers 503."""
CLI_EPILOG = """examples:
  georeason serve --model runs/smol
  georeason serve --model runs/smol --port 8080 --max-upload-mb 20 --queue-size 4
  curl -F image=@scene.tif -F question="Where could boats dock?" http://127.0.0.1:8000/v1/predict

The API schema is at /openapi.json; docs/serve.md has every option and the security notes."""

log = logging.getLogger("georeason.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ServeSettings()
    parser.add_argument("--model", required=True, metavar="DIR|HUB_ID",
                        help="model folder (from `georeason init/train/convert`) or hub id, e.g. "
                             "earth-insights/SegEarth-R1-EarthReason")
    parser.add_argument("--revision", help="with a hub id: branch, tag or commit hash (default main)")
    parser.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}: this machine only)")
    parser.add_argument("--port", type=int, default=d.port, help=f"TCP port (default {d.port})")
    parser.add_argument("--max-upload-mb", type=float, default=d.max_upload_mb,
                        help=f"largest image file accepted, MB (default {d.max_upload_mb:g}); larger -> 413")
    parser.add_argument("--max-pixels", type=int, default=d.max_pixels,
                        help=f"largest width x height accepted, checked before decoding (default {d.max_pixels})")
    parser.add_argument("--max-question-chars", type=int, default=d.max_question_chars,
                        help=f"longest question accepted (default {d.max_question_chars}); longer -> 422")
    parser.add_argument("--queue-size", type=int, default=d.queue_size,
                        help=f"requests that may wait for the model (default {d.queue_size}); more -> 503")
    parser.add_argument("--result-ttl", type=int, default=d.result_ttl,
                        help=f"seconds result files stay downloadable (default {d.result_ttl})")
    parser.add_argument("--max-results", type=int, default=d.max_results,
                        help=f"results kept at most; the oldest go first (default {d.max_results})")
    parser.add_argument("--preview-max-side", type=int, default=d.preview_max_side,
                        help=f"long side of the image preview shown on the page (default {d.preview_max_side})")
    parser.add_argument("--upload-timeout", type=float, default=d.upload_timeout,
                        help=f"seconds a client has to send the whole upload (default {d.upload_timeout:g}); "
                             "slower -> 408")
    parser.add_argument("--device", default=d.device, help=f"torch device (default {d.device})")
    parser.add_argument("--dtype", default=d.dtype, choices=["float32", "bfloat16", "float16"],
                        help=f"weight dtype (default {d.dtype})")
    parser.add_argument("--num-beams", type=int, default=d.num_beams,
                        help=f"beam search width for answers (default {d.num_beams}: greedy from the mask's KV cache)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def run(args: argparse.Namespace) -> int:
    import uvicorn

    settings = ServeSettings(
        host=args.host, port=args.port, max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels,
        max_question_chars=args.max_question_chars, queue_size=args.queue_size, result_ttl=args.result_ttl,
        max_results=args.max_results, preview_max_side=args.preview_max_side, upload_timeout=args.upload_timeout,
        device=args.device, dtype=args.dtype, num_beams=args.num_beams,
    )
    settings.check()
    logging.basicConfig(format="%(levelname)s:     %(name)s: %(message)s")
    log.setLevel(args.log_level.upper())
    if not _is_loopback(settings.host):
        print(f"georeason serve: warning: listening on {settings.host}: anyone who can reach this address can "
              "use the service (there is no authentication); put it behind a proxy with auth", file=sys.stderr)
    app = create_app(args.model, settings, revision=args.revision)
    info = app.state.reasoner.info()
    print(f"georeason serve: model {info.get('preset')} ({info.get('parameters', 0):,} parameters) on "
          f"{info.get('device')}; open http://{_url_host(settings.host)}:{settings.port}/", file=sys.stderr)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level,
                limit_concurrency=4 * settings.queue_size + 32, timeout_keep_alive=5, server_header=False)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def create_app(model: Any, settings: ServeSettings | None = None, revision: str | None = None) -> FastAPI:
    """The FastAPI app for a model folder or hub id (at `revision`; loaded once here) or an already
    loaded GeoReasoner."""
    from fastapi import FastAPI

    from georeason.serve.features import FeatureCache
    from georeason.serve.job_routes import add_job_routes
    from georeason.serve.routes import add_routes
    from georeason.serve.store import ResultStore
    from georeason.serve.worker import InferenceWorker

    settings = settings or ServeSettings()
    settings.check()
    if isinstance(model, (str, Path)):
        from georeason.model.hub import is_hub_id
        from georeason.reasoner import GeoReasoner

        if not is_hub_id(model) and not Path(model).is_dir():
            raise GeoreasonError(f"--model {model}: no such model folder")
        reasoner = GeoReasoner.from_pretrained(model, device=settings.device, dtype=settings.dtype,
                                               max_pixels=settings.max_pixels, num_beams=settings.num_beams,
                                               revision=revision)
    else:
        reasoner = model
    worker = InferenceWorker(settings.queue_size)
    store = ResultStore(max_items=settings.max_results, ttl_seconds=settings.result_ttl)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await asyncio.to_thread(worker.close, 60.0)
        store.close()

    app = FastAPI(
        title="georeason",
        summary="Geospatial pixel reasoning (SegEarth-R1): image + question -> mask + answer.",
        description="POST an image or GeoTIFF and a question to /v1/predict; download the results by id. "
                    "The demo page is at /. Errors are JSON {\"detail\": message}.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.reasoner = reasoner
    app.state.settings = settings
    app.state.worker = worker
    app.state.store = store
    app.state.features = FeatureCache()  # recent uploads' image features: follow-up questions skip the encoder
    app.state.started = time.monotonic()
    add_routes(app)
    add_job_routes(app)
    return app


def _version() -> str:
    from georeason import __version__

    return __version__
