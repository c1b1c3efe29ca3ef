"""One question to the service as a job: upload, follow its progress, cancel it on the service when the
user cancels, download the result files.

QGIS plugin (docs/qgis.md); the job API is POST /v1/jobs and GET/DELETE /v1/jobs/{id} (docs/serve.md).
"""

from __future__ import annotations

import time
from typing import Any

from qgis.core import QgsProcessingFeedback

from .client import ServiceClient
from .messages import ServiceError, for_status

UPLOAD_SHARE, JOB_SHARE = 5.0, 90.0  # percent of the progress bar; downloading the files takes the rest
CANCEL_WAIT_SECONDS = 30.0


class Cancelled(Exception):
    """The user cancelled; str() says what happened to the job on the service."""


def ask(client: ServiceClient, image: bytes, filename: str, fields: dict[str, str],
        feedback: QgsProcessingFeedback) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Run one job; returns (its result, {file name: bytes} for mask.tif and vectors.gpkg).

    Raises ServiceError (readable) or Cancelled (after cancelling the job on the service).
    """

    def sent(done: int, total: int) -> None:
        feedback.setProgress(UPLOAD_SHARE * done / total)

    feedback.setProgressText("Uploading the area to the georeason service")
    try:
        job = client.start_job(image, filename, fields, feedback, sent)
    except ServiceError:
        if feedback.isCanceled():
            raise Cancelled("Cancelled while uploading; the service received no job.") from None
        raise
    job_id = job["id"]
    feedback.pushInfo(f"georeason job {job_id} accepted ({len(image) / 1e6:.2f} MB uploaded)")
    state = _follow(client, job, feedback)
    result = state["result"]
    files: dict[str, bytes] = {}
    downloads = result["downloads"]
    feedback.setProgressText("Downloading the mask and the polygons")
    for name, key in (("mask.tif", "mask_tif"), ("vectors.gpkg", "vectors_gpkg")):
        if downloads.get(key):
            files[name] = client.download(downloads[key], feedback)
        if feedback.isCanceled():
            raise Cancelled("Cancelled after the job finished; no output was written.")
    return result, files


def _follow(client: ServiceClient, job: dict[str, Any], feedback: QgsProcessingFeedback) -> dict[str, Any]:
    """Poll the job until it is done; cancel it on the service if the user cancels here."""
    job_id, state, pause, last_stage = job["id"], job, 0.1, None
    while True:
        if feedback.isCanceled():
            _cancel(client, job_id, feedback)
        status = state["status"]
        if status == "done":
            return state
        if status == "failed":
            error = state.get("error") or {}
            raise for_status(int(error.get("status", 500)), error.get("detail", "no message"), None, client.url)
        if status == "cancelled":
            raise ServiceError("The job was cancelled on the georeason service (by another client or when the "
                               "service stopped).")
        if state.get("stage") != last_stage:
            last_stage = state.get("stage")
            feedback.setProgressText(f"georeason: {last_stage}")
        feedback.setProgress(UPLOAD_SHARE + JOB_SHARE * float(state.get("progress", 0.0)))
        time.sleep(pause)
        pause = min(1.0, pause * 1.5)
        try:
            state = client.job(job_id, feedback)
        except ServiceError:
            if feedback.isCanceled():
                _cancel(client, job_id, feedback)
            raise


def _cancel(client: ServiceClient, job_id: str, feedback: QgsProcessingFeedback) -> None:
    """DELETE the job, wait (bounded) until the service confirms, then raise Cancelled."""
    feedback.pushInfo(f"Cancelling georeason job {job_id} on the service")
    try:
        state = client.cancel(job_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        while state is not None and state["status"] == "cancelling" and time.monotonic() < deadline:
            time.sleep(0.2)
            state = client.job(job_id)
    except ServiceError as error:
        raise Cancelled(f"Cancelled; no output was written. The service could not be told: {error}") from None
    if state is None or state["status"] == "done":
        raise Cancelled("Cancelled; no output was written (the job had already finished on the service).")
    if state["status"] == "cancelling":
        raise Cancelled("Cancelled; no output was written. The service stops the job after its current step.")
    raise Cancelled(f"Cancelled; no output was written, and the job was {state['status']} on the service.")
