"""The result store: prediction files kept for a while in a private temporary folder, found by random id.

Web demo and REST service (docs/serve.md); not in the paper. Bounded in count and age; ids are 128-bit
random tokens checked against a strict pattern, and only a fixed list of file names can be served.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

# name -> media type: everything a result folder may contain and the server may send.
RESULT_FILES = {
    "mask.png": "image/png",
    "overlay.png": "image/png",
    "image.png": "image/png",
    "mask.tif": "image/tiff",
    "vectors.gpkg": "application/geopackage+sqlite3",
    "vectors.geojson": "application/geo+json",
}
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")


@dataclass
class _Entry:
    folder: Path
    created: float
    files: tuple[str, ...]


class ResultStore:
    """At most `max_items` results, each kept `ttl_seconds`; the oldest is dropped first."""

    def __init__(self, max_items: int = 64, ttl_seconds: float = 900.0) -> None:
        if max_items < 1 or ttl_seconds <= 0:
            raise ValueError("max_items must be >= 1 and ttl_seconds > 0")
        self.max_items = max_items
        self.ttl_seconds = ttl_seconds
        self.root = Path(tempfile.mkdtemp(prefix="georeason-results-"))  # mode 0700
        # Also removed when the store is garbage-collected or the interpreter exits without close().
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.root), True)
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def new_folder(self) -> tuple[str, Path]:
        """A fresh id and an empty folder to write its files into; `commit` makes them downloadable."""
        result_id = secrets.token_urlsafe(16)
        folder = self.root / result_id
        folder.mkdir(mode=0o700)
        return result_id, folder

    def commit(self, result_id: str, folder: Path) -> None:
        files = tuple(name for name in RESULT_FILES if (folder / name).is_file())
        with self._lock:
            self._entries[result_id] = _Entry(folder, time.monotonic(), files)
        self.prune()

    def path(self, result_id: str, name: str) -> Path | None:
        """The file `name` of result `result_id`, or None if unknown, expired or not produced."""
        if name not in RESULT_FILES or not _ID_PATTERN.match(result_id):
            return None
        self.prune()
        with self._lock:
            entry = self._entries.get(result_id)
        if entry is None or name not in entry.files:
            return None
        return entry.folder / name

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def prune(self) -> None:
        """Delete expired results and the oldest beyond max_items."""
        now = time.monotonic()
        doomed: list[Path] = []
        with self._lock:
            while self._entries:
                result_id, entry = next(iter(self._entries.items()))
                if len(self._entries) <= self.max_items and now - entry.created < self.ttl_seconds:
                    break
                doomed.append(entry.folder)
                del self._entries[result_id]
        for folder in doomed:
            shutil.rmtree(folder, ignore_errors=True)

    def discard(self, folder: Path) -> None:
        """Remove an uncommitted folder (a failed prediction)."""
        if folder.parent == self.root:
            shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._entries.clear()
        self._cleanup()
