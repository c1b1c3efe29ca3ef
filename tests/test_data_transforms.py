"""Tests of georeason.data.transforms against the released preprocessing (fixture sets A and B)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from georeason.data.imageio import load_image
from georeason.data.transforms import (
    Geometry,
    SampleTransform,
    compute_geometry,
    normalize,
    preprocess_image,
    resize_and_pad_image,
    resize_and_pad_mask,
    restore_mask_to_original,
    restore_to_original,
)
from georeason.errors import GeoreasonError
from tests.conftest import fixture_root

FIXTURES = fixture_root()
SETS = ["official-tiny-A", "official-tiny-B"]


def _fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_dir():
        pytest.fail(f"fixture set {path} not present (tests/fixtures or GEOREASON_FIXTURES)")
    return path


@pytest.mark.parametrize("name", SETS)
def test_matches_released_preprocess_all_cases(name):
    data = np.load(_fixture(name) / "preprocess" / "preprocess.npz")
    for i in range(5):
        padded, geometry = resize_and_pad_image(data[f"image_{i}"], 128)
        assert np.array_equal(padded.transpose(2, 0, 1), data[f"out_image_{i}"]), f"case {i}"
        assert np.array_equal(resize_and_pad_mask(data[f"mask_{i}"], 128), data[f"out_mask_{i}"][0]), f"case {i}"
        assert np.abs(normalize(padded) - data[f"out_image_normalized_{i}"]).max() <= 1e-6
        assert geometry.size == 128 and max(geometry.resized_height, geometry.resized_width) == 128


@pytest.mark.parametrize("name", SETS)
def test_model_input_fixture_at_1024(name):
    base = _fixture(name) / "inputs"
    pixels, geometry = preprocess_image(load_image(base / "raw.png"), 1024)
    expected = np.load(base / "image_normalized.npz")["image"]
    assert pixels.dtype == np.float32 and np.abs(pixels - expected).max() <= 1e-6
    gt = load_image(base / "gt_raw.png")[..., 0]
    from PIL import Image

    assert np.array_equal(resize_and_pad_mask(gt, 1024), np.asarray(Image.open(base / "gt_mask_1024.png")))
    # A is landscape (pad top/bottom), B portrait (pad left/right).
    assert (geometry.top > 0) != (geometry.left > 0)


def test_geometry_rounding_and_centring():
    g = compute_geometry(700, 900, 1024)
    assert (g.resized_height, g.resized_width, g.top, g.left) == (796, 1024, 114, 0)
    g = compute_geometry(301, 97, 128)
    assert (g.resized_height, g.resized_width, g.top, g.left) == (128, 41, 0, 43)
    assert Geometry.from_dict(g.to_dict()) == g
    with pytest.raises(GeoreasonError, match="image size must be positive"):
        compute_geometry(0, 5, 128)


def test_restore_inverts_padding():
    # Exact when no resize is needed (long side already S).
    logits = np.random.default_rng(0).normal(size=(64, 40)).astype(np.float32)
    g = compute_geometry(64, 40, 64)
    padded = np.full((64, 64), -50.0, np.float32)
    padded[g.top:g.top + 64, g.left:g.left + 40] = logits
    assert np.array_equal(restore_to_original(padded, g), logits)
    # A binary rectangle survives the round trip up to a one-pixel border.
    mask = np.zeros((300, 200), bool)
    mask[50:150, 60:140] = True
    g = compute_geometry(300, 200, 128)
    small = resize_and_pad_mask(mask, 128).astype(np.float32) * 2 - 1  # logits +-1
    restored = restore_mask_to_original(small, g)
    assert restored.shape == (300, 200)
    assert (restored != mask).sum() < 0.05 * mask.sum()
    assert not restored[:40].any() and not restored[:, :50].any()
    with pytest.raises(GeoreasonError, match="expected an array \\[128,128\\]"):
        restore_to_original(np.zeros((64, 64)), g)


def test_sample_transform_adds_tensors():
    import torch

    image = np.full((30, 60, 3), 200, np.uint8)
    mask = np.zeros((30, 60), bool)
    mask[10:20, 10:50] = True
    out = SampleTransform(64)({"image": image, "mask": mask, "id": "x"})
    assert out["pixel_values"].dtype == torch.float32 and out["pixel_values"].shape == (3, 64, 64)
    assert out["target"].dtype == torch.float32 and set(out["target"].unique().tolist()) == {0.0, 1.0}
    assert out["target"].sum().item() == resize_and_pad_mask(mask, 64).sum()
    g = out["geometry"]
    assert (g.top, g.left, g.resized_height) == (16, 0, 32)
    # Padding is zero *before* normalisation: padded pixels equal -mean/std.
    assert torch.allclose(out["pixel_values"][0, 0, 0], torch.tensor(-123.675 / 58.395))
    assert out["mask"] is mask  # the original sample keys stay
