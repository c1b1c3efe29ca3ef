"""`georeason data merge-masks`: bring masks drawn elsewhere (QGIS, CVAT, SAM) into an annotated dataset.

Step 3 of the EarthReason pipeline (paper Sec. 3.2 "Object Mask Labeling", App. A.1): masks are checked against
the images (stems, sizes), read as label values (georeason.data.labels) and written as 0/255 into
<split>/labels/<stem>.png (docs/released_code.md#earthreason), and the JSONL manifest written by `georeason annotate`
gets their paths.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from georeason.errors import GeoreasonError
from georeason.filenames import printable

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
# Lossy JPEG masks are refused: compression noise would turn background pixels into target.
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")

CLI_HELP = "copy externally drawn masks into <split>/labels and update the JSONL manifest"
CLI_DESCRIPTION = """\
Copy masks drawn elsewhere (QGIS, CVAT, SAM, ...) into DATASET_DIR/<split>/labels/<stem>.png.
A mask is matched to an image by file stem; its height and width must equal the image's (both as shown,
EXIF orientation applied). Masks are read as label values and written as 0/255: gray non-zero, RGB
non-black and palette index non-zero are target; alpha 0, nodata and transparent pixels are background;
alpha is never a label value, and a mask drawn only in its alpha channel is refused. The report says how
each mask was read. Masks without an image and images without a mask are listed. DATASET_DIR/<split>.jsonl
(from `georeason annotate`) gets the mask paths. A label that exists with other content is replaced only
with --overwrite (an identical one is left as is). Exit code 1 when a mask has no image or was refused (the
others are merged); a size mismatch or a label conflict is an error and nothing is written."""
CLI_EPILOG = "example: georeason data merge-masks my-dataset qgis-masks/ --split train"


@dataclass
class MergeReport:
    merged: list[str] = field(default_factory=list)
    masks_without_image: list[str] = field(default_factory=list)
    images_without_mask: list[str] = field(default_factory=list)
    empty_masks: list[str] = field(default_factory=list)
    ignored_files: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # labels that existed with other content (--overwrite)
    unchanged: list[str] = field(default_factory=list)  # labels that existed with the same content
    refused: list[str] = field(default_factory=list)  # "name: why" of masks that could not be read as labels
    read_as: Counter[str] = field(default_factory=Counter)  # how the merged masks were read -> how many
    manifest: Path | None = None
    manifest_records_with_mask: int = 0

    def text(self) -> str:
        lines = [f"merged {len(self.merged)} masks; masks without an image {len(self.masks_without_image)}; "
                 f"images without a mask {len(self.images_without_mask)}; empty masks {len(self.empty_masks)}; "
                 f"ignored files {len(self.ignored_files)}; refused masks {len(self.refused)}"]
        if self.replaced or self.unchanged:
            lines[0] += f"; replaced labels {len(self.replaced)}; unchanged labels {len(self.unchanged)}"
        lines += [f"  {count} mask(s) read as {kind}" for kind, count in sorted(self.read_as.items())]
        lines += [f"  refused: {reason}" for reason in self.refused]
        lines += [f"  mask without an image: {name}" for name in self.masks_without_image]
        lines += [f"  image without a mask: {name}" for name in self.images_without_mask]
        lines += [f"  empty mask (no target pixel): {name}" for name in self.empty_masks]
        lines += [f"  ignored (not {'/'.join(MASK_SUFFIXES)}): {name}" for name in self.ignored_files]
        lines += [f"  replaced label (--overwrite): {name}" for name in self.replaced]
        if self.manifest is not None:
            lines.append(f"manifest {self.manifest}: {self.manifest_records_with_mask} records have a mask")
        else:
            lines.append("no JSONL manifest to update")
        return printable("\n".join(lines), multiline=True)


def raster_hw(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, as the pixel reader shows the image (EXIF orientation applied)."""
    from georeason.data.pixels import pixel_size

    width, height = pixel_size(path)
    return height, width


def _by_stem(folder: Path, suffixes: tuple[str, ...], ignored: list[str] | None) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.is_dir():
            continue
        if path.suffix.lower() not in suffixes:
            if ignored is not None:
                ignored.append(path.name)
            continue
        if path.stem in found:
            raise GeoreasonError(f"{folder}: {found[path.stem].name} and {path.name} share the stem {path.stem!r}; "
                                 "keep one of them")
        found[path.stem] = path
    return found


def _label_pixels(mask_path: Path):
    """How a mask was read and the label written for it: (kind, uint8 with 255 = target, 0 = background)."""
    import numpy as np

    from georeason.data.labels import read_label

    label = read_label(mask_path)
    return label.kind, np.where(label.mask, 255, 0).astype(np.uint8)


def _same_label(path: Path, pixels) -> bool:
    """True when the existing label file holds exactly these pixels (a rerun with the same masks)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            existing = np.asarray(image)
    except (UnidentifiedImageError, OSError):
        return False
    return existing.shape == pixels.shape and np.array_equal(existing, pixels)


def merge_masks(dataset_dir: str | Path, masks_dir: str | Path, split: str = "train",
                overwrite: bool = False) -> MergeReport:
    """Check, binarise and copy the masks of `masks_dir` into `dataset_dir/<split>/labels`; update the manifest.

    Every label is checked before any is written: one that exists with other content is refused unless
    `overwrite` (then it is replaced and listed in report.replaced); one with the same content is left as is.
    """
    from PIL import Image

    from georeason.geo.atomic import atomic_output

    dataset_dir, masks_dir = Path(dataset_dir), Path(masks_dir)
    split_dir = dataset_dir / split
    if not (split_dir / "images").is_dir():
        raise GeoreasonError(f"DATASET_DIR {dataset_dir}: no split {split!r} (expected {split_dir / 'images'})")
    if not masks_dir.is_dir():
        raise GeoreasonError(f"MASKS_DIR {masks_dir} is not a folder")
    report = MergeReport()
    images = _by_stem(split_dir / "images", IMAGE_SUFFIXES, None)
    masks = _by_stem(masks_dir, MASK_SUFFIXES, report.ignored_files)
    report.masks_without_image = sorted(masks[s].name for s in set(masks) - set(images))
    report.images_without_mask = sorted(images[s].name for s in set(images) - set(masks))
    matched = sorted(set(masks) & set(images))

    # All sizes are checked before anything is written: a wrong export fails as a whole, loudly.
    mismatches, unreadable = [], set()
    for stem in matched:
        image_hw = raster_hw(images[stem])
        try:
            mask_hw = raster_hw(masks[stem])
        except GeoreasonError as error:  # this mask fails alone; the others are merged
            report.refused.append(str(error))
            unreadable.add(stem)
            continue
        if mask_hw != image_hw:
            mismatches.append(f"{masks[stem]}: mask is {mask_hw[0]}x{mask_hw[1]} (HxW) but image {images[stem]} "
                              f"is {image_hw[0]}x{image_hw[1]}")
    if mismatches:
        raise GeoreasonError("merge-masks: mask and image sizes differ, nothing was written:\n  "
                             + "\n  ".join(mismatches))

    labels: dict[str, tuple[str, object]] = {}  # stem -> (how it was read, label pixels)
    for stem in matched:
        if stem in unreadable:
            continue
        try:
            labels[stem] = _label_pixels(masks[stem])
        except GeoreasonError as error:  # this mask fails alone; the others are merged
            report.refused.append(str(error))

    labels_dir = split_dir / "labels"
    existing = {stem: labels_dir / f"{stem}.png" for stem in labels
                if (labels_dir / f"{stem}.png").exists() or (labels_dir / f"{stem}.png").is_symlink()}
    different = [stem for stem, path in existing.items() if not _same_label(path, labels[stem][1])]
    if different and not overwrite:
        raise GeoreasonError("merge-masks: these labels exist with other content, nothing was written; pass "
                             "--overwrite to replace them:\n  " + "\n  ".join(str(existing[s]) for s in different))
    try:
        labels_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise GeoreasonError(f"{labels_dir}: cannot create the labels folder ({error.strerror})") from None
    for stem in matched:
        if stem not in labels:
            continue
        kind, pixels = labels[stem]
        report.read_as[kind] += 1
        if not pixels.any():
            report.empty_masks.append(masks[stem].name)
        if stem in existing and stem not in different:
            report.unchanged.append(stem)
        else:
            with atomic_output(labels_dir / f"{stem}.png", overwrite=stem in different) as temporary:
                Image.fromarray(pixels).save(temporary, format="PNG")
            if stem in different:
                report.replaced.append(stem)
        report.merged.append(stem)
    manifest = dataset_dir / f"{split}.jsonl"
    if manifest.is_file():
        report.manifest = manifest
        report.manifest_records_with_mask = update_manifest_masks(manifest, split_dir)
    return report


def update_manifest_masks(manifest: Path, split_dir: Path) -> int:
    """Point each record's `mask` at labels/<image stem>.png when that file exists; returns how many do.

    Lines that are not JSON objects are kept as they are (`georeason data check` reports them).
    """
    from georeason.geo.atomic import atomic_output
    from georeason.textfiles import read_text_file

    lines = []
    with_mask = 0
    for line in read_text_file(manifest).splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str):
            lines.append(line)
            continue
        label = split_dir / "labels" / f"{Path(record['image']).stem}.png"
        if label.is_file():
            record["mask"] = os.path.relpath(label, manifest.parent).replace(os.sep, "/")
            with_mask += 1
        lines.append(json.dumps(record, ensure_ascii=False))
    with atomic_output(manifest, overwrite=True) as temporary:  # updating the manifest is this command's job
        temporary.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return with_mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR",
                        help="dataset folder written by `georeason annotate` (or any EarthReason layout)")
    parser.add_argument("masks_dir", type=Path, metavar="MASKS_DIR",
                        help="folder of masks named <image stem>.png/.tif/.tiff/.bmp")
    parser.add_argument("--split", default="train", help="split to merge into (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace labels that exist with other content (identical ones are left as they are)")


def run(args: argparse.Namespace) -> int:
    report = merge_masks(args.dataset_dir, args.masks_dir, args.split, args.overwrite)
    print(report.text())
    return 1 if report.masks_without_image or report.refused else 0
