"""Validation of a dataset folder: counts, empty targets, sizes, Q/A counts, how labels were read, problems.

Backs `georeason data check` (the layouts of docs/released_code.md#datasets and our JSONL manifest, docs/data.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georeason.data import available_splits, dataset_class, detect_layout
from georeason.data.base import ReasoningDataset, Record
from georeason.errors import GeoreasonError


@dataclass
class SplitReport:
    split: str
    samples: int = 0
    empty: int = 0
    min_hw: tuple[int, int] | None = None
    max_hw: tuple[int, int] | None = None
    questions: list[int] = field(default_factory=list)  # per sample
    answers: list[int] = field(default_factory=list)
    categories: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)  # how the label files were read -> how many
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split, "samples": self.samples, "empty": self.empty,
            "min_hw": self.min_hw, "max_hw": self.max_hw,
            "questions": _summary(self.questions), "answers": _summary(self.answers),
            "categories": dict(sorted(self.categories.items())),
            "labels": dict(sorted(self.labels.items())),
            "problems": self.problems, "warnings": self.warnings,
        }


def _summary(counts: list[int]) -> dict[str, float] | None:
    if not counts:
        return None
    return {"total": sum(counts), "min": min(counts), "max": max(counts), "mean": sum(counts) / len(counts)}


def _scan(layout: str, path: Path, split: str) -> tuple[list[Record], list[str]]:
    if layout == "earthreason":
        from georeason.data.earthreason import scan_earthreason
        return scan_earthreason(path, split)
    if layout == "rrsisd":
        from georeason.data.rrsisd import scan_rrsisd
        return scan_rrsisd(path, split)
    if layout == "refsegrs":
        from georeason.data.refsegrs import scan_refsegrs
        return scan_refsegrs(path, split)
    from georeason.data.jsonl import scan_jsonl
    return scan_jsonl(path, split)


def check_split(path: Path, layout: str, split: str, load_pixels: bool = True) -> SplitReport:
    """Scan one split, then (with load_pixels) read every image and mask to find unreadable files."""
    report = SplitReport(split)
    try:
        records, report.problems = _scan(layout, path, split)
    except GeoreasonError as error:
        report.problems.append(str(error))
        return report
    # A dataset over the records that survived the scan, without the constructor's fail-fast checks.
    cls = dataset_class(layout)
    dataset = cls.__new__(cls)
    ReasoningDataset.__init__(dataset, records, mode="eval")
    for index, record in enumerate(records):
        report.samples += 1
        report.questions.append(len(record.questions))
        report.answers.append(len(record.answers))
        if record.category:
            report.categories[record.category] = report.categories.get(record.category, 0) + 1
        if not load_pixels:
            continue
        try:
            sample = dataset[index]
        except GeoreasonError as error:
            report.problems.append(f"sample {record.id}: {error}")
            continue
        height, width = sample["image"].shape[:2]
        report.min_hw = (height, width) if report.min_hw is None else \
            (min(report.min_hw[0], height), min(report.min_hw[1], width))
        report.max_hw = (height, width) if report.max_hw is None else \
            (max(report.max_hw[0], height), max(report.max_hw[1], width))
        report.empty += int(sample["empty"])
        report.labels[sample["label"]] = report.labels.get(sample["label"], 0) + 1
        if record.task == "reasoning":
            if sample["empty"] and record.answers:
                report.warnings.append(f"sample {record.id}: the mask is empty but answers are given")
            if not sample["empty"] and not record.answers:
                report.warnings.append(f"sample {record.id}: the mask has a target but the answer list is empty")
    return report


def check_dataset(path: str | Path, splits: list[str] | None = None, load_pixels: bool = True
                  ) -> tuple[str, list[SplitReport]]:
    """(layout, one report per split). Splits default to those present."""
    path = Path(path)
    layout = detect_layout(path)
    splits = splits or available_splits(path, layout)
    if not splits:
        raise GeoreasonError(f"{path}: {layout} layout detected but no split found")
    return layout, [check_split(path, layout, split, load_pixels) for split in splits]


def format_report(path: str | Path, layout: str, reports: list[SplitReport]) -> str:
    """A table per split, then every problem and warning."""
    lines = [f"dataset {path} ({layout} layout)", ""]
    header = f"{'split':<8}{'samples':>8}{'empty':>7}  {'image HxW min .. max':<24}{'questions':>10}" \
             f"{'answers':>9}{'categories':>11}{'problems':>9}"
    lines.append(header)
    for r in reports:
        sizes = f"{r.min_hw[0]}x{r.min_hw[1]} .. {r.max_hw[0]}x{r.max_hw[1]}" if r.min_hw else "-"
        questions = f"{min(r.questions)}-{max(r.questions)}" if r.questions else "-"
        answers = f"{min(r.answers)}-{max(r.answers)}" if r.answers else "-"
        lines.append(f"{r.split:<8}{r.samples:>8}{r.empty:>7}  {sizes:<24}{questions:>10}{answers:>9}"
                     f"{len(r.categories):>11}{len(r.problems):>9}")
    for r in reports:
        if r.labels:
            lines += ["", f"labels in {r.split} read as:"]
            lines += [f"  {count:>6} x {kind}" for kind, count in sorted(r.labels.items())]
    for r in reports:
        if r.problems:
            lines += ["", f"problems in {r.split} ({len(r.problems)}):"] + [f"  {p}" for p in r.problems]
        if r.warnings:
            lines += ["", f"warnings in {r.split} ({len(r.warnings)}):"] + [f"  {w}" for w in r.warnings]
    total = sum(len(r.problems) for r in reports)
    lines += ["", "OK: no problems found" if total == 0 else f"FAILED: {total} problem(s)"]
    return "\n".join(lines)
