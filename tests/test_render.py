"""Tests of georeason.render: mask fill and outline colours, the caption strip, atomic PNG output."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from georeason.errors import GeoreasonError
from georeason.render import FILL, OUTLINE, overlay_png
from tests._geo_fixtures import leftovers

CAPTION = ["Question: which area would flood first after heavy rain near the river bank?",
           "Answer: the low meadow beside the river, because it is flat and close to the water."]


def _scene() -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((120, 160, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 40, 90, 140
    mask = np.zeros((120, 160), bool)
    mask[30:80, 50:110] = True
    return image, mask


def test_fill_outline_and_untouched_background(tmp_path):
    image, mask = _scene()
    overlay_png(tmp_path / "o.png", image, mask, CAPTION, opacity=0.45)
    out = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    expected_fill = np.rint(image[0, 0] * 0.55 + np.asarray(FILL) * 0.45).astype(np.uint8)
    assert np.array_equal(out[55, 80], expected_fill)  # inside the mask
    assert np.array_equal(out[30, 80], OUTLINE) and np.array_equal(out[55, 50], OUTLINE)  # on its edge
    assert np.array_equal(out[29, 80], image[29, 80]) and np.array_equal(out[5, 5], image[5, 5])  # outside
    untouched = ~mask
    assert np.array_equal(out[:120][untouched], image[untouched])


def test_caption_strip_below_the_image(tmp_path):
    image, mask = _scene()
    overlay_png(tmp_path / "o.png", image, mask, CAPTION)
    out = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    strip = out[120:]
    assert out.shape[1] == 160 and strip.shape[0] >= 4 * 12  # both long lines wrap at 160 px
    assert (strip == 255).all(axis=-1).mean() > 0.6  # mostly white background
    dark = strip.max(axis=-1) < 128
    assert dark.sum() > 100  # text was drawn
    rows_with_text = np.flatnonzero(dark.any(axis=1))
    assert rows_with_text.max() - rows_with_text.min() > 3 * 12  # several wrapped lines
    short = overlay_png(tmp_path / "short.png", image, mask, ["Q: ?"])
    assert Image.open(short).size[1] < out.shape[0]


def test_large_images_are_downscaled_and_refusals(tmp_path):
    image = np.zeros((400, 800, 3), np.uint8)
    mask = np.zeros((400, 800), bool)
    mask[:, 400:] = True
    overlay_png(tmp_path / "big.png", image, mask, ["q"], max_side=200)
    out = np.asarray(Image.open(tmp_path / "big.png").convert("RGB"))
    assert out.shape[1] == 200 and out[50, 150, 0] > 100 and out[50, 50].max() == 0
    with pytest.raises(GeoreasonError, match=r"mask: shape \(3, 3\) does not match"):
        overlay_png(tmp_path / "bad.png", image, np.zeros((3, 3), bool), [])
    with pytest.raises(GeoreasonError, match="big.png: output file already exists; pass --overwrite"):
        overlay_png(tmp_path / "big.png", image, mask, [])
    assert leftovers(tmp_path) == [] and not (tmp_path / "bad.png").exists()
