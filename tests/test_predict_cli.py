"""Tests of `georeason predict`: output files and summary, JSONL input, tiles, refusals, 2-process split."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pyogrio
import rasterio
import rasterio.features
import shapely
from PIL import Image

from georeason.cli import main
from tests._geo_fixtures import CRS, TRANSFORM, leftovers, write_geotiff

QUESTION = "Which area could be used to land a small plane?"


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 60, (3, height, width))
    waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90])
    return np.clip(128 + waves + noise, 1, 255).astype(np.uint8)


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--no-progress"])


def _outputs(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_whole_mode_writes_every_output_and_the_summary(tiny_model_dir, tmp_path, capsys):
    data = _scene(60, 90)
    data[:, :5] = 0
    tif = write_geotiff(tmp_path / "field.tif", data, nodata=0)
    Image.fromarray(np.moveaxis(_scene(50, 70, 1), 0, -1)).save(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert _predict("--model", tiny_model_dir, tif, tmp_path / "photo.png", "--question", QUESTION, "--out", out) == 0
    printed = capsys.readouterr().out
    assert _outputs(out) == ["field.gpkg", "field.mask.png", "field.mask.tif", "field.overlay.png", "photo.gpkg",
                             "photo.mask.png", "photo.overlay.png", "summary.json"]
    assert "photo.gpkg: the input has no georeferencing, so the polygons are in pixel coordinates" in printed
    assert "2 of 2 predictions written; 0 failed" in printed

    with rasterio.open(out / "field.mask.tif") as mask_tif:
        assert mask_tif.crs.to_string() == CRS and mask_tif.transform == TRANSFORM and mask_tif.nodata == 255
        values = mask_tif.read(1)
    assert np.all(values[:5] == 255) and set(np.unique(values[5:])) <= {0, 1}
    png = np.asarray(Image.open(out / "field.mask.png"))
    assert png.shape == (60, 90) and np.array_equal(png == 255, values == 1)
    assert np.asarray(Image.open(out / "photo.mask.png")).shape == (50, 70)
    overlay = Image.open(out / "photo.overlay.png")
    assert overlay.size[0] == 70 and overlay.size[1] > 50  # caption strip below the image
    assert pyogrio.read_info(out / "field.gpkg")["crs"] == CRS and pyogrio.read_info(out / "photo.gpkg")["crs"] is None
    _, _, wkb, _ = pyogrio.raw.read(out / "field.gpkg")  # polygons burnt into the source grid = the mask GeoTIFF
    burnt = rasterio.features.rasterize(shapely.from_wkb(wkb), out_shape=(60, 90), transform=TRANSFORM)
    assert np.array_equal(burnt == 1, values == 1) and (values == 1).any()

    summary = json.loads((out / "summary.json").read_text())
    weights = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    assert summary["model"]["model_sha256"] == weights and summary["model"]["preset"] == "tiny"
    assert summary["counts"] == {"inputs": 2, "ok": 2, "failed": 0, "missing": 0, "results": 2}
    field_entry, photo_entry = summary["inputs"]
    assert field_entry["image"] == str(tif) and field_entry["question"] == QUESTION and field_entry["mode"] == "whole"
    assert isinstance(field_entry["answer"], str) and field_entry["raster"]["crs"] == CRS
    assert field_entry["raster"]["transform"] == list(TRANSFORM)[:6] and field_entry["raster"]["nodata"] == 0
    assert field_entry["outputs"]["mask_geotiff"] == str(out / "field.mask.tif")
    assert {"load", "preprocess", "mask", "answer", "restore", "outputs", "total"} <= set(field_entry["seconds"])
    assert photo_entry["raster"] is None and "mask_geotiff" not in photo_entry["outputs"]
    assert photo_entry["vectors"]["georeferenced"] is False and summary["seconds"]["total"] > 0
    assert leftovers(out) == []


def test_questions_file_unique_names_geojson_and_no_answer(tiny_model_dir, tmp_path):
    write_geotiff(tmp_path / "a.tif", _scene(40, 40))
    lines = [{"image": "a.tif", "question": "Where is the river?"}, {"image": "a.tif", "question": "Roads?"}]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    out = tmp_path / "out"
    assert _predict("--model", tiny_model_dir, "--questions", tmp_path / "pairs.jsonl", "--out", out,
                    "--vector-format", "geojson", "--no-answer", "--batch-size", "2") == 0
    assert "a-2.geojson" in _outputs(out) and "a.geojson" in _outputs(out) and "a-2.mask.tif" in _outputs(out)
    assert pyogrio.read_info(out / "a.geojson")["crs"] == "EPSG:4326"
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["question"] for entry in summary["inputs"]] == ["Where is the river?", "Roads?"]
    assert all(entry["answer"] is None for entry in summary["inputs"]) and summary["settings"]["batch_size"] == 2
    (tmp_path / "bad.jsonl").write_text('{"image": "a.tif"}\n')
    assert _predict("--model", tiny_model_dir, "--questions", tmp_path / "bad.jsonl", "--out", tmp_path / "o2") == 2


def test_large_scene_needs_tile_and_tile_mode_streams_it(tiny_model_dir, tmp_path, capsys):
    scene = write_geotiff(tmp_path / "scene.tif", _scene(200, 230), tiled=True)
    whole = tmp_path / "whole"
    assert _predict("--model", tiny_model_dir, scene, "--question", QUESTION, "--out", whole,
                    "--max-pixels", 40_000) == 2
    assert "scene.tif: the scene is 230 x 200 px (46000 px), above the limit of 40000 px for whole-image mode " \
           "(--max-pixels); use --tile" in capsys.readouterr().err
    assert _outputs(whole) == ["summary.json"]
    failed = json.loads((whole / "summary.json").read_text())["inputs"][0]
    assert failed["status"] == "failed" and "use --tile" in failed["error"]

    tiled = tmp_path / "tiled"
    assert _predict("--model", tiny_model_dir, scene, "--question", QUESTION, "--out", tiled, "--max-pixels", 40_000,
                    "--tile", "--tile-size", 128, "--overlap", 16, "--min-area", 200) == 0
    entry = json.loads((tiled / "summary.json").read_text())["inputs"][0]
    assert entry["mode"] == "tile" and entry["tiles"] == 4 and set(entry["seconds"]) >= {"description", "tiles"}
    with rasterio.open(tiled / "scene.mask.tif") as mask_tif:
        values = mask_tif.read(1)
        assert mask_tif.transform == TRANSFORM and mask_tif.profile["tiled"]
    assert entry["positive_pixels"] == int((values == 1).sum()) and set(np.unique(values)) <= {0, 1}
    assert np.array_equal(np.asarray(Image.open(tiled / "scene.mask.png")) == 255, values == 1)
    meta, _, _, fields = pyogrio.raw.read(tiled / "scene.gpkg")
    area = dict(zip(meta["fields"], fields))["area"]
    assert len(area) == entry["vectors"]["count"] and area.min() >= 200 and meta["crs"] == CRS


def test_existing_outputs_are_refused_unless_overwrite(tiny_model_dir, tmp_path, capsys):
    tif = write_geotiff(tmp_path / "a.tif", _scene(30, 30))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.overlay.png").write_bytes(b"keep me")
    assert _predict("--model", tiny_model_dir, tif, "--question", QUESTION, "--out", out) == 2
    assert "a.overlay.png: output file already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert _outputs(out) == ["a.overlay.png"] and (out / "a.overlay.png").read_bytes() == b"keep me"
    assert _predict("--model", tiny_model_dir, tif, "--question", QUESTION, "--out", out, "--overwrite") == 0
    assert Image.open(out / "a.overlay.png").size[0] == 30 and len(_outputs(out)) == 5


def _bomb(path) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (90_000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 99))
                     + chunk(b"IEND", b""))


def test_bad_input_gives_clear_errors_and_leaves_nothing_behind(tiny_model_dir, tmp_path, capsys):
    good = write_geotiff(tmp_path / "good.tif", _scene(30, 40))
    big = write_geotiff(tmp_path / "big.tif", _scene(500, 500), tiled=True)
    (tmp_path / "cut.tif").write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    (tmp_path / "noise.jpg").write_bytes(os.urandom(999))
    _bomb(tmp_path / "bomb.png")
    model = ["--model", tiny_model_dir]
    refused_up_front = [
        ([good, "--question", ""], "question: the question is empty"),
        ([good, "--question", "why " * 400], r"question: 1600 tokens is over this model's limit of \d+ tokens"),
        ([tmp_path / "nope.tif", "--question", QUESTION], "nope.tif: no such image file"),
        ([good, "--question", QUESTION, "--bands", "3,x"], "--bands: expected 1-based band numbers"),
        ([good, "--question", QUESTION, "--tile", "--overlap", "900"], "overlap: expected 0 <= overlap"),
        ([good, "--question", QUESTION, "--num-beams", "0"], "--num-beams: expected at least 1, got 0"),
        ([good, "--question", QUESTION, "--device", "cuda"], "device: 'cuda' was requested but no CUDA GPU"),
    ]
    import torch

    for args, message in refused_up_front:
        if "cuda" in args and torch.cuda.is_available():
            continue
        assert _predict(*model, *args, "--out", tmp_path / "out") == 2
        error = capsys.readouterr().err
        assert message in error or __import__("re").search(message, error), error
        assert not (tmp_path / "out").exists()  # refused before anything was created

    per_input = [
        (good, ["--bands", "5,2,1"], "good.tif: band 5 does not exist; the raster has 3 band(s)"),
        (tmp_path / "cut.tif", [], "cut.tif: cannot read the pixels (truncated or corrupt file?)"),
        (tmp_path / "noise.jpg", [], "noise.jpg: cannot read this image"),
        (tmp_path / "bomb.png", [], "bomb.png: the scene is 90000 x 90000 px (8100.0 Mpx), above the limit"),
        (tmp_path / "cut.tif", ["--tile", "--tile-size", "128", "--overlap", "0"], "cut.tif: cannot read the pixels"),
    ]
    for number, (image, extra, message) in enumerate(per_input):
        out = tmp_path / f"out{number}"
        assert _predict(*model, image, "--question", QUESTION, "--out", out, *extra) == 2
        assert message in capsys.readouterr().err
        assert _outputs(out) == ["summary.json"]  # the failure is recorded; no partial outputs
        entry = json.loads((out / "summary.json").read_text())["inputs"][0]
        assert entry["status"] == "failed" and message in entry["error"]


def test_two_processes_split_the_inputs_and_rank_0_merges(tiny_model_dir, tmp_path):
    images = [write_geotiff(tmp_path / f"s{i}.tif", _scene(24 + 4 * i, 32, seed=i)) for i in range(5)]
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "georeason.cli", "predict", "--model", str(tiny_model_dir), *map(str, images),
               "--question", QUESTION, "--out", str(out), "--no-progress", "--no-answer"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2
    assert summary["counts"] == {"inputs": 5, "ok": 5, "failed": 0, "missing": 0, "results": 5}
    assert [entry["index"] for entry in summary["inputs"]] == list(range(5))
    assert [entry["rank"] for entry in summary["inputs"]] == [0, 1, 0, 1, 0]  # rank r takes r, r+N, ...
    for index, image in enumerate(images):
        mask = np.asarray(Image.open(out / f"s{index}.mask.png"))
        assert mask.shape == (24 + 4 * index, 32)
    assert done.stdout.count("predictions written") == 1  # only rank 0 reports


def test_a_failing_output_removes_the_other_outputs_of_that_prediction(tiny_model_dir, tmp_path, monkeypatch, capsys):
    from georeason.errors import GeoreasonError
    from georeason.reasoner import Prediction

    def disk_full(self, *args, **kwargs):
        raise GeoreasonError("a.gpkg: disk full (simulated)")

    monkeypatch.setattr(Prediction, "save_vectors", disk_full)
    tif = write_geotiff(tmp_path / "a.tif", _scene(30, 30))
    out = tmp_path / "out"
    assert _predict("--model", tiny_model_dir, tif, "--question", QUESTION, "--out", out, "--no-answer") == 2
    assert "a.gpkg: disk full (simulated)" in capsys.readouterr().err
    assert _outputs(out) == ["summary.json"]  # mask PNG, overlay and GeoTIFF written before were removed
