"""Tests of the RefSegRS loader and our JSONL manifest format (georeason.data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georeason.config import EMPTY_TARGET_ANSWER
from georeason.data import detect_layout, open_dataset
from georeason.data.jsonl import JsonlDataset
from georeason.data.refsegrs import RefSegRS
from georeason.errors import GeoreasonError


def _make_refsegrs(root: Path) -> np.ndarray:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    Image.fromarray(np.full((24, 24, 3), 120, np.uint8)).save(root / "images" / "7.tif")
    mask = np.zeros((24, 24), np.uint8)
    mask[3:9, 4:12] = 255
    Image.fromarray(mask).save(root / "masks" / "7.tif")
    (root / "output_phrase_train.txt").write_text("7 road along the river\n7 the road\n\n")
    (root / "output_phrase_val.txt").write_text("8 missing image\n")
    return mask == 255


def test_refsegrs_reads_phrases(tmp_path):
    mask = _make_refsegrs(tmp_path)
    assert detect_layout(tmp_path) == "refsegrs"
    data = RefSegRS(tmp_path, "train", mode="eval")
    assert [r.id for r in data.records] == ["7", "7~2"]
    sample = data[0]
    assert sample["question"] == "road along the river" and np.array_equal(sample["mask"], mask)
    assert sample["task"] == "referring" and sample["answer"] == "" and sample["image"].shape == (24, 24, 3)
    with pytest.raises(GeoreasonError, match=r"output_phrase_val.txt:1: image images/8.tif not found"):
        RefSegRS(tmp_path, "val")


def _make_jsonl(root: Path) -> list[dict]:
    (root / "img").mkdir(parents=True)
    Image.fromarray(np.full((10, 16, 3), 30, np.uint8)).save(root / "img" / "a.png")
    mask = np.zeros((10, 16), np.uint8)
    mask[2:5, 2:9] = 1
    Image.fromarray(mask).save(root / "img" / "a_mask.png")
    lines = [
        {"image": "img/a.png", "mask": "img/a_mask.png", "questions": ["where is it?"], "answers": ["there"],
         "task": "reasoning", "category": "lake"},
        {"image": str(root / "img" / "a.png"), "mask": None, "questions": ["any airport?"], "answers": [],
         "task": "reasoning", "id": "no-airport"},
    ]
    (root / "train.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return lines


def test_jsonl_reads_relative_absolute_and_empty(tmp_path):
    _make_jsonl(tmp_path)
    assert detect_layout(tmp_path) == "jsonl"
    data = open_dataset(tmp_path, "train", mode="eval")
    assert isinstance(data, JsonlDataset) and len(data) == 2
    first, second = data[0], data[1]
    assert first["id"] == "a" and first["mask"].sum() == 21 and first["category"] == "lake"
    assert second["id"] == "no-airport" and second["empty"] and second["answer"] == EMPTY_TARGET_ANSWER
    assert second["mask"].shape == (10, 16)


@pytest.mark.parametrize("line, message", [
    ('{"image": "img/a.png", "questions": ["q"], "answers": []', "train.jsonl:2: not valid JSON"),
    ('{"image": "img/nope.png", "questions": ["q"], "answers": []}', "train.jsonl:2: field 'image': file"),
    ('{"image": "img/a.png", "questions": [], "answers": []}', "train.jsonl:2: field 'questions' must be"),
    ('{"image": "img/a.png", "questions": ["q"]}', "train.jsonl:2: missing field 'answers'"),
    ('{"image": "img/a.png", "questions": ["q"], "answers": [], "task": "x"}', "train.jsonl:2: field 'task'"),
    ('{"image": "img/a.png", "question": ["q"], "answers": []}', "train.jsonl:2: unknown field\\(s\\) question"),
    ('{"image": "img/a.png", "questions": ["q"], "answers": [], "mask": 3}', "train.jsonl:2: field 'mask'"),
    ('[1, 2]', "train.jsonl:2: expected a JSON object"),
])
def test_jsonl_malformed_lines_name_file_line_and_field(tmp_path, line, message):
    good = _make_jsonl(tmp_path)[0]
    (tmp_path / "train.jsonl").write_text(json.dumps(good) + "\n" + line + "\n")
    with pytest.raises(GeoreasonError, match=message):
        JsonlDataset(tmp_path, "train")


def test_jsonl_referring_needs_no_answers_and_ids_unique(tmp_path):
    _make_jsonl(tmp_path)
    line = {"image": "img/a.png", "mask": "img/a_mask.png", "questions": ["the lake"], "task": "referring",
            "id": "r"}
    (tmp_path / "val.jsonl").write_text(json.dumps(line) + "\n" + json.dumps(line) + "\n")
    with pytest.raises(GeoreasonError, match="val.jsonl:2: field 'id': 'r' already used at .*val.jsonl:1"):
        JsonlDataset(tmp_path, "val")
    (tmp_path / "val.jsonl").write_text(json.dumps(line) + "\n")
    assert JsonlDataset(tmp_path, "val", mode="eval")[0]["answer"] == ""
