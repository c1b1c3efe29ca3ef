"""Datasets, preprocessing and the synthetic benchmark of georeason.

Implements the data layouts and preprocessing of docs/released_code.md#datasets and #preprocessing; see docs/data.md.
`open_dataset` detects the layout
(EarthReason, RRSIS-D, RefSegRS or our JSONL manifest) of a folder; submodules are imported on use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError

LAYOUTS = ("earthreason", "rrsisd", "refsegrs", "jsonl")
SPLITS = ("train", "val", "test")


def detect_layout(path: str | Path) -> str:
    """Name of the dataset layout at `path` (one of LAYOUTS); a clear error when none matches."""
    path = Path(path)
    if not path.exists():
        raise GeoreasonError(f"{path}: no such dataset folder")
    if path.is_file():
        if path.suffix == ".jsonl":
            return "jsonl"
        raise GeoreasonError(f"{path}: a dataset is a folder (or a .jsonl manifest file)")
    if any((path / split / "images").is_dir() or (path / "RSReasonSeg" / split / "images").is_dir()
           for split in SPLITS):
        return "earthreason"
    if any(d.is_dir() and (any(d.glob("refs*.p"))) for d in (path / "rrsisd", path / "rrssid")):
        return "rrsisd"
    if any(path.glob("output_phrase_*.txt")):
        return "refsegrs"
    if any(path.glob("*.jsonl")):
        return "jsonl"
    raise GeoreasonError(
        f"{path}: not a known dataset layout. Expected one of: EarthReason (<split>/images, labels, QAs), "
        "RRSIS-D (rrsisd/refs(unc).p + instances.json), RefSegRS (output_phrase_<split>.txt, images/, masks/) "
        "or a JSONL manifest (<split>.jsonl); see docs/data.md"
    )


def available_splits(path: str | Path, layout: str | None = None) -> list[str]:
    """Splits present at `path` for its layout (RRSIS-D: those named in the refs)."""
    path = Path(path)
    layout = layout or detect_layout(path)
    if layout == "earthreason":
        return [s for s in SPLITS if (path / s / "images").is_dir() or (path / "RSReasonSeg" / s / "images").is_dir()]
    if layout == "refsegrs":
        return sorted(p.stem[len("output_phrase_"):] for p in path.glob("output_phrase_*.txt"))
    if layout == "jsonl":
        return [path.stem] if path.is_file() else sorted(p.stem for p in path.glob("*.jsonl"))
    from georeason.data.rrsisd import find_annotation_files
    from georeason.data.safe_pickle import load_plain

    refs = load_plain(find_annotation_files(path)[0])
    found = {ref.get("split") for ref in refs if isinstance(ref, dict)} if isinstance(refs, list) else set()
    return [s for s in SPLITS if s in found] + sorted(s for s in found if isinstance(s, str) and s not in SPLITS)


def dataset_class(layout: str) -> type:
    if layout == "earthreason":
        from georeason.data.earthreason import EarthReason
        return EarthReason
    if layout == "rrsisd":
        from georeason.data.rrsisd import RRSISD
        return RRSISD
    if layout == "refsegrs":
        from georeason.data.refsegrs import RefSegRS
        return RefSegRS
    if layout == "jsonl":
        from georeason.data.jsonl import JsonlDataset
        return JsonlDataset
    raise GeoreasonError(f"layout: expected one of {', '.join(LAYOUTS)}, got {layout!r}")


def open_dataset(path: str | Path, split: str, layout: str | None = None, **kwargs: Any):
    """Open split `split` of the dataset at `path`, detecting its layout unless `layout` is given.

    kwargs go to the dataset class: mode ("train"/"eval"), transforms, seed, question_index,
    all_questions (and category_pattern for EarthReason).
    """
    layout = layout or detect_layout(path)
    return dataset_class(layout)(path, split, **kwargs)
