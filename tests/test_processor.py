"""Tests of georeason.processor: config-driven preprocessing, one tokenisation per question, one answer cleaning.

Every inference path (GeoReasoner, evaluation, the service) goes processor -> model.segment -> post_process.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from georeason.cli import main
from georeason.data.transforms import preprocess_image
from georeason.errors import GeoreasonError
from georeason.model.prompt import PromptBuilder
from georeason.processor import SegEarthProcessor, clean_answer
from georeason.reasoner import GeoReasoner

QUESTION = "Where could a small plane land?"


def _image(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _with_pixel_mean(source, target, mean):
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["pixel_mean"] = mean
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_processor_round_trips_through_the_model_folder(tiny_model_dir, tmp_path):
    processor = SegEarthProcessor.from_pretrained(tiny_model_dir)
    processor.save_pretrained(tmp_path / "copy")
    again = SegEarthProcessor.from_pretrained(tmp_path / "copy")
    assert again.pixel_mean == processor.pixel_mean and again.image_size == processor.image_size
    assert again.max_question_tokens == processor.max_question_tokens
    assert again.question(QUESTION).token_ids == processor.question(QUESTION).token_ids


def test_the_question_limit_is_the_template_arithmetic(tiny_model_dir):
    processor = SegEarthProcessor.from_pretrained(tiny_model_dir)
    prompts = processor.prompts
    # A full generation prompt is the template plus the question's own ids, position for position.
    full = prompts.encode(QUESTION, for_generation=True)["input_ids"]
    assert len(full) == prompts.template_length("reasoning", True) + len(prompts.question_ids(QUESTION))
    answer_room = processor.config.prompt.max_answer_tokens
    assert processor.max_question_tokens == prompts.max_length - prompts.template_length() - answer_room
    # The byte-level tokenizer: " " + question is one token per byte.
    limit = processor.max_question_tokens
    assert len(processor.question("x" * (limit - 1)).token_ids) == limit
    with pytest.raises(GeoreasonError, match=rf"question: {limit + 1} tokens is over this model's limit of {limit}"):
        processor.question("x" * limit)


def test_a_changed_pixel_mean_changes_the_model_input(tiny_model_dir, tmp_path):
    image = _image()
    default = SegEarthProcessor.from_pretrained(tiny_model_dir)
    shifted_dir = _with_pixel_mean(tiny_model_dir, tmp_path / "shifted", [100.0, 110.0, 120.0])
    shifted = SegEarthProcessor.from_pretrained(shifted_dir)
    a = default([image], [QUESTION]).pixel_values[0].numpy()
    b = shifted([image], [QUESTION]).pixel_values[0].numpy()
    std = np.asarray(default.pixel_std, np.float32).reshape(3, 1, 1)
    delta = (np.asarray(default.pixel_mean, np.float32) - np.float32([100.0, 110.0, 120.0])).reshape(3, 1, 1)
    np.testing.assert_allclose(b - a, np.broadcast_to(delta / std, a.shape), rtol=1e-5, atol=1e-5)
    expected, _ = preprocess_image(image, shifted.image_size, [100.0, 110.0, 120.0], default.pixel_std)
    np.testing.assert_array_equal(b, expected)
    # The same reaches the model through GeoReasoner and through the evaluation's dataset transform.
    seen = []
    reasoner = GeoReasoner.from_pretrained(shifted_dir)
    hook = reasoner.model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        reasoner.predict(image, QUESTION, answer=False)
    finally:
        hook.remove()
    np.testing.assert_array_equal(seen[0][0].numpy(), expected)
    sample = shifted.sample_transform()({"image": image, "mask": np.zeros(image.shape[:2], bool), "id": "x"})
    np.testing.assert_array_equal(sample["pixel_values"].numpy(), expected)


def test_a_bad_pixel_std_is_refused_naming_the_fields(tiny_model_dir, tmp_path):
    folder = shutil.copytree(tiny_model_dir, tmp_path / "bad")
    config = json.loads((folder / "config.json").read_text())
    config["pixel_std"] = [58.0, 0.0, 57.0]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(GeoreasonError, match=r"config pixel_mean/pixel_std: .*std > 0"):
        SegEarthProcessor.from_pretrained(folder)


def test_clean_answer_drops_control_characters_only():
    assert clean_answer(" a\x00b\x07c\x1b[0m\nd\te ") == "abc[0m\nd\te"
    assert clean_answer("Le lac était gelé.") == "Le lac était gelé."


@pytest.mark.input_kind("outputs", "answer with control characters",
                        "predict, evaluate and serve remove them the same way (NUL cannot go in GPKG or TIFF tags)")
def test_answers_are_cleaned_identically_in_predict_evaluate_and_serve(tiny_model_dir, tmp_path, monkeypatch):
    from georeason.evaluate import model_predictor
    from georeason.serve.jobs import JobRequest, run_job

    reasoner = GeoReasoner.from_pretrained(tiny_model_dir)
    raw = "run\x00way\x07 by the lake\x1b"
    ids = reasoner.processor.tokenizer.encode(raw, add_special_tokens=False)
    original = type(reasoner.model).segment

    def segment(model, pixels, prompt, answer=False, **kwargs):
        out = original(model, pixels, prompt, answer=False)
        if answer:
            out.answer_ids = [list(ids) for _ in range(pixels.shape[0])]
        return out

    monkeypatch.setattr(type(reasoner.model), "segment", segment)
    expected = "runway by the lake"
    assert reasoner.predict(_image(), QUESTION).answer == expected
    image = _image()
    batch = {"question": [QUESTION], "task": ["reasoning"],
             "pixel_values": reasoner.processor.pixel_values([image])[0]}
    _, texts = model_predictor(reasoner.model, reasoner.processor, True)(batch)
    assert texts == [expected]
    Image.fromarray(image).save(tmp_path / "upload.png")
    folder = tmp_path / "result"
    folder.mkdir()
    job = run_job(reasoner, JobRequest(tmp_path / "upload.png", QUESTION, answer=True, vectors=False,
                                       result_folder=folder, preview_max_side=64))
    assert job.answer == expected


@pytest.mark.input_kind("text files", "question over the model's token limit",
                        "refused before any output, once, naming the limit in tokens")
def test_predict_tokenises_each_question_once_and_refuses_a_long_one_once(tiny_model_dir, tmp_path, monkeypatch,
                                                                          capsys):
    calls = []
    original = PromptBuilder.question_ids

    def counted(self, question):
        calls.append(question)
        return original(self, question)

    monkeypatch.setattr(PromptBuilder, "question_ids", counted)
    Image.fromarray(_image()).save(tmp_path / "a.png")
    Image.fromarray(_image(seed=1)).save(tmp_path / "b.png")
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model_dir), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                 "--question", QUESTION, "--out", str(out), "--no-progress"]) == 0
    assert calls == [QUESTION, QUESTION]  # one tokenisation per (image, question) pair, none after
    calls.clear()
    limit = SegEarthProcessor.from_pretrained(tiny_model_dir).max_question_tokens
    capsys.readouterr()
    assert main(["predict", "--model", str(tiny_model_dir), str(tmp_path / "a.png"), "--question", "x" * limit,
                 "--out", str(tmp_path / "long"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.count(f"over this model's limit of {limit} tokens") == 1, error
    assert len(calls) == 1 and not (tmp_path / "long").exists()


def test_post_process_restores_the_original_geometry_and_zeroes_nodata(tiny_model_dir):
    processor = SegEarthProcessor.from_pretrained(tiny_model_dir)
    image = _image(30, 60)
    inputs = processor([image], [QUESTION])
    size = processor.image_size
    geometry = inputs.geometries[0]
    logits = torch.full((1, size, size), -5.0)
    # Target: the left half of the image as placed in the padded input.
    logits[0, geometry.top:geometry.top + geometry.resized_height,
           geometry.left:geometry.left + geometry.resized_width // 2] = 5.0
    from georeason.model import SegmentOutput

    valid = np.ones((30, 60), bool)
    valid[:, :3] = False
    (result,) = processor.post_process(SegmentOutput(logits, torch.zeros(1, 4)), inputs.geometries, [valid])
    assert result.mask.shape == (30, 60) and result.probability.dtype == np.float32 and result.answer is None
    assert result.mask[:, 3:28].all() and not result.mask[:, 32:].any() and not result.mask[:, :3].any()
    assert np.all(result.probability[:, :3] == 0)
