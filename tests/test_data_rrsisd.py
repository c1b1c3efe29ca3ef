"""Tests of the RRSIS-D loader (lazy COCO masks) and the restricted pickle reader."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georeason.data import available_splits, detect_layout, open_dataset
from georeason.data.rrsisd import RRSISD, decode_segmentation
from georeason.data.safe_pickle import load_plain, loads_plain
from georeason.errors import GeoreasonError


def _make(root: Path) -> None:
    (root / "rrsisd").mkdir(parents=True)
    images = root / "images" / "rrsisd" / "JPEGImages"
    images.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.full((32, 48, 3), 90, np.uint8)).save(images / name)
    from pycocotools import mask as mask_utils

    rle_mask = np.zeros((32, 48), np.uint8, order="F")
    rle_mask[4:8, 40:46] = 1
    compressed = mask_utils.encode(rle_mask)
    compressed["counts"] = compressed["counts"].decode()
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 32, "width": 48},
                   {"id": 2, "file_name": "b.jpg", "height": 32, "width": 48}],
        "annotations": [
            # two overlapping polygons: the released loader sums them (value 2); we binarise
            {"id": 10, "image_id": 1, "category_id": 3,
             "segmentation": [[2, 2, 20, 2, 20, 20, 2, 20], [10, 10, 30, 10, 30, 30, 10, 30]]},
            {"id": 11, "image_id": 2, "category_id": 4, "segmentation": compressed},
        ],
        "categories": [{"id": 3, "name": "airplane"}, {"id": 4, "name": "vehicle"}],
    }
    (root / "rrsisd" / "instances.json").write_text(json.dumps(coco))
    refs = [
        {"ref_id": 100, "ann_id": 10, "image_id": 1, "split": "train",
         "sentences": [{"raw": "the airplane on the left", "sent": "x"}, {"raw": "a plane"}]},
        {"ref_id": 101, "ann_id": 11, "image_id": 2, "split": "val", "sentences": [{"raw": "the small vehicle"}]},
    ]
    (root / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))


def test_reads_refs_and_decodes_masks_lazily(tmp_path):
    _make(tmp_path)
    assert detect_layout(tmp_path) == "rrsisd"
    assert available_splits(tmp_path) == ["train", "val"]
    data = RRSISD(tmp_path, "train", mode="eval")
    assert len(data) == 1 and data.records[0].mask_source["height"] == 32
    sample = data[0]
    assert sample["question"] == "the airplane on the left" and sample["questions"][1] == "a plane"
    assert sample["task"] == "referring" and sample["answer"] == "" and sample["category"] == "airplane"
    mask = sample["mask"]
    assert mask.dtype == np.bool_ and mask[15, 15] and mask[25, 25] and not mask[31, 0]
    assert mask.max() == 1  # overlap binarised
    val = open_dataset(tmp_path, "val", mode="eval")[0]
    expected = np.zeros((32, 48), bool)
    expected[4:8, 40:46] = True
    assert np.array_equal(val["mask"], expected) and val["category"] == "vehicle"


def test_uncompressed_rle_and_polygon_area():
    rle = {"size": [4, 5], "counts": [2, 3, 15]}  # column-major: 2 off, 3 on, rest off
    mask = decode_segmentation(rle, 4, 5)
    assert mask.sum() == 3 and mask[2, 0] and mask[3, 0] and mask[0, 1]
    square = decode_segmentation([[0, 0, 10, 0, 10, 10, 0, 10]], 20, 20)
    assert 90 <= square.sum() <= 121


def test_missing_annotation_is_named(tmp_path):
    _make(tmp_path)
    refs = load_plain(tmp_path / "rrsisd" / "refs(unc).p")
    refs[0]["ann_id"] = 999
    (tmp_path / "rrsisd" / "refs(unc).p").write_bytes(pickle.dumps(refs))
    with pytest.raises(GeoreasonError, match="ann_id 999 not found in instances.json"):
        RRSISD(tmp_path, "train")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_malicious_pickle_is_refused(tmp_path):
    path = tmp_path / "refs(unc).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "payload": _Evil()}]))
    with pytest.raises(GeoreasonError, match=r"refused to load .*wants to import (posix|os)\.system"):
        load_plain(path)
    # plain data passes, Python-2 style byte strings decode as text
    assert loads_plain(pickle.dumps({"a": [1, 2.5, None, True, ("x", b"y")], "s": {1, 2}})) == \
        {"a": [1, 2.5, None, True, ("x", b"y")], "s": {1, 2}}
    with pytest.raises(GeoreasonError, match="not a readable pickle"):
        loads_plain(b"\x80\x02]q\x00", "cut.p")
