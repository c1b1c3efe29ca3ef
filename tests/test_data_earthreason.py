"""Tests of the EarthReason loader, the sample format and question selection (georeason.data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georeason.config import EMPTY_TARGET_ANSWER
from georeason.data import detect_layout, open_dataset
from georeason.data.earthreason import EarthReason, category_from_name
from georeason.data.transforms import SampleTransform
from georeason.errors import GeoreasonError


def _write_sample(split_dir: Path, stem: str, box: tuple[int, int, int, int] | None, answers: list[str],
                  size=(40, 60)) -> np.ndarray:
    for folder in ("images", "labels", "QAs"):
        (split_dir / folder).mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(len(stem)).integers(0, 255, size=(*size, 3), dtype=np.uint8)
    Image.fromarray(image).save(split_dir / "images" / f"{stem}.png")
    label = np.zeros(size, np.uint8)
    if box:
        y0, y1, x0, x1 = box
        label[y0:y1, x0:x1] = 255
    Image.fromarray(label).save(split_dir / "labels" / f"{stem}.png")
    qa = {"questions": [f"{stem} question {k}?" for k in range(4)], "answer": answers}
    (split_dir / "QAs" / f"{stem}.json").write_text(json.dumps(qa))
    return label > 0


def _make(root: Path) -> dict[str, np.ndarray]:
    masks = {
        "lake_0001": _write_sample(root / "train", "lake_0001", (5, 20, 10, 30), ["a", "b", "c"]),
        "running_track_0002": _write_sample(root / "train", "running_track_0002", (0, 10, 0, 10), ["x"]),
        "P0003": _write_sample(root / "train", "P0003", None, []),
    }
    _write_sample(root / "val", "lake_0009", (1, 3, 1, 3), ["v"])
    return masks


def test_reads_samples_with_documented_fields(tmp_path):
    masks = _make(tmp_path)
    assert detect_layout(tmp_path) == "earthreason"
    data = EarthReason(tmp_path, "train", mode="eval")
    assert len(data) == 3
    by_id = {data[i]["id"]: data[i] for i in range(3)}
    lake = by_id["lake_0001"]
    assert lake["image"].dtype == np.uint8 and lake["image"].shape == (40, 60, 3)
    assert lake["mask"].dtype == np.bool_ and np.array_equal(lake["mask"], masks["lake_0001"])
    assert lake["question"] == "lake_0001 question 0?" and lake["answer"] == "a"
    assert lake["task"] == "reasoning" and lake["category"] == "lake" and not lake["empty"]
    assert by_id["running_track_0002"]["category"] == "running track"
    empty = by_id["P0003"]
    assert empty["empty"] and not empty["mask"].any() and empty["category"] is None
    assert empty["answer"] == EMPTY_TARGET_ANSWER and empty["answers"] == []


def test_train_mode_samples_questions_deterministically(tmp_path):
    _make(tmp_path)
    a = EarthReason(tmp_path, "train", mode="train", seed=5)
    b = EarthReason(tmp_path, "train", mode="train", seed=5)
    index = [i for i in range(3) if a.records[i].id == "lake_0001"][0]
    seq_a = [(a[index]["question"], a[index]["answer"]) for _ in range(12)]
    seq_b = [(b[index]["question"], b[index]["answer"]) for _ in range(12)]
    assert seq_a == seq_b
    assert len({q for q, _ in seq_a}) > 1 and len({ans for _, ans in seq_a}) > 1  # it really varies
    b.set_seed(6)
    assert [b[index]["question"] for _ in range(12)] != [q for q, _ in seq_a]


def test_eval_question_index_and_all_questions(tmp_path):
    _make(tmp_path)
    data = EarthReason(tmp_path, "train", mode="eval", question_index=2)
    assert all(data[i]["question"].endswith("question 2?") for i in range(len(data)))
    expanded = open_dataset(tmp_path, "train", mode="eval", all_questions=True)
    assert len(expanded) == 12
    assert sorted(s["id"] for s in (expanded[i] for i in range(4)))[0].endswith("#q0")
    assert expanded.record_of(5) is expanded.records[1]
    with pytest.raises(GeoreasonError, match="all_questions=True is an evaluation option"):
        EarthReason(tmp_path, "train", mode="train", all_questions=True)


def test_custom_category_pattern_and_transforms(tmp_path):
    _make(tmp_path)
    data = EarthReason(tmp_path, "train", mode="eval", category_pattern=r"^(?P<category>P)\d+$",
                       transforms=SampleTransform(64))
    sample = next(data[i] for i in range(3) if data.records[i].id == "P0003")
    assert sample["category"] == "p" and sample["target"].sum().item() == 0
    assert category_from_name("storage_tank_12") == "storage tank" and category_from_name("img12") is None
    assert category_from_name("ground_track_field_4_2_rgb") == "ground track field"  # fMoW style
    assert category_from_name("P0003") is None and category_from_name("lake_1_final") is None


def test_missing_and_extra_files_are_named(tmp_path):
    _make(tmp_path)
    (tmp_path / "train" / "labels" / "lake_0001.png").unlink()
    (tmp_path / "train" / "QAs" / "ghost_0004.json").write_text("{}")
    with pytest.raises(GeoreasonError) as error:
        EarthReason(tmp_path, "train")
    message = str(error.value)
    assert "lake_0001.png: no label" in message and "ghost_0004.json: QA file without an image" in message


def test_bad_qa_file_is_named(tmp_path):
    _make(tmp_path)
    (tmp_path / "val" / "QAs" / "lake_0009.json").write_text(json.dumps({"questions": [], "answer": []}))
    with pytest.raises(GeoreasonError, match="lake_0009.json: field 'questions' must be a non-empty list"):
        EarthReason(tmp_path, "val")
    with pytest.raises(GeoreasonError, match="no EarthReason split 'test'"):
        EarthReason(tmp_path, "test")


def test_unknown_layout_is_refused(tmp_path):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(GeoreasonError, match="not a known dataset layout"):
        open_dataset(tmp_path, "train")
