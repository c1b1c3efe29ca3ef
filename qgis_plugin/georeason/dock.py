"""The dock panel for the everyday case: pick a layer, type a question, see the mask appear.

QGIS plugin (docs/qgis.md); not in the paper. It runs the Processing algorithm as a background task,
so QGIS stays responsive; errors are shown as one readable line, never a traceback.
"""

from __future__ import annotations

import os
import tempfile

from qgis.core import (
    QgsApplication,
    QgsMapLayerProxyModel,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingUtils,
    QgsProject,
    QgsRasterLayer,
    QgsReferencedRectangle,
    QgsVectorLayer,
)
from qgis.gui import QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from .algorithm import AskRasterAlgorithm
from .style import style_mask, style_polygons


class _Feedback(QgsProcessingFeedback):
    """Keeps the algorithm's error text and forwards its stage text (signals are safe across threads)."""

    stage = pyqtSignal(str)

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def setProgressText(self, text: str) -> None:  # noqa: N802 - QGIS API names
        super().setProgressText(text)
        self.stage.emit(text)

    def reportError(self, error: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        super().reportError(error, fatalError)
        self.errors.append(error)


class AskDock(QgsDockWidget):
    """The panel. `canvas` (optional) gives the 'visible extent only' area."""

    finished = pyqtSignal(bool)

    def __init__(self, canvas=None, parent=None) -> None:
        super().__init__("georeason", parent)
        self.setObjectName("GeoreasonAskDock")
        self.canvas = canvas
        self.task = None
        self.feedback = None
        body = QWidget()
        column = QVBoxLayout(body)
        self.layer_box = QgsMapLayerComboBox()
        self.layer_box.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.question = QLineEdit()
        self.question.setPlaceholderText("e.g. Where could a boat be launched in this area?")
        self.question.returnPressed.connect(self.ask)
        self.extent_only = QCheckBox("Only the visible map extent")
        self.extent_only.setEnabled(canvas is not None)
        self.with_answer = QCheckBox("Also generate the text answer")
        self.with_answer.setChecked(True)
        self.ask_button = QPushButton("Ask")
        self.ask_button.clicked.connect(self.ask)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addWidget(self.ask_button)
        buttons.addWidget(self.cancel_button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 100)
        self.status = QLabel("Pick a raster layer and type a question.")
        self.answer = QLabel("")
        for label in (self.status, self.answer):
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        for widget in (QLabel("Raster layer"), self.layer_box, QLabel("Question"), self.question,
                       self.extent_only, self.with_answer):
            column.addWidget(widget)
        column.addLayout(buttons)
        for widget in (self.progress, self.status, self.answer):
            column.addWidget(widget)
        column.addStretch(1)
        self.setWidget(body)

    def ask(self) -> None:
        if self.task is not None:
            return
        layer = self.layer_box.currentLayer()
        question = self.question.text().strip()
        if layer is None or not question:
            self._show("Pick a raster layer and type a question first.")
            return
        folder = tempfile.mkdtemp(prefix="georeason-dock-", dir=QgsProcessingUtils.tempFolder())
        parameters = {
            AskRasterAlgorithm.INPUT: layer, AskRasterAlgorithm.QUESTION: question,
            AskRasterAlgorithm.ANSWER: self.with_answer.isChecked(),
            AskRasterAlgorithm.OUTPUT_MASK: os.path.join(folder, "mask.tif"),
            AskRasterAlgorithm.OUTPUT_POLYGONS: os.path.join(folder, "polygons.gpkg"),
        }
        if self.extent_only.isChecked() and self.canvas is not None:
            parameters[AskRasterAlgorithm.EXTENT] = QgsReferencedRectangle(
                self.canvas.extent(), self.canvas.mapSettings().destinationCrs())
        algorithm = QgsApplication.processingRegistry().createAlgorithmById("georeason:askraster")
        if algorithm is None:  # the provider is not registered (e.g. Processing is disabled)
            algorithm = AskRasterAlgorithm()
            algorithm.initAlgorithm()
        self.context = QgsProcessingContext()
        self.context.setProject(QgsProject.instance())
        self.feedback = _Feedback()
        self.feedback.progressChanged.connect(lambda value: self.progress.setValue(int(value)))
        self.feedback.stage.connect(self._show)
        self._question, self._layer_name = question, layer.name()
        self.task = QgsProcessingAlgRunnerTask(algorithm, parameters, self.context, self.feedback)
        self.task.executed.connect(self._done)
        self.ask_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.answer.setText("")
        self._show(f"Asking about {layer.name()}…")
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.feedback is not None:
            self.feedback.cancel()
            self._show("Cancelling…")

    def _done(self, ok: bool, results: dict) -> None:
        errors = self.feedback.errors if self.feedback is not None else []
        self.task = None
        self.ask_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if not ok:
            self._show(errors[-1] if errors else "The question could not be answered (see the log).")
            self.finished.emit(False)
            return
        try:
            self._load(results)
        except Exception as error:  # noqa: BLE001 - a slot must not raise: one line instead of a traceback
            self._show(f"The results could not be loaded: {error}")
            self.finished.emit(False)
            return
        self.finished.emit(True)

    def _load(self, results: dict) -> None:
        title = self._question if len(self._question) <= 40 else self._question[:39] + "…"
        mask = QgsRasterLayer(results[AskRasterAlgorithm.OUTPUT_MASK], f"georeason mask: {title}")
        polygons = QgsVectorLayer(results[AskRasterAlgorithm.OUTPUT_POLYGONS], f"georeason polygons: {title}", "ogr")
        style_mask(mask)
        style_polygons(polygons)
        QgsProject.instance().addMapLayers([mask, polygons])
        answer = results.get(AskRasterAlgorithm.ANSWER_TEXT) or ""
        self.progress.setValue(100)
        self._show(f"Done: {polygons.featureCount()} polygon(s) over {self._layer_name}.")
        self.answer.setText(f"Answer: {answer}" if answer else "")

    def _show(self, text: str) -> None:
        self.status.setText(text)
