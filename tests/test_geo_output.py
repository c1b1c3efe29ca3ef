"""Tests of georeason.geo.output: GeoTIFF masks keep CRS/transform/nodata, atomic writes, PNG masks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.windows import Window

from georeason.errors import GeoreasonError
from georeason.geo import (
    GeoTiffWindowWriter,
    open_raster,
    raster_info,
    read_mask_geotiff,
    write_mask_geotiff,
    write_mask_png,
)
from tests._geo_fixtures import TRANSFORM, leftovers, write_geotiff


def _info(tmp_path, height=64, width=80, crs="EPSG:32633"):
    path = write_geotiff(tmp_path / "source.tif", np.ones((3, height, width), np.uint8), nodata=0, crs=crs)
    with open_raster(path) as src:
        return raster_info(src)


def _open_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        return rasterio.open(path)


def test_mask_geotiff_keeps_georeferencing_nodata_and_is_tiled_deflate(tmp_path):
    info = _info(tmp_path)
    mask = np.zeros((64, 80), bool)
    mask[10:20, 30:40] = True
    valid = np.ones((64, 80), bool)
    valid[:, :5] = False
    write_mask_geotiff(tmp_path / "mask.tif", mask, profile_from=info, valid=valid)
    with rasterio.open(tmp_path / "mask.tif") as out:
        data = out.read(1)
        assert out.crs.to_epsg() == 32633 and out.transform == TRANSFORM and out.nodata == 255
        assert out.dtypes == ("uint8",) and out.profile["tiled"] and out.block_shapes == [(256, 256)]
        assert out.compression == rasterio.enums.Compression.deflate
    assert np.array_equal(data, np.where(valid, mask.astype(np.uint8), 255))


def test_probability_geotiff_is_float32_with_nan_nodata(tmp_path):
    info = _info(tmp_path)
    prob = np.linspace(0, 1, 64 * 80, dtype=np.float32).reshape(64, 80)
    valid = prob > 0.1
    write_mask_geotiff(tmp_path / "prob.tif", prob, profile_from=info, valid=valid)
    with rasterio.open(tmp_path / "prob.tif") as out:
        data = out.read(1)
        assert out.dtypes == ("float32",) and np.isnan(out.nodata)
    assert np.array_equal(data[valid], prob[valid]) and np.isnan(data[~valid]).all()
    mask, read_valid, _ = read_mask_geotiff(tmp_path / "prob.tif")
    assert np.array_equal(read_valid, valid) and np.array_equal(mask, valid & (prob > 0.5))
    preview, _, _ = read_mask_geotiff(tmp_path / "prob.tif", out_shape=(32, 40))
    assert preview.shape == (32, 40) and np.array_equal(preview, mask[::2, ::2])


def test_unreferenced_source_writes_no_crs(tmp_path):
    info = _info(tmp_path, crs=None)
    assert not info.georeferenced
    write_mask_geotiff(tmp_path / "mask.tif", np.ones((64, 80), np.uint8), profile_from=info)
    with _open_quietly(tmp_path / "mask.tif") as out:
        assert out.crs is None and out.transform.is_identity


def test_window_writer_assembles_windows(tmp_path):
    info = _info(tmp_path, height=300, width=200)
    with GeoTiffWindowWriter(tmp_path / "w.tif", 200, 300, "uint8", profile_from=info) as writer:
        for top in range(0, 300, 256):
            rows = min(256, 300 - top)
            writer.write(np.full((rows, 200), top // 256, np.uint8), Window(0, top, 200, rows))
        assert not (tmp_path / "w.tif").exists()  # appears only when complete
    with rasterio.open(tmp_path / "w.tif") as out:
        data = out.read(1)
    assert np.all(data[:256] == 0) and np.all(data[256:] == 1)


def test_refusals_and_atomicity(tmp_path):
    info = _info(tmp_path)
    with pytest.raises(GeoreasonError, match=r"the mask is 10 x 10 px but the source raster .*source.tif is 64 x 80"):
        write_mask_geotiff(tmp_path / "bad.tif", np.zeros((10, 10), bool), profile_from=info)
    (tmp_path / "exists.tif").write_bytes(b"old")
    with pytest.raises(GeoreasonError, match="exists.tif: output file already exists; pass --overwrite"):
        write_mask_geotiff(tmp_path / "exists.tif", np.zeros((64, 80), bool), profile_from=info)
    assert (tmp_path / "exists.tif").read_bytes() == b"old"
    write_mask_geotiff(tmp_path / "exists.tif", np.zeros((64, 80), bool), profile_from=info, overwrite=True)
    with rasterio.open(tmp_path / "exists.tif") as out:
        assert out.read(1).max() == 0
    with pytest.raises(GeoreasonError, match="output folder .* does not exist"):
        write_mask_png(tmp_path / "nowhere" / "m.png", np.zeros((4, 4), bool))
    with pytest.raises(GeoreasonError, match="does not fit window"):
        with GeoTiffWindowWriter(tmp_path / "half.tif", 80, 64, profile_from=info) as writer:
            writer.write(np.zeros((64, 80), np.uint8)[:32], Window(0, 0, 80, 64))
    assert not (tmp_path / "half.tif").exists() and leftovers(tmp_path) == []


def test_mask_png(tmp_path):
    mask = np.zeros((5, 7), bool)
    mask[1:3, 2:6] = True
    write_mask_png(tmp_path / "m.png", mask)
    image = np.asarray(Image.open(tmp_path / "m.png"))
    assert image.dtype == np.uint8 and np.array_equal(image, np.where(mask, 255, 0))
    with pytest.raises(GeoreasonError, match="m.png: output file already exists"):
        write_mask_png(tmp_path / "m.png", mask)
