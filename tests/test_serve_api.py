"""REST API of `georeason serve` with the real GeoReasoner (tiny preset): endpoints, results, schema."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pyogrio
import pytest
import rasterio
from fastapi.testclient import TestClient
from PIL import Image

from georeason.serve import ServeSettings, create_app
from tests._serve_helpers import SAMPLES, png_bytes


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    from georeason.reasoner import GeoReasoner

    return GeoReasoner.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture()
def client(reasoner):
    with TestClient(create_app(reasoner, ServeSettings())) as test_client:
        yield test_client


def _decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_health_and_model(client, reasoner):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok"
    assert health["queue"] == {"waiting": 0, "capacity": 8, "busy": False, "completed": 0, "failed": 0, "refused": 0}
    model = client.get("/v1/model").json()
    info = reasoner.info()
    assert (model["preset"], model["parameters"], model["device"]) == ("tiny", info["parameters"], "cpu")
    assert model["image_size"] == 256 and model["max_question_tokens"] == info["max_question_tokens"]
    assert model["num_beams"] == 1
    assert model["limits"]["max_upload_bytes"] == 50_000_000 and model["limits"]["max_pixels"] == 25_000_000
    assert "folder" not in model  # no server paths in answers


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_predict_png_round_trips_every_download(client):
    response = client.post("/v1/predict", files={"image": ("../../etc/passwd", png_bytes(48, 32))},
                           data={"question": "  Where are the bright pixels?  "})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["question"] == "Where are the bright pixels?"
    assert isinstance(body["answer"], str)
    assert body["image"] == {"width": 48, "height": 32}
    assert body["georeferenced"] is False and body["crs"] is None and body["geojson"] is None
    mask = _decode_png(base64.b64decode(body["mask_png_base64"]))
    assert mask.shape == (32, 48) and set(np.unique(mask)) <= {0, 255}
    assert body["target_pixels"] == int((mask == 255).sum()) and body["empty"] == (body["target_pixels"] == 0)
    assert body["timings"]["total"] >= body["timings"]["inference"] > 0
    assert body["timings"]["model"] and all(v >= 0 for v in body["timings"]["model"].values())
    assert any("pixel coordinates" in warning for warning in body["warnings"])
    downloads = body["downloads"]
    assert downloads["vectors_geojson"] is None and downloads["vectors_gpkg"].endswith("/vectors.gpkg")

    served = client.get(downloads["mask_png"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/png"
    assert np.array_equal(_decode_png(served.content), mask)
    assert "attachment" in served.headers["content-disposition"]
    # As `georeason predict` (one writer): a GeoTIFF for raster inputs only, none for a plain PNG.
    assert downloads["mask_tif"] is None
    assert client.get(downloads["mask_png"].replace("mask.png", "mask.tif")).status_code == 404
    assert _decode_png(client.get(downloads["image_png"]).content).shape == (32, 48, 3)
    overlay = _decode_png(client.get(downloads["overlay_png"]).content)
    assert overlay.shape[1] == 48 and overlay.shape[0] > 32  # caption strip below the image
    gpkg = client.get(downloads["vectors_gpkg"])
    assert gpkg.status_code == 200 and gpkg.content[:16] == b"SQLite format 3\x00"


def test_predict_geotiff_gives_wgs84_geojson(client, tmp_path):
    data = (SAMPLES / "rmnp-west.tif").read_bytes()
    body = client.post("/v1/predict", files={"image": ("scene.tif", data)},
                       data={"question": "Where is the lake?", "answer": "false"}).json()
    assert body["answer"] is None
    assert body["georeferenced"] is True and body["crs"] == "EPSG:4326"
    with rasterio.MemoryFile(data) as memory, memory.open() as source:
        bounds = source.bounds
    geojson = body["geojson"]
    assert geojson["type"] == "FeatureCollection"
    if body["empty"]:
        assert geojson["features"] == []
    else:
        coords = np.concatenate([np.asarray(ring) for feature in geojson["features"]
                                 for ring in feature["geometry"]["coordinates"]])
        assert bounds.left - 1e-9 <= coords[:, 0].min() and coords[:, 0].max() <= bounds.right + 1e-9
        assert bounds.bottom - 1e-9 <= coords[:, 1].min() and coords[:, 1].max() <= bounds.top + 1e-9
        assert geojson["features"][0]["properties"]["source"] == "upload.tif"  # no server path leaks
    served = client.get(body["downloads"]["vectors_geojson"])
    assert served.headers["content-type"] == "application/geo+json" and json.loads(served.content) == geojson
    (tmp_path / "v.gpkg").write_bytes(client.get(body["downloads"]["vectors_gpkg"]).content)
    assert pyogrio.read_info(tmp_path / "v.gpkg")["crs"] == "EPSG:4326"
    with rasterio.MemoryFile(client.get(body["downloads"]["mask_tif"]).content) as memory, memory.open() as tif:
        assert tif.crs.to_epsg() == 4326 and tif.bounds == bounds


def test_bands_choose_what_the_model_sees(client):
    data = (SAMPLES / "rmnp-west.tif").read_bytes()
    swapped = client.post("/v1/predict", files={"image": ("s.tif", data)},
                          data={"question": "lake?", "bands": "3,2,1", "vectors": "false"}).json()
    image = _decode_png(client.get(swapped["downloads"]["image_png"]).content)
    with rasterio.MemoryFile(data) as memory, memory.open() as source:
        red, blue = source.read(1), source.read(3)
        valid = np.all(source.read_masks() != 0, axis=0)  # nodata pixels are shown black
    assert np.array_equal(image[..., 0][valid], blue[valid]) and np.array_equal(image[..., 2][valid], red[valid])
    missing = client.post("/v1/predict", files={"image": ("s.tif", data)}, data={"question": "q", "bands": "7"})
    assert missing.status_code == 422 and "band 7 does not exist" in missing.json()["detail"]
    assert "/tmp" not in missing.json()["detail"] and "uploaded image" in missing.json()["detail"]
    bad = client.post("/v1/predict", files={"image": ("s.tif", data)}, data={"question": "q", "bands": "1,2"})
    assert bad.status_code == 422 and "bands: expected 1 or 3" in bad.json()["detail"]


def test_jpeg_with_exif_rotation_gives_mask_in_display_orientation(client):
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    Image.fromarray(np.full((30, 50, 3), 120, np.uint8)).save(buffer, format="JPEG", exif=exif)
    body = client.post("/v1/predict", files={"image": ("p.jpg", buffer.getvalue())},
                       data={"question": "q", "answer": "0"}).json()
    assert body["image"] == {"width": 30, "height": 50}
    assert _decode_png(base64.b64decode(body["mask_png_base64"])).shape == (50, 30)


def test_vectors_false_writes_no_vectors(client):
    body = client.post("/v1/predict", files={"image": ("a.png", png_bytes())},
                       data={"question": "roads?", "vectors": "false"}).json()
    assert body["downloads"]["vectors_gpkg"] is None and body["downloads"]["vectors_geojson"] is None
    assert client.get(f"/v1/results/{body['id']}/vectors.gpkg").status_code == 404


def test_results_unknown_id_name_and_expiry(reasoner):
    with TestClient(create_app(reasoner, ServeSettings(result_ttl=2))) as client:
        body = client.post("/v1/predict", files={"image": ("a.png", png_bytes())}, data={"question": "q"}).json()
        url = body["downloads"]["mask_png"]
        assert client.get(url).status_code == 200
        missing = client.get("/v1/results/AAAAAAAAAAAAAAAAAAAAAA/mask.png")
        assert missing.status_code == 404 and "unknown or expired" in missing.json()["detail"]
        wrong = client.get(f"/v1/results/{body['id']}/secrets.txt")
        assert wrong.status_code == 404 and "expected one of mask.png" in wrong.json()["detail"]
        assert client.get("/v1/results/..%2F..%2Fetc/mask.png").status_code == 404
        import time

        time.sleep(2.2)
        assert client.get(url).status_code == 404
        assert client.get("/v1/health").json()["results_stored"] == 0


def test_samples_are_listed_served_and_small(client):
    samples = client.get("/v1/samples").json()
    assert [s["name"] for s in samples] == ["rmnp-lake.png", "rmnp-west.tif"]
    for sample in samples:
        data = client.get(sample["url"]).content
        assert data == (SAMPLES / sample["name"]).read_bytes() and len(data) < 300_000
        assert sample["question"].endswith("?")
    assert client.get("/v1/samples/..%2Fapp.py").status_code == 404


def test_page_is_offline_and_served_with_csp(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "/static/style.css" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for path in ("/", "/static/app.js", "/static/style.css"):
        text = client.get(path).text
        assert client.get(path).status_code == 200
        assert "http://" not in text and "https://" not in text and "//cdn" not in text  # no external resources


def test_openapi_documents_every_field(client):
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert set(form["properties"]) == {"image", "question", "answer", "vectors", "bands"}
    assert all(prop.get("description") for prop in form["properties"].values())
    responses = schema["paths"]["/v1/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(responses)
    models = ["PredictResponse", "Timings", "Downloads", "ImageSize", "HealthResponse", "QueueStatus",
              "ModelResponse", "Limits", "SampleInfo", "ErrorResponse"]
    for name in models:
        for field, prop in schema["components"]["schemas"][name]["properties"].items():
            assert prop.get("description"), f"{name}.{field} has no description"
    for path in ("/v1/health", "/v1/model", "/v1/results/{result_id}/{name}", "/v1/samples"):
        assert path in schema["paths"]
