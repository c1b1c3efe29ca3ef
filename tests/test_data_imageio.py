"""Tests of georeason.data.imageio: every supported input kind, the stretch, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from georeason.data.imageio import load_image, percentile_limits, stretch_to_uint8, to_rgb_uint8
from georeason.errors import GeoreasonError


def _rgb(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_percentiles_and_stretch_values():
    band = np.arange(101, dtype=np.float64).reshape(1, 101, 1)
    low, high = percentile_limits(band)
    assert low.tolist() == [2.0] and high.tolist() == [98.0]
    out = stretch_to_uint8(band, low, high)
    assert out[0, 0, 0] == 0 and out[0, 100, 0] == 255 and out[0, 50, 0] == 128
    constant = np.full((4, 4, 1), 7.0)
    assert stretch_to_uint8(constant, np.array([7.0]), np.array([7.0])).max() == 0


def test_percentiles_respect_valid_mask_and_nan():
    array = np.zeros((2, 50, 1), dtype=np.float32)
    array[0] = np.linspace(0, 1, 50)[:, None]
    array[1] = 1000.0  # invalid (nodata) row must not widen the range
    array[0, 0] = np.nan
    valid = np.zeros((2, 50), dtype=bool)
    valid[0] = True
    low, high = percentile_limits(array, valid)
    assert high[0] <= 1.0 and low[0] >= 0.0


def test_to_rgb_uint8_band_selection_and_passthrough():
    image = _rgb()
    assert np.array_equal(to_rgb_uint8(image), image)
    assert np.array_equal(to_rgb_uint8(image, bands=[3, 2, 1]), image[..., ::-1])
    gray = to_rgb_uint8(image[..., 0])
    assert np.array_equal(gray, np.repeat(image[..., :1], 3, axis=2))
    with pytest.raises(GeoreasonError, match="band 5 does not exist; the image has 3 band"):
        to_rgb_uint8(image, bands=[1, 2, 5])


def test_uint16_is_stretched():
    data = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600).astype(np.uint16)
    out = to_rgb_uint8(np.stack([data] * 4, axis=-1))
    assert out.dtype == np.uint8 and out.shape == (10, 10, 3)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)  # monotone


def test_load_png_jpeg_gray_rgba_palette(tmp_path):
    image = _rgb()
    Image.fromarray(image).save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), image)
    rgba = np.dstack([image, np.full(image.shape[:2], 9, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    assert np.array_equal(load_image(tmp_path / "rgba.png"), image)
    Image.fromarray(image[..., 0]).save(tmp_path / "g.png")
    assert np.array_equal(load_image(tmp_path / "g.png"), np.repeat(image[..., :1], 3, 2))
    palette = Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    palette.save(tmp_path / "p.png")
    assert np.array_equal(load_image(tmp_path / "p.png"), np.asarray(palette.convert("RGB")))
    Image.fromarray(image).save(tmp_path / "a.jpg", quality=95)
    assert np.array_equal(load_image(tmp_path / "a.jpg"), np.asarray(Image.open(tmp_path / "a.jpg")))
    assert np.array_equal(load_image(Image.fromarray(image)), image)


def test_exif_orientation_is_applied(tmp_path):
    image = _rgb(10, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(image).save(tmp_path / "r.jpg", exif=exif, quality=100)
    assert load_image(tmp_path / "r.jpg").shape == (20, 10, 3)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_geotiff_uint16_float_and_multiband(tmp_path):
    import rasterio

    data = np.random.default_rng(1).integers(0, 4000, size=(5, 16, 12)).astype(np.uint16)
    path = tmp_path / "multi.tif"
    with rasterio.open(path, "w", driver="GTiff", width=12, height=16, count=5, dtype="uint16") as out:
        out.write(data)
    rgb = load_image(path)
    expected = to_rgb_uint8(np.moveaxis(data[:3], 0, -1))
    assert np.array_equal(rgb, expected)
    assert np.array_equal(load_image(path, bands=[4, 3, 2]), to_rgb_uint8(np.moveaxis(data, 0, -1), [4, 3, 2]))
    with pytest.raises(GeoreasonError, match="multi.tif: band 6 does not exist; the raster has 5"):
        load_image(path, bands=[6, 1, 1])
    floats = tmp_path / "f.tif"
    with rasterio.open(floats, "w", driver="GTiff", width=12, height=16, count=1, dtype="float32") as out:
        out.write(data[:1].astype(np.float32) / 4000.0)
    gray = load_image(floats)
    assert gray.shape == (16, 12, 3) and gray.max() == 255 and gray.min() == 0


def test_refusals(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(GeoreasonError, match="empty.png: the image file is empty"):
        load_image(tmp_path / "empty.png")
    Image.fromarray(_rgb(200, 200)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(GeoreasonError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(GeoreasonError, match="junk.png: cannot read this image"):
        load_image(tmp_path / "junk.png")
    with pytest.raises(GeoreasonError, match="above the limit of 100"):
        load_image(tmp_path / "full.png", max_pixels=100)
    with pytest.raises(GeoreasonError, match="no such image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(GeoreasonError, match="empty"):
        load_image(np.zeros((0, 5, 3), np.uint8))


def test_pil_decompression_bomb_is_mapped(tmp_path, monkeypatch):
    Image.fromarray(_rgb(40, 40)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # PIL refuses above 2x this
    with pytest.raises(GeoreasonError, match="bomb.png: refused as a possible decompression bomb"):
        load_image(tmp_path / "bomb.png")


def test_load_mask_any_nonzero_is_target(tmp_path):
    from georeason.data.imageio import load_mask

    label = np.zeros((6, 8, 3), np.uint8)
    label[1, 2, 0] = 255
    label[3, 4, 2] = 1
    Image.fromarray(label).save(tmp_path / "m.png")
    mask = load_mask(tmp_path / "m.png")
    assert mask.dtype == np.bool_ and mask.sum() == 2 and mask[1, 2] and mask[3, 4]
    with pytest.raises(GeoreasonError, match="no such mask file"):
        load_mask(tmp_path / "nope.png")
