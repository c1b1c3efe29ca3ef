"""How the outputs look when they load: the mask as a semi-transparent colour, the polygons as a light fill
with a solid outline, so the layer underneath stays visible.

QGIS plugin (docs/qgis.md); not in the paper.
"""

from __future__ import annotations

from qgis.core import (
    QgsFillSymbol,
    QgsPalettedRasterRenderer,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

COLOR = (255, 32, 160)  # magenta: rare in remote-sensing scenes
MASK_OPACITY = 0.5
FILL_ALPHA = 60  # of 255
# Processing calls a post-processor after the algorithm returns; it must outlive the algorithm object.
_PENDING: list[QgsProcessingLayerPostProcessorInterface] = []


def style_mask(layer: QgsRasterLayer) -> None:
    """1 (the answer) in colour at MASK_OPACITY; 0 (background) and 255 (nodata) transparent."""
    classes = [QgsPalettedRasterRenderer.Class(1, QColor(*COLOR), "answer")]
    renderer = QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)
    renderer.setOpacity(MASK_OPACITY)
    layer.setRenderer(renderer)
    layer.triggerRepaint()


def style_polygons(layer: QgsVectorLayer) -> None:
    red, green, blue = COLOR
    symbol = QgsFillSymbol.createSimple({"color": f"{red},{green},{blue},{FILL_ALPHA}",
                                         "outline_color": f"{red},{green},{blue},255", "outline_width": "0.6"})
    layer.setRenderer(QgsSingleSymbolRenderer(symbol))
    layer.triggerRepaint()


class StyleOnLoad(QgsProcessingLayerPostProcessorInterface):
    """Applies style_mask or style_polygons to an output once Processing has loaded it."""

    def __init__(self, styler) -> None:
        super().__init__()
        self._styler = styler

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802 - Qt naming
        if isinstance(layer, (QgsRasterLayer, QgsVectorLayer)):
            self._styler(layer)
        if self in _PENDING:
            _PENDING.remove(self)

    @staticmethod
    def create(styler) -> StyleOnLoad:
        post = StyleOnLoad(styler)
        _PENDING.append(post)
        return post
