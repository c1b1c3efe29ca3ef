"""The QGIS plugin's QGIS-free parts, in the project's venv: messages, the multipart body (through the real
service), the pixel window arithmetic (against rasterio), and the installable zip.
"""

from __future__ import annotations

import configparser
import itertools
import math
import time
import zipfile

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from fastapi.testclient import TestClient

from georeason.serve import ServeSettings, create_app
from tests._qgis_helpers import PLUGIN, REPO, load_module, plugin_module
from tests._serve_helpers import SAMPLES

messages = plugin_module("messages")
multipart = plugin_module("multipart")
window = plugin_module("window")
package = load_module(REPO / "tools" / "package_qgis_plugin.py")


# -- messages ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "body", "retry_after", "expected"), [
    (413, b'{"detail": "the uploaded image is larger than the server limit of 50 MB (--max-upload-mb)"}', None,
     "The georeason service refused the image as too large: the uploaded image is larger than the server limit of "
     "50 MB (--max-upload-mb). Choose a smaller area (a map extent or a polygon), fewer bands, or start the "
     "service with a larger --max-upload-mb / --max-pixels."),
    (422, b'{"detail": "bands: expected 1 or 3 comma-separated band numbers"}', None,
     "The georeason service could not use the request: bands: expected 1 or 3 comma-separated band numbers."),
    (503, b'{"detail": "the server is busy: the inference queue is full (8 requests waiting); retry in 7 s"}', "7",
     "The georeason service cannot take the job now (the server is busy: the inference queue is full (8 requests "
     "waiting); retry in 7 s). Try again in 7 s; a batch run is best started when the service has nothing else "
     "queued."),
    (503, b"Service Unavailable", None,
     "The georeason service cannot take the job now (Service Unavailable). Try again in a moment; a batch run is "
     "best started when the service has nothing else queued."),
    (500, b'{"detail": "internal error while processing the image; the server log has the details"}', None,
     "The georeason service failed while processing the image (HTTP 500: internal error while processing the "
     "image; the server log has the details). Its log has the details."),
    (404, b"", None, "The georeason service at http://h:1 does not know this request (no message). Is it a "
                     "georeason version with the /v1/jobs API (pip install -U georeason)?"),
])
def test_service_answers_become_one_readable_sentence(status, body, retry_after, expected):
    error = messages.for_status(status, messages.detail_of(body), retry_after, "http://h:1")
    assert str(error) == expected and error.status == status
    assert error.retry_after == (int(retry_after) if retry_after else None)


def test_unreachable_names_the_url_and_how_to_start_the_service():
    text = str(messages.unreachable("http://127.0.0.1:8000", "connection refused"))
    assert text.startswith("Cannot reach the georeason service at http://127.0.0.1:8000 (connection refused). "
                           "Start it with `georeason serve --model DIR`")
    assert messages.retry_seconds("Wed, 21 Oct 2015 07:28:00 GMT") is None and messages.retry_seconds(" 12 ") == 12


# -- the multipart body, parsed by the service itself -------------------------------------------------
@pytest.fixture(scope="module")
def client(tiny_model_dir):
    from georeason.reasoner import GeoReasoner

    with TestClient(create_app(GeoReasoner.from_pretrained(tiny_model_dir), ServeSettings())) as test_client:
        yield test_client


def test_the_plugins_form_body_is_what_the_service_reads(client):
    question = "Où est le lac ? \"quoted\" ; naïve – 湖"
    image = (SAMPLES / "rmnp-west.tif").read_bytes()
    body, content_type = multipart.form_body({"question": question, "answer": "false", "source": "C:\\maps\\x.tif",
                                              "tile_size": "512"}, "image", "../area name.tif", image)
    assert content_type.startswith("multipart/form-data; boundary=georeason-")
    started = client.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    assert started.status_code == 202, started.text
    deadline = time.monotonic() + 60
    while (state := client.get(f"/v1/jobs/{started.json()['id']}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert state["status"] == "done" and state["result"]["question"] == question.strip()
    assert state["result"]["answer"] is None and state["tiles_total"] == 1
    assert state["result"]["image"] == {"width": 320, "height": 280}  # the file arrived byte for byte
    mask_tif = client.get(state["result"]["downloads"]["mask_tif"]).content
    with rasterio.MemoryFile(mask_tif) as memory, memory.open() as tif:
        assert tif.tags()["georeason_source"] == "C:\\maps\\x.tif"


def test_form_body_refuses_field_names_that_would_break_the_form():
    with pytest.raises(ValueError, match="must not contain quotes or line breaks"):
        multipart.form_body({'a"b': "x"}, "image", "a.tif", b"data")


# -- the pixel window -----------------------------------------------------------------------------------
NORTH_UP = (-106.0566, 0.0015, 0.0, 40.6197, 0.0, -0.0015)  # GDAL order: x0, a, b, y0, d, e


def _corners(geotransform, left, top, right, bottom):
    to_map = Affine.from_gdal(*geotransform)
    return [to_map @ (c, r) for c, r in itertools.product((left, right), (top, bottom))]


@pytest.mark.parametrize(("cols", "rows", "expected"), [
    ((100, 300), (50, 250), (100, 50, 200, 200)),  # on pixel edges: exactly these pixels
    ((100.3, 299.6), (50.2, 249.9), (100, 50, 200, 200)),  # inside edges: the pixels that cover them
    ((99.999_999_9, 300.000_000_1), (50, 250), (100, 50, 200, 200)),  # float noise is not a pixel more
    ((-40, 30), (-5, 10), (0, 0, 30, 10)),  # clipped to the raster
    ((470, 600), (360, 500), (470, 360, 15, 13)),
])
def test_pixel_window_covers_the_area_with_whole_pixels(cols, rows, expected):
    points = _corners(NORTH_UP, cols[0], rows[0], cols[1], rows[1])
    assert window.pixel_window(NORTH_UP, 485, 373, points) == expected


def test_pixel_window_outside_the_raster_is_a_readable_error():
    with pytest.raises(window.AreaError, match="the area does not overlap the layer"):
        window.pixel_window(NORTH_UP, 485, 373, _corners(NORTH_UP, 500, 0, 600, 10))
    with pytest.raises(window.AreaError, match="degenerate"):
        window.pixel_window((0, 0, 0, 0, 0, 0), 10, 10, [(0, 0)])


def test_window_geotransform_matches_rasterio_and_inverse_undoes_the_transform():
    for geotransform in (NORTH_UP, (500000.0, 10.0, 2.5, 4200000.0, 1.5, -10.0)):  # north-up and rotated
        transform = Affine.from_gdal(*geotransform)
        shifted = window.window_geotransform(geotransform, 37, 12)
        expected = transform @ Affine.translation(37, 12)  # pixel (37, 12) becomes the origin
        assert np.allclose(shifted, expected.to_gdal(), rtol=0, atol=1e-9)
        inverse = window.invert(geotransform)
        for col, row in [(0.0, 0.0), (13.5, 7.25), (400.0, 300.0)]:
            x, y = transform @ (col, row)
            assert math.isclose(inverse[0] + inverse[1] * x + inverse[2] * y, col, abs_tol=1e-6)
            assert math.isclose(inverse[3] + inverse[4] * x + inverse[5] * y, row, abs_tol=1e-6)
    rotated = (500000.0, 10.0, 2.5, 4200000.0, 1.5, -10.0)
    points = _corners(rotated, 10, 20, 30, 60)  # a rotated window's corners are still whole pixels of it
    assert window.pixel_window(rotated, 100, 100, points) == (10, 20, 20, 40)


# -- the installable zip --------------------------------------------------------------------------------
def test_make_target_zip_holds_the_plugin_folder_and_its_metadata(tmp_path):
    (PLUGIN / "__pycache__").mkdir(exist_ok=True)  # a cache from an earlier import must not be packaged
    target = package.build(tmp_path)
    assert target.name == f"georeason-qgis-{package.project_version()}.zip"
    with zipfile.ZipFile(target) as archive:
        names = archive.namelist()
        metadata = configparser.ConfigParser()
        metadata.read_string(archive.read("georeason/metadata.txt").decode("utf-8"))
    assert all(name.startswith("georeason/") for name in names)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    expected = {f"georeason/{p.relative_to(PLUGIN).as_posix()}" for p in package.plugin_files()} | {"georeason/LICENSE"}
    assert set(names) == expected and "georeason/__init__.py" in names and "georeason/icon.svg" in names
    general = metadata["general"]
    assert general["version"] == package.project_version() and general["hasProcessingProvider"] == "yes"
    assert general["qgisMinimumVersion"] == "3.22" and (PLUGIN / general["icon"]).is_file()
    assert "classFactory" in (PLUGIN / "__init__.py").read_text()
    assert list(tmp_path.glob("*.partial")) == []
