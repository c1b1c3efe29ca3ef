"""The plugin object QGIS loads: registers the Processing provider, the dock panel and the menu entries.

QGIS plugin (docs/qgis.md); not in the paper.
"""

from __future__ import annotations

from qgis.core import QgsApplication
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtGui import QIcon
from qgis.PyQt.QtWidgets import QAction, QInputDialog, QLineEdit

from .client import ServiceClient
from .messages import ServiceError
from .provider import ICON, GeoreasonProvider
from .settings import service_url, set_service_url

MENU = "&georeason"


class GeoreasonPlugin:
    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None
        self.dock = None
        self.actions: list[QAction] = []

    def initProcessing(self) -> None:  # noqa: N802 - QGIS API names
        self.provider = GeoreasonProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        from .dock import AskDock

        self.initProcessing()
        self.dock = AskDock(self.iface.mapCanvas(), self.iface.mainWindow())
        self.iface.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.dock.hide()
        show = QAction(QIcon(ICON), "Ask a question about a raster layer…", self.iface.mainWindow())
        show.triggered.connect(lambda: (self.dock.show(), self.dock.raise_()))
        settings = QAction("Service settings…", self.iface.mainWindow())
        settings.triggered.connect(self.edit_settings)
        for action in (show, settings):
            self.iface.addPluginToMenu(MENU, action)
            self.actions.append(action)
        self.iface.addToolBarIcon(show)

    def unload(self) -> None:
        for action in self.actions:
            self.iface.removePluginMenu(MENU, action)
            self.iface.removeToolBarIcon(action)
        self.actions = []
        if self.dock is not None:
            self.iface.removeDockWidget(self.dock)
            self.dock.deleteLater()
            self.dock = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None

    def edit_settings(self) -> None:
        url, ok = QInputDialog.getText(self.iface.mainWindow(), "georeason service",
                                       "URL of the running `georeason serve`:", QLineEdit.Normal, service_url())
        if not ok or not url.strip():
            return
        set_service_url(url)
        bar = self.iface.messageBar()
        try:
            model = ServiceClient(service_url()).model()
        except ServiceError as error:
            bar.pushWarning("georeason", str(error))
            return
        bar.pushSuccess("georeason", f"Connected to {service_url()}: model {model.get('preset')} "
                                     f"({model.get('parameters', 0):,} parameters) on {model.get('device')}.")
