"""The plugin's settings (QgsSettings): the URL of the georeason service.

QGIS plugin (docs/qgis.md); not in the paper.
"""

from __future__ import annotations

from qgis.core import QgsSettings

DEFAULT_URL = "http://127.0.0.1:8000"
_KEY = "georeason/service_url"


def service_url() -> str:
    """The service URL from the settings, or the default (loopback, `georeason serve`'s default port)."""
    value = QgsSettings().value(_KEY, DEFAULT_URL, type=str)
    return (value or DEFAULT_URL).strip().rstrip("/")


def set_service_url(url: str) -> None:
    QgsSettings().setValue(_KEY, url.strip().rstrip("/"))
