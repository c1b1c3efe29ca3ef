"""`georeason serve` under abuse: size limits (also while streaming), bombs, wrong types, bad forms, full queue."""

from __future__ import annotations

import asyncio
import os
import stat
import tempfile
import threading
import time

import numpy as np
import pytest
import rasterio
from fastapi.testclient import TestClient

from georeason.serve import ServeSettings, create_app
from tests._serve_helpers import HeldReasoner, live_server, png_bytes, png_header_only


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    from georeason.reasoner import GeoReasoner

    return GeoReasoner.from_pretrained(tiny_model_dir)


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    """Make tempfile.mkdtemp() use tmp_path, so the tests can see (and count) upload folders."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _client(reasoner, **settings):
    return TestClient(create_app(reasoner, ServeSettings(**settings)), raise_server_exceptions=False)


def _uploads(folder):
    return sorted(folder.glob("georeason-upload-*"))


def test_oversized_upload_is_413(reasoner, private_tmp):
    with _client(reasoner, max_upload_mb=0.01) as client:
        response = client.post("/v1/predict", files={"image": ("a.png", png_bytes(200, 200))},
                               data={"question": "q"})
        assert response.status_code == 413
        assert "server limit of 0.01 MB" in response.json()["detail"] and "--max-upload-mb" in response.json()["detail"]
    assert _uploads(private_tmp) == []


HEAD = (b"--XyZ\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\nq\r\n"
        b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n\x89PNG\r\n\x1a\n")


def _asgi_post(app, receive, close: bool = True) -> tuple[int, bytes, dict[bytes, bytes]]:
    """POST /v1/predict straight through the ASGI interface, with a chunked body from `receive`."""
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "http_version": "1.1", "method": "POST", "path": "/v1/predict",
             "raw_path": b"/v1/predict", "root_path": "", "scheme": "http", "query_string": b"",
             "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1234),
             "headers": [(b"content-type", b"multipart/form-data; boundary=XyZ"), (b"host", b"x")]}
    asyncio.run(app(scope, receive, send))
    if close:
        app.state.worker.close()
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), dict(sent[0]["headers"])


def test_upload_limit_is_enforced_while_streaming(reasoner, private_tmp):
    """A chunked body without Content-Length is refused after ~limit bytes; the rest is never read."""
    chunks = [HEAD] + [b"\0" * 65536] * 200  # 13 MB offered
    consumed = 0

    async def receive():
        nonlocal consumed
        consumed += 1
        return {"type": "http.request", "body": chunks[consumed - 1], "more_body": consumed < len(chunks)}

    status, body, _ = _asgi_post(create_app(reasoner, ServeSettings(max_upload_mb=0.1)), receive)
    assert status == 413 and b"larger than the server limit of 0.1 MB" in body
    assert consumed <= 4  # 0.1 MB + 64 kB of overhead = 3 chunks of 64 kB, then stop
    assert _uploads(private_tmp) == []


def test_real_http_chunked_oversized_upload_gets_413_and_the_server_carries_on(reasoner, private_tmp):
    import httpx

    def body():
        yield HEAD
        for _ in range(80):  # 5 MB against a 0.1 MB limit, without Content-Length
            yield b"\0" * 65536

    with live_server(create_app(reasoner, ServeSettings(max_upload_mb=0.1))) as url:
        response = httpx.post(url + "/v1/predict", content=body(), timeout=30,
                              headers={"content-type": "multipart/form-data; boundary=XyZ"})
        assert response.status_code == 413 and "larger than the server limit of 0.1 MB" in response.json()["detail"]
        ok = httpx.post(url + "/v1/predict", files={"image": ("a.png", png_bytes())}, data={"question": "q"},
                        timeout=60)
        assert ok.status_code == 200 and ok.json()["image"] == {"width": 48, "height": 32}
    assert _uploads(private_tmp) == []


def test_a_stalled_upload_times_out_with_408(reasoner, private_tmp):
    calls = 0

    async def receive():
        nonlocal calls
        calls += 1
        if calls == 1:
            return {"type": "http.request", "body": HEAD, "more_body": True}
        await asyncio.sleep(3600)  # the client stops sending

    started = time.monotonic()
    status, body, _ = _asgi_post(create_app(reasoner, ServeSettings(upload_timeout=0.3)), receive)
    assert status == 408 and b"did not arrive within 0.3 s (--upload-timeout)" in body
    assert time.monotonic() - started < 10
    assert _uploads(private_tmp) == []


def test_declared_content_length_over_limit_is_refused_before_reading(reasoner):
    with _client(reasoner, max_upload_mb=1) as client:
        response = client.post("/v1/predict", content=b"x",
                               headers={"content-type": "multipart/form-data; boundary=b", "content-length": "9000000"})
        assert response.status_code == 413 and "request body (9 MB)" in response.json()["detail"]


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_pixel_limit_refuses_bombs_from_the_header(reasoner, tmp_path):
    with _client(reasoner, max_pixels=1_000_000) as client:
        response = client.post("/v1/predict", files={"image": ("a.png", png_header_only(2000, 1000))},
                               data={"question": "q"})
        assert response.status_code == 413
        assert response.json()["detail"] == ("image: 2000 x 1000 = 2000000 pixels is above the server limit of "
                                             "1000000 pixels (--max-pixels; a decompression-bomb guard)")
        # PIL's own bomb ceiling: refused before our check, still 413.
        huge = client.post("/v1/predict", files={"image": ("a.png", png_header_only(100_000, 100_000))},
                           data={"question": "q"})
        assert huge.status_code == 413 and "decompression bomb" in huge.json()["detail"]
        # A sparse 40000 x 40000 GeoTIFF is a few kB on disk; rasterio reads only its header.
        path = tmp_path / "bomb.tif"
        with rasterio.open(path, "w", driver="GTiff", width=40_000, height=40_000, count=3, dtype="uint8",
                           tiled=True, sparse_ok=True, compress="deflate") as dataset:
            dataset.write(np.zeros((3, 16, 16), np.uint8), window=((0, 16), (0, 16)))
        assert path.stat().st_size < 200_000
        tif = client.post("/v1/predict", files={"image": ("b.tif", path.read_bytes())}, data={"question": "q"})
        assert tif.status_code == 413 and "40000 x 40000 = 1600000000 pixels" in tif.json()["detail"]


@pytest.mark.parametrize("content", [b"GIF89a" + b"\0" * 64, b"%PDF-1.7 hello", b"<svg xmlns='x'/>"])
def test_wrong_type_is_415_whatever_the_name(reasoner, content):
    with _client(reasoner) as client:
        response = client.post("/v1/predict", files={"image": ("photo.png", content, "image/png")},
                               data={"question": "q"})
        assert response.status_code == 415
        assert "not a PNG, JPEG or TIFF/GeoTIFF image" in response.json()["detail"]


def test_non_multipart_body_is_415(reasoner):
    with _client(reasoner) as client:
        response = client.post("/v1/predict", json={"question": "q"})
        assert response.status_code == 415 and "expected a multipart/form-data body" in response.json()["detail"]


@pytest.mark.parametrize("data, files, message", [
    ({"question": "   "}, True, "question: must not be empty"),
    ({}, True, "missing form field 'question'"),
    ({}, False, "missing form field 'image'"),
    ({"question": "q", "answer": "maybe"}, True, "answer: expected true or false, got 'maybe'"),
    ({"question": "q", "colour": "red"}, True, "unknown form field 'colour'"),
    ({"question": "x" * 1001}, True, "question: 1001 characters is above the limit of 1000 characters"),
])
def test_bad_fields_are_422_with_a_message(reasoner, data, files, message):
    with _client(reasoner) as client:
        # (None, text) parts keep the body multipart when no file is sent
        parts = {"image": ("a.png", png_bytes())} if files else {"question": (None, "q")}
        response = client.post("/v1/predict", data=data, files=parts)
        assert response.status_code == 422
        assert message in response.json()["detail"]


def test_model_token_limit_is_422_naming_the_limit(reasoner):
    limit = reasoner.info()["max_question_tokens"]
    with _client(reasoner, max_question_chars=5000) as client:
        response = client.post("/v1/predict", files={"image": ("a.png", png_bytes())},
                               data={"question": "w" * (limit + 10)})
        assert response.status_code == 422 and f"limit of {limit} tokens" in response.json()["detail"]


def test_empty_and_corrupt_images_are_422(reasoner):
    with _client(reasoner) as client:
        empty = client.post("/v1/predict", files={"image": ("a.png", b"")}, data={"question": "q"})
        assert empty.status_code == 422 and "empty (0 bytes)" in empty.json()["detail"]
        truncated = png_bytes(64, 64)[:200]
        response = client.post("/v1/predict", files={"image": ("a.png", truncated)}, data={"question": "q"})
        assert response.status_code == 422
        assert "uploaded image" in response.json()["detail"] and "/tmp" not in response.json()["detail"]


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"garbage", "multipart/form-data; boundary=xyz", 400, "malformed multipart body"),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"question\"\r\n\r\nq", "multipart/form-data; boundary=xyz",
     400, "ended before the closing boundary"),
    (b"--xyz\r\nContent-Type: text/plain\r\n\r\nq\r\n--xyz--\r\n", "multipart/form-data; boundary=xyz", 400,
     "no Content-Disposition form-data name"),
    (b"", "multipart/form-data", 400, "has no boundary"),
])
def test_malformed_multipart_is_400(reasoner, body, content_type, status, message):
    with _client(reasoner) as client:
        response = client.post("/v1/predict", content=body, headers={"content-type": content_type})
        assert response.status_code == status and message in response.json()["detail"]


def test_full_queue_is_503_with_retry_after_and_uploads_are_private(reasoner, private_tmp):
    held = HeldReasoner(reasoner)
    results: dict[str, int] = {}
    with _client(held, queue_size=1) as client:

        def post(name: str) -> None:
            response = client.post("/v1/predict", files={"image": ("x.png", png_bytes())}, data={"question": name})
            results[name] = response.status_code

        running = threading.Thread(target=post, args=("first",))
        running.start()
        assert held.entered.wait(10)
        folders = _uploads(private_tmp)  # the running request's upload, under a server-chosen name
        assert len(folders) == 1 and stat.S_IMODE(os.stat(folders[0]).st_mode) == 0o700
        assert [p.name for p in folders[0].iterdir()] == ["upload.png"]
        waiting = threading.Thread(target=post, args=("second",))
        waiting.start()
        deadline = time.monotonic() + 10
        while client.get("/v1/health").json()["queue"]["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        refused = client.post("/v1/predict", files={"image": ("x.png", png_bytes())}, data={"question": "third"})
        assert refused.status_code == 503
        assert int(refused.headers["retry-after"]) >= 1
        assert "the inference queue is full (1 requests waiting)" in refused.json()["detail"]
        held.release.set()
        running.join(30)
        waiting.join(30)
        assert results == {"first": 200, "second": 200}
        queue = client.get("/v1/health").json()["queue"]
        assert (queue["completed"], queue["refused"], queue["waiting"]) == (2, 1, 0)
    assert _uploads(private_tmp) == []  # every upload folder is gone after its request


def test_full_queue_refuses_before_reading_the_body(reasoner, private_tmp):
    app = create_app(reasoner, ServeSettings(queue_size=1))
    gate = threading.Event()
    blockers = [app.state.worker.submit(gate.wait, 30)]  # running
    deadline = time.monotonic() + 10
    while not app.state.worker.stats().busy and time.monotonic() < deadline:
        time.sleep(0.01)
    blockers.append(app.state.worker.submit(gate.wait, 30))  # waiting: the queue is now full
    consumed = 0

    async def receive():
        nonlocal consumed
        consumed += 1
        return {"type": "http.request", "body": HEAD, "more_body": False}

    try:
        status, body, headers = _asgi_post(app, receive, close=False)
        assert status == 503 and consumed == 0 and b"the inference queue is full" in body
        assert int(headers[b"retry-after"]) >= 1
        assert app.state.worker.stats().refused == 1
    finally:
        gate.set()
        assert [b.result(10) for b in blockers] == [True, True]
        app.state.worker.close()
    assert _uploads(private_tmp) == []


def test_internal_errors_are_500_without_a_traceback(reasoner):
    class Broken:
        def info(self):
            return reasoner.info()

        def predict(self, *args, **kwargs):
            raise RuntimeError("secret internal detail")

    with _client(Broken()) as client:
        response = client.post("/v1/predict", files={"image": ("a.png", png_bytes())}, data={"question": "q"})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error while processing the image; the server log has "
                                             "the details"}
        assert client.get("/v1/health").json()["queue"]["failed"] == 1
