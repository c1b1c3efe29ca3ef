"""Tiled mode with several questions about one scene: each tile encoded once, masks equal to one at a time."""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import torch

from georeason.cli import main
from georeason.errors import GeoreasonError
from georeason.geo import plan_tiles
from georeason.reasoner import GeoReasoner
from tests._geo_fixtures import leftovers, write_geotiff

QUESTIONS = ["where could a small plane land?", "which roads are blocked?", "where is standing water?"]
HEIGHT, WIDTH, TILE, OVERLAP = 200, 230, 128, 32  # 2 x 3 tiles overlapping by at least 32 px


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    return GeoReasoner.from_pretrained(tiny_model_dir)  # float32


def _scene(seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    noise = np.random.default_rng(seed).integers(0, 60, (3, HEIGHT, WIDTH))
    waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90])
    data = np.clip(128 + waves + noise, 1, 255).astype(np.uint8)
    data[:, 170:, :50] = 0  # a nodata corner
    return data


def _pixels(path) -> tuple[np.ndarray, dict[str, str]]:
    with rasterio.open(path) as src:
        return src.read(1), src.tags()


def _encoder_calls(reasoner):
    calls: list[int] = []
    return calls, reasoner.model.encoder.register_forward_hook(lambda *_: calls.append(1))


@pytest.mark.input_kind("runs", "several questions about one scene in tiled mode",
                        "each tile is encoded once for all questions; every mask GeoTIFF equals asking alone")
def test_shared_tiles_give_the_masks_of_one_question_at_a_time(reasoner, tmp_path):
    scene = write_geotiff(tmp_path / "scene.tif", _scene(), nodata=0, tiled=True)
    tiles = len(plan_tiles(HEIGHT, WIDTH, TILE, OVERLAP))
    assert tiles == 6
    calls, hook = _encoder_calls(reasoner)
    try:
        shared = reasoner.predict_tiled_questions(scene, QUESTIONS, [tmp_path / f"shared{i}.tif" for i in range(3)],
                                                  TILE, OVERLAP)
        assert len(calls) == 1 + tiles  # the overview once, then each tile once for the three questions
        calls.clear()
        alone = [reasoner.predict_tiled(scene, question, tmp_path / f"alone{i}.tif", TILE, OVERLAP)
                 for i, question in enumerate(QUESTIONS)]
        assert len(calls) == 3 * (1 + tiles)  # what one question at a time costs
    finally:
        hook.remove()
    masks = []
    for i, (many, one) in enumerate(zip(shared, alone, strict=True)):
        shared_pixels, shared_tags = _pixels(tmp_path / f"shared{i}.tif")
        alone_pixels, alone_tags = _pixels(tmp_path / f"alone{i}.tif")
        assert np.array_equal(shared_pixels, alone_pixels) and shared_tags == alone_tags
        assert shared_tags["georeason_question"] == QUESTIONS[i] == many.question
        assert (many.answer, many.positive_pixels, many.valid_pixels, many.tiles, many.empty) == \
            (one.answer, one.positive_pixels, one.valid_pixels, one.tiles, one.empty)
        assert np.array_equal(many.preview_mask, one.preview_mask) and np.array_equal(many.preview, one.preview)
        assert {"overview", "description", "answer", "tiles", "total"} <= set(many.seconds)
        masks.append(shared_pixels)
    # The questions really give different masks, and masks with both classes (a test that could fail).
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
    assert all(0 < (mask == 1).sum() < (mask != 255).sum() for mask in masks)
    assert leftovers(tmp_path) == []


def test_tile_probabilities_of_shared_features_are_bit_identical(reasoner):
    rgb = np.moveaxis(_scene(1)[:, :TILE, :TILE], 0, -1)
    rgb = np.ascontiguousarray(rgb)
    descriptions = [torch.randn(1, reasoner.model.config.llm_hidden_size, generator=torch.Generator().manual_seed(s))
                    for s in range(3)]
    shared = reasoner.tile_probabilities(rgb, descriptions)
    for description, probability in zip(descriptions, shared, strict=True):
        alone = reasoner.tile_probability(rgb, description)
        assert probability.dtype == np.float32 and torch.equal(torch.from_numpy(probability), torch.from_numpy(alone))
        with torch.inference_mode():  # and equal to the model's own one-call path
            pixels, (geometry,) = reasoner.processor.pixel_values([rgb])
            logits = reasoner.model.segment_with_description(pixels, description)
        assert np.array_equal(probability, reasoner.processor.restore(logits[0].numpy(), geometry))
    assert not np.array_equal(shared[0], shared[1])


def test_a_failing_output_fails_its_question_alone(reasoner, tmp_path):
    scene = write_geotiff(tmp_path / "scene.tif", _scene(), nodata=0, tiled=True)
    (tmp_path / "taken.tif").write_bytes(b"keep me")
    paths = [tmp_path / "a.tif", tmp_path / "taken.tif", tmp_path / "c.tif"]
    results = reasoner.predict_tiled_questions(scene, QUESTIONS, paths, TILE, OVERLAP, answer=False,
                                               return_errors=True)
    assert isinstance(results[1], GeoreasonError)
    assert str(results[1]) == f"{paths[1]}: output file already exists; pass --overwrite to replace it"
    assert [r.geotiff for r in (results[0], results[2])] == [paths[0], paths[2]]
    assert (tmp_path / "taken.tif").read_bytes() == b"keep me" and leftovers(tmp_path) == []
    # Without return_errors the error is raised, after the other questions' files were written.
    paths[0].unlink()
    paths[2].unlink()
    with pytest.raises(GeoreasonError, match="taken.tif: output file already exists"):
        reasoner.predict_tiled_questions(scene, QUESTIONS, paths, TILE, OVERLAP, answer=False)
    assert paths[0].exists() and paths[2].exists()
    with pytest.raises(GeoreasonError, match=r"geotiff_paths: expected one output path per question \(3\)"):
        reasoner.predict_tiled_questions(scene, QUESTIONS, paths[:2], TILE, OVERLAP)
    with pytest.raises(GeoreasonError, match="questions: expected a non-empty list"):
        reasoner.predict_tiled_questions(scene, [], [], TILE, OVERLAP)


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--no-progress"])


def _tiled_run(model, out, *args) -> int:
    return _predict("--model", model, *args, "--out", out, "--tile", "--tile-size", TILE, "--overlap", OVERLAP)


def _same_files(one_folder, one_name, other_folder, other_name) -> None:
    """The files of one prediction equal those of another: PNGs byte for byte, GeoTIFF pixels and tags, polygons."""
    for suffix in (".mask.png", ".overlay.png"):
        one, other = one_folder / f"{one_name}{suffix}", other_folder / f"{other_name}{suffix}"
        assert one.read_bytes() == other.read_bytes()
    one_pixels, one_tags = _pixels(one_folder / f"{one_name}.mask.tif")
    other_pixels, other_tags = _pixels(other_folder / f"{other_name}.mask.tif")
    assert np.array_equal(one_pixels, other_pixels) and one_tags == other_tags
    one_meta, _, one_wkb, one_fields = pyogrio.raw.read(one_folder / f"{one_name}.gpkg")
    other_meta, _, other_wkb, other_fields = pyogrio.raw.read(other_folder / f"{other_name}.gpkg")
    assert list(one_wkb) == list(other_wkb) and one_meta["crs"] == other_meta["crs"]
    assert [list(f) for f in one_fields] == [list(f) for f in other_fields]


@pytest.mark.input_kind("runs", "several --question on one scene with --tile",
                        "one pass over the tiles; the same files, records and answers as one run per question")
def test_predict_tile_with_two_questions_writes_what_two_runs_write(tiny_model_dir, tmp_path, monkeypatch):
    from georeason.model.segearth import SegEarthModel

    scene = write_geotiff(tmp_path / "scene.tif", _scene(), nodata=0, tiled=True)
    write_geotiff(tmp_path / "other.tif", _scene(2), nodata=0, tiled=True)
    encoded = []
    original = SegEarthModel.encode_image
    monkeypatch.setattr(SegEarthModel, "encode_image",
                        lambda self, pixels, *a, **k: encoded.append(1) or original(self, pixels, *a, **k))
    assert _tiled_run(tiny_model_dir, tmp_path / "both", scene, "--question", QUESTIONS[0],
                      "--question", QUESTIONS[1]) == 0
    assert len(encoded) == 1 + 6  # the overview and each tile once, for both questions
    both = json.loads((tmp_path / "both" / "summary.json").read_text())["inputs"]
    assert [(e["name"], e["question"], e["status"], e["mode"]) for e in both] == [
        ("scene", QUESTIONS[0], "ok", "tile"), ("scene-2", QUESTIONS[1], "ok", "tile")]
    for index, (question, name) in enumerate(zip(QUESTIONS[:2], ("scene", "scene-2"))):
        alone_folder = tmp_path / f"alone{index}"
        assert _tiled_run(tiny_model_dir, alone_folder, scene, "--question", question) == 0
        _same_files(tmp_path / "both", name, alone_folder, "scene")
        (alone,) = json.loads((alone_folder / "summary.json").read_text())["inputs"]
        for key in ("answer", "empty", "tiles", "positive_pixels", "raster", "notes"):
            assert both[index][key] == alone[key]
        assert both[index]["vectors"]["count"] == alone["vectors"]["count"]
        assert set(both[index]["seconds"]) == set(alone["seconds"])
    # JSONL pairs of two scenes, interleaved: each scene's pairs are grouped, every tile encoded once.
    pairs = [{"image": "scene.tif", "question": QUESTIONS[0]}, {"image": "other.tif", "question": QUESTIONS[0]},
             {"image": "scene.tif", "question": QUESTIONS[2]}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    encoded.clear()
    assert _tiled_run(tiny_model_dir, tmp_path / "pairs", "--questions", tmp_path / "pairs.jsonl") == 0
    assert len(encoded) == 2 * (1 + 6)
    entries = json.loads((tmp_path / "pairs" / "summary.json").read_text())["inputs"]
    assert [(e["name"], e["status"]) for e in entries] == [("scene", "ok"), ("other", "ok"), ("scene-2", "ok")]
    _same_files(tmp_path / "pairs", "scene", tmp_path / "alone0", "scene")
    assert leftovers(tmp_path / "pairs") == [] and leftovers(tmp_path / "both") == []


@pytest.mark.input_kind("outputs", "an output of one question of a tiled scene appears during the run",
                        "that pair fails alone naming the file; the scene's other questions are written")
def test_predict_tile_a_failing_question_fails_alone(tiny_model_dir, tmp_path, monkeypatch, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", _scene(), nodata=0, tiled=True)
    out = tmp_path / "out"
    original = GeoReasoner.predict_tiled_questions

    def another_process_writes_a_file(self, *args, **kwargs):
        # The outputs were checked before the run; this one appears afterwards (another process).
        (out / "scene-2.overlay.png").write_bytes(b"not ours")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GeoReasoner, "predict_tiled_questions", another_process_writes_a_file)
    assert _tiled_run(tiny_model_dir, out, scene, "--question", QUESTIONS[0], "--question", QUESTIONS[1],
                      "--question", QUESTIONS[2]) == 2
    captured = capsys.readouterr()
    assert f"{out / 'scene-2.overlay.png'}: output file already exists; pass --overwrite to replace it" in captured.err
    assert "2 of 3 predictions written; 1 failed" in captured.out
    summary = json.loads((out / "summary.json").read_text())
    assert [(e["name"], e["status"]) for e in summary["inputs"]] == [("scene", "ok"), ("scene-2", "failed"),
                                                                    ("scene-3", "ok")]
    assert summary["inputs"][1]["error"].endswith("output file already exists; pass --overwrite to replace it")
    assert (out / "scene-2.overlay.png").read_bytes() == b"not ours"
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("scene-2")) == ["scene-2.overlay.png"]
    assert {"scene.mask.tif", "scene.gpkg", "scene-3.mask.tif", "scene-3.gpkg"} <= {p.name for p in out.iterdir()}
    assert leftovers(out) == []
