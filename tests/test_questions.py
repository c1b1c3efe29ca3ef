"""Several questions about one image: the Python API, `georeason predict` and tiled mode share features."""

from __future__ import annotations

import numpy as np
import pytest

from georeason.errors import GeoreasonError
from georeason.reasoner import GeoReasoner
from tests.test_evaluate import jsonl_data  # noqa: F401 - the JSONL dataset fixture

QUESTIONS = ["where could a small plane land?", "which roads are blocked?", "where is standing water?"]


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    return GeoReasoner.from_pretrained(tiny_model_dir)


def _image(seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:300, 0:340]
    noise = np.random.default_rng(seed).integers(0, 60, (300, 340, 3))
    waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90], -1)
    return np.clip(128 + waves + noise, 1, 255).astype(np.uint8)


def _count_encoder_calls(reasoner):
    calls = []
    return calls, reasoner.model.encoder.register_forward_hook(lambda *_: calls.append(1))


def test_predict_with_a_list_of_questions_encodes_once_and_equals_one_at_a_time(reasoner):
    image = _image()
    calls, hook = _count_encoder_calls(reasoner)
    try:
        many = reasoner.predict(image, QUESTIONS)
        assert len(calls) == 1
    finally:
        hook.remove()
    assert [p.question for p in many] == QUESTIONS
    for prediction, question in zip(many, QUESTIONS):
        alone = reasoner.predict(image, question)
        assert np.array_equal(prediction.probability, alone.probability)
        assert prediction.answer == alone.answer
        assert prediction.seconds["features"] >= 0 and prediction.seconds["total"] > 0
    assert not np.array_equal(many[0].probability, many[1].probability)
    with pytest.raises(GeoreasonError, match="questions: expected a non-empty list"):
        reasoner.predict(image, [])
    with pytest.raises(GeoreasonError, match="question: the question is empty"):
        reasoner.predict(image, ["where?", "  "])


def test_predict_cli_groups_questions_by_image(tiny_model_dir, tmp_path, monkeypatch):
    import json

    from PIL import Image

    from georeason.cli import main
    from georeason.model.segearth import SegEarthModel

    Image.fromarray(_image(0)).save(tmp_path / "a.png")
    Image.fromarray(_image(1)).save(tmp_path / "b.png")
    pairs = [{"image": "a.png", "question": QUESTIONS[0]}, {"image": "b.png", "question": QUESTIONS[0]},
             {"image": "a.png", "question": QUESTIONS[1]}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    encoded = []
    original = SegEarthModel.encode_image

    def counted(self, pixels, *args, **kwargs):
        encoded.append(pixels.shape[0])
        return original(self, pixels, *args, **kwargs)

    monkeypatch.setattr(SegEarthModel, "encode_image", counted)
    assert main(["predict", "--model", str(tiny_model_dir), "--questions", str(tmp_path / "pairs.jsonl"),
                 "--out", str(tmp_path / "grouped"), "--no-progress"]) == 0
    assert encoded == [1, 1]  # a.png once for its two questions, b.png once
    summary = json.loads((tmp_path / "grouped" / "summary.json").read_text())
    assert summary["counts"]["ok"] == 3
    names = {(e["image"].rsplit("/", 1)[-1], e["question"]): e["name"] for e in summary["inputs"]}
    # Several --question on the command line: every image gets every question, same masks as one at a time.
    assert main(["predict", "--model", str(tiny_model_dir), str(tmp_path / "a.png"), "--question", QUESTIONS[1],
                 "--out", str(tmp_path / "alone"), "--no-progress"]) == 0
    grouped = np.asarray(Image.open(tmp_path / "grouped" / f"{names[('a.png', QUESTIONS[1])]}.mask.png"))
    alone = np.asarray(Image.open(tmp_path / "alone" / "a.mask.png"))
    assert np.array_equal(grouped, alone)
    encoded.clear()
    assert main(["predict", "--model", str(tiny_model_dir), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                 "--question", QUESTIONS[0], "--question", QUESTIONS[2], "--out", str(tmp_path / "both"),
                 "--no-progress"]) == 0
    assert encoded == [1, 1]
    summary = json.loads((tmp_path / "both" / "summary.json").read_text())
    assert [(e["image"].rsplit("/", 1)[-1], e["question"], e["status"]) for e in summary["inputs"]] == [
        ("a.png", QUESTIONS[0], "ok"), ("a.png", QUESTIONS[2], "ok"), ("b.png", QUESTIONS[0], "ok"),
        ("b.png", QUESTIONS[2], "ok")]


def test_eval_all_questions_encodes_each_image_once_with_the_same_scores(tiny_model_dir, jsonl_data, monkeypatch):
    from georeason.evaluate import evaluate, model_predictor
    from georeason.model.segearth import SegEarthModel
    from georeason.processor import SegEarthProcessor

    model = SegEarthModel.from_pretrained(tiny_model_dir)
    processor = SegEarthProcessor.from_pretrained(tiny_model_dir, config=model.config)
    unshared = evaluate(tiny_model_dir, jsonl_data, "test", all_questions=True, answers=True,
                        predictor=model_predictor(model, processor, answers=True))
    encoded = []
    original = SegEarthModel.encode_image
    monkeypatch.setattr(SegEarthModel, "encode_image",
                        lambda self, pixels, *a, **k: encoded.append(1) or original(self, pixels, *a, **k))
    shared = evaluate(tiny_model_dir, jsonl_data, "test", all_questions=True, answers=True, batch_size=3)
    assert shared["data"]["items"] == 10 and len(encoded) == 5  # 10 questions about 5 images
    assert shared["protocol"]["questions"].startswith("every question of each image")
    assert [(s["id"], s["iou"]) for s in shared["samples"]] == [(s["id"], s["iou"]) for s in unshared["samples"]]
    assert shared["metrics"] == unshared["metrics"] and shared["answers"] == unshared["answers"]
    released = evaluate(tiny_model_dir, jsonl_data, "test")
    assert released["protocol"]["questions"] == "question 0 of each image (the released protocol)"
