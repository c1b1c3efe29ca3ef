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
from georeason.filenames import printable


def refuse_existing(path: Path, overwrite: bool) -> None:
    """Raise if `path` exists and overwriting was not asked for."""
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise GeoreasonError(f"{printable(path)}: output file already exists; pass --overwrite to replace it")


def write_errors() -> tuple[type[BaseException], ...]:
    """Exceptions a writer raises when the file system refuses (full disk, no permission, read-only, gone):
    OSError, and GDAL's and OGR's own error classes, which do not derive from it."""
    errors: list[type[BaseException]] = [OSError]
    with contextlib.suppress(ImportError):
        from rasterio._err import CPLE_BaseError

        errors.append(CPLE_BaseError)
    with contextlib.suppress(ImportError):
        from pyogrio.errors import DataLayerError, DataSourceError

        errors += [DataLayerError, DataSourceError]
    return tuple(errors)


def cannot_write(path: str | os.PathLike[str], error: BaseException) -> GeoreasonError:
    """The GeoreasonError for a write the file system refused, naming the file and the reason."""
    reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    return GeoreasonError(f"{printable(path)}: cannot write this file ({printable(reason)})")


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
    A write the file system refuses (see write_errors: full disk, no permission) raises GeoreasonError.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise GeoreasonError(f"{printable(target)}: output folder {printable(target.parent)} does not exist")
    refuse_existing(target, overwrite)
    temporary = temporary_sibling(target)
    try:
        yield temporary
        if not temporary.exists():
            raise GeoreasonError(f"{printable(target)}: the writer produced no file")
        _fsync_file(temporary)
        refuse_existing(target, overwrite)  # another process may have created it meanwhile
        os.replace(temporary, target)
        _fsync_folder(target.parent)
    except GeoreasonError:
        raise
    except Exception as error:
        if isinstance(error, write_errors()):
            raise cannot_write(target, error) from error
        raise
    finally:
        remove_temporaries(temporary)


def remove_temporaries(temporary: Path) -> None:
    """Remove a temporary file and its sidecars (files whose name starts with its name), if any."""
    with contextlib.suppress(OSError):
        for leftover in temporary.parent.iterdir():
            if leftover.name.startswith(temporary.name):
                with contextlib.suppress(OSError):
                    leftover.unlink()
