"""Loading the QGIS plugin's QGIS-free modules and the packaging tool by path, for the venv's tests.

The plugin's package is also called `georeason`, so it cannot be imported by name next to the library.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "qgis_plugin" / "georeason"


def load_module(path: Path, name: str | None = None) -> ModuleType:
    """The module at `path` under the name `name` (default: georeason_qgis_<stem>), loaded once."""
    name = name or f"georeason_qgis_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def plugin_module(stem: str) -> ModuleType:
    """One of the plugin's modules without QGIS imports: messages, multipart, window."""
    return load_module(PLUGIN / f"{stem}.py")
