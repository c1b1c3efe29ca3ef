"""Tests of georeason.geo.tiling: tile plans, normalised blending and the streaming tiled driver."""

from __future__ import annotations

import itertools
import tracemalloc
import warnings

import numpy as np
import pytest
import rasterio
from PIL import Image

from georeason.errors import GeoreasonError
from georeason.geo import blend_weights, open_raster, plan_tiles, read_rgb, run_tiled, tiling, weight_sum
from georeason.geo.output import GeoTiffWindowWriter
from tests._geo_fixtures import TRANSFORM, leftovers, position_image, write_geotiff

SHAPES = [(1000, 700, 256, 32), (256, 256, 256, 64), (100, 50, 256, 32), (257, 513, 256, 0), (600, 90, 128, 64)]


@pytest.mark.parametrize("height,width,tile,overlap", SHAPES)
def test_plan_covers_every_pixel_with_full_size_tiles(height, width, tile, overlap):
    windows = plan_tiles(height, width, tile, overlap)
    covered = np.zeros((height, width), dtype=int)
    for window in windows:
        row, col, h, w = int(window.row_off), int(window.col_off), int(window.height), int(window.width)
        assert (h, w) == (min(tile, height), min(tile, width))  # ragged edges shift inward, never shrink
        assert row >= 0 and col >= 0 and row + h <= height and col + w <= width
        covered[row : row + h, col : col + w] += 1
    assert covered.min() >= 1
    starts = [(int(w.row_off), int(w.col_off)) for w in windows]
    assert starts == sorted(starts)  # row-major, which the streaming writer relies on
    rows = sorted({r for r, _ in starts})
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(rows))  # neighbours overlap enough


def test_small_scene_is_one_window():
    (window,) = plan_tiles(100, 50, 256, 32)
    assert (window.row_off, window.col_off, window.height, window.width) == (0, 0, 100, 50)


@pytest.mark.parametrize("height,width,tile,overlap", SHAPES)
def test_normalised_weights_sum_to_one_everywhere(height, width, tile, overlap):
    total = weight_sum(height, width, tile, overlap)
    assert total.min() > 0
    normalised = np.zeros((height, width))
    row_ramp, _ = tiling._axis_weights(height, tile, overlap)
    col_ramp, _ = tiling._axis_weights(width, tile, overlap)
    for window in plan_tiles(height, width, tile, overlap):
        rows = slice(int(window.row_off), int(window.row_off + window.height))
        cols = slice(int(window.col_off), int(window.col_off + window.width))
        normalised[rows, cols] += np.outer(row_ramp, col_ramp) / total[rows, cols]
    assert np.allclose(normalised, 1.0, atol=1e-12)


def test_blend_weights_are_positive_ramps():
    weights = blend_weights(64, 48, 16)
    assert weights.dtype == np.float32 and weights.shape == (64, 48) and weights.min() > 0
    assert weights[32, 24] == 1.0 and weights[0, 0] < weights[8, 8] < weights[16, 16]
    assert np.array_equal(weights, weights[::-1, ::-1])  # symmetric
    assert np.all(blend_weights(10, 10, 0) == 1.0)


def test_bad_tiling_arguments():
    with pytest.raises(GeoreasonError, match="overlap: expected 0 <= overlap <= tile/2"):
        plan_tiles(100, 100, 64, 40)
    with pytest.raises(GeoreasonError, match="tile: expected a tile size of at least 16"):
        plan_tiles(100, 100, 8, 0)


def _record_writes(monkeypatch) -> dict[str, np.ndarray]:
    """Count how often each output pixel is written (checks every pixel is written exactly once)."""
    counts: dict[str, np.ndarray] = {}
    original = GeoTiffWindowWriter.write

    def write(self, array, window):
        seen = counts.setdefault(self.path.name, np.zeros((self.profile["height"], self.profile["width"]), int))
        seen[window.toslices()] += 1
        original(self, array, window)

    monkeypatch.setattr(GeoTiffWindowWriter, "write", write)
    return counts


def test_tiled_output_matches_the_pixels_everywhere(tmp_path, monkeypatch):
    height, width = 700, 1000  # ragged: neither is a multiple of the stride
    data = position_image(height, width)
    data[:, 300:340, 100:170] = 0  # a nodata hole
    source = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    # Poison: an existing output full of a wrong value must be entirely replaced.
    write_geotiff(tmp_path / "prob.tif", np.full((1, height, width), 77.0, np.float32))
    counts = _record_writes(monkeypatch)
    with open_raster(source) as src:
        result = run_tiled(src, lambda rgb, valid: rgb[..., 0] / np.float32(255), tmp_path / "mask.tif",
                           tile=256, overlap=32, prob_path=tmp_path / "prob.tif", threshold=0.5, overwrite=True)
    valid = np.all(data != 0, axis=0)
    expected = data[0] / np.float32(255)
    with rasterio.open(tmp_path / "prob.tif") as out:
        prob = out.read(1)
        assert out.crs.to_epsg() == 32633 and out.transform == TRANSFORM
    with rasterio.open(tmp_path / "mask.tif") as out:
        mask = out.read(1)
        assert out.nodata == 255 and out.crs.to_epsg() == 32633
    assert np.allclose(prob[valid], expected[valid], atol=1e-6) and np.isnan(prob[~valid]).all()
    assert np.array_equal(mask, np.where(valid, (expected > 0.5).astype(np.uint8), 255))
    assert all(np.all(seen == 1) for seen in counts.values()) and len(counts) == 2
    assert result.tiles == 15 and result.valid_pixels == valid.sum()
    assert result.positive_pixels == int((valid & (expected > 0.5)).sum())
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("height,width,tile,overlap", [(100, 700, 256, 64), (1030, 1100, 256, 64),
                                                       (1030, 300, 512, 200), (513, 257, 256, 0)])
def test_tiled_output_for_odd_shapes(tmp_path, monkeypatch, height, width, tile, overlap):
    data = position_image(height, width)
    counts = _record_writes(monkeypatch)
    with open_raster(write_geotiff(tmp_path / "scene.tif", data)) as src:
        run_tiled(src, lambda rgb, valid: rgb[..., 0] / np.float32(255), tmp_path / "mask.tif", tile=tile,
                  overlap=overlap, prob_path=tmp_path / "prob.tif")
    with rasterio.open(tmp_path / "prob.tif") as out:
        assert np.allclose(out.read(1), data[0] / np.float32(255), atol=1e-6)
    assert all(np.all(seen == 1) for seen in counts.values())


def test_constant_prediction_survives_blending(tmp_path):
    source = write_geotiff(tmp_path / "scene.tif", position_image(300, 420))
    with open_raster(source) as src:
        run_tiled(src, lambda rgb, valid: np.full(rgb.shape[:2], 0.3, np.float32), tmp_path / "m.tif",
                  tile=128, overlap=48, prob_path=tmp_path / "p.tif")
    with rasterio.open(tmp_path / "p.tif") as out:
        prob = out.read(1)
    assert np.allclose(prob, 0.3, atol=1e-6)


def test_scene_within_one_tile_is_exactly_the_prediction(tmp_path):
    rng = np.random.default_rng(5)
    predicted = rng.random((150, 200), dtype=np.float32)
    source = write_geotiff(tmp_path / "small.tif", position_image(150, 200))
    with open_raster(source) as src:
        result = run_tiled(src, lambda rgb, valid: predicted, tmp_path / "m.tif", tile=256, overlap=64,
                           prob_path=tmp_path / "p.tif")
    with rasterio.open(tmp_path / "p.tif") as out:
        assert np.array_equal(out.read(1), predicted)
    assert result.tiles == 1


def test_tiles_see_the_scene_stretch_and_plain_images_stay_unreferenced(tmp_path):
    data = (position_image(300, 300).astype(np.uint16) * 40)
    source = write_geotiff(tmp_path / "u16.tif", data)
    seen: list[np.ndarray] = []
    with open_raster(source) as src:
        whole, _ = read_rgb(src)
        result = run_tiled(src, lambda rgb, valid: seen.append(rgb) or np.zeros(rgb.shape[:2], np.float32),
                           tmp_path / "m.tif", tile=128, overlap=16)
    windows = plan_tiles(300, 300, 128, 16)
    assert all(np.array_equal(tile, whole[w.toslices()]) for tile, w in zip(seen, windows, strict=True))
    assert result.limits is not None
    Image.fromarray(np.moveaxis(position_image(90, 120), 0, -1)).save(tmp_path / "plain.png")
    with open_raster(tmp_path / "plain.png") as src:
        run_tiled(src, lambda rgb, valid: np.ones(rgb.shape[:2], np.float32), tmp_path / "plain_mask.tif",
                  tile=64, overlap=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        out = rasterio.open(tmp_path / "plain_mask.tif")
    with out:
        assert out.crs is None and np.all(out.read(1) == 1)


def test_all_nodata_tiles_are_skipped_and_counted(tmp_path):
    data = position_image(200, 512)
    data[:, :, :256] = 0
    calls = []
    with open_raster(write_geotiff(tmp_path / "half.tif", data, nodata=0)) as src:
        result = run_tiled(src, lambda rgb, valid: calls.append(1) or np.ones(rgb.shape[:2], np.float32),
                           tmp_path / "m.tif", tile=128, overlap=0)
    assert result.tiles == 8 and result.tiles_all_nodata == 4 and len(calls) == 4
    with rasterio.open(tmp_path / "m.tif") as out:
        mask = out.read(1)
    assert np.all(mask[:, :256] == 255) and np.all(mask[:, 256:] == 1)


def test_bad_prediction_and_existing_output_leave_nothing_behind(tmp_path):
    source = write_geotiff(tmp_path / "scene.tif", position_image(300, 300))
    with open_raster(source) as src:
        with pytest.raises(GeoreasonError, match=r"predict_fn returned shape \(10, 10\)"):
            run_tiled(src, lambda rgb, valid: np.zeros((10, 10), np.float32), tmp_path / "m.tif", tile=128,
                      overlap=16)
        with pytest.raises(GeoreasonError, match="NaN or infinite"):
            run_tiled(src, lambda rgb, valid: np.full(rgb.shape[:2], np.nan, np.float32), tmp_path / "m.tif",
                      tile=128, overlap=16)
    assert not (tmp_path / "m.tif").exists() and leftovers(tmp_path) == []
    (tmp_path / "taken.tif").write_bytes(b"keep me")
    with open_raster(source) as src:
        with pytest.raises(GeoreasonError, match="taken.tif: output file already exists; pass --overwrite"):
            run_tiled(src, lambda rgb, valid: np.zeros(rgb.shape[:2], np.float32), tmp_path / "taken.tif")
    assert (tmp_path / "taken.tif").read_bytes() == b"keep me" and leftovers(tmp_path) == []
    with open_raster(source) as src:
        with pytest.raises(GeoreasonError, match="scene.tif: this is the input raster; choose another output"):
            run_tiled(src, lambda rgb, valid: np.zeros(rgb.shape[:2], np.float32), source, overwrite=True)
    with open_raster(source) as src:
        assert np.array_equal(src.read(), position_image(300, 300))  # the input survived


def _peak_memory(tmp_path, height: int) -> int:
    source = write_geotiff(tmp_path / f"tall{height}.tif", position_image(height, 256), tiled=True)
    with open_raster(source) as src:
        tracemalloc.start()
        run_tiled(src, lambda rgb, valid: rgb[..., 0] / np.float32(255), tmp_path / f"m{height}.tif",
                  tile=128, overlap=16)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_memory_does_not_grow_with_scene_height(tmp_path):
    short, tall = _peak_memory(tmp_path, 512), _peak_memory(tmp_path, 4096)
    assert tall < 1.25 * short, (short, tall)  # 8x the pixels, about the same peak


# -- several outputs in one pass (run_tiled_outputs) ---------------------------------------------------------------
MAPS = [lambda rgb: rgb[..., 0] / np.float32(255), lambda rgb: rgb[..., 1] / np.float32(255),
        lambda rgb: np.where(rgb[..., 2] > 128, np.float32(0.9), np.float32(0.2))]


def _pixels(path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as out:
        return out.read(1), out.tags()


def _nan_after(calls: int):
    """A probability map that turns NaN from the `calls`-th tile on (a model going wrong mid-scene)."""
    seen = []

    def predict(rgb):
        seen.append(1)
        return np.full(rgb.shape[:2], np.nan if len(seen) >= calls else 0.7, np.float32)
    return predict


def test_several_outputs_in_one_pass_equal_one_output_at_a_time(tmp_path):
    data = position_image(450, 600)
    data[:, 200:260, 300:420] = 0  # a nodata hole across tile borders
    source = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    outputs = [tiling.TiledOutput(tmp_path / f"m{i}.tif", tmp_path / f"p{i}.tif", {"georeason_question": f"q{i}"})
               for i in range(3)]
    reads = []
    with open_raster(source) as src:
        results = tiling.run_tiled_outputs(src, lambda rgb, valid: reads.append(1) or [f(rgb) for f in MAPS],
                                           outputs, tile=128, overlap=32)
        alone = [run_tiled(src, lambda rgb, valid, f=f: f(rgb), tmp_path / f"alone_m{i}.tif", tile=128, overlap=32,
                           prob_path=tmp_path / f"alone_p{i}.tif", tags={"georeason_question": f"q{i}"})
                 for i, f in enumerate(MAPS)]
    tiles = len(plan_tiles(450, 600, 128, 32))
    assert len(reads) == tiles == 30  # every tile read and predicted once for the three outputs
    for i, (result, single) in enumerate(zip(results, alone, strict=True)):
        assert isinstance(result, tiling.TiledResult) and result.mask_path == tmp_path / f"m{i}.tif"
        for kind in ("m", "p"):
            shared, shared_tags = _pixels(tmp_path / f"{kind}{i}.tif")
            one, one_tags = _pixels(tmp_path / f"alone_{kind}{i}.tif")
            assert np.array_equal(shared, one, equal_nan=kind == "p") and shared_tags == one_tags
        assert (result.valid_pixels, result.positive_pixels, result.tiles) == \
            (single.valid_pixels, single.positive_pixels, single.tiles)
    masks = [_pixels(tmp_path / f"m{i}.tif")[0] for i in range(3)]
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    assert leftovers(tmp_path) == []


def test_a_failing_output_fails_alone_and_leaves_no_file(tmp_path):
    source = write_geotiff(tmp_path / "scene.tif", position_image(300, 300))
    (tmp_path / "taken.tif").write_bytes(b"keep me")
    outputs = [tiling.TiledOutput(tmp_path / "a.tif"), tiling.TiledOutput(tmp_path / "taken.tif"),
               tiling.TiledOutput(tmp_path / "nan.tif", tmp_path / "nan_p.tif"), tiling.TiledOutput(tmp_path / "c.tif")]
    maps = [MAPS[0], MAPS[1], _nan_after(3), MAPS[2]]
    with open_raster(source) as src:
        results = tiling.run_tiled_outputs(src, lambda rgb, valid: [f(rgb) for f in maps], outputs, tile=128,
                                           overlap=16)
        alone = [run_tiled(src, lambda rgb, valid, f=f: f(rgb), tmp_path / f"alone{i}.tif", tile=128, overlap=16)
                 for i, f in ((0, MAPS[0]), (3, MAPS[2]))]
    assert str(results[1]) == f"{tmp_path / 'taken.tif'}: output file already exists; pass --overwrite to replace it"
    assert isinstance(results[2], GeoreasonError) and "predict_fn returned NaN or infinite" in str(results[2])
    assert (tmp_path / "taken.tif").read_bytes() == b"keep me"
    assert not (tmp_path / "nan.tif").exists() and not (tmp_path / "nan_p.tif").exists()
    for result, single, name in zip((results[0], results[3]), alone, ("a", "c")):
        assert result.positive_pixels == single.positive_pixels
        assert np.array_equal(_pixels(tmp_path / f"{name}.tif")[0], _pixels(single.mask_path)[0])
    assert leftovers(tmp_path) == []


def test_a_failing_predict_fn_fails_every_output_and_leaves_nothing(tmp_path):
    source = write_geotiff(tmp_path / "scene.tif", position_image(300, 300))
    outputs = [tiling.TiledOutput(tmp_path / "a.tif", tmp_path / "a_p.tif"), tiling.TiledOutput(tmp_path / "b.tif")]
    calls = []

    def breaks_on_the_fourth_tile(rgb, valid):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("the model broke")
        return [MAPS[0](rgb), MAPS[1](rgb)]

    with open_raster(source) as src:
        with pytest.raises(RuntimeError, match="the model broke"):
            tiling.run_tiled_outputs(src, breaks_on_the_fourth_tile, outputs, tile=128, overlap=16)
        with pytest.raises(GeoreasonError, match="predict_fn returned 1 probability maps for 2 outputs"):
            tiling.run_tiled_outputs(src, lambda rgb, valid: [MAPS[0](rgb)], outputs, tile=128, overlap=16)
        with pytest.raises(GeoreasonError, match="b.tif: the same file is given for two tiled outputs"):
            tiling.run_tiled_outputs(src, lambda rgb, valid: [MAPS[0](rgb)] * 2,
                                     [tiling.TiledOutput(tmp_path / "b.tif"), tiling.TiledOutput(tmp_path / "b.tif")])
        every_output_failed = tiling.run_tiled_outputs(
            src, lambda rgb, valid: calls.append(1) or [np.full(rgb.shape[:2], np.nan, np.float32)] * 2,
            outputs, tile=128, overlap=16)
    assert all(isinstance(result, GeoreasonError) for result in every_output_failed)
    assert len(calls) == 5  # stopped at the first tile: nothing was left to compute
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.tif"]


def test_memory_per_output_is_one_band(tmp_path):
    source = write_geotiff(tmp_path / "wide.tif", position_image(256, 4096), tiled=True)
    peaks = []
    with open_raster(source) as src:
        for count in (1, 3):
            outputs = [tiling.TiledOutput(tmp_path / f"n{count}_{i}.tif") for i in range(count)]
            tracemalloc.start()
            tiling.run_tiled_outputs(src, lambda rgb, valid, n=count: [MAPS[0](rgb)] * n, outputs, tile=128,
                                     overlap=16)
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    band = min(256, 128 + 256) * 4096 * 4  # one float32 accumulator of min(scene, tile + block) rows x width
    assert peaks[1] - peaks[0] < 2.5 * band, (peaks, band)  # two more outputs: about two more bands
