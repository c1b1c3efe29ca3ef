"""RRSIS-D loader: refs pickle (read safely) + COCO instances.json, masks decoded lazily.

Implements the RRSIS-D layout (docs/released_code.md#rrsis-d) (ours: decode each mask on use and binarise overlapping
polygons).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from georeason.data.base import FolderDataset, Record
from georeason.data.labels import LabelRead
from georeason.data.safe_pickle import load_plain
from georeason.errors import GeoreasonError
from georeason.textfiles import read_json_file

ANNOTATION_DIRS = ("rrsisd", "rrssid")  # the released docs spell it both ways
IMAGE_DIRS = ("images/rrsisd/JPEGImages", "images/JPEGImages", "images", "JPEGImages")


def find_annotation_files(root: str | Path) -> tuple[Path, Path]:
    """(refs pickle, instances.json) under `<root>/rrsisd/`; `refs(unc).p` preferred."""
    root = Path(root)
    for name in ANNOTATION_DIRS:
        folder = root / name
        refs = folder / "refs(unc).p"
        if not refs.is_file():
            candidates = sorted(folder.glob("refs*.p")) if folder.is_dir() else []
            refs = candidates[0] if candidates else refs
        if refs.is_file():
            instances = folder / "instances.json"
            if not instances.is_file():
                raise GeoreasonError(f"{folder}: has {refs.name} but no instances.json (COCO annotations)")
            return refs, instances
    raise GeoreasonError(f"{root}: no RRSIS-D annotations (expected {root}/rrsisd/refs(unc).p and instances.json)")


def find_image_dir(root: str | Path) -> Path:
    root = Path(root)
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise GeoreasonError(f"{root}: no RRSIS-D image folder (expected {root}/images/rrsisd/JPEGImages)")


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """COCO polygons, uncompressed RLE or compressed RLE -> bool [H,W] (the union of the parts)."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rles = mask_utils.frPyObjects(segmentation, height, width)
        rle = mask_utils.merge(rles) if len(rles) > 1 else rles[0]
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    elif isinstance(segmentation, dict):
        counts = segmentation["counts"]
        rle = {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise GeoreasonError(f"segmentation: expected polygons or an RLE dict, got {type(segmentation).__name__}")
    with warnings.catch_warnings():
        # pycocotools' numpy-2 copy-keyword deprecation notice; harmless here.
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(rle)
    if decoded.ndim == 3:
        decoded = decoded.any(axis=2)
    return decoded.astype(bool)


def _check_segmentation(segmentation: Any) -> str | None:
    """None when the COCO segmentation is well formed, else what is wrong."""
    if isinstance(segmentation, list):
        if not segmentation:
            return "empty polygon list"
        for polygon in segmentation:
            if not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2:
                return "each polygon must be a flat list of at least 3 x,y pairs"
        return None
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        return None
    return "expected polygons (list of lists) or an RLE dict with 'counts' and 'size'"


def scan_rrsisd(root: str | Path, split: str) -> tuple[list[Record], list[str]]:
    """Records of one split and every problem found."""
    refs_path, instances_path = find_annotation_files(root)
    image_dir = find_image_dir(root)
    refs = load_plain(refs_path)
    if not isinstance(refs, list):
        raise GeoreasonError(f"{refs_path}: expected a pickled list of refs, got {type(refs).__name__}")
    coco = read_json_file(instances_path)
    if not isinstance(coco, dict):
        raise GeoreasonError(f"{instances_path}: expected a JSON object (COCO format)")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise GeoreasonError(f"{instances_path}: field {key!r} must be a list (COCO format)")
    images = {image["id"]: image for image in coco["images"]}
    annotations = {ann["id"]: ann for ann in coco["annotations"]}
    category_names = {cat["id"]: cat.get("name") for cat in coco.get("categories", [])}
    problems: list[str] = []
    records: list[Record] = []
    for position, ref in enumerate(refs):
        where = f"{refs_path} ref #{position}"
        if not isinstance(ref, dict) or not {"ref_id", "ann_id", "image_id", "split", "sentences"} <= set(ref):
            problems.append(f"{where}: expected a dict with ref_id, ann_id, image_id, split and sentences")
            continue
        if ref["split"] != split:
            continue
        sentences = [s.get("raw", s.get("sent")) for s in ref["sentences"] if isinstance(s, dict)]
        sentences = [s for s in sentences if isinstance(s, str) and s.strip()]
        if not sentences:
            problems.append(f"{where} (ref_id {ref['ref_id']}): no sentence with a 'raw' text")
            continue
        image = images.get(ref["image_id"])
        if image is None or "file_name" not in image:
            problems.append(f"{where}: image_id {ref['image_id']} has no image record with a file_name in "
                            f"{instances_path.name}")
            continue
        annotation = annotations.get(ref["ann_id"])
        if annotation is None:
            problems.append(f"{where}: ann_id {ref['ann_id']} not found in {instances_path.name}")
            continue
        problem = _check_segmentation(annotation.get("segmentation"))
        if problem:
            problems.append(f"{where}: annotation {ref['ann_id']} segmentation: {problem}")
            continue
        image_path = image_dir / image["file_name"]
        if not image_path.is_file():
            problems.append(f"{image_path}: image file missing (image_id {ref['image_id']})")
            continue
        category_id = annotation.get("category_id", ref.get("category_id"))
        source = {"segmentation": annotation["segmentation"], "height": image.get("height"),
                  "width": image.get("width")}
        records.append(Record(id=str(ref["ref_id"]), image_path=image_path, questions=sentences, answers=[],
                              task="referring", category=category_names.get(category_id), mask_source=source))
    return records, problems


class RRSISD(FolderDataset):
    """RRSIS-D referring segmentation (17,402 image-text-mask triplets, 20 categories, 800 x 800 images).

    Source: the RRSIS-D release (Liu et al., "Rotated Multi-Scale Interaction Network for Referring Remote
    Sensing Image Segmentation", CVPR 2024). Layout (docs/released_code.md#rrsis-d): `rrsisd/refs(unc).p`
    (a pickled list of refs, read with a restricted unpickler), `rrsisd/instances.json` (COCO polygons or
    RLE) and the JPEG images. Masks are decoded on use and binarised (bool [H,W]); eval question 0 =
    sentences[0], as released; task "referring". Raises GeoreasonError listing every bad ref.
    """

    name = "RRSIS-D"

    def scan(self, root: Path, split: str) -> tuple[list[Record], list[str]]:
        return scan_rrsisd(root, split)

    def read_label(self, record: Record, shape: tuple[int, int]) -> LabelRead:
        source = record.mask_source
        height = source["height"] or shape[0]
        width = source["width"] or shape[1]
        return LabelRead(decode_segmentation(source["segmentation"], int(height), int(width)),
                         "COCO segmentation (polygons or RLE): inside = target")
