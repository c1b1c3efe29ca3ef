"""Tests of georeason eval: metrics equal a hand computation with MetricAccumulator, flags, baselines,
answer scores, saved outputs, the report, and the error messages for bad input.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from georeason.errors import GeoreasonError
from georeason.evaluate import answer_scores, constant_predictor, evaluate, normalize_answer, token_f1


@pytest.fixture(scope="module")
def jsonl_data(tmp_path_factory) -> Path:
    """5 images of different sizes: 4 targets (2 categories), 1 empty; one flag per sample in meta."""
    root = tmp_path_factory.mktemp("jsonl")
    rng = np.random.default_rng(0)
    lines = []
    for k, (h, w) in enumerate([(120, 160), (200, 100), (90, 90), (150, 150), (64, 128)]):
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"img{k}.png")
        entry = {"image": f"img{k}.png", "questions": [f"Where is thing {k}?", "Second question?"],
                 "category": "pool" if k % 2 else "runway", "meta": {"heldout_phrasing": k >= 3}}
        if k == 4:
            entry.update(mask=None, answers=[])
        else:
            mask = np.zeros((h, w), np.uint8)
            mask[h // 4: h // 2, w // 3: w - 5] = 255
            Image.fromarray(mask).save(root / f"mask{k}.png")
            entry.update(mask=f"mask{k}.png", answers=[f"The {entry['category']} in the middle.", "It is there."])
        lines.append(json.dumps(entry))
    (root / "test.jsonl").write_text("\n".join(lines) + "\n")
    return root


def by_hand(model_dir: Path, data: Path, at_original_size: bool):
    """The same metrics computed sample by sample with the model and MetricAccumulator directly."""
    import torch

    from georeason.data import open_dataset
    from georeason.data.transforms import SampleTransform, restore_mask_to_original
    from georeason.metrics import MetricAccumulator
    from georeason.model import load_pretrained

    model, prompts = load_pretrained(model_dir)
    dataset = open_dataset(data, "test", mode="eval", transforms=SampleTransform(model.config.image_size))
    overall, flagged = MetricAccumulator(), {"true": MetricAccumulator(), "false": MetricAccumulator()}
    for index in range(len(dataset)):
        sample = dataset[index]
        prompt = prompts.batch([sample["question"]], for_generation=True)
        with torch.inference_mode():
            logits = model.segment(sample["pixel_values"][None], prompt)["logits"][0].numpy()
        if at_original_size:
            pred, gt = restore_mask_to_original(logits, sample["geometry"]), sample["mask"]
        else:
            pred, gt = logits > 0, sample["target"].numpy() > 0.5
        overall.update(pred, gt, sample["category"])
        flagged[str(index >= 3).lower()].update(pred, gt)
    return overall.compute(), {k: v.compute() for k, v in flagged.items()}


@pytest.mark.parametrize("at_original_size", [False, True])
def test_eval_matches_metric_accumulator_by_hand(tiny_model_dir, jsonl_data, at_original_size):
    # by_hand runs one sample per model call; float32 results of a batch of 2 differ in the last bits
    # (about 1e-6 in the logits), enough to flip a pixel near p = 0.5, so the exact comparison is at batch 1
    # and the batch-2 run is compared to it within one flipped pixel's worth of IoU.
    report = evaluate(tiny_model_dir, jsonl_data, "test", batch_size=1, at_original_size=at_original_size)
    batched = evaluate(tiny_model_dir, jsonl_data, "test", batch_size=2, at_original_size=at_original_size)
    assert batched["data"]["items"] == 5
    for key in ("gIoU", "cIoU"):
        assert batched["metrics"][key] == pytest.approx(report["metrics"][key], abs=1e-3), key
    overall, flags = by_hand(tiny_model_dir, jsonl_data, at_original_size)
    categories = overall.pop("categories")
    for key, value in overall.items():
        assert report["metrics"][key] == pytest.approx(value, abs=1e-12), key
    assert report["categories"].keys() == categories.keys() == {"pool", "runway"}
    for name in categories:
        assert report["categories"][name]["gIoU"] == pytest.approx(categories[name]["gIoU"])
    for value in ("true", "false"):
        assert report["flags"]["heldout_phrasing"][value]["sum_union"] == flags[value]["sum_union"]
        assert report["flags"]["heldout_phrasing"][value]["n"] == (2 if value == "true" else 3)
    assert report["data"]["items"] == 5 and len(report["samples"]) == 5
    assert report["protocol"]["resolution"] == ("original" if at_original_size else "padded 256x256")


def test_constant_baselines(jsonl_data):
    empty = evaluate(None, jsonl_data, "test", baseline="empty", image_size=256)
    m = empty["metrics"]
    # Predicting nothing: IoU 1 on the one empty target, 0 elsewhere.
    assert m["gIoU"] == pytest.approx(1 / 5) and m["cIoU"] == 0.0 and empty["empty_target_accuracy"] == 1.0
    everything = evaluate(None, jsonl_data, "test", baseline="everything", image_size=256)
    m = everything["metrics"]
    assert m["false_positive_on_empty"] == 1 and m["false_empty"] == 0
    # Each target covers a known fraction of its image: IoU = target area / image area (padded input).
    assert 0 < m["cIoU"] < 0.5 and m["empty_accuracy"] == 0.0
    assert everything["model"]["fingerprint"] is None and everything["model"]["baseline"] == "everything"
    # Its logits are +1 (probability 0.73): a 0.8 probability threshold keeps nothing, like predict-empty.
    strict = evaluate(None, jsonl_data, "test", baseline="everything", image_size=256, threshold=0.8, limit=4)
    assert strict["metrics"]["sum_intersection"] == 0 and strict["data"]["items"] == 4
    with pytest.raises(GeoreasonError, match="--threshold: expected a probability"):
        evaluate(None, jsonl_data, "test", baseline="empty", image_size=256, threshold=1.0)


def test_constant_predictor_covers_the_image_not_the_padding():
    import torch

    from georeason.data.transforms import compute_geometry

    geometry = compute_geometry(100, 200, 64)
    batch = {"pixel_values": torch.zeros(1, 3, 64, 64), "id": ["a"], "geometry": [geometry]}
    logits, _ = constant_predictor("everything")(batch)
    assert int((logits[0] > 0).sum()) == geometry.resized_height * geometry.resized_width == 32 * 64


def test_beam_search_answers_leave_the_metrics_unchanged(tiny_model_dir, jsonl_data, tmp_path, capsys):
    from georeason.cli import main

    reports = {}
    for beams in ("1", "3"):
        path = tmp_path / f"report{beams}.json"
        assert main(["eval", "--model", str(tiny_model_dir), "--data", str(jsonl_data), "--split", "test",
                     "--answers", "--num-beams", beams, "--report", str(path)]) == 0, capsys.readouterr().err
        reports[beams] = json.loads(path.read_text())
    assert reports["1"]["metrics"] == reports["3"]["metrics"]  # the masks do not depend on the decoder
    assert [r["model"]["answer_num_beams"] for r in reports.values()] == [1, 3]
    answers = [[s["answer"] for s in r["samples"]] for r in reports.values()]
    assert answers[0] != answers[1] and reports["3"]["answers"]["n"] == len(answers[1])
    assert main(["eval", "--model", str(tiny_model_dir), "--data", str(jsonl_data), "--num-beams", "0"]) == 2
    assert "--num-beams: expected a positive integer, got 0" in capsys.readouterr().err


def test_all_questions_answers_outputs_and_report(tiny_model_dir, jsonl_data, tmp_path, capsys):
    from georeason.cli import main

    report_path = tmp_path / "report.json"
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(jsonl_data), "--split", "test",
                 "--all-questions", "--answers", "--save-masks", str(tmp_path / "masks"), "--save-overlays",
                 str(tmp_path / "overlays"), "--report", str(report_path), "--batch-size", "3"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "heldout_phrasing=true" in printed and "category: runway" in printed
    report = json.loads(report_path.read_text())
    assert report["data"]["items"] == 10 and report["metrics"]["n"] == 10
    assert report["answers"]["n"] == 10 and 0.0 <= report["answers"]["token_f1"] <= 1.0
    assert len(report["model"]["fingerprint"]) == 64 and len(report["data"]["fingerprint"]) == 64
    masks = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert masks[:2] == ["img0_q0.png", "img0_q1.png"] and len(masks) == 10
    with Image.open(tmp_path / "masks" / "img1_q0.png") as mask:
        assert mask.size == (100, 200)  # original size (W, H)
    assert len(list((tmp_path / "overlays").iterdir())) == 10
    # The same output folder again is refused.
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(jsonl_data), "--split", "test",
                 "--save-masks", str(tmp_path / "masks")])
    assert code == 2 and "--save-masks" in capsys.readouterr().err


def test_two_processes_score_each_item_once_and_merge_exactly(tiny_model_dir, jsonl_data, tmp_path):
    import os
    import subprocess
    import sys

    single = evaluate(tiny_model_dir, jsonl_data, "test", batch_size=2)
    report = tmp_path / "two.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29533", "-m", "georeason.cli", "eval", "--model", str(tiny_model_dir),
                             "--data", str(jsonl_data), "--split", "test", "--batch-size", "2", "--report",
                             str(report)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    merged = json.loads(report.read_text())
    assert merged["processes"] == 2
    assert [s["id"] for s in merged["samples"]] == [s["id"] for s in single["samples"]]  # each once, in order
    for key in ("n", "sum_intersection", "sum_union", "true_empty", "false_empty"):
        assert merged["metrics"][key] == single["metrics"][key], key
    assert merged["metrics"]["gIoU"] == pytest.approx(single["metrics"]["gIoU"], abs=1e-6)
    assert merged["flags"]["heldout_phrasing"]["true"]["n"] == 2


def test_answer_scores():
    assert normalize_answer("  The Runway, on the LEFT! ") == "the runway on the left"
    assert answer_scores("the runway on the left.", ["A lake.", "The runway on the left"]) == (1.0, 1.0)
    assert token_f1("runway left", "the runway on the left") == pytest.approx(2 * 1.0 * 0.4 / 1.4)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_error_messages(tiny_model_dir, jsonl_data, tmp_path):
    with pytest.raises(GeoreasonError, match=r"--data .*missing.*: no such dataset"):
        evaluate(tiny_model_dir, tmp_path / "missing", "test")
    with pytest.raises(GeoreasonError, match=r"--split 'validation': not in dataset .* \(available splits: test\)"):
        evaluate(tiny_model_dir, jsonl_data, "validation")
    with pytest.raises(GeoreasonError, match=r"--model .*nothing.*: not a model folder"):
        evaluate(tmp_path / "nothing", jsonl_data, "test")
    bad = tmp_path / "bad-model"
    bad.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (bad / name).write_bytes((tiny_model_dir / name).read_bytes())
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["connector"]["depht"] = 2
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(GeoreasonError, match=r"unknown key\(s\) depht"):
        evaluate(bad, jsonl_data, "test")
    config["connector"] = {"depth": "two"}
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(GeoreasonError, match=r"connector.depth: expected an integer"):
        evaluate(bad, jsonl_data, "test")


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_test_image_stops_with_its_name_not_a_worker_traceback(tiny_model_dir, jsonl_data, tmp_path,
                                                                           workers):
    data = tmp_path / "data"
    shutil.copytree(jsonl_data, data)
    (data / "img2.png").write_bytes(b"")
    with pytest.raises(GeoreasonError) as caught:
        evaluate(tiny_model_dir, data, "test", num_workers=workers)
    assert str(caught.value) == f"{data / 'img2.png'}: the image file is empty (0 bytes)"
