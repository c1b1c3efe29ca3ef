"""What a training run writes in output_dir: the start checks, `--overwrite`, and interrupted writes.

Part of `georeason train` (docs/train.md, "The output folder"); no paper section.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError
from georeason.geo.atomic import atomic_output, fsync_file, fsync_folder

RECIPE_FILE = "recipe.json"
SUMMARY_FILE = "train_summary.json"
METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CHECKPOINT_DIR = "checkpoints"
FINAL_DIR = "final"
# Everything a run writes at the top of output_dir (and hidden temporaries of them): it replaces each
# only when it is about to write it and never touches anything else in the folder. recipe.json is
# written first and removed last, so a folder with the others but no recipe.json is not a run's.
RUN_OUTPUTS = (CHECKPOINT_DIR, FINAL_DIR, TENSORBOARD_DIR, METRICS_FILE, SUMMARY_FILE, RECIPE_FILE)
# Written only once a training step has completed: a folder without them never trained.
TRAINED_OUTPUTS = (CHECKPOINT_DIR, FINAL_DIR, METRICS_FILE, SUMMARY_FILE)
# Hidden temporaries of a run's own writes: `.final.tmp-<pid>-<hex>` (a folder being written),
# `.final.old-<pid>-<hex>` (a folder being replaced or deleted), `.recipe.tmp-<pid>-<hex>.json`
# (geo.atomic's name for a file being written); in checkpoints/ also `.tmp-step-N` and `.step-N.old-...`.
_OWN_STEMS = "|".join(re.escape(Path(name).stem) for name in RUN_OUTPUTS) + r"|step-\d{8}"
TEMPORARY = re.compile(rf"^\.(({_OWN_STEMS})\.(tmp|old)-\d+-[0-9a-f]{{8}}(\.json|\.jsonl)?|tmp-step-\d{{8}})$")


def _not_writable(path: Path, error: OSError) -> GeoreasonError:
    reason = error.strerror or str(error)
    hint = "; free some space and run again with --resume" if error.errno == errno.ENOSPC else ""
    return GeoreasonError(f"{path}: cannot write ({reason}){hint}")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError while writing `path` (no permission, full disk...) into an error naming it."""
    try:
        yield
    except OSError as error:
        raise _not_writable(path, error) from None


def write_json(path: Path, values: Any) -> None:
    """Replace `path` atomically with `values` as indented JSON (a kill leaves the old file or a temporary)."""
    with writing(path), atomic_output(path, overwrite=True) as temporary:
        temporary.write_text(json.dumps(values, indent=1) + "\n", encoding="utf-8")


def write_lines(path: Path, lines: list[str]) -> None:
    """Replace `path` atomically with `lines`, one per line."""
    with writing(path), atomic_output(path, overwrite=True) as temporary:
        temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def _hidden_sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def temporary_folder(target: Path) -> Path:
    """A new hidden folder next to `target` to fill before `commit_folder` renames it into place."""
    folder = _hidden_sibling(target, "tmp")
    with writing(folder):
        folder.mkdir()
    return folder


def remove_folder(folder: Path) -> None:
    """Rename `folder` to a hidden name, then delete it: a kill midway never leaves a half-deleted
    folder under its real name (a checkpoint that looks complete but lacks its weights)."""
    if not folder.exists():
        return
    if folder.name.startswith("."):  # already a hidden temporary
        shutil.rmtree(folder, ignore_errors=True)
        return
    doomed = _hidden_sibling(folder, "old")
    os.replace(folder, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def fsync_tree(folder: Path) -> None:
    """fsync every file in `folder` (and its subfolders), then the folders themselves."""
    for path in sorted(folder.rglob("*"), reverse=True):
        if path.is_file():
            fsync_file(path)
        elif path.is_dir():
            fsync_folder(path)
    fsync_folder(folder)


def commit_folder(temporary: Path, target: Path) -> None:
    """Rename the filled `temporary` folder to `target`, replacing a `target` that exists.

    A kill at any point leaves either the old or the new `target` complete, plus hidden temporaries
    that `clean_interrupted_writes` removes.
    """
    fsync_tree(temporary)
    if target.exists():
        previous = _hidden_sibling(target, "old")
        os.replace(target, previous)
        os.replace(temporary, target)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(temporary, target)
    fsync_folder(target.parent)


def interrupted_writes(output_dir: Path) -> list[Path]:
    """The hidden temporaries of a run's own writes in output_dir and output_dir/checkpoints."""
    found = []
    for folder in (output_dir, output_dir / CHECKPOINT_DIR):
        if folder.is_dir():
            found += [path for path in folder.iterdir() if TEMPORARY.match(path.name)]
    return sorted(found)


def clean_interrupted_writes(output_dir: Path) -> list[Path]:
    """Delete what interrupted writes of a run left (temporaries of checkpoints, final/, JSON files)."""
    removed = interrupted_writes(output_dir)
    for path in removed:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
    return removed


def _written_by_a_run(output_dir: Path) -> bool:
    try:
        values = json.loads((output_dir / RECIPE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(values, dict) and {"max_steps", "data", "output_dir"} <= set(values)


def check_output_dir(output_dir: Path, resume: bool, overwrite: bool) -> bool:
    """Decide, without touching anything, whether a run may use output_dir; raise GeoreasonError if not.

    Returns True when output_dir holds the leftovers of an earlier start that never completed a
    training step (recipe.json, tensorboard/): the run may replace them without --overwrite.
    """
    if resume and overwrite:
        raise GeoreasonError("--resume and --overwrite exclude each other")
    if output_dir.exists() and not output_dir.is_dir():
        raise GeoreasonError(f"output_dir {output_dir}: is a file, expected a folder")
    if resume and not output_dir.is_dir():
        raise GeoreasonError(f"--resume: output_dir {output_dir} does not exist")
    present = [name for name in RUN_OUTPUTS if (output_dir / name).exists()]
    if present and not _written_by_a_run(output_dir):
        names = ", ".join(n + "/" if (output_dir / n).is_dir() else n for n in present)
        raise GeoreasonError(
            f"output_dir {output_dir}: holds {names} but no {RECIPE_FILE} of a georeason training run, so they "
            "were not written by one and are left alone; choose another output_dir")
    never_trained = bool(present) and not holds_trained_outputs(output_dir)
    if present and not (resume or overwrite or never_trained):
        raise GeoreasonError(
            f"output_dir {output_dir} already exists; pass --resume to continue it or --overwrite to replace it "
            f"(it holds the outputs of a training run: {', '.join(present)}; other files there are never touched)")
    _check_writable(output_dir)
    return never_trained and not resume


def _check_writable(output_dir: Path) -> None:
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise GeoreasonError(f"output_dir {output_dir}: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GeoreasonError(f"output_dir {output_dir}: {existing} is not writable")


def start_writing(output_dir: Path, replace: bool) -> Path | None:
    """Create output_dir and make way for a new run's logs; returns the topmost folder this created.

    `replace` (--overwrite, or the leftovers of a start that never trained): the earlier run's logs
    and summary go now, as this run is about to write its own; its checkpoints go when this run
    writes its first checkpoint, its final/ when this run's final/ replaces it.
    """
    created = None
    for folder in (output_dir, *output_dir.parents):
        if folder.exists():
            break
        created = folder
    with writing(output_dir):
        output_dir.mkdir(parents=True, exist_ok=True)
        if replace:
            for name in (METRICS_FILE, SUMMARY_FILE, TENSORBOARD_DIR):
                path = output_dir / name
                if path.is_dir():
                    remove_folder(path)
                elif path.exists():
                    path.unlink()
    return created


def holds_trained_outputs(output_dir: Path) -> bool:
    """Whether output_dir holds what a run writes once it has completed a step (logs, checkpoints, final/)."""
    return any((output_dir / name).exists() for name in TRAINED_OUTPUTS)


@contextlib.contextmanager
def removed_if_untrained(output_dir: Path, created: Path | None) -> Iterator[None]:
    """Around a fresh run: if it fails before completing a step, delete what it wrote (remove_failed_start)."""
    try:
        yield
    except BaseException:
        if not holds_trained_outputs(output_dir):
            remove_failed_start(output_dir, created)
        raise


def remove_failed_start(output_dir: Path, created: Path | None) -> None:
    """After a fresh run failed before completing a step: delete what it wrote, so a rerun starts clean.

    `created`: the topmost folder the run created (start_writing); emptied folders up to it go too.
    """
    for name in (TENSORBOARD_DIR, METRICS_FILE, RECIPE_FILE):
        path = output_dir / name
        with contextlib.suppress(OSError):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    clean_interrupted_writes(output_dir)
    if created is None:
        return
    folder = output_dir
    with contextlib.suppress(OSError):  # rmdir only removes empty folders: never anything the run did not write
        while True:
            folder.rmdir()
            if folder == created:
                break
            folder = folder.parent
