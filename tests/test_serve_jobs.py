"""Asynchronous jobs of `georeason serve` (POST /v1/jobs, GET/DELETE /v1/jobs/{id}) with the tiny model.

Progress per tile, cancellation of queued and running jobs (nothing left behind), tiled results
georeferenced like the upload, the client's source label, and the 4xx answers.
"""

from __future__ import annotations

import base64
import io
import tempfile
import threading
import time
from typing import Any

import numpy as np
import pyogrio
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image

from georeason.geo import plan_tiles
from georeason.serve import ServeSettings, create_app
from tests._serve_helpers import SAMPLES, HeldReasoner, png_bytes

SCENE = SAMPLES / "rmnp-west.tif"  # 320 x 280, EPSG:4326, 3 x uint8, nodata 255


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    from georeason.reasoner import GeoReasoner

    return GeoReasoner.from_pretrained(tiny_model_dir)


@pytest.fixture()
def private_tmp(tmp_path, monkeypatch):
    """tempfile.mkdtemp() under tmp_path, so the tests can see upload and result folders."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


class TileGate:
    """Wraps a GeoReasoner; predict_tiled stops after its first tile until `release` is set."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.first_tile = threading.Event()
        self.release = threading.Event()
        self.tiles_seen = 0

    def info(self) -> dict[str, Any]:
        return self.inner.info()

    def predict_tiled(self, *args: Any, progress: Any = None, **kwargs: Any) -> Any:
        def gated(done: int, total: int) -> None:
            self.tiles_seen = done
            progress(done, total)  # raises once the job is cancelled
            if done == 1:
                self.first_tile.set()
                assert self.release.wait(30), "TileGate was never released"

        return self.inner.predict_tiled(*args, progress=gated, **kwargs)


def _client(reasoner: Any, **settings: Any) -> TestClient:
    return TestClient(create_app(reasoner, ServeSettings(**settings)), raise_server_exceptions=False)


def _start(client: TestClient, data: bytes = b"", name: str = "scene.tif", **fields: str):
    return client.post("/v1/jobs", files={"image": (name, data or SCENE.read_bytes())},
                       data={"question": "Where is the lake?", **fields})


def _png(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))))


def _wait(client: TestClient, job_id: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish within {timeout} s")


def test_whole_image_job_gives_the_predict_result_and_records_the_source(reasoner, tmp_path):
    with _client(reasoner) as client:
        started = _start(client, source="rmnp west (layer)", answer="false")
        assert started.status_code == 202, started.text
        job = started.json()
        assert started.headers["location"] == f"/v1/jobs/{job['id']}" == job["links"]["status"]
        assert job["status"] in ("queued", "running", "done") and (job["result"] is None or job["status"] == "done")
        done = _wait(client, job["id"])
        assert (done["status"], done["progress"], done["error"]) == ("done", 1.0, None)
        assert done["tiles_total"] is None  # whole-image mode
        result = done["result"]
        assert result["id"] == job["id"] and result["answer"] is None and result["crs"] == "EPSG:4326"
        direct = client.post("/v1/predict", files={"image": ("s.tif", SCENE.read_bytes())},
                             data={"question": "Where is the lake?", "answer": "false"}).json()
        assert result["mask_png_base64"] == direct["mask_png_base64"]  # the same model call as /v1/predict
        (tmp_path / "v.gpkg").write_bytes(client.get(result["downloads"]["vectors_gpkg"]).content)
        table = pyogrio.read_dataframe(tmp_path / "v.gpkg") if result["target_pixels"] else None
        if table is not None:
            assert set(table["source"]) == {"rmnp west (layer)"}
        with rasterio.MemoryFile(client.get(result["downloads"]["mask_tif"]).content) as memory, memory.open() as tif:
            assert tif.tags()["georeason_source"] == "rmnp west (layer)"


def test_tiled_job_reports_every_tile_and_keeps_the_georeferencing(reasoner, tmp_path):
    with _client(reasoner) as client:
        job = _start(client, tile_size="128", overlap="16", answer="false", vectors="true").json()
        done = _wait(client, job["id"])
        assert done["status"] == "done", done
        total = len(plan_tiles(280, 320, 128, 16))
        assert (done["tiles_done"], done["tiles_total"]) == (total, total) and total == 9
        mask_bytes = client.get(done["result"]["downloads"]["mask_tif"]).content
    with rasterio.open(SCENE) as source, rasterio.MemoryFile(mask_bytes) as memory, memory.open() as mask:
        assert (mask.crs, mask.transform, mask.shape) == (source.crs, source.transform, source.shape)
        assert mask.nodata == 255 and set(np.unique(mask.read(1))) <= {0, 1, 255}
        invalid = ~np.all(source.read_masks() != 0, axis=0)
        assert invalid.any() and np.all(mask.read(1)[invalid] == 255)  # the scene's nodata stays nodata
        tags = mask.tags()
    assert tags["georeason_source"] == "upload.tif" and tags["georeason_tile_size"] == "128"


def test_one_tile_covering_the_scene_reproduces_whole_image_mode(reasoner):
    with _client(reasoner) as client:
        tiled = _wait(client, _start(client, tile_size="512", answer="false").json()["id"])
        whole = _wait(client, _start(client, answer="false").json()["id"])
    assert tiled["tiles_total"] == 1
    tiled_mask, whole_mask = (_png(job["result"]["mask_png_base64"]) for job in (tiled, whole))
    assert np.array_equal(tiled_mask, whole_mask) and tiled_mask.shape == (280, 320)


def test_cancelling_a_running_tiled_job_stops_it_between_tiles_and_leaves_nothing(reasoner, private_tmp):
    gate = TileGate(reasoner)
    with _client(gate) as client:
        job = _start(client, tile_size="64", overlap="0", answer="false").json()
        assert gate.first_tile.wait(30)
        running = client.get(f"/v1/jobs/{job['id']}").json()
        assert running["status"] == "running" and running["tiles_done"] == 1
        assert running["tiles_total"] == len(plan_tiles(280, 320, 64, 0))
        cancelling = client.delete(f"/v1/jobs/{job['id']}")
        assert cancelling.status_code == 200 and cancelling.json()["status"] == "cancelling"
        gate.release.set()
        final = _wait(client, job["id"])
        assert final["status"] == "cancelled" and final["result"] is None
        assert gate.tiles_seen == 2  # the tile after the cancel raised; no further tile ran
        assert client.get(f"/v1/results/{job['id']}/mask.tif").status_code == 404
        again = client.delete(f"/v1/jobs/{job['id']}")
        assert again.status_code == 200 and again.json()["status"] == "cancelled"  # idempotent
        assert client.get("/v1/health").json()["queue"]["busy"] is False
        assert list(private_tmp.glob("georeason-upload-*")) == []
        assert list(private_tmp.glob("georeason-results-*/*")) == []  # no result folder, not even a partial mask


def test_cancelling_a_queued_job_drops_it_and_a_running_whole_job_stops_before_its_outputs(reasoner, private_tmp):
    held = HeldReasoner(reasoner)
    calls = []
    inner_predict = held.predict
    held.predict = lambda *a, **k: calls.append(k) or inner_predict(*a, **k)
    with _client(held, queue_size=2) as client:
        first = _start(client, png_bytes(), name="a.png").json()
        assert held.entered.wait(10)
        second = _start(client, png_bytes(), name="b.png").json()
        assert client.get(f"/v1/jobs/{second['id']}").json()["status"] == "queued"
        dropped = client.delete(f"/v1/jobs/{second['id']}").json()
        assert dropped["status"] == "cancelled"
        assert len(list(private_tmp.glob("georeason-upload-*"))) == 1  # only the running job's upload is left
        assert client.delete(f"/v1/jobs/{first['id']}").json()["status"] == "cancelling"
        held.release.set()
        assert _wait(client, first["id"])["status"] == "cancelled"
        assert len(calls) == 1  # the queued job never reached the model
        assert client.get(f"/v1/results/{first['id']}/mask.png").status_code == 404
        third = _wait(client, _start(client, png_bytes(), name="c.png").json()["id"])
        assert third["status"] == "done"
        assert client.delete(f"/v1/jobs/{third['id']}").status_code == 409  # finished: nothing to cancel
    assert list(private_tmp.glob("georeason-upload-*")) == []


def test_errors_found_while_running_fail_the_job_with_a_readable_message(reasoner):
    with _client(reasoner) as client:
        failed = _wait(client, _start(client, bands="7").json()["id"])
    assert failed["status"] == "failed" and failed["error"]["status"] == 422
    assert "band 7 does not exist" in failed["error"]["detail"] and "/tmp" not in failed["error"]["detail"]


@pytest.mark.parametrize(("name", "data", "fields", "message"), [
    ("a.png", None, {"tile_size": "128"}, "tiled inference needs a TIFF/GeoTIFF upload"),
    ("s.tif", SCENE, {"tile_size": "8"}, "tile: expected a tile size of at least 16 px, got 8"),
    ("s.tif", SCENE, {"tile_size": "64", "overlap": "40"}, "overlap: expected 0 <= overlap <= tile/2 (32), got 40"),
    ("s.tif", SCENE, {"tile_size": "big"}, "tile_size: expected a whole number of pixels, got 'big'"),
    ("s.tif", SCENE, {"tile_size": "9000"}, "tile_size: expected at most 8192 pixels, got 9000"),
    ("s.tif", SCENE, {"overlap": "16"}, "overlap: only used with tile_size"),
    ("s.tif", SCENE, {"source": "x" * 1025}, "source: expected a label of at most 1024 printable characters"),
    ("s.tif", SCENE, {"source": "a\nb"}, "source: expected a label of at most 1024 printable characters"),
    ("s.tif", SCENE, {"question": " "}, "question: must not be empty"),
])
def test_bad_job_fields_are_422_before_anything_runs(reasoner, name, data, fields, message):
    with _client(reasoner) as client:
        content = png_bytes() if data is None else data.read_bytes()
        response = client.post("/v1/jobs", files={"image": (name, content)}, data={"question": "q", **fields})
        assert response.status_code == 422 and message in response.json()["detail"], response.text
        assert client.get("/v1/health").json()["queue"]["completed"] == 0


def test_unknown_job_is_404_and_a_full_queue_is_503_with_retry_after(reasoner):
    held = HeldReasoner(reasoner)
    with _client(held, queue_size=1) as client:
        assert client.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
        assert "unknown or expired" in client.delete("/v1/jobs/nope").json()["detail"]
        running = _start(client, png_bytes(), name="a.png").json()
        assert held.entered.wait(10)
        waiting = _start(client, png_bytes(), name="b.png").json()
        refused = _start(client, png_bytes(), name="c.png")
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "the inference queue is full" in refused.json()["detail"]
        held.release.set()
        assert [_wait(client, j["id"])["status"] for j in (running, waiting)] == ["done", "done"]


def test_openapi_documents_the_job_routes(reasoner):
    with _client(reasoner) as client:
        schema = client.get("/openapi.json").json()
    assert {"post"} <= set(schema["paths"]["/v1/jobs"])
    assert {"get", "delete"} <= set(schema["paths"]["/v1/jobs/{job_id}"])
    form = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"tile_size", "overlap", "source", "bands"} <= set(form["properties"])
    job = schema["components"]["schemas"]["JobResponse"]["properties"]
    assert all(field.get("description") for field in job.values())
