"""The Processing provider "georeason" that holds the plugin's algorithm.

QGIS plugin (docs/qgis.md); not in the paper.
"""

from __future__ import annotations

import os

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm import AskRasterAlgorithm

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")


class GeoreasonProvider(QgsProcessingProvider):
    def loadAlgorithms(self) -> None:  # noqa: N802 - QGIS API names
        self.addAlgorithm(AskRasterAlgorithm())

    def id(self) -> str:
        return "georeason"

    def name(self) -> str:
        return "georeason"

    def longName(self) -> str:  # noqa: N802
        return "georeason: geospatial pixel reasoning (georeason serve)"

    def icon(self) -> QIcon:
        return QIcon(ICON)
