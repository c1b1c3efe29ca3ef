"""RefSegRS loader: `output_phrase_{split}.txt` (`<id> <phrase>` per line), images/ and masks/ TIFFs.

Implements the RefSegRS layout (docs/released_code.md#refsegrs); masks are 255 = target (any non-zero value counts as target).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from georeason.data.base import ReasoningDataset, Record, raise_problems
from georeason.data.labels import LabelRead, read_label
from georeason.errors import GeoreasonError
from georeason.textfiles import read_text_file

SUFFIXES = (".tif", ".tiff", ".png", ".jpg")


def _find(folder: Path, stem: str) -> Path | None:
    for suffix in SUFFIXES:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    return None


def scan_refsegrs(root: str | Path, split: str) -> tuple[list[Record], list[str]]:
    """Records of one split (one per phrase line) and every problem found."""
    root = Path(root)
    phrases = root / f"output_phrase_{split}.txt"
    if not phrases.is_file():
        raise GeoreasonError(f"{root}: no RefSegRS split {split!r} (expected {phrases.name})")
    problems: list[str] = []
    records: list[Record] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(read_text_file(phrases).splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if len(parts) < 2:
            problems.append(f"{phrases}:{number}: expected '<id> <phrase>', got {line.strip()!r}")
            continue
        image_id, phrase = parts
        image_path = _find(root / "images", image_id)
        mask_path = _find(root / "masks", image_id)
        if image_path is None:
            problems.append(f"{phrases}:{number}: image images/{image_id}.tif not found")
            continue
        if mask_path is None:
            problems.append(f"{phrases}:{number}: mask masks/{image_id}.tif not found")
            continue
        # The same image can carry several phrases: keep ids unique.
        seen[image_id] = seen.get(image_id, 0) + 1
        record_id = image_id if seen[image_id] == 1 else f"{image_id}~{seen[image_id]}"
        records.append(Record(id=record_id, image_path=image_path, questions=[phrase.strip()], answers=[],
                              task="referring", mask_source=mask_path))
    return records, problems


class RefSegRS(ReasoningDataset):
    """RefSegRS referring segmentation (docs/released_code.md#refsegrs)."""

    name = "RefSegRS"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        mode: str = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int = 0,
        question_index: int = 0,
        all_questions: bool = False,
    ):
        records, problems = scan_refsegrs(root, split)
        raise_problems(f"RefSegRS {split} split under {root}", problems)
        if not records:
            raise GeoreasonError(f"{root}: RefSegRS split {split!r} has no samples")
        self.root, self.split = Path(root), split
        super().__init__(records, mode, transforms, seed, question_index, all_questions)

    def read_label(self, record: Record, shape: tuple[int, int]) -> LabelRead:
        return read_label(record.mask_source)
