"""`georeason serve` and clients that go away: mid-upload, mid-download, and malformed bodies, on a real
uvicorn server; each is at most one log line and never a traceback."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
import tempfile
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from georeason.serve import ServeSettings, create_app
from tests._serve_helpers import live_server


class StubReasoner:
    """The serve app's view of a model, for tests that never reach inference."""

    def info(self):
        return {"preset": "stub", "parameters": 1, "device": "cpu", "dtype": "float32", "num_beams": 1,
                "image_size": 64, "max_question_tokens": 16}

    def predict(self, *args, **kwargs):
        raise AssertionError("no request in these tests should reach the model")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture()
def server_logs(tmp_path, monkeypatch):
    """Every record of the uvicorn and georeason loggers (uvicorn's do not reach pytest's root handler);
    upload folders go to tmp_path, so the test can see that none is left."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    handler = Collect()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "uvicorn.error", "georeason.serve")]
    levels = [logger.level for logger in loggers]
    logging.getLogger("georeason.serve").setLevel(logging.INFO)  # as `georeason serve` sets it
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger, level in zip(loggers, levels):
        logger.removeHandler(handler)
        logger.setLevel(level)


HEAD = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=XyZ\r\n"
        b"Content-Length: 5000000\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"image\"; "
        b"filename=\"a.png\"\r\n\r\n\x89PNG\r\n\x1a\n")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _wait_for(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.input_kind("runs", "web client that disconnects in the middle of its upload",
                        "one log line per disconnect, no traceback; the partial upload is deleted")
def test_client_disconnecting_mid_upload_is_one_log_line(server_logs, tmp_path):
    with live_server(create_app(StubReasoner(), ServeSettings())) as url:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", _port(url))) as client:
                client.sendall(HEAD + b"\0" * 100_000)
                time.sleep(0.3)
        _wait_for(lambda: len([r for r in server_logs if "disconnected" in r.getMessage()]) >= 3)
        assert httpx.get(url + "/v1/health", timeout=10).json()["status"] == "ok"
    lines = [record.getMessage() for record in server_logs]
    assert len(lines) == 3, lines
    assert all(record.exc_info is None and record.levelno == logging.INFO for record in server_logs)
    pattern = r"POST /v1/predict from 127\.0\.0\.1:\d+: the client disconnected after sending [\d,]+ bytes; the " \
              r"partial upload was deleted"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert list(tmp_path.glob("georeason-upload-*")) == []


def test_disconnect_through_asgi_discards_the_upload(server_logs, tmp_path):
    app = create_app(StubReasoner(), ServeSettings())
    messages = iter([{"type": "http.request", "body": HEAD.split(b"\r\n\r\n", 1)[1], "more_body": True},
                     {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/predict",
             "raw_path": b"/v1/predict", "root_path": "", "scheme": "http", "query_string": b"",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"multipart/form-data; boundary=XyZ"), (b"host", b"x")]}
    asyncio.run(app(scope, receive, send))  # raised ClientDisconnect before
    app.state.worker.close()
    assert [r.getMessage() for r in server_logs] == [
        "POST /v1/predict from 127.0.0.1:1234: the client disconnected after sending 81 bytes; the partial upload "
        "was deleted"]
    assert list(tmp_path.glob("georeason-upload-*")) == []


@pytest.mark.input_kind("runs", "web client that closes the connection in the middle of a result download",
                        "nothing logged, the server carries on")
def test_client_closing_mid_download_logs_nothing(server_logs):
    app = create_app(StubReasoner(), ServeSettings())
    result_id, folder = app.state.store.new_folder()
    (folder / "mask.tif").write_bytes(bytes(range(256)) * 160_000)  # 40 MB: more than the socket buffers
    app.state.store.commit(result_id, folder)
    with live_server(app) as url:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", _port(url))) as client:
                client.sendall(f"GET /v1/results/{result_id}/mask.tif HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                assert client.recv(65536).startswith(b"HTTP/1.1 200")
        response = httpx.get(f"{url}/v1/results/{result_id}/mask.tif", timeout=30)
        assert response.status_code == 200 and len(response.content) == 40_960_000
    assert [r.getMessage() for r in server_logs if r.levelno >= logging.INFO] == []


@pytest.mark.input_kind("runs", "malformed multipart bodies (random framing, headers, names, boundaries)",
                        "always a 4xx with a message; never a 5xx or an unhandled exception")
def test_random_malformed_multipart_bodies_get_4xx(server_logs):
    pieces = [b"--XyZ", b"\r\n", b"\r\n\r\n", b"--", b"--XyZ--", b":", b";", b"q", b"\xff\xfe", b"\x89PNG\r\n\x1a\n",
              b'Content-Disposition: form-data; name="image"; filename="a.png"',
              b'Content-Disposition: form-data; name="question"', b"Content-Disposition: form-data",
              b'Content-Disposition: attachment; name="q"', b'Content-Disposition: form-data; name="\xff"',
              b"Content-Disposition: form-data; name=question", b"Content-Type: image/png",
              b"Content-Disposition: form-data; name=\"question\"; filename*=utf-8''%E2%82%AC"]
    content_types = [b"multipart/form-data; boundary=XyZ", b'multipart/form-data; boundary="XyZ"',
                     b"multipart/form-data; boundary=", b"multipart/form-data; boundary=" + b"X" * 200,
                     b"multipart/form-data; charset=utf-8; boundary=XyZ", b"multipart/form-data;;;",
                     b"multipart/form-data; boundary=\xe9"]
    rng = random.Random(0)
    statuses = set()
    with TestClient(create_app(StubReasoner(), ServeSettings()), raise_server_exceptions=True) as client:
        for _ in range(300):
            body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 14)))
            response = client.post("/v1/predict", content=body, headers={"content-type": rng.choice(content_types)})
            statuses.add(response.status_code)
            assert 400 <= response.status_code < 500 and response.json()["detail"], body
    assert statuses == {400, 422}
    assert [r for r in server_logs if r.levelno >= logging.ERROR or r.exc_info] == []
