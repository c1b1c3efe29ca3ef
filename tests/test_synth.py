"""Tests of the synthetic benchmark (georeason.data.synth): determinism, layout, splits and flags."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from georeason.data import detect_layout
from georeason.data.earthreason import EarthReason
from georeason.data.synth import (
    CATEGORIES,
    HELDOUT_CATEGORIES,
    generate_benchmark,
    location_phrase,
    plan_split,
)
from georeason.data.synth_text import TEXT
from georeason.errors import GeoreasonError

COUNTS = dict(num_train=20, num_val=6, num_test=10)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(root, **COUNTS, seed=7, min_size=192, max_size=288, workers=1)
    return root


def test_same_seed_gives_identical_bytes(bench, tmp_path):
    again = tmp_path / "again"
    generate_benchmark(again, **COUNTS, seed=7, min_size=192, max_size=288, workers=2)  # other worker count
    assert _digest(again) == _digest(bench)
    other = tmp_path / "other"
    generate_benchmark(other, num_train=3, num_val=0, num_test=0, seed=8, min_size=192, max_size=288, workers=1)
    images = {v for k, v in _digest(bench).items() if k.endswith(".jpg")}
    assert not images & {v for k, v in _digest(other).items() if k.endswith(".jpg")}


def test_layout_is_read_by_the_earthreason_loader(bench):
    meta = json.loads((bench / "synth_meta.json").read_text())
    assert detect_layout(bench) == "earthreason"
    for split, count in (("train", 20), ("val", 6), ("test", 10)):
        data = EarthReason(bench, split, mode="eval")
        assert len(data) == count
        for i in range(count):
            sample = data[i]
            flags = meta["samples"][split][sample["id"]]
            assert sample["category"] == flags["category"]  # category read back from the file name
            assert sample["empty"] == flags["empty"] == (sample["answers"] == [])
            assert int(sample["mask"].sum()) == flags["target_pixels"]
            assert sample["image"].shape[:2] == (flags["height"], flags["width"])
            assert 192 <= min(sample["image"].shape[:2]) and max(sample["image"].shape[:2]) <= 288
            assert 4 <= len(sample["questions"]) <= 6
            if not flags["empty"]:
                assert sample["mask"].sum() >= 30 and 1 <= len(sample["answers"]) <= 3


def test_empty_fraction_and_heldout_categories():
    for split, count in (("train", 400), ("val", 60), ("test", 100)):
        plans = plan_split(split, count, seed=3)
        assert sum(p.empty for p in plans) == round(0.05 * count)
        categories = {p.category for p in plans}
        if split == "train":
            assert not categories & set(HELDOUT_CATEGORIES)
            assert not any(p.heldout_phrasing for p in plans)
        else:
            assert set(HELDOUT_CATEGORIES) <= categories
    test = plan_split("test", 100, seed=3)
    assert sum(p.heldout_phrasing for p in test) == 50
    assert plan_split("val", 60, seed=3) == plan_split("val", 60, seed=3)


def test_meta_records_flags_and_heldout_absent_from_train(bench):
    meta = json.loads((bench / "synth_meta.json").read_text())
    assert meta["heldout_categories"] == list(HELDOUT_CATEGORIES)
    assert set(meta["train_categories"]) == set(CATEGORIES) - set(HELDOUT_CATEGORIES)
    for flags in meta["samples"]["train"].values():
        assert flags["category"] not in HELDOUT_CATEGORIES
        assert not set(flags["distractors"]) & set(HELDOUT_CATEGORIES)  # not even as distractors
        assert not flags["heldout_phrasing"]
    for split in ("val", "test"):
        for flags in meta["samples"][split].values():
            assert flags["heldout_category"] == (flags["category"] in HELDOUT_CATEGORIES)
    assert meta["counts"]["test"]["heldout_phrasing"] == 5


def test_heldout_phrasings_only_in_test(bench):
    meta = json.loads((bench / "synth_meta.json").read_text())
    heldout = {q for c in CATEGORIES for q in TEXT[c]["heldout"]}
    seen = {q for c in CATEGORIES for q in TEXT[c]["seen"]}
    assert not heldout & seen
    for split in ("train", "val", "test"):
        for stem, flags in meta["samples"][split].items():
            questions = set(json.loads((bench / split / "QAs" / f"{stem}.json").read_text())["questions"])
            assert questions <= (heldout if flags["heldout_phrasing"] else seen)
            assert questions <= set(TEXT[flags["category"]]["heldout"] + TEXT[flags["category"]]["seen"])


def test_location_phrase_and_argument_checks(tmp_path):
    mask = np.zeros((90, 90), bool)
    mask[5:20, 5:20] = True
    assert location_phrase(mask) == "in the upper left of the image"
    mask[:] = False
    mask[40:50, 70:80] = True
    assert location_phrase(mask) == "on the right side of the image"
    with pytest.raises(GeoreasonError, match="min_size"):
        generate_benchmark(tmp_path, 1, 0, 0, min_size=300, max_size=200)


def test_synth_command_writes_and_reports(tmp_path, capsys):
    from georeason.cli import main

    out = tmp_path / "cli"
    grid = tmp_path / "grid.png"
    assert main(["synth", str(out), "--num-train", "4", "--num-val", "2", "--num-test", "2", "--seed", "3",
                 "--min-size", "192", "--max-size", "224", "--workers", "1", "--grid", str(grid)]) == 0
    printed = capsys.readouterr().out
    assert "held-out categories (absent from train): basketball court, island" in printed
    assert grid.stat().st_size > 10_000 and len(list((out / "train" / "images").iterdir())) == 4
    assert main(["data", "check", str(out)]) == 0
