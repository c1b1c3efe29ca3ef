"""Atomic output files: write to a temporary file next to the target, fsync, then rename.

Shared by every writer of georeason.geo and georeason.render (no paper section; GeoTIFF I/O of issue 5).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from georeason.errors import GeoreasonError


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise if `path` exists and overwriting was not asked for."""
    if path.exists() and not overwrite:
        raise GeoreasonError(f"{path}: output file already exists; pass --overwrite to replace it")


def temporary_sibling(path: Path) -> Path:
    """A hidden temporary name in the same folder, keeping the suffix so GDAL picks the same driver."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not every platform allows opening a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on any error it is removed.

    Writers may create sidecar files next to the temporary file (e.g. GeoPackage journals); any file
    whose name starts with the temporary name is removed too, so a failure leaves nothing behind.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise GeoreasonError(f"{target}: output folder {target.parent} does not exist")
    refuse_existing(target, overwrite)
    temporary = temporary_sibling(target)
    try:
        yield temporary
        if not temporary.exists():
            raise GeoreasonError(f"{target}: the writer produced no file")
        _fsync_file(temporary)
        refuse_existing(target, overwrite)  # another process may have created it meanwhile
        os.replace(temporary, target)
        _fsync_folder(target.parent)
    finally:
        for leftover in target.parent.iterdir():
            if leftover.name.startswith(temporary.name):
                with contextlib.suppress(OSError):
                    leftover.unlink()
