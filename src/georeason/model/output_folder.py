"""Model folders written by `init` and `convert`: checked before any work, staged, then committed file by file.

No paper section; the rules, shared with predict's outputs, are in docs/predict.md,
"Output files and --overwrite".
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from georeason.errors import GeoreasonError
from georeason.filenames import printable, require_utf8_path


def check_model_out(out: Path, overwrite: bool) -> set[Path]:
    """Refuse an output folder that cannot be written, before any work; returns what --overwrite may replace.

    A file at `out`, or a non-empty folder without --overwrite, is refused. With --overwrite only the entries
    there now may be replaced, and only by files of the same name; nothing else in the folder is deleted.
    """
    require_utf8_path(out, "output folder")
    if out.exists() and not out.is_dir():
        raise GeoreasonError(f"{printable(out)}: exists and is not a folder; choose a folder for the model")
    existing = set(out.iterdir()) if out.is_dir() else set()
    if existing and not overwrite:
        raise GeoreasonError(f"{printable(out)}: exists and is not empty; pass --overwrite to replace the model "
                             "files in it (other files are kept)")
    return existing


def write_model_folder(out: Path, replaceable: set[Path], save: Callable[[Path], None]) -> list[Path]:
    """Run `save(folder)` into a staging folder next to `out`, then move its files into `out`.

    Returns the entries of `out` this run did not write (kept as they were). A failure leaves `out` untouched.
    """
    from georeason.geo.atomic import commit_folder, staging_folder

    with staging_folder(out) as staging:
        save(staging)
        return commit_folder(staging, out, replaceable)


def kept_note(out: Path, kept: list[Path]) -> str | None:
    """The line telling the user which entries of the output folder were not written by this run."""
    if not kept:
        return None
    names = ", ".join(printable(p.name) for p in kept[:8]) + (f" and {len(kept) - 8} more" if len(kept) > 8 else "")
    return f"note: kept {len(kept)} entr{'y' if len(kept) == 1 else 'ies'} of {printable(out)} not written by " \
           f"this run: {names}"


__all__ = ["check_model_out", "kept_note", "write_model_folder"]
