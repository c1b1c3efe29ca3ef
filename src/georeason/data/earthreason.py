"""EarthReason loader: `<root>/{train,val,test}/images|labels|QAs`, paired by file stem.

Implements the EarthReason layout (docs/released_code.md#earthreason) (ours: pair by stem and fail loudly, sample
among all questions).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from georeason.data.base import FolderDataset, Record
from georeason.errors import GeoreasonError
from georeason.textfiles import read_json_file

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
LABEL_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")
# Category from the file stem: "<category words>_<number>", words joined by "_" ("running_track_0012"
# -> "running track"), also fMoW-style "<category>_<n>_<n>[_rgb|_msrgb]" ("airport_12_3_rgb" -> "airport").
# A "category" key in the QA file wins over the name. No match -> None.
DEFAULT_CATEGORY_PATTERN = r"^(?P<category>[A-Za-z]+(?:_[A-Za-z]+)*)_\d+(?:_\d+)*(?:_(?:rgb|msrgb|ms))?$"


def category_from_name(stem: str, pattern: str | None = DEFAULT_CATEGORY_PATTERN) -> str | None:
    """The category encoded in a file stem by `pattern` (a regex with a `category` group), or None."""
    if pattern is None:
        return None
    match = re.match(pattern, stem)
    if not match or not match.groupdict().get("category"):
        return None
    return match.group("category").replace("_", " ").strip().lower()


def find_split_dir(root: str | Path, split: str) -> Path:
    """`<root>/<split>` or `<root>/RSReasonSeg/<split>` (the released archive's nesting)."""
    root = Path(root)
    for candidate in (root / split, root / "RSReasonSeg" / split):
        if (candidate / "images").is_dir():
            return candidate
    raise GeoreasonError(
        f"{root}: no EarthReason split {split!r} (expected {root / split}/images, labels and QAs folders)"
    )


def _files_by_stem(folder: Path, suffixes: tuple[str, ...], problems: list[str]) -> dict[str, Path]:
    if not folder.is_dir():
        problems.append(f"{folder}: missing folder")
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in suffixes:
            problems.append(f"{path}: unexpected file (expected one of {', '.join(suffixes)})")
            continue
        if path.stem in found:
            problems.append(f"{path}: duplicate stem {path.stem!r} (also {found[path.stem].name})")
            continue
        found[path.stem] = path
    return found


def read_qa(path: Path) -> tuple[list[str], list[str], str | None]:
    """(questions, answers, category or None) of one QA json; errors name the file and field."""
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise GeoreasonError(f"{path}: expected a JSON object with 'questions' and 'answer'")
    questions = data.get("questions")
    if not isinstance(questions, list) or not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise GeoreasonError(f"{path}: field 'questions' must be a non-empty list of non-empty strings")
    answer_key = "answer" if "answer" in data else "answers"
    answers = data.get(answer_key, None)
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise GeoreasonError(f"{path}: field 'answer' must be a list of strings (empty for an empty target)")
    category = data.get("category")
    if category is not None and not isinstance(category, str):
        raise GeoreasonError(f"{path}: field 'category' must be a string")
    return questions, answers, category


def scan_earthreason(
    root: str | Path, split: str, category_pattern: str | None = DEFAULT_CATEGORY_PATTERN
) -> tuple[list[Record], list[str]]:
    """Records of one split and every problem found (missing/extra files, bad QA files)."""
    split_dir = find_split_dir(root, split)
    problems: list[str] = []
    images = _files_by_stem(split_dir / "images", IMAGE_SUFFIXES, problems)
    labels = _files_by_stem(split_dir / "labels", LABEL_SUFFIXES, problems)
    qas = _files_by_stem(split_dir / "QAs", (".json",), problems)
    for stem in sorted(set(labels) - set(images)):
        problems.append(f"{labels[stem]}: label without an image (no images/{stem}.*)")
    for stem in sorted(set(qas) - set(images)):
        problems.append(f"{qas[stem]}: QA file without an image (no images/{stem}.*)")
    records = []
    for stem, image_path in images.items():
        if stem not in labels:
            problems.append(f"{image_path}: no label (expected labels/{stem}.png)")
            continue
        if stem not in qas:
            problems.append(f"{image_path}: no QA file (expected QAs/{stem}.json)")
            continue
        try:
            questions, answers, category = read_qa(qas[stem])
        except GeoreasonError as error:
            problems.append(str(error))
            continue
        records.append(Record(
            id=stem, image_path=image_path, questions=questions, answers=answers, task="reasoning",
            category=category.lower() if category else category_from_name(stem, category_pattern),
            mask_source=labels[stem],
        ))
    return records, problems


class EarthReason(FolderDataset):
    """EarthReason, the geospatial pixel reasoning benchmark of the SegEarth-R1 paper (Sec. 3, Table 1).

    Source: the Hugging Face dataset `earth-insights/EarthReason` (images from Million-AID and fMoW).
    Citation: Li et al., "SegEarth-R1: Geospatial Pixel Reasoning via Large Language Model".
    Layout (docs/released_code.md#earthreason, docs/data.md): `<root>/{train,val,test}/images/<stem>.jpg|png`,
    `labels/<stem>.png` (uint8 or palette; any non-zero value = target) and `QAs/<stem>.json`
    ({"questions": [...], "answer": [...]}; an empty answer list = empty target). Paired by file stem;
    the category comes from the QA file or the stem (`category_pattern`). Task "reasoning".
    Raises GeoreasonError listing every unpaired or unreadable file, or for an empty split.
    """

    name = "EarthReason"

    def __init__(self, root: str | Path, split: str = "train", mode: str = "train",
                 transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None, seed: int = 0,
                 question_index: int = 0, all_questions: bool = False,
                 category_pattern: str | None = DEFAULT_CATEGORY_PATTERN):
        self.category_pattern = category_pattern  # a category from the file name when the QA file has none
        super().__init__(root, split, mode, transforms, seed, question_index, all_questions)

    def scan(self, root: Path, split: str) -> tuple[list[Record], list[str]]:
        return scan_earthreason(root, split, self.category_pattern)

