"""Readable messages for what can go wrong between QGIS and `georeason serve` (no QGIS imports: unit-tested).

QGIS plugin (docs/qgis.md); not in the paper. Every failure the user can meet becomes one sentence
saying what happened and what to do, never a Python traceback.
"""

from __future__ import annotations

import json


class ServiceError(Exception):
    """A failure talking to the service; str() is the message shown to the user."""

    def __init__(self, message: str, status: int | None = None, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def detail_of(body: bytes) -> str:
    """The service's {"detail": message} text, or the start of the body when it is something else."""
    try:
        detail = json.loads(body.decode("utf-8")).get("detail")
    except (ValueError, UnicodeDecodeError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail.strip():
        return detail.strip()
    text = body[:200].decode("utf-8", "replace").strip()
    return text or "no message"


def retry_seconds(header: str | None) -> int | None:
    """The Retry-After header as whole seconds (its HTTP-date form is not sent by georeason)."""
    if header is None or not header.strip().isdigit():
        return None
    return int(header.strip())


def unreachable(url: str, reason: str) -> ServiceError:
    return ServiceError(
        f"Cannot reach the georeason service at {url} ({reason}). Start it with "
        f"`georeason serve --model DIR` on that machine, or set the right URL in the georeason settings "
        f"(Plugins > georeason > Service settings) or in the algorithm's 'Service URL' parameter.")


def for_status(status: int, detail: str, retry_after: str | None, url: str) -> ServiceError:
    """The message for an HTTP error answer of the service (413, 422, 503 with Retry-After, others), or for a
    job that failed with that status; `detail` is the service's message (see detail_of)."""
    if status == 413:
        return ServiceError(
            f"The georeason service refused the image as too large: {detail}. Choose a smaller area (a map "
            f"extent or a polygon), fewer bands, or start the service with a larger --max-upload-mb / "
            f"--max-pixels.", status)
    if status == 422:
        return ServiceError(f"The georeason service could not use the request: {detail}.", status)
    if status == 503:
        seconds = retry_seconds(retry_after)
        when = f"in {seconds} s" if seconds is not None else "in a moment"
        return ServiceError(f"The georeason service cannot take the job now ({detail}). Try again {when}; a "
                            f"batch run is best started when the service has nothing else queued.", status, seconds)
    if status == 404:
        return ServiceError(f"The georeason service at {url} does not know this request ({detail}). Is it a "
                            f"georeason version with the /v1/jobs API (pip install -U georeason)?", status)
    if status >= 500:
        return ServiceError(f"The georeason service failed while processing the image (HTTP {status}: {detail}). "
                            f"Its log has the details.", status)
    return ServiceError(f"The georeason service answered HTTP {status}: {detail}.", status)


def unexpected_answer(url: str, what: str) -> ServiceError:
    return ServiceError(f"The server at {url} did not answer like a georeason service ({what}). Check the URL "
                        f"in the georeason settings.")
