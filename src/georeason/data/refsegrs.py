"""RefSegRS loader: `output_phrase_{split}.txt` (`<id> <phrase>` per line), images/ and masks/ TIFFs.

Implements the RefSegRS layout (docs/released_code.md#refsegrs); masks are 255 = target (any non-zero value counts as
target).
"""

from __future__ import annotations

from pathlib import Path

from georeason.data.base import FolderDataset, Record
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


class RefSegRS(FolderDataset):
    """RefSegRS referring segmentation (paper Table 1: 4,420 images of 800 x 800 px, 14 categories).

    Source: the RefSegRS release (Yuan et al., "RRSIS: Referring Remote Sensing Image Segmentation",
    IEEE TGRS 2024). Layout (docs/released_code.md#refsegrs): `<root>/output_phrase_<split>.txt` with
    one `<id> <phrase>` per line, `images/<id>.tif` and `masks/<id>.tif` (255 = target; any non-zero
    value counts). One sample per phrase line (ids `<id>~2`, ... for repeated images); task "referring".
    Raises GeoreasonError listing every bad line or missing file, or for an empty split.
    """

    name = "RefSegRS"

    def scan(self, root: Path, split: str) -> tuple[list[Record], list[str]]:
        return scan_refsegrs(root, split)

