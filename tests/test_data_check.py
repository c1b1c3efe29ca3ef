"""Tests of `georeason data check` (georeason.data.check and georeason.data.cli)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from georeason.cli import main
from georeason.data.check import check_dataset


def _sample(split_dir: Path, stem: str, target: bool, answers: list[str], size=(30, 50)) -> None:
    for folder in ("images", "labels", "QAs"):
        (split_dir / folder).mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(split_dir / "images" / f"{stem}.jpg")
    label = np.zeros(size, np.uint8)
    if target:
        label[5:10, 5:10] = 1
    Image.fromarray(label).save(split_dir / "labels" / f"{stem}.png")
    (split_dir / "QAs" / f"{stem}.json").write_text(json.dumps({"questions": ["q1", "q2"], "answer": answers}))


def test_check_reports_counts_sizes_and_problems(tmp_path, capsys):
    _sample(tmp_path / "train", "lake_1", True, ["a"])
    _sample(tmp_path / "train", "lake_2", False, [], size=(20, 70))
    _sample(tmp_path / "train", "lake_3", False, ["but it says yes"])  # inconsistent: a warning
    _sample(tmp_path / "val", "road_1", True, ["b"])
    assert main(["data", "check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and "20x50 .. 30x70" in out
    layout, reports = check_dataset(tmp_path)
    train = reports[0]
    assert layout == "earthreason" and (train.samples, train.empty) == (3, 2)
    assert train.categories == {"lake": 3} and train.to_dict()["questions"]["total"] == 6
    assert any("lake_3: the mask is empty but answers are given" in w for w in train.warnings)

    (tmp_path / "val" / "images" / "road_1.jpg").write_bytes(b"\xff\xd8 truncated")
    (tmp_path / "val" / "labels" / "extra_9.png").write_bytes(b"")
    assert main(["data", "check", str(tmp_path), "--split", "val", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    problems = report["splits"][0]["problems"]
    assert any("extra_9.png: label without an image" in p for p in problems)
    assert any("road_1.jpg" in p for p in problems) and report["layout"] == "earthreason"

    # A mask of another size than its image: the message names both files.
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "train" / "labels" / "lake_1.png")
    assert main(["data", "check", str(tmp_path), "--split", "train", "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["splits"][0]["problems"]
    label, image = tmp_path / "train" / "labels" / "lake_1.png", tmp_path / "train" / "images" / "lake_1.jpg"
    assert any(f"sample lake_1: mask ({label}) is 50x40 but the image {image} is 50x30 (WxH)" in p for p in problems)


def test_check_unknown_folder_is_an_error(tmp_path, capsys):
    assert main(["data", "check", str(tmp_path)]) == 2
    assert "not a known dataset layout" in capsys.readouterr().err
