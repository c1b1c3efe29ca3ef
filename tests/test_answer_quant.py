"""Quantised answers (model.quantise_answers "int8" / "int4"): masks unchanged, answers from quantised
decoding steps, each layer computing with a weight within its documented bound of the float one."""

from __future__ import annotations

import pytest
import torch

from georeason.errors import GeoreasonError
from georeason.model.answer_quant import INT4_GROUP_SIZES, Int4WeightLinear, Int8WeightLinear, decoding_copy
from georeason.model import prompt_builder_for
from georeason.model.factory import build_model

QUESTIONS = ["where could a small plane land?", "which roads are blocked by the flood?"]


def _answers_with(weights: str):
    """(reference output, quantised output, model, prompt, the decoding copy, its step calls) on the tiny model."""
    model, tokenizer = build_model("tiny", seed=5)
    model.eval()
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    prompt = builder.batch(QUESTIONS, for_generation=True)
    stops = (builder.seg_id, builder.eos_id)
    reference = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.quantise_answers(weights)
    assert model.answer_weights == weights
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the float model is untouched
    assert set(model.state_dict()) == set(state)  # the copy is not saved with the model
    decoder = model.__dict__["_answer_llm"]
    calls = []
    hook = decoder.register_forward_pre_hook(lambda *_: calls.append(1))
    quantised = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops)
    hook.remove()
    assert torch.equal(quantised["logits"], reference["logits"])  # the mask never depends on the answer path
    assert len(calls) == max(len(ids) for ids in quantised["answer_ids"]) - 1  # every step after the first ran it
    model.quantise_answers(None)
    assert model.answer_weights is None
    again = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops)
    assert again["answer_ids"] == reference["answer_ids"]
    return model, prompt, decoder


def _teacher_forced(model, decoder, prompt):
    """Next-token logits of the float LLM and of the decoding copy on the same 20 prompt tokens."""
    with torch.inference_mode():
        tokens = prompt.input_ids[:, :20]
        mask = torch.ones_like(tokens)
        full, _ = model.llm(model.llm.embed(tokens), mask)
        approx, _ = decoder(decoder.embed(tokens), mask)
        return model.llm.logits(full), decoder.logits(approx)


def test_int8_answers_keep_the_mask_and_quantise_only_the_decoding_copy():
    model, prompt, decoder = _answers_with("int8")
    quantised = [m for m in decoder.modules() if isinstance(m, Int8WeightLinear)]
    assert quantised and not any(isinstance(m, torch.nn.Linear) for m in decoder.modules())
    assert all(m.weight_int8.dtype == torch.int8 for m in quantised)
    # The quantised copy's next-token logits track the float LLM's (per-channel int8 weights).
    full, approx = _teacher_forced(model, decoder, prompt)
    assert torch.nn.functional.cosine_similarity(full.flatten(), approx.flatten(), dim=0) > 0.99
    model.enable_int8_answers()  # the int8 shorthand of quantise_answers("int8")
    assert model.answer_weights == "int8"
    model.enable_int8_answers(False)
    assert model.answer_weights is None
    model.to(torch.bfloat16)
    with pytest.raises(GeoreasonError, match="int8 answers: need a float32 model on the CPU"):
        model.enable_int8_answers()


def test_int4_answers_keep_the_mask_and_track_the_float_llm():
    model, prompt, decoder = _answers_with("int4")
    int4 = [m for m in decoder.modules() if isinstance(m, Int4WeightLinear)]
    assert not any(isinstance(m, (torch.nn.Linear, Int8WeightLinear)) for m in decoder.modules())
    assert all(m.weight_int4.dtype == torch.uint8 and m.group_size == 32 for m in int4)
    # The tiny LLM's LM head has 264 outputs, not a multiple of 16: its int4 rows are padded to 272.
    head = decoder.causal_lm.get_output_embeddings()
    assert isinstance(head, Int4WeightLinear) and head.weight_int4.shape == (272, 16)
    full, approx = _teacher_forced(model, decoder, prompt)
    assert torch.nn.functional.cosine_similarity(full.flatten(), approx.flatten(), dim=0) > 0.98  # 0.994 here
    # Counted: the greedy next token agrees with the float LLM's at most of the 40 positions.
    agree = int((full.argmax(-1) == approx.argmax(-1)).sum())
    assert agree >= 30, f"{agree}/40 next tokens agree"
    model.to(torch.bfloat16)
    with pytest.raises(GeoreasonError, match="int4 answers: need a float32 model on the CPU"):
        model.quantise_answers("int4")


def test_quantise_answers_refuses_unknown_formats_and_group_sizes():
    model, _ = build_model("tiny", seed=1)
    with pytest.raises(GeoreasonError, match="expected one of int8, int4, got 'int2'"):
        model.quantise_answers("int2")
    with pytest.raises(GeoreasonError, match="group_size must be one of"):
        model.quantise_answers("int4", group_size=16)
    assert model.answer_weights is None


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


@pytest.mark.parametrize("group_size", INT4_GROUP_SIZES)
def test_int4_weight_linear_rounds_each_group_within_half_a_step(group_size):
    torch.manual_seed(group_size)
    linear = torch.nn.Linear(512, 40)  # 40 outputs: padded to 48 rows for the kernel, 40 come out
    with torch.no_grad():  # hard groups: a constant row, and a group far from zero with a tiny spread
        linear.weight[3] = 0.7
        linear.weight[5, :group_size] = 3.0 + torch.linspace(0, 1e-3, group_size)
    layer = Int4WeightLinear(linear, group_size)
    weight = linear.weight.detach()
    dequantised = layer.dequantized_weight()  # read back from the packed bytes
    step, zero = layer.group_ranges()
    assert dequantised.shape == (40, 512) and step.shape == zero.shape == (40, 512 // group_size)
    groups = weight.reshape(40, -1, group_size)
    span = (groups.amax(-1) - groups.amin(-1)) / 15
    # The documented bound: each weight within half its group's step; the step is the group's range / 15,
    # enlarged only by bfloat16 rounding (1.2 %) and by the rounding of its offset (|z| 2^-9 / 7.5).
    per_weight = step.repeat_interleave(group_size, dim=1)
    assert torch.all((dequantised - weight).abs() <= per_weight / 2 * (1 + 1e-5) + 1e-30)
    assert torch.all(step <= (span + zero.abs() * 2.0**-9 / 7.5) * 1.013 + 1e-37)
    ordinary = [row for row in range(40) if row not in (3, 5)]  # random weights near 0: no offset rounding
    assert torch.all(step[ordinary] <= span[ordinary] * 1.015)
    # The packed bytes hold exactly q = round((W - z) / s) + 8 in 0..15 with the stored s and z.
    codes = (torch.round((weight - zero.repeat_interleave(group_size, 1)) / per_weight) + 8).clamp(0, 15)
    assert torch.equal(dequantised, (codes - 8) * per_weight + zero.repeat_interleave(group_size, 1))
    assert int(codes.min()) == 0 and int(codes.max()) == 15  # min-max: the grid spans each group
    # The product: bfloat16 x times the dequantised weight, float32 sums, rounded to bfloat16 once.
    x = torch.randn(3, 5, 512)
    out = layer(x)
    expected = x.bfloat16().float() @ dequantised.T + linear.bias.detach()
    assert out.shape == (3, 5, 40) and out.dtype == torch.float32
    scale = (x.bfloat16().float().abs() @ dequantised.abs().T)  # the size of the sums' terms
    assert torch.all((out - expected).abs() <= scale * 2.0**-8 + 1e-5)
    assert not torch.allclose(out, linear(x), atol=1e-3)  # it really is rounded


def test_int4_refuses_inputs_its_kernel_does_not_take_and_the_copy_falls_back_to_int8():
    for linear, group_size in ((torch.nn.Linear(100, 32), 32), (torch.nn.Linear(96, 32), 64),
                               (torch.nn.Linear(64, 32), 16)):
        assert not Int4WeightLinear.supports(linear, group_size)
        with pytest.raises(GeoreasonError, match="int4 weights: need in_features % group_size == 0 with group_size "
                                                 r"in \(32, 64, 128, 256\)"):
            Int4WeightLinear(linear, group_size)
    model, _ = build_model("tiny", seed=1)
    copy = decoding_copy(model.llm, "int4", group_size=64)  # the tiny LLM: in_features 32 (attention) and 64 (fc2)
    layers = {name: module for name, module in copy.named_modules()
              if isinstance(module, (Int4WeightLinear, Int8WeightLinear))}
    assert len(layers) == sum(isinstance(m, torch.nn.Linear) for m in model.llm.modules())
    for name, module in layers.items():
        assert isinstance(module, Int4WeightLinear if module.in_features % 64 == 0 else Int8WeightLinear), name
    assert any(isinstance(m, Int4WeightLinear) for m in layers.values())
    assert any(isinstance(m, Int8WeightLinear) for m in layers.values())


@pytest.mark.parametrize("weights,layer", [("int8", Int8WeightLinear), ("int4", Int4WeightLinear)])
def test_the_quantised_copy_of_a_tied_llm_keeps_its_embedding_table(weights, layer):
    model, _ = build_model("tiny", seed=1)
    llm = model.llm
    head = llm.causal_lm.get_output_embeddings()
    head.weight = llm.causal_lm.get_input_embeddings().weight  # tie, as SmolLM2 and Qwen2 do
    copy = decoding_copy(llm, weights)
    table = copy.causal_lm.get_input_embeddings().weight
    assert torch.equal(table, llm.causal_lm.get_input_embeddings().weight)
    first = copy.causal_lm.model.layers[0].mlp.fc1
    assert isinstance(first, layer)
    assert isinstance(llm.causal_lm.get_output_embeddings(), torch.nn.Linear)  # the float LLM is untouched


def test_the_reasoner_takes_answer_weights_and_refuses_disagreeing_ones(tiny_model_dir):
    from georeason.reasoner import GeoReasoner

    reasoner = GeoReasoner.from_pretrained(tiny_model_dir, answer_weights="int4")
    assert reasoner.model.answer_weights == "int4"
    assert GeoReasoner.from_pretrained(tiny_model_dir, answer_int8=True).model.answer_weights == "int8"
    with pytest.raises(GeoreasonError, match="answer_int8 and answer_weights='int4' disagree"):
        GeoReasoner.from_pretrained(tiny_model_dir, answer_int8=True, answer_weights="int4")
    with pytest.raises(GeoreasonError, match="answer_weights: expected one of int8, int4"):
        GeoReasoner.from_pretrained(tiny_model_dir, answer_weights="fp8")
    with pytest.raises(GeoreasonError, match="int4 answers: need dtype float32 on the CPU, got bfloat16"):
        GeoReasoner.from_pretrained(tiny_model_dir, dtype="bfloat16", answer_weights="int4")


def test_predict_takes_answer_weights_and_keeps_answer_int8():
    import argparse

    from georeason import predict

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    base = ["image.png", "--model", "m", "--out", "o", "--question", "q"]
    assert parser.parse_args(base).answer_weights is None
    assert parser.parse_args(base + ["--answer-int8"]).answer_weights == "int8"
    assert parser.parse_args(base + ["--answer-weights", "int4"]).answer_weights == "int4"
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--answer-int8", "--answer-weights", "int4"])


def test_one_list_of_answer_weight_formats_serves_the_cli_the_reasoner_and_the_model():
    import argparse
    import subprocess
    import sys

    from georeason import config, predict
    from georeason.model import answer_quant

    parser = argparse.ArgumentParser()
    predict.add_arguments(parser)
    choices = next(action.choices for action in parser._actions if action.dest == "answer_weights" and action.choices)
    assert choices is config.ANSWER_WEIGHTS is answer_quant.ANSWER_WEIGHTS
    # Building the parser must not import the model package (torch, transformers).
    script = ("import argparse, sys; from georeason import predict; predict.add_arguments(argparse.ArgumentParser()); "
              "print(any(m.startswith('georeason.model') for m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
