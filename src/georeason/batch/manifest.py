"""The run folder of `georeason batch`: manifest, one record per finished pair, resume after any interruption.

No paper section; the layout and the resume rules are in docs/batch.md, "Run folder and resume".
A pair counts as finished only when its record exists and every output it lists is there with the size
recorded: outputs are staged and renamed (georeason.geo.atomic), the record is written after them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from georeason.batch.inputs import Pair, Scene
from georeason.errors import GeoreasonError
from georeason.filenames import printable, printable_tree, require_utf8_path
from georeason.geo.atomic import atomic_output, remove_stale_temporaries

MANIFEST = "manifest.json"
RECORDS = "records"
SCENES = "scenes"
FORMAT = 1


def _write_json(path: Path, data: Any, overwrite: bool) -> None:
    with atomic_output(path, overwrite=overwrite) as temporary:
        temporary.write_text(json.dumps(printable_tree(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GeoreasonError(f"{printable(path)}: cannot read the {what} ({printable(error)})") from None


def check_run_folder(root: Path) -> bool:
    """Refuse an --out that is not a run folder of georeason batch; True when it holds a manifest (a rerun)."""
    require_utf8_path(root, "--out")
    if root.exists() and not root.is_dir():
        raise GeoreasonError(f"--out {printable(root)}: exists and is not a folder")
    if (root / MANIFEST).is_file():
        return True
    if root.is_dir() and any(root.iterdir()):
        raise GeoreasonError(f"--out {printable(root)}: the folder is not empty and has no {MANIFEST}, so it is "
                             "not a batch run folder; give a new or empty folder (or an earlier run's folder to "
                             "resume it)")
    existing = next((p for p in [root, *root.absolute().parents] if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise GeoreasonError(f"--out {printable(root)}: {printable(existing)} is not writable")
    return False


class RunFolder:
    """A batch run folder: manifest.json, records/NAME.json, scenes/ (predict --tile's outputs per pair)."""

    def __init__(self, root: Path, settings: dict[str, Any], pairs: list[Pair]) -> None:
        self.root = root
        self.settings = settings
        self.pairs = pairs
        self.scenes = root / SCENES
        self.records = root / RECORDS

    @staticmethod
    def earlier_names(root: Path) -> dict[tuple[str, str], str]:
        """(scene source, question) -> output name of the pairs an earlier invocation planned, if any."""
        if not (root / MANIFEST).is_file():
            return {}
        manifest = _read_json(root / MANIFEST, "manifest of this run folder")
        try:
            return {(entry["scene"], entry["question"]): entry["name"] for entry in manifest["pairs"]}
        except (KeyError, TypeError):
            raise GeoreasonError(f"{printable(root / MANIFEST)}: not a georeason batch manifest "
                                 "(no pairs with scene, question and name)") from None

    @classmethod
    def open(cls, root: Path, settings: dict[str, Any], pairs: list[Pair]) -> RunFolder:
        """Create the run folder, or resume it: the settings must equal the earlier ones.

        Pairs of the earlier invocations that this one does not list stay part of the run (kept first, in
        their order); new pairs are added. Temporary files of interrupted writes are removed.
        """
        settings = json.loads(json.dumps(printable_tree(settings)))  # as the manifest stores them (lists, not tuples)
        resumed = (root / MANIFEST).is_file()
        if resumed:
            manifest = _read_json(root / MANIFEST, "manifest of this run folder")
            earlier = manifest.get("settings", {}) if isinstance(manifest, dict) else {}
            changed = [key for key in sorted(set(settings) | set(earlier))
                       if settings.get(key) != earlier.get(key)]
            if changed:
                key = changed[0]
                raise GeoreasonError(f"--out {printable(root)}: this run folder was started with {key} = "
                                     f"{earlier.get(key)!r}, now {settings.get(key)!r}; resume it "
                                     "with the same settings and model, or give a new --out")
            listed = {pair.key for pair in pairs}
            old = [Pair(Scene(entry["scene"], entry.get("stem", ""), entry.get("origin", "")), entry["question"],
                        entry["name"]) for entry in manifest["pairs"] if (entry["scene"], entry["question"]) not in listed]
            pairs = old + pairs
        for folder in (root, root / SCENES, root / RECORDS):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise GeoreasonError(f"--out {printable(folder)}: cannot create the folder ({error.strerror})") from None
            remove_stale_temporaries(folder)
        run = cls(root, settings, pairs)
        entries = [{"name": p.name, "scene": p.scene.source, "question": p.question, "stem": p.scene.stem,
                    "origin": p.scene.origin} for p in pairs]
        _write_json(root / MANIFEST, {"format": FORMAT, "settings": settings, "pairs": entries}, overwrite=resumed)
        return run

    def record_path(self, pair: Pair) -> Path:
        return self.records / f"{pair.name}.json"

    def finished(self, pair: Pair) -> dict[str, Any] | None:
        """The record of a finished pair, or None: no record, or an output missing or of another size."""
        path = self.record_path(pair)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            sizes = record["file_sizes"]
            intact = record["status"] == "ok" and all(Path(f).is_file() and Path(f).stat().st_size == size
                                                      for f, size in sizes.items())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        return record if intact else None

    def existing_outputs(self, paths: list[Path]) -> set[Path]:
        """Outputs of unfinished pairs that an interrupted invocation of this run committed: they may be replaced."""
        return {path for path in paths if path.exists() or path.is_symlink()}

    def record(self, pair: Pair, result: dict[str, Any]) -> dict[str, Any]:
        """Write the pair's record after its outputs are committed; returns it."""
        files = [Path(p) for p in result.get("outputs", {}).values()]
        record = {**result, "file_sizes": {str(p): p.stat().st_size for p in files}}
        path = self.record_path(pair)
        _write_json(path, record, overwrite=path.exists())
        return record
