"""The georeason service's REST API (docs/serve.md) through QGIS's own network stack.

QGIS plugin (docs/qgis.md); not in the paper. QgsBlockingNetworkRequest works on Processing's worker
threads and in the main thread alike, follows QGIS's proxy settings, and aborts when the feedback is
cancelled. Every failure is raised as ServiceError with a readable message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from qgis.core import QgsBlockingNetworkRequest, QgsFeedback
from qgis.PyQt.QtCore import QByteArray, QUrl
from qgis.PyQt.QtNetwork import QNetworkReply, QNetworkRequest

from .messages import ServiceError, detail_of, for_status, unexpected_answer, unreachable
from .multipart import form_body

API = "/v1"


class ServiceClient:
    """One georeason service, e.g. ServiceClient("http://127.0.0.1:8000")."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def model(self, feedback: QgsFeedback | None = None) -> dict[str, Any]:
        """GET /v1/model: the loaded model and the service's limits."""
        return self._json("GET", f"{API}/model", feedback=feedback)

    def start_job(self, image: bytes, filename: str, fields: dict[str, str], feedback: QgsFeedback | None = None,
                  sent: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """POST /v1/jobs with the image and form fields; the job's state (status 'queued' or later).

        `sent(bytes_sent, bytes_total)` follows the upload.
        """
        body, content_type = form_body(fields, "image", filename, image)
        return self._json("POST", f"{API}/jobs", body, content_type, feedback, sent)

    def job(self, job_id: str, feedback: QgsFeedback | None = None) -> dict[str, Any]:
        """GET /v1/jobs/{id}: status, stage, progress, and the result once done."""
        return self._json("GET", f"{API}/jobs/{job_id}", feedback=feedback)

    def cancel(self, job_id: str) -> dict[str, Any] | None:
        """DELETE /v1/jobs/{id}. Never takes a feedback: it must still run after the user pressed Cancel.

        Returns the job's state, or None when the job had already finished (409).
        """
        try:
            return self._json("DELETE", f"{API}/jobs/{job_id}")
        except ServiceError as error:
            if error.status == 409:
                return None
            raise

    def download(self, path: str, feedback: QgsFeedback | None = None) -> bytes:
        """GET a result file by its relative URL (the `downloads` of a result)."""
        return self._request("GET", path, feedback=feedback)

    # -- transport ----------------------------------------------------------------------------------
    def _json(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
              feedback: QgsFeedback | None = None, sent: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        content = self._request(method, path, body, content_type, feedback, sent)
        try:
            answer = json.loads(content.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise unexpected_answer(self.url, f"{method} {path} did not return JSON") from None
        if not isinstance(answer, dict):
            raise unexpected_answer(self.url, f"{method} {path} did not return a JSON object")
        return answer

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
                 feedback: QgsFeedback | None = None, sent: Callable[[int, int], None] | None = None) -> bytes:
        url = QUrl(self.url + path)
        if not url.isValid() or url.scheme() not in ("http", "https") or not url.host():
            raise ServiceError(f"The georeason service URL {self.url!r} is not an http(s) URL such as "
                               f"http://127.0.0.1:8000; set it in the georeason settings.")
        request = QNetworkRequest(url)
        request.setRawHeader(b"Accept", b"application/json")
        if content_type is not None:
            request.setHeader(QNetworkRequest.ContentTypeHeader, content_type)
        blocking = QgsBlockingNetworkRequest()

        def forward(done: int, total: int) -> None:
            # A slot must never raise (PyQt aborts the process); a progress report that arrives after its
            # feedback was deleted is dropped.
            try:
                if sent is not None and total > 0:
                    sent(int(done), int(total))
            except RuntimeError:
                pass

        if sent is not None:
            blocking.uploadProgress.connect(forward)
        try:
            if method == "GET":
                code = blocking.get(request, True, feedback)
            elif method == "POST":
                code = blocking.post(request, QByteArray(body or b""), True, feedback)
            elif method == "DELETE":
                code = blocking.deleteResource(request, feedback)
            else:  # pragma: no cover - programming error
                raise ValueError(method)
        finally:
            if sent is not None:
                blocking.uploadProgress.disconnect(forward)
        reply = blocking.reply()
        status = reply.attribute(QNetworkRequest.HttpStatusCodeAttribute)
        content = bytes(reply.content())
        if status is not None and int(status) >= 400:
            retry_after = _header(reply, b"retry-after")
            raise for_status(int(status), detail_of(content), retry_after, self.url)
        if code == QgsBlockingNetworkRequest.NoError and status is not None:
            return content  # even if the user cancelled meanwhile: the caller must learn e.g. the new job's id
        if feedback is not None and feedback.isCanceled():
            raise ServiceError("Cancelled.")
        raise unreachable(self.url, _network_reason(reply.error(), blocking.errorMessage()))


def _header(reply, name: bytes) -> str | None:
    """A response header by name, case-insensitively (uvicorn sends lower-case names)."""
    for key in reply.rawHeaderList():
        if bytes(key).lower() == name:
            return bytes(reply.rawHeader(key)).decode("latin-1")
    return None


def _network_reason(error: int, message: str) -> str:
    reasons = {
        QNetworkReply.ConnectionRefusedError: "connection refused: nothing is listening on that port",
        QNetworkReply.HostNotFoundError: "host not found",
        QNetworkReply.TimeoutError: "no answer in time",
        QNetworkReply.OperationCanceledError: "no answer in time (QGIS's network timeout, Settings > Options > "
                                              "Network)",
        QNetworkReply.RemoteHostClosedError: "the server closed the connection",
    }
    return reasons.get(error, message or "network error")
