"""The standardised description embedding: statistics of the first training rows, fixed, saved, optional."""

from __future__ import annotations

import json

import pytest
import torch

from georeason.config import preset
from georeason.errors import GeoreasonError
from georeason.model import SegEarthModel, load_pretrained, prompt_builder_for
from georeason.model.dprojector import DescriptionStandardiser
from georeason.model.factory import build_model


def rows(count: int, size: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    # Dimensions on very different scales, as a small LLM's last hidden state has.
    scales = torch.tensor([1.0, 300.0, 0.01, 5.0, 1.0, 40.0])[:size]
    return torch.randn(count, size, generator=generator) * scales + torch.arange(size) * 7.0


def test_statistics_are_those_of_exactly_the_first_rows_across_uneven_batches():
    data = rows(23)
    norm = DescriptionStandardiser(6, samples=10).train()
    for start in range(0, 23, 4):  # batches of 4: the third one crosses the limit
        norm(data[start : start + 4])
    assert int(norm.count) == 10
    torch.testing.assert_close(norm.mean, data[:10].mean(0), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(norm.var, data[:10].var(0, unbiased=False), rtol=1e-4, atol=1e-4)


def test_first_rows_come_out_standardised_and_later_rows_do_not_move_the_statistics():
    data = rows(40)
    norm = DescriptionStandardiser(6, samples=16).train()
    norm(data[:16])
    mean, var = norm.mean.clone(), norm.var.clone()
    out = norm(data[:16])
    assert out.mean(0).abs().max() < 1e-3
    # std / (std + 1e-3): 1 up to the epsilon, except the 0.01-scale dimension where it shows.
    torch.testing.assert_close(out.std(0, unbiased=False)[[0, 1, 3, 4, 5]], torch.ones(5), rtol=1e-3, atol=1e-3)
    norm(data[16:])
    norm.eval()(data[:3])
    assert torch.equal(norm.mean, mean) and torch.equal(norm.var, var) and int(norm.count) == 16


def test_identity_until_a_training_row_is_seen_and_eval_never_updates():
    data = rows(5)
    norm = DescriptionStandardiser(6, samples=8).eval()
    assert torch.equal(norm(data), data)
    assert int(norm.count) == 0


def test_bfloat16_rows_keep_their_dtype_and_statistics_stay_float32():
    norm = DescriptionStandardiser(6, samples=8).train()
    out = norm(rows(8).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16 and norm.mean.dtype == torch.float32


def tiny_standardised(samples: int = 4):
    config = preset("tiny")
    config.d_projector.standardise_samples = samples
    return build_model(config, seed=0)


def batch(model, tokenizer, seed: int):
    generator = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    pixels = torch.randn(2, 3, size, size, generator=generator)
    prompt = prompt_builder_for(model, tokenizer).batch(["where could a small plane land?",
                                                         "which area floods first?"], [None, None])
    return pixels, prompt


def test_model_fixes_statistics_in_training_and_they_round_trip_with_the_weights(tmp_path):
    model, tokenizer = tiny_standardised(samples=4)
    model.train()
    with torch.no_grad():
        first = model(*batch(model, tokenizer, 0)).description_embedding
        second = model(*batch(model, tokenizer, 1)).description_embedding
        model(*batch(model, tokenizer, 2))  # past the 4 rows: no change
    norm = model.d_projector.description_norm
    seen = torch.cat([first, second])
    torch.testing.assert_close(norm.mean, seen.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.var, seen.var(0, unbiased=False), rtol=1e-4, atol=1e-6)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    loaded, _ = load_pretrained(tmp_path / "m")
    assert torch.equal(loaded.d_projector.description_norm.mean, norm.mean)
    assert int(loaded.d_projector.description_norm.count) == 4
    model.eval()
    pixels, prompt = batch(model, tokenizer, 3)
    with torch.no_grad():
        assert torch.equal(model(pixels, prompt).mask_logits, loaded.eval()(pixels, prompt).mask_logits)


def test_statistics_stay_float32_when_the_model_is_cast_or_loaded_in_bfloat16(tmp_path):
    model, tokenizer = tiny_standardised(samples=4)
    model.train()
    with torch.no_grad():
        model(*batch(model, tokenizer, 0))
        model(*batch(model, tokenizer, 1))
    norm = model.d_projector.description_norm
    # Values bfloat16 cannot hold (8 bits of mantissa), so a cast would show.
    norm.mean.add_(torch.linspace(300.0, 301.0, norm.mean.numel()))
    mean, var = norm.mean.clone(), norm.var.clone()
    assert not torch.equal(mean.to(torch.bfloat16).float(), mean)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    cast = tiny_standardised(samples=4)[0]
    cast.load_state_dict(model.state_dict())
    cast.to(torch.bfloat16)
    loaded, _ = load_pretrained(tmp_path / "m", dtype=torch.bfloat16)
    for other in (cast, loaded):
        other_norm = other.d_projector.description_norm
        assert other_norm.mean.dtype == torch.float32 and torch.equal(other_norm.mean, mean)
        assert torch.equal(other_norm.var, var) and int(other_norm.count) == 4
        assert other.d_projector.text_projector.weight.dtype == torch.bfloat16
    pixels, prompt = batch(model, tokenizer, 3)
    with torch.no_grad():
        out = loaded.eval()(pixels.to(torch.bfloat16), prompt)
    assert out.mask_logits.dtype == torch.bfloat16 and torch.isfinite(out.mask_logits.float()).all()


def test_standardisation_changes_the_query_and_is_off_for_the_released_layout():
    model, tokenizer = tiny_standardised(samples=2)
    pixels, prompt = batch(model, tokenizer, 0)
    model.eval()
    with torch.no_grad():
        before = model(pixels, prompt).query
        model.d_projector.train()
        model(pixels, prompt)
        model.eval()
        after = model(pixels, prompt).query
    assert not torch.allclose(before, after)
    with torch.device("meta"):
        paper = SegEarthModel(preset("paper"))
    assert paper.d_projector.description_norm is None
    assert not any("description_norm" in name for name in paper.state_dict())


def test_negative_sample_count_is_refused():
    config = preset("tiny")
    config.d_projector.standardise_samples = -1
    with pytest.raises(GeoreasonError, match="d_projector.standardise_samples must be 0 .off. or at least 2"):
        config.validate()
    config.d_projector.standardise_samples = 1
    with pytest.raises(GeoreasonError, match="got 1"):
        config.validate()


def test_one_row_is_not_a_spread_and_an_exhausted_window_ignores_empty_batches():
    data = rows(3)
    norm = DescriptionStandardiser(6, samples=2).train()
    assert torch.equal(norm(data[:1]), data[:1])  # one row seen: still the identity
    norm(data[1:2])
    assert int(norm.count) == 2
    norm(data[:0])
    assert int(norm.count) == 2 and torch.isfinite(norm.var).all()


def test_a_checkpoint_from_before_the_new_fields_still_resumes(tmp_path):
    from georeason.training.checkpoint import check_compatible

    config = preset("tiny").to_dict()
    older = {**config, "connector": {"depth": config["connector"]["depth"]},
             "d_projector": {k: v for k, v in config["d_projector"].items() if k != "standardise_samples"}}
    info = {"recipe_fingerprint": "f", "model_config": older}
    check_compatible(tmp_path, info, {}, "f", config)  # the missing fields are at their defaults: accepted
    changed = {**config, "connector": {**config["connector"], "depth": 1}}
    with pytest.raises(GeoreasonError, match="different model configuration"):
        check_compatible(tmp_path, info, {}, "f", changed)


def test_training_fixes_the_statistics_from_the_first_stream_rows_whatever_the_batch(tmp_path):
    from georeason.data.synth import generate_benchmark
    from georeason.processor import SegEarthProcessor
    from georeason.training.loop import build_model_for_recipe, open_training_data, train
    from georeason.training.recipe import recipe_from_dict

    generate_benchmark(tmp_path / "data", 5, 0, 0, seed=3, min_size=192, max_size=224, workers=1)
    statistics = {}
    for per_device in (4, 2):  # accumulation 1 and 2
        recipe = recipe_from_dict({
            "model": "tiny", "data": [{"path": str(tmp_path / "data")}], "output_dir": str(tmp_path / f"b{per_device}"),
            "model_config": {"image_size": 128, "d_projector.standardise_samples": 6}, "max_steps": 1,
            "global_batch_size": 4, "per_device_batch_size": per_device, "gradient_checkpointing": False,
            "mixed_precision": "no"})
        train(recipe, progress=False)
        loaded, _ = load_pretrained(tmp_path / f"b{per_device}" / "final")
        statistics[per_device] = loaded.d_projector.description_norm
        summary = json.loads((tmp_path / f"b{per_device}" / "train_summary.json").read_text())
        assert summary["description_statistics_rows"] == 6  # one step reads only 4 rows: filled before it
    # The same statistics computed by hand from stream positions 0..5 of the untrained model.
    model, tokenizer = build_model_for_recipe(recipe)
    processor = SegEarthProcessor(tokenizer, model.config)
    data = open_training_data(recipe, processor.sample_transform())
    samples = [data[position] for position in range(6)]
    prompt = processor.prompt([s["question"] for s in samples], [s["answer"] for s in samples],
                              [s["task"] for s in samples], for_generation=model.config.llm.frozen)
    p = model.description_embedding(torch.stack([s["pixel_values"] for s in samples]), prompt)
    for norm in statistics.values():
        assert int(norm.count) == 6
        torch.testing.assert_close(norm.mean, p.mean(0), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(norm.var, p.var(0, unbiased=False), rtol=1e-4, atol=1e-5)
