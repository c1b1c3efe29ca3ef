"""Our JSONL manifest: one JSON object per line (image, mask, questions, answers, task, ...).

A project format (documented in docs/data.md), loaded into the common sample format (docs/released_code.md#datasets).
"""

from __future__ import annotations

import json
from pathlib import Path


from georeason.data.base import TASKS, FolderDataset, Record
from georeason.errors import GeoreasonError
from georeason.textfiles import read_text_file

REQUIRED_KEYS = ("image", "questions")
OPTIONAL_KEYS = ("mask", "answers", "task", "category", "id", "meta")


def manifest_path(root: str | Path, split: str) -> Path:
    """`<root>/<split>.jsonl`, or `root` itself when it is a .jsonl file."""
    root = Path(root)
    if root.is_file() and root.suffix == ".jsonl":
        return root
    path = root / f"{split}.jsonl"
    if not path.is_file():
        raise GeoreasonError(f"{root}: no JSONL manifest for split {split!r} (expected {path.name})")
    return path


def parse_line(line: str, where: str, base: Path) -> Record:
    """One manifest line -> Record; errors name `where` (file:line) and the field."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise GeoreasonError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(entry, dict):
        raise GeoreasonError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise GeoreasonError(f"{where}: unknown field(s) {', '.join(unknown)}; known fields are "
                             f"{', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)}")
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise GeoreasonError(f"{where}: missing field {key!r}")
    image = entry["image"]
    if not isinstance(image, str) or not image:
        raise GeoreasonError(f"{where}: field 'image' must be a path string")
    image_path = _resolve(base, image)
    if not image_path.is_file():
        raise GeoreasonError(f"{where}: field 'image': file {image_path} not found")
    mask = entry.get("mask")
    mask_path = None
    if mask is not None:
        if not isinstance(mask, str) or not mask:
            raise GeoreasonError(f"{where}: field 'mask' must be a path string or null (empty target)")
        mask_path = _resolve(base, mask)
        if not mask_path.is_file():
            raise GeoreasonError(f"{where}: field 'mask': file {mask_path} not found")
    questions = entry["questions"]
    if not isinstance(questions, list) or not questions or \
            not all(isinstance(q, str) and q.strip() for q in questions):
        raise GeoreasonError(f"{where}: field 'questions' must be a non-empty list of non-empty strings")
    task = entry.get("task", "reasoning")
    if task not in TASKS:
        raise GeoreasonError(f"{where}: field 'task' must be one of {', '.join(TASKS)}, got {task!r}")
    if "answers" not in entry and task == "reasoning":
        raise GeoreasonError(f"{where}: missing field 'answers' (a list; empty for an empty target)")
    answers = entry.get("answers", [])
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise GeoreasonError(f"{where}: field 'answers' must be a list of strings")
    category = entry.get("category")
    if category is not None and not isinstance(category, str):
        raise GeoreasonError(f"{where}: field 'category' must be a string or null")
    record_id = entry.get("id")
    if record_id is not None and (not isinstance(record_id, str) or not record_id):
        raise GeoreasonError(f"{where}: field 'id' must be a non-empty string")
    meta = entry.get("meta", {})
    if not isinstance(meta, dict):
        raise GeoreasonError(f"{where}: field 'meta' must be an object")
    return Record(id=record_id or "", image_path=image_path, questions=questions, answers=answers, task=task,
                  category=category, mask_source=mask_path, extra={"meta": meta, "where": where})


def _resolve(base: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else base / path


def scan_jsonl(root: str | Path, split: str) -> tuple[list[Record], list[str]]:
    """Records of a manifest and every problem found (each naming file:line and field)."""
    path = manifest_path(root, split)
    problems: list[str] = []
    records: list[Record] = []
    ids: dict[str, str] = {}
    repeats: dict[str, int] = {}
    for number, line in enumerate(read_text_file(path).splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = parse_line(line, where, path.parent)
        except GeoreasonError as error:
            problems.append(str(error))
            continue
        if record.id:
            if record.id in ids:
                problems.append(f"{where}: field 'id': {record.id!r} already used at {ids[record.id]}")
                continue
        else:
            stem = record.image_path.stem
            repeats[stem] = repeats.get(stem, 0) + 1
            record.id = stem if repeats[stem] == 1 else f"{stem}~{repeats[stem]}"
        ids[record.id] = where
        records.append(record)
    return records, problems


class JsonlDataset(FolderDataset):
    """Samples listed in `<root>/<split>.jsonl`, georeason's own manifest (docs/data.md; no paper section).

    Source: any dataset converted to it, e.g. by `georeason annotate`. Layout: one JSON object per line
    with `image` and `mask` paths (relative to the manifest; `mask` null = empty target), `questions`,
    `answers`, `task` ("reasoning" or "referring"), optional `id` and `category`. Raises GeoreasonError
    naming the line and field of every bad entry, or for an empty manifest.
    """

    name = "JSONL"

    def scan(self, root: Path, split: str) -> tuple[list[Record], list[str]]:
        return scan_jsonl(root, split)

    def location(self, root: Path, split: str) -> str:
        return f"JSONL manifest {manifest_path(root, split)}"

