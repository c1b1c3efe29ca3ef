"""georeason for QGIS: ask questions about raster layers through a running `georeason serve`.

QGIS plugin (docs/qgis.md); not in the paper. QGIS loads the plugin through classFactory.
"""


def classFactory(iface):  # noqa: N802 - the name QGIS looks for
    from .plugin import GeoreasonPlugin

    return GeoreasonPlugin(iface)
