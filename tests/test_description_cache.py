"""The training cache of description embeddings: exact when nothing before p learns, refused otherwise."""

from __future__ import annotations

import json

import pytest
import torch

from georeason.config import LITE_PIXEL_MEAN, LITE_PIXEL_STD, SegEarthConfig, preset
from georeason.errors import GeoreasonError
from georeason.model import prompt_builder_for
from georeason.model.factory import build_model
from georeason.model.feature_cache import DescriptionCache
from georeason.model.prompt import PromptBatch, TokenKind

LITE_FROZEN = {"encoder.backbone": "efficientnet_lite0", "image_size": 128, "pixel_mean": list(LITE_PIXEL_MEAN),
               "pixel_std": list(LITE_PIXEL_STD), "llm.frozen": True, "connector.source": "backbone"}


def lite_frozen(**changes) -> SegEarthConfig:
    """The tiny preset on the Lite0 trunk, LLM frozen, connector reading the trunk: p is frozen."""
    values = preset("tiny").to_dict()
    config = SegEarthConfig.from_dict(values)
    config.encoder.backbone = "efficientnet_lite0"
    config.image_size = 128
    config.pixel_mean, config.pixel_std = list(LITE_PIXEL_MEAN), list(LITE_PIXEL_STD)
    config.llm.frozen = True
    config.connector.source = "backbone"
    for path, value in changes.items():
        section, field = path.split("__")
        setattr(getattr(config, section), field, value)
    return config


def batch(model, tokenizer, seed=0, questions=("where could a small plane land?", "which area floods first?")):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(len(questions), 3, 128, 128, generator=generator)
    prompt = prompt_builder_for(model, tokenizer).batch(list(questions), for_generation=True)
    targets = torch.zeros(len(questions), 128, 128)
    targets[0, 20:60, 30:90] = 1
    return pixels, prompt, targets


def prompt_row(ids: list[int], kinds: list[int]) -> PromptBatch:
    ids_t, kinds_t = torch.tensor([ids]), torch.tensor([kinds])
    return PromptBatch(ids_t, kinds_t, torch.ones_like(ids_t), torch.full_like(ids_t, -100))


def test_key_ignores_positions_after_the_description_but_not_the_image_or_description():
    image = torch.zeros(3, 4, 4)
    d, t = int(TokenKind.DESCRIPTION), int(TokenKind.TEXT)
    base = DescriptionCache.key(image, torch.tensor([5, 6, 7, 8]), torch.tensor([t, d, d, t]))
    assert base == DescriptionCache.key(image, torch.tensor([5, 6, 7, 9, 9]), torch.tensor([t, d, d, t, t]))
    assert base != DescriptionCache.key(image, torch.tensor([5, 6, 4, 8]), torch.tensor([t, d, d, t]))
    assert base != DescriptionCache.key(image + 1, torch.tensor([5, 6, 7, 8]), torch.tensor([t, d, d, t]))


def test_cache_computes_only_missing_rows_and_respects_its_budget():
    cache = DescriptionCache(max_bytes=2 * 4 * 4)  # room for two p of 4 float32
    images = torch.arange(3 * 3 * 2 * 2, dtype=torch.float32).view(3, 3, 2, 2)
    d = int(TokenKind.DESCRIPTION)
    prompt = PromptBatch(torch.tensor([[1, 2], [1, 3], [1, 4]]), torch.full((3, 2), d), torch.ones(3, 2, dtype=torch.long),
                         torch.full((3, 2), -100))
    asked: list[list[int]] = []

    def compute(rows):
        asked.append(list(rows))
        return torch.stack([torch.full((4,), float(r)) for r in rows])

    first = cache.descriptions(images, prompt, compute)
    assert asked == [[0, 1, 2]] and len(cache) == 2 and cache.bytes == 32
    second = cache.descriptions(images, prompt, compute)
    assert asked == [[0, 1, 2], [2]]  # the third pair did not fit the budget: recomputed
    assert torch.equal(first, second) and (cache.hits, cache.misses) == (2, 4)
    with pytest.raises(ValueError, match="max_bytes: expected >= 0"):
        DescriptionCache(-1)


def test_connector_reads_the_trunk_so_p_ignores_the_adapter():
    model, tokenizer = build_model(lite_frozen(), seed=0, pretrained_encoder=False)
    assert model.connector.proj1.in_channels == 320 and model.description_is_frozen
    pixels, prompt, _ = batch(model, tokenizer)
    model.eval()
    with torch.no_grad():
        before = model(pixels, prompt)
        for layer in model.encoder.adapter:
            layer.weight.add_(0.5)
        after = model(pixels, prompt)
    assert torch.equal(before.description_embedding, after.description_embedding)
    assert not torch.allclose(before.mask_logits, after.mask_logits)


def test_cached_forward_equals_recomputed_and_skips_the_llm_on_seen_pairs():
    model, tokenizer = build_model(lite_frozen(), seed=0, pretrained_encoder=False)
    pixels, prompt, targets = batch(model, tokenizer)
    model.train()
    generator = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    reference = model(pixels, prompt, target_masks=targets, generator=generator())
    cache = model.enable_description_cache(2**20)
    calls = []
    hook = model.llm.register_forward_hook(lambda *args: calls.append(1))
    first = model(pixels, prompt, target_masks=targets, generator=generator())
    llm_calls_first = len(calls)
    second = model(pixels, prompt, target_masks=targets, generator=generator())
    hook.remove()
    assert llm_calls_first >= 1 and len(calls) == llm_calls_first  # the second call never ran the LLM
    assert (cache.hits, cache.misses, len(cache)) == (2, 2, 2)
    for output in (first, second):
        assert torch.equal(output.description_embedding, reference.description_embedding)
        assert torch.equal(output.loss, reference.loss)
    second.loss.backward()  # gradients still reach the trained parts
    assert model.d_projector.text_projector.weight.grad is not None


def test_cache_is_refused_when_p_can_change():
    for config in (lite_frozen(llm__frozen=False), lite_frozen(connector__source="encoder"),
                   lite_frozen(encoder__frozen=False)):
        model, _ = build_model(config, seed=0, pretrained_encoder=False)
        assert not model.description_is_frozen
        with pytest.raises(GeoreasonError, match="description-embedding cache needs everything before p frozen"):
            model.enable_description_cache(2**20)


def test_connector_source_is_checked():
    config = preset("tiny")
    config.connector.source = "backbone"
    with pytest.raises(GeoreasonError, match="connector.source 'backbone' needs a pretrained backbone"):
        config.validate()
    config.connector.source = "adapter"
    with pytest.raises(GeoreasonError, match="connector.source must be 'encoder' or 'backbone', got 'adapter'"):
        config.validate()


def test_training_with_the_description_cache_equals_training_without(tmp_path):
    from georeason.data.synth import generate_benchmark
    from georeason.training.loop import train
    from georeason.training.recipe import recipe_from_dict

    generate_benchmark(tmp_path / "data", 3, 0, 0, seed=5, min_size=192, max_size=224, workers=1)
    runs = {}
    for name, budget in (("recomputed", 0), ("cached", 64)):
        recipe = recipe_from_dict({
            "model": "tiny", "data": [{"path": str(tmp_path / "data")}], "output_dir": str(tmp_path / name),
            "model_config": LITE_FROZEN, "max_steps": 9, "global_batch_size": 2, "per_device_batch_size": 2,
            "log_every": 1, "save_every": 9, "gradient_checkpointing": False, "mixed_precision": "no",
            "lr": 1e-3, "feature_cache_mb": budget})
        train(recipe, progress=False)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs[name] = {"losses": [json.loads(line)["loss"] for line in lines],
                      "summary": json.loads((tmp_path / name / "train_summary.json").read_text())}
    cached = runs["cached"]["summary"]["description_cache"]
    # A pair drawn twice in one batch is two misses and one entry.
    assert cached["hits"] + cached["misses"] == 18 and cached["misses"] >= cached["pairs"] and cached["hits"] > 0
    assert "description_cache" not in runs["recomputed"]["summary"]
    assert runs["cached"]["losses"] == pytest.approx(runs["recomputed"]["losses"], rel=1e-5)
