"""The common sample format and question/answer selection shared by every dataset loader.

Implements georeason's data rules (docs/data.md; released behaviour: docs/released_code.md#datasets): sample among all
questions/answers in training, a fixed
documented choice in evaluation (question 0 by default), the empty-target answer, lazy loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from georeason.config import EMPTY_TARGET_ANSWER
from georeason.data.labels import LabelRead, read_label
from georeason.data.pixels import load_image
from georeason.errors import GeoreasonError

MODES = ("train", "eval")
TASKS = ("reasoning", "referring")


@dataclass
class Record:
    """One annotated image of a dataset; the mask is read only when the sample is built."""

    id: str
    image_path: Path
    questions: list[str]
    answers: list[str]
    task: str
    category: str | None = None
    mask_source: Any = None  # loader-specific: a path, an annotation, or None for an empty target
    extra: dict[str, Any] = field(default_factory=dict)


class ReasoningDataset:
    """Map-style dataset (usable with torch DataLoader) over a list of Records.

    Each item is a dict: "image" uint8 [H,W,3] (original size), "mask" bool [H,W], "question",
    "answer", "questions", "answers", "task", "id", "category", "image_path", "empty", and "label"
    (str: how the label was read, e.g. "gray: 0 = background, non-zero = target").

    mode "train": question and answer drawn at random per visit from a generator seeded by
    (seed, epoch, index, visit count) -- deterministic, and independent across DataLoader workers.
    mode "eval": question `question_index` (default 0; taken modulo the number of questions) and the
    first answer; `all_questions=True` yields one sample per question instead (ids "<id>#q<k>").
    A reasoning sample with no answer gets EMPTY_TARGET_ANSWER; a referring sample's answer is "".
    Raises GeoreasonError for an unknown mode, all_questions outside eval or a negative question_index,
    and, when an item is read, for an unreadable image or label or a mask whose size differs from the
    image (naming the sample and files); IndexError past the end.
    """

    name = "dataset"

    def __init__(
        self,
        records: list[Record],
        mode: str = "train",
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        seed: int = 0,
        question_index: int = 0,
        all_questions: bool = False,
    ):
        if mode not in MODES:
            raise GeoreasonError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if all_questions and mode != "eval":
            raise GeoreasonError("all_questions=True is an evaluation option; use it with mode='eval'")
        if question_index < 0:
            raise GeoreasonError(f"question_index must be >= 0, got {question_index}")
        self.records = records
        self.mode = mode
        self.transforms = transforms
        self.seed = int(seed)
        self.epoch = 0
        self.question_index = int(question_index)
        self.all_questions = all_questions
        self._visits: dict[int, int] = {}
        # (record index, question index) for each item.
        if all_questions:
            self._items = [(r, q) for r, record in enumerate(records) for q in range(max(1, len(record.questions)))]
        else:
            self._items = [(r, -1) for r in range(len(records))]

    # -- sampling control -------------------------------------------------------------------------
    def set_seed(self, seed: int) -> None:
        self.seed = int(seed)
        self._visits.clear()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._visits.clear()

    # -- access -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._items)

    def sample_id(self, index: int) -> str:
        """The id of sample `index` without loading it: the record id, "#q<k>" appended per question."""
        record_index, question_index = self._items[index]
        record_id = self.records[record_index].id
        return record_id if question_index < 0 else f"{record_id}#q{question_index}"

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"{self.name}: index {index} out of range for {len(self)} samples")
        index %= len(self)
        record_index, question_index = self._items[index]
        record = self.records[record_index]
        question, answer = self._choose(record, index, question_index)
        image = load_image(record.image_path)
        label = self.read_label(record, image.shape[:2])
        mask = label.mask
        if mask.shape != image.shape[:2]:
            label_file = f" ({record.mask_source})" if isinstance(record.mask_source, (str, Path)) else ""
            raise GeoreasonError(
                f"{self.name} sample {record.id}: mask{label_file} is {mask.shape[1]}x{mask.shape[0]} but the image "
                f"{record.image_path} is {image.shape[1]}x{image.shape[0]} (WxH)"
            )
        sample = {
            "image": image,
            "mask": mask,
            "question": question,
            "answer": answer,
            "questions": list(record.questions),
            "answers": list(record.answers),
            "task": record.task,
            "id": self.sample_id(index),
            "category": record.category,
            "image_path": str(record.image_path),
            "empty": not bool(mask.any()),
            "label": label.kind,
        }
        return self.transforms(sample) if self.transforms is not None else sample

    def read_label(self, record: Record, shape: tuple[int, int]) -> LabelRead:
        """The bool [H,W] target mask of a record (all False for an empty target) and how its label was
        read (georeason.data.labels); `shape` is the image's (H, W).

        Default: `record.mask_source` is a label file (any non-zero value = target), None an empty
        target. Formats with other labels (COCO polygons) override it. Raises GeoreasonError naming an
        unreadable label file.
        """
        if record.mask_source is None:
            return LabelRead(np.zeros(shape, dtype=bool), "no mask: empty target")
        return read_label(record.mask_source)

    def load_mask(self, record: Record, shape: tuple[int, int]) -> np.ndarray:
        """bool [H,W] target mask of a record (read_label without the description)."""
        return self.read_label(record, shape).mask

    def _choose(self, record: Record, index: int, question_index: int) -> tuple[str, str]:
        questions, answers = record.questions, record.answers
        if self.mode == "train":
            visit = self._visits.get(index, 0)
            self._visits[index] = visit + 1
            rng = np.random.default_rng([self.seed, self.epoch, index, visit])
            question = questions[int(rng.integers(len(questions)))]
            answer = answers[int(rng.integers(len(answers)))] if answers else None
        else:
            k = question_index if question_index >= 0 else self.question_index
            question = questions[k % len(questions)]
            answer = answers[0] if answers else None
        if answer is None:
            answer = EMPTY_TARGET_ANSWER if record.task == "reasoning" else ""
        return question, answer

    # -- summaries --------------------------------------------------------------------------------
    def record_of(self, index: int) -> Record:
        """The Record behind item `index` (several items share one with all_questions=True)."""
        return self.records[self._items[index][0]]

    def categories(self) -> list[str | None]:
        return [self.records[r].category for r, _ in self._items]


class FolderDataset(ReasoningDataset):
    """A dataset read from one split of a folder in a known layout: the plumbing every format shares.

    A format subclass gives `name` and `scan(root, split) -> (records, problems)` (its layout, with a
    docstring naming the source, citation and layout), and read_label when its labels are not files.
    The constructor scans, raises one GeoreasonError listing every problem found (raise_problems) or
    naming an empty split, then builds the ReasoningDataset (mode, transforms, seed, question_index,
    all_questions as there).
    """

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
        self.root, self.split = Path(root), split
        records, problems = self.scan(self.root, split)
        where = self.location(self.root, split)
        raise_problems(where, problems)
        if not records:
            raise GeoreasonError(f"{where}: the split has no samples")
        super().__init__(records, mode, transforms, seed, question_index, all_questions)

    def scan(self, root: Path, split: str) -> tuple[list[Record], list[str]]:
        """Records of one split and every problem found (format-specific)."""
        raise NotImplementedError

    def location(self, root: Path, split: str) -> str:
        """How messages name the split: "<name> <split> split under <root>" unless the format has a file."""
        return f"{self.name} {split} split under {root}"


def raise_problems(name: str, problems: list[str], limit: int = 10) -> None:
    """Raise one GeoreasonError listing the problems (the first `limit` of them)."""
    if problems:
        shown = "\n  ".join(problems[:limit])
        more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
        raise GeoreasonError(f"{name}: {len(problems)} problem(s):\n  {shown}{more}\n"
                             f"(run `georeason data check` for the full list)")
