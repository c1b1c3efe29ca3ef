"""Atomic output files: write to a temporary file next to the target, fsync, then rename; folders of files alike.

Shared by every writer of georeason (no paper section); the rules are in docs/predict.md,
"Output files and --overwrite".
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
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


# The names temporary_sibling() makes: .<stem>.tmp-<pid>-<8 hex>[suffix] (and sidecars starting with them),
# and the .<name>.tmp<pid> of earlier versions.
# A temporary of a temporary (a writer's own atomic file inside a staged one) starts with two dots.
_TEMPORARY_NAME = re.compile(r"^\.+(?P<stem>.+?)\.tmp(-(?P<pid>\d+)-[0-9a-f]{8}|(?P<legacy_pid>\d+)$)")


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: a process of another user has this id
        return True
    return True


def stale_temporaries(folder: Path, stems: set[str] | None = None) -> list[Path]:
    """Temporary files or folders that an interrupted georeason process left in `folder` (its id is gone).

    Only names temporary_sibling() makes are considered, optionally only those of the given target stems.
    """
    found = []
    with contextlib.suppress(OSError):
        for entry in folder.iterdir():
            match = _TEMPORARY_NAME.match(entry.name)
            pid = match and int(match["pid"] or match["legacy_pid"])
            if match and (stems is None or match["stem"] in stems) and not _running(pid):
                found.append(entry)
    return sorted(found)


def remove_stale_temporaries(folder: Path, stems: set[str] | None = None) -> list[Path]:
    """Remove what stale_temporaries() finds; returns the removed paths."""
    removed = []
    for entry in stale_temporaries(folder, stems):
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    return removed


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk (before it is renamed into place)."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where folders cannot be opened."""
    # Makes the rename itself durable; not every platform allows opening a folder.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _naming_write_errors(target: Path) -> Iterator[None]:
    """A write the file system refuses (write_errors) becomes a GeoreasonError naming `target`."""
    try:
        yield
    except GeoreasonError:
        raise
    except Exception as error:
        if isinstance(error, write_errors()):
            raise cannot_write(target, error) from error
        raise


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
        with _naming_write_errors(target):
            yield temporary
            if not temporary.exists():
                raise GeoreasonError(f"{printable(target)}: the writer produced no file")
            fsync_file(temporary)
            refuse_existing(target, overwrite)  # another process may have created it meanwhile
            os.replace(temporary, target)
            fsync_folder(target.parent)
    finally:
        remove_temporaries(temporary)


def remove_temporaries(temporary: Path) -> None:
    """Remove a temporary file and its sidecars (files whose name starts with its name), if any."""
    with contextlib.suppress(OSError):
        for leftover in temporary.parent.iterdir():
            if leftover.name.startswith(temporary.name):
                with contextlib.suppress(OSError):
                    leftover.unlink()


@contextlib.contextmanager
def staging_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty hidden folder next to `target` to write a set of files into; it is removed afterwards.

    Move its files into `target` with commit_folder() inside the block.
    """
    target = Path(target)
    staging = temporary_sibling(target)
    try:
        staging.mkdir(parents=True)
    except OSError as error:
        raise cannot_write(target, error) from error
    try:
        with _naming_write_errors(target):
            yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def commit_folder(staging: Path, target: Path, replaceable: set[Path]) -> list[Path]:
    """Move every file of `staging` to the same place in `target` (created if missing).

    A file of `target` is replaced only if it is in `replaceable` (files that existed before the run, with
    --overwrite); every name is checked before anything moves. Entries of `target` that the run did not
    write are left alone; returns them (top level only), so the caller can say so.
    """
    files = sorted(p.relative_to(staging) for p in staging.rglob("*") if not p.is_dir())
    for name in files:
        destination = target / name
        if destination.is_dir() and not destination.is_symlink():
            raise GeoreasonError(f"{printable(destination)}: is a folder; it would be replaced by a file")
        refuse_existing(destination, destination in replaceable)
    try:
        for name in files:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, target / name)
        fsync_folder(target)
    except OSError as error:
        raise cannot_write(target, error) from error
    written = {target / name.parts[0] for name in files}
    return sorted(p for p in target.iterdir() if p not in written)
