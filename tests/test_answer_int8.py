"""Int8-weight answers (model.enable_int8_answers): masks unchanged, answers from quantised decoding steps."""

from __future__ import annotations

import pytest
import torch

from georeason.errors import GeoreasonError
from georeason.model.answer_int8 import Int8WeightLinear, int8_decoding_copy
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
    quantised = [m for m in decoder.modules() if isinstance(m, Int8WeightLinear)]
    assert quantised and not any(isinstance(m, torch.nn.Linear) for m in decoder.modules())
    assert all(m.weight_int8.dtype == torch.int8 for m in quantised)
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


def test_int8_weight_linear_computes_with_the_rounded_weight_and_its_error_is_bounded():
    torch.manual_seed(0)
    linear = torch.nn.Linear(48, 20)
    layer = Int8WeightLinear(linear)
    weight = linear.weight.detach()
    # Each weight is within half a step of its row's scale, and the row's largest weight is exact.
    step = layer.scale.float()[:, None]
    assert torch.all(step >= weight.abs().amax(1, keepdim=True) / 127)  # nothing clipped
    assert torch.all(step <= weight.abs().amax(1, keepdim=True) / 127 * 1.02)
    assert torch.all((layer.dequantized_weight() - weight).abs() <= step / 2 + 1e-7)
    x = torch.randn(3, 5, 48)
    # The product runs on bfloat16 activations: exact up to bfloat16 rounding of x and of the sums.
    expected = x.bfloat16().float() @ layer.dequantized_weight().T + linear.bias.detach()
    assert torch.allclose(layer(x), expected, atol=0.03, rtol=0.01)
    assert layer(x).shape == (3, 5, 20)
    assert not torch.allclose(layer(x), linear(x), atol=1e-6)  # it really is rounded
    assert torch.allclose(layer(x), linear(x), atol=0.05)


def test_the_int8_copy_of_a_tied_llm_keeps_its_embedding_table():
    model, _ = build_model("tiny", seed=1)
    llm = model.llm
    head = llm.causal_lm.get_output_embeddings()
    head.weight = llm.causal_lm.get_input_embeddings().weight  # tie, as SmolLM2 and Qwen2 do
    copy = int8_decoding_copy(llm)
    table = copy.causal_lm.get_input_embeddings().weight
    assert torch.equal(table, llm.causal_lm.get_input_embeddings().weight)
    assert isinstance(copy.causal_lm.get_output_embeddings(), Int8WeightLinear)
    assert isinstance(llm.causal_lm.get_output_embeddings(), torch.nn.Linear)  # the float LLM is untouched
