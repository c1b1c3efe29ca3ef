"""The Processing algorithm "Ask a question about a raster layer": the layer (or an extent / polygons of
it) goes to `georeason serve`, the mask and its polygons come back georeferenced like the layer.

QGIS plugin (docs/qgis.md); the service is docs/serve.md. Runs in the toolbox, the modeler and batch mode.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from qgis.core import (
    QgsCoordinateTransform,
    QgsFeature,
    QgsFeatureSink,
    QgsField,
    QgsFields,
    QgsGeometry,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingOutputString,
    QgsProcessingParameterBand,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterExtent,
    QgsProcessingParameterFeatureSink,
    QgsProcessingParameterFeatureSource,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingUtils,
    QgsProviderRegistry,
    QgsRasterFileWriter,
    QgsVectorLayer,
    QgsWkbTypes,
)
from qgis.PyQt.QtCore import QCoreApplication, QVariant

from .ask import Cancelled, ask
from .client import ServiceClient
from .cutout import area_window, open_source, write_window
from .messages import ServiceError
from .settings import service_url
from .style import StyleOnLoad, style_mask, style_polygons
from .window import AreaError

TILING_OPTIONS = ["Automatic: tiles when the area is larger than the tile size", "Whole area in one pass",
                  "Tiles"]
AUTOMATIC, WHOLE, TILES = range(3)
ATTRIBUTES = [("question", QVariant.String), ("answer", QVariant.String), ("model", QVariant.String),
              ("source", QVariant.String), ("area", QVariant.Double), ("area_unit", QVariant.String)]


def _tr(text: str) -> str:
    return QCoreApplication.translate("georeason", text)


class AskRasterAlgorithm(QgsProcessingAlgorithm):
    INPUT, BANDS, QUESTION, ANSWER = "INPUT", "BANDS", "QUESTION", "ANSWER"
    EXTENT, AREA, TILING, TILE_SIZE, OVERLAP = "EXTENT", "AREA", "TILING", "TILE_SIZE", "OVERLAP"
    SERVICE_URL, OUTPUT_MASK, OUTPUT_POLYGONS = "SERVICE_URL", "OUTPUT_MASK", "OUTPUT_POLYGONS"
    ANSWER_TEXT, JOB_ID = "ANSWER_TEXT", "JOB_ID"

    def createInstance(self):  # noqa: N802 - QGIS API names
        return AskRasterAlgorithm()

    def name(self) -> str:
        return "askraster"

    def displayName(self) -> str:  # noqa: N802
        return _tr("Ask a question about a raster layer")

    def shortHelpString(self) -> str:  # noqa: N802
        return _tr(
            "Sends the raster layer (or the part inside an extent or polygons) to a running georeason service "
            "with a question, and returns the mask of what answers it and the mask's polygons. The mask has "
            "the layer's CRS and pixel grid (1 = answer, 0 = background, 255 = nodata); the polygons carry "
            "the question, the answer, the model, the source and their area.\n\n"
            "Start the service first: georeason serve --model DIR (the URL is in Plugins > georeason > "
            "Service settings, default http://127.0.0.1:8000). Tiling predicts big areas tile by tile at full "
            "resolution; Cancel stops the job on the service too.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.addParameter(QgsProcessingParameterRasterLayer(self.INPUT, _tr("Raster layer")))
        self.addParameter(QgsProcessingParameterString(self.QUESTION, _tr("Question")))
        self.addParameter(QgsProcessingParameterBand(
            self.BANDS, _tr("Bands shown to the model as R,G,B (1 or 3; none: the layer's first three)"),
            None, self.INPUT, optional=True, allowMultiple=True))
        self.addParameter(QgsProcessingParameterBoolean(self.ANSWER, _tr("Also generate the text answer"), True))
        self.addParameter(QgsProcessingParameterExtent(
            self.EXTENT, _tr("Area: only this extent (e.g. the map canvas extent)"), optional=True))
        self.addParameter(QgsProcessingParameterFeatureSource(
            self.AREA, _tr("Area: only inside these polygons (tick 'Selected features only' for a selection)"),
            [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterEnum(self.TILING, _tr("Tiling for big layers"), TILING_OPTIONS,
                                                     defaultValue=AUTOMATIC))
        advanced = [
            QgsProcessingParameterNumber(self.TILE_SIZE, _tr("Tile size (pixels)"),
                                         QgsProcessingParameterNumber.Integer, 1024, minValue=16, maxValue=8192),
            QgsProcessingParameterNumber(self.OVERLAP, _tr("Tile overlap (pixels, at most half the tile size)"),
                                         QgsProcessingParameterNumber.Integer, 128, minValue=0, maxValue=4096),
            QgsProcessingParameterString(self.SERVICE_URL, _tr("Service URL (empty: the plugin settings)"),
                                         optional=True),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT_MASK, _tr("Mask")))
        self.addParameter(QgsProcessingParameterFeatureSink(self.OUTPUT_POLYGONS, _tr("Polygons"),
                                                            QgsProcessing.TypeVectorPolygon))
        self.addOutput(QgsProcessingOutputString(self.ANSWER_TEXT, _tr("Answer")))
        self.addOutput(QgsProcessingOutputString(self.JOB_ID, _tr("Service job id")))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        bands = self.parameterAsInts(parameters, self.BANDS, context)
        if len(bands) not in (0, 1, 3):
            return False, _tr(f"Bands: choose 1 band (gray) or 3 bands (R,G,B), not {len(bands)}.")
        if not self.parameterAsString(parameters, self.QUESTION, context).strip():
            return False, _tr("Question: type a question about the layer.")
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        if self.parameterAsInt(parameters, self.OVERLAP, context) > tile // 2:
            return False, _tr(f"Tile overlap: at most half the tile size ({tile // 2} pixels).")
        return super().checkParameterValues(parameters, context)

    def prepareAlgorithm(self, parameters, context, feedback):  # noqa: N802
        """Runs in the main thread: read what is needed of the layer here, not from the worker thread."""
        layer = self.parameterAsRasterLayer(parameters, self.INPUT, context)
        if layer is None:
            raise QgsProcessingException(_tr("Raster layer: choose a raster layer."))
        if layer.providerType() != "gdal":
            raise QgsProcessingException(_tr(
                f"Raster layer '{layer.name()}' comes from the '{layer.providerType()}' provider; georeason reads "
                "files that GDAL opens. Save it as a GeoTIFF first (right-click > Export > Save As…)."))
        self._source = layer.source()
        self._crs = layer.crs()
        path = QgsProviderRegistry.instance().decodeUri("gdal", layer.source()).get("path") or ""
        self._label = path if path and os.path.exists(path) else layer.name()
        return True

    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        try:
            return self._process(parameters, context, feedback)
        except (ServiceError, AreaError, Cancelled) as error:
            raise QgsProcessingException(str(error)) from None
        except (KeyError, TypeError) as error:  # a service answer without the fields this plugin expects
            raise QgsProcessingException(
                f"The georeason service's answer was not understood (missing or wrong {error}); is the service "
                f"a georeason version with the /v1/jobs API, like the plugin?") from None

    def _process(self, parameters, context, feedback):
        url = self.parameterAsString(parameters, self.SERVICE_URL, context).strip() or service_url()
        client = ServiceClient(url)
        model = client.model(feedback)
        limits = model.get("limits", {})
        feedback.pushInfo(f"georeason service at {url}: model {model.get('preset')} on {model.get('device')}")

        points, polygon_wkt = self._area(parameters, context)
        dataset = open_source(self._source)
        window = area_window(dataset, points)
        cols, rows = window[2], window[3]
        max_pixels = int(limits.get("max_pixels", 0)) or None
        if max_pixels is not None and cols * rows > max_pixels:
            raise ServiceError(
                f"The area is {cols} x {rows} = {cols * rows} pixels, above the service's limit of {max_pixels} "
                f"pixels. Choose a smaller extent or polygon, or start the service with a larger --max-pixels.",
                413)
        bands = self.parameterAsInts(parameters, self.BANDS, context)
        fields = {"question": self.parameterAsString(parameters, self.QUESTION, context).strip(),
                  "answer": "true" if self.parameterAsBool(parameters, self.ANSWER, context) else "false",
                  "vectors": "true", "source": self._label}
        if bands:  # the window holds just these bands, in this order
            fields["bands"] = "1" if len(bands) == 1 else "1,2,3"
        tile = self.parameterAsInt(parameters, self.TILE_SIZE, context)
        tiling = self.parameterAsEnum(parameters, self.TILING, context)
        if tiling == TILES or (tiling == AUTOMATIC and max(cols, rows) > tile):
            fields["tile_size"] = str(tile)
            fields["overlap"] = str(self.parameterAsInt(parameters, self.OVERLAP, context))
        feedback.pushInfo(f"Area: {cols} x {rows} pixels at column {window[0]}, row {window[1]} of the layer"
                          + (f"; tiles of {tile} px" if "tile_size" in fields else "; one pass"))

        folder = tempfile.mkdtemp(prefix="georeason-", dir=QgsProcessingUtils.tempFolder())
        try:
            area_path = os.path.join(folder, "area.tif")
            write_window(dataset, window, bands or None, polygon_wkt, area_path)
            dataset = None
            with open(area_path, "rb") as stream:
                image = stream.read()
            max_bytes = int(limits.get("max_upload_bytes", 0)) or None
            if max_bytes is not None and len(image) > max_bytes:
                raise ServiceError(
                    f"The area is {len(image) / 1e6:.1f} MB as a GeoTIFF, above the service's limit of "
                    f"{max_bytes / 1e6:.1f} MB. Choose a smaller extent or polygon or fewer bands, or start the "
                    f"service with a larger --max-upload-mb.", 413)
            result, files = ask(client, image, "area.tif", fields, feedback)
            if feedback.isCanceled():
                raise Cancelled("Cancelled; no output was written.")
            outputs = self._write_outputs(parameters, context, folder, files, result)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        feedback.setProgress(100)
        answer = result.get("answer")
        if answer is not None:
            feedback.pushInfo(f"Answer: {answer}")
        outputs.update({self.ANSWER_TEXT: answer or "", self.JOB_ID: result["id"]})
        return outputs

    def _area(self, parameters, context):
        """(corner points in the layer CRS or None for the whole layer, polygon WKT or None)."""
        rectangle = None
        if parameters.get(self.EXTENT) not in (None, ""):
            rectangle = self.parameterAsExtent(parameters, self.EXTENT, context, self._crs)
            if rectangle.isNull() or rectangle.isEmpty():
                rectangle = None
        source = self.parameterAsSource(parameters, self.AREA, context)
        if source is None:
            if rectangle is None:
                return None, None
            return _corners(rectangle), None
        transform = QgsCoordinateTransform(source.sourceCrs(), self._crs, context.transformContext())
        parts = []
        for feature in source.getFeatures():
            geometry = QgsGeometry(feature.geometry())
            if geometry.isEmpty():
                continue
            geometry.transform(transform)
            parts.append(geometry)
        if not parts:
            raise AreaError("the polygon area has no polygons (is 'Selected features only' ticked with nothing "
                            "selected?)")
        area = QgsGeometry.unaryUnion(parts)
        if rectangle is not None:
            area = area.intersection(QgsGeometry.fromRect(rectangle))
        if area.isEmpty():
            raise AreaError("the polygons and the extent do not overlap")
        return _corners(area.boundingBox()), area.asWkt()

    def _write_outputs(self, parameters, context, folder, files, result):
        """The mask raster and the polygon sink, written only once the job has succeeded."""
        from osgeo import gdal

        mask_path = os.path.join(folder, "mask.tif")
        with open(mask_path, "wb") as stream:
            stream.write(files["mask.tif"])
        destination = self.parameterAsOutputLayer(parameters, self.OUTPUT_MASK, context)
        driver = QgsRasterFileWriter.driverForExtension(os.path.splitext(destination)[1]) or "GTiff"
        if gdal.Translate(destination, mask_path, format=driver) is None:
            raise ServiceError(f"Could not write the mask to {destination}: {gdal.GetLastErrorMsg()}")

        fields = QgsFields()
        for name, kind in ATTRIBUTES:
            fields.append(QgsField(name, kind))
        sink, sink_id = self.parameterAsSink(parameters, self.OUTPUT_POLYGONS, context, fields,
                                             QgsWkbTypes.MultiPolygon, self._crs)
        if sink is None:
            raise QgsProcessingException(self.invalidSinkError(parameters, self.OUTPUT_POLYGONS))
        if "vectors.gpkg" in files:
            vectors_path = os.path.join(folder, "vectors.gpkg")
            with open(vectors_path, "wb") as stream:
                stream.write(files["vectors.gpkg"])
            polygons = QgsVectorLayer(vectors_path, "polygons", "ogr")
            for found in polygons.getFeatures():
                feature = QgsFeature(fields)
                geometry = QgsGeometry(found.geometry())
                geometry.convertToMultiType()
                feature.setGeometry(geometry)
                feature.setAttributes([found[name] for name, _ in ATTRIBUTES])
                sink.addFeature(feature, QgsFeatureSink.FastInsert)
            del polygons
        del sink

        question = result.get("question", "")[:60]
        for key, styler, title in ((destination, style_mask, "georeason mask"),
                                   (sink_id, style_polygons, "georeason polygons")):
            if context.willLoadLayerOnCompletion(key):
                details = context.layerToLoadOnCompletionDetails(key)
                details.name = f"{title}: {question}"
                details.setPostProcessor(StyleOnLoad.create(styler))
        return {self.OUTPUT_MASK: destination, self.OUTPUT_POLYGONS: sink_id}


def _corners(rectangle):
    return [(rectangle.xMinimum(), rectangle.yMinimum()), (rectangle.xMinimum(), rectangle.yMaximum()),
            (rectangle.xMaximum(), rectangle.yMinimum()), (rectangle.xMaximum(), rectangle.yMaximum())]
