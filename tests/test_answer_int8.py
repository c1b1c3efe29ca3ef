"""Int8-weight answers (model.enable_int8_answers): masks unchanged, answers from quantised decoding steps."""

from __future__ import annotations

import pytest
import torch

from georeason.errors import GeoreasonError
from georeason.model import prompt_builder_for
from georeason.model.factory import build_model

QUESTIONS = ["where could a small plane land?", "which roads are blocked by the flood?"]


def test_int8_answers_keep_the_mask_and_quantise_only_the_decoding_copy():
    model, tokenizer = build_model("tiny", seed=5)
    model.eval()
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    prompt = builder.batch(QUESTIONS, for_generation=True)
    stops = (builder.seg_id, builder.eos_id)
    reference = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.enable_int8_answers()
    decoder = model.__dict__["_answer_llm"]
    quantised = [m for m in decoder.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantised and not any(isinstance(m, torch.nn.Linear) for m in decoder.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the float model is untouched
    assert set(model.state_dict()) == set(state)  # the copy is not saved with the model
    calls = []
    hook = decoder.register_forward_pre_hook(lambda *_: calls.append(1))
    int8 = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops)
    hook.remove()
    assert torch.equal(int8["logits"], reference["logits"])  # the mask never depends on the answer path
    assert len(calls) == max(len(ids) for ids in int8["answer_ids"]) - 1  # every step after the first ran int8
    # The quantised copy's next-token logits track the float LLM's (per-channel int8 weights).
    with torch.inference_mode():
        tokens = prompt.input_ids[:, :20]
        mask = torch.ones_like(tokens)
        full, _ = model.llm(model.llm.embed(tokens), mask)
        approx, _ = decoder(decoder.embed(tokens), mask)
        full, approx = model.llm.logits(full), decoder.logits(approx)
    cosine = torch.nn.functional.cosine_similarity(full.flatten(), approx.flatten(), dim=0)
    assert cosine > 0.99
    model.enable_int8_answers(False)
    again = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops)
    assert again["answer_ids"] == reference["answer_ids"]
    model.to(torch.bfloat16)
    with pytest.raises(GeoreasonError, match="int8 answers: need a float32 model on the CPU"):
        model.enable_int8_answers()
