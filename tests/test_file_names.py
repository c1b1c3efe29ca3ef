"""File names as people have them: names that are not UTF-8 are read, shown escaped, and never stop a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image

from georeason.cli import main
from georeason.errors import GeoreasonError
from georeason.filenames import gdal_name, portable_name, printable, printable_tree, source_name, unique_names
from tests._geo_fixtures import CRS, TRANSFORM, leftovers, position_image, write_geotiff

QUESTION = "Where could a helicopter land?"
MUNICH = os.fsdecode(b"M\xfcnchen")  # latin-1 0xFC, as a Windows zip unpacked on Linux names it


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _write_non_utf8_copy(source: Path, raw_name: bytes) -> Path:
    """A copy of `source` whose file name holds bytes that are not UTF-8."""
    target = os.path.join(os.fsencode(source.parent), raw_name)
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    return Path(os.fsdecode(target))


@pytest.mark.input_kind("file names", "name that is not valid UTF-8 (Windows zip: latin-1 / cp1252 bytes)",
                        "shown with \\xNN escapes in messages, logs and JSON; output files get %NN")
def test_printable_and_portable_forms_of_undecodable_names():
    assert printable(MUNICH + ".tif") == "M\\xfcnchen.tif"
    assert printable(Path(MUNICH + ".tif")) == "M\\xfcnchen.tif"
    assert printable(b"M\xfcnchen.tif") == "M\\xfcnchen.tif"
    assert printable("line\nbreak") == "line\\x0abreak" and printable("a\nb", multiline=True) == "a\nb"
    assert printable("Zürich ✓ 東京") == "Zürich ✓ 東京"  # valid text is unchanged
    assert portable_name(MUNICH) == "M%FCnchen" and portable_name("Zürich") == "Zürich"
    tree = printable_tree({"image": MUNICH, "list": [MUNICH, 3], MUNICH: None})
    assert tree == {"image": "M\\xfcnchen", "list": ["M\\xfcnchen", 3], "M\\xfcnchen": None}
    json.dumps(tree, ensure_ascii=False).encode("utf-8")  # never raises UnicodeEncodeError


@pytest.mark.input_kind("file names", "raster whose name is not valid UTF-8, with sidecar files (world file)",
                        "read through GDAL under a portable linked name; sidecars found; messages name the original")
def test_gdal_opens_a_non_utf8_name_with_its_world_file(tmp_path):
    from georeason.geo import open_raster, raster_info, read_rgb

    tif = write_geotiff(tmp_path / "plain.tif", position_image(20, 30))
    odd_tif = _write_non_utf8_copy(tif, b"Gr\xfcn.tif")
    with open_raster(tif) as src:
        expected, _ = read_rgb(src)
    with open_raster(odd_tif) as src:
        info = raster_info(src)
        pixels, _ = read_rgb(src)
    assert np.array_equal(pixels, expected) and info.crs.to_string() == CRS and info.transform == TRANSFORM
    assert info.path == str(odd_tif) and source_name(gdal_name(odd_tif)) == str(odd_tif)

    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(tmp_path / "plain.png")
    odd_png = _write_non_utf8_copy(tmp_path / "plain.png", b"Stra\xdfe.png")
    with open(os.path.join(os.fsencode(tmp_path), b"Stra\xdfe.pgw"), "w") as world:
        world.write("2\n0\n0\n-2\n101\n199\n")  # pixel centre of the top-left pixel at (101, 199)
    with open_raster(odd_png) as src:
        assert tuple(src.transform)[:6] == (2.0, 0.0, 100.0, 0.0, -2.0, 200.0)


@pytest.mark.input_kind("file names", "name with a newline (predict)",
                        "the pair runs; stdout reports it on one line, the newline shown as \\x0a, outputs named %0A")
def test_predict_reports_a_name_with_a_newline_on_one_line(tiny_model_dir, tmp_path, capsys):
    image = write_geotiff(tmp_path / "two\nlines.tif", position_image(40, 50))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(tiny_model_dir), str(image), "--question", QUESTION, "--out", str(out),
                 "--no-progress", "--no-answer"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].startswith("1 of 1 predictions written; 0 failed")
    assert lines[0].startswith(str(tmp_path / "two\\x0alines.tif") + ": (no answer) -> ")
    assert lines[0].endswith("-> two%0Alines.mask.png, two%0Alines.overlay.png, two%0Alines.mask.tif, "
                             "two%0Alines.gpkg")  # outputs are named portably (docs/predict.md)


@pytest.mark.input_kind("file names", "name that is not valid UTF-8 in a batch (predict, whole and --tile)",
                        "the pair runs, outputs named with %NN, summary.json written with the name printable")
def test_predict_reads_a_non_utf8_name_and_writes_the_summary(tiny_model_dir, tmp_path):
    good = write_geotiff(tmp_path / "good.tif", position_image(40, 50))
    odd = _write_non_utf8_copy(good, b"M\xfcnchen.tif")
    # As the case script runs it: a subprocess whose stdout is a pipe with the strict UTF-8 error handler.
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict",
           "PYTHONPATH": os.pathsep.join(sys.path)}
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "georeason.cli", "predict", "--model", str(tiny_model_dir),
                             os.fsencode(good), os.fsencode(odd), "--question", QUESTION, "--out", str(out),
                             "--no-progress", "--no-answer"], capture_output=True, env=env, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    stdout = result.stdout.decode("utf-8")
    assert "M\\xfcnchen.tif: (no answer) -> M%FCnchen.mask.png" in stdout and "2 of 2 predictions written" in stdout
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    entry = summary["inputs"][1]
    assert (entry["image"], entry["name"], entry["status"]) == (printable(odd), "M%FCnchen", "ok")
    assert entry["outputs"]["mask_geotiff"] == str(out / "M%FCnchen.mask.tif")
    assert entry["raster"]["crs"] == CRS  # read with its georeferencing, not as a plain picture
    # The same pixels under both names give the same mask.
    same = [_pixels(out / f"{name}.mask.png") for name in ("good", "M%FCnchen")]
    assert np.array_equal(*same)
    with rasterio.open(out / "M%FCnchen.mask.tif") as mask_tif:
        assert mask_tif.tags()["georeason_source"] == printable(odd) and mask_tif.crs.to_string() == CRS

    tiled = tmp_path / "tiled"
    assert main(["predict", "--model", str(tiny_model_dir), str(odd), "--question", QUESTION, "--out", str(tiled),
                 "--tile", "--tile-size", "32", "--overlap", "8", "--no-progress", "--no-answer"]) == 0
    entry = json.loads((tiled / "summary.json").read_text(encoding="utf-8"))["inputs"][0]
    assert (entry["status"], entry["mode"], entry["name"]) == ("ok", "tile", "M%FCnchen")
    assert (tiled / "M%FCnchen.mask.tif").is_file() and leftovers(tiled) == []


@pytest.mark.input_kind("file names", "question or --out folder that is not valid UTF-8",
                        "refused before the model loads, naming the question or the folder")
def test_predict_refuses_a_non_utf8_question_or_out_folder(tiny_model_dir, tmp_path, capsys):
    tif = write_geotiff(tmp_path / "a.tif", position_image(20, 20))
    code = main(["predict", "--model", str(tiny_model_dir), str(tif), "--question", "Wo ist " + MUNICH + "?",
                 "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2 and "question: not valid UTF-8 text ('Wo ist M\\\\xfcnchen?')" in capsys.readouterr().err
    odd_out = tmp_path / ("out-" + MUNICH)
    code = main(["predict", "--model", str(tiny_model_dir), str(tif), "--question", QUESTION, "--out", str(odd_out),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "out-M\\xfcnchen: the name is not valid UTF-8" in err
    assert not odd_out.exists()


def test_unique_names_keep_natural_stems_and_ignore_case():
    assert unique_names(["tile", "tile", "tile-2"]) == ["tile", "tile-3", "tile-2"]
    assert unique_names(["a", "a", "a", "a-2"]) == ["a", "a-3", "a-4", "a-2"]
    assert unique_names(["Tile", "tile", "TILE-2"]) == ["Tile", "tile-3", "TILE-2"]
    assert unique_names([MUNICH, "M%FCnchen"]) == ["M%FCnchen", "M%FCnchen-2"]


@pytest.mark.input_kind("file names", "mask and image names that are not valid UTF-8 (data merge-masks, data check)",
                        "matched by their bytes and merged; the report prints them escaped")
def test_merge_masks_and_check_take_non_utf8_names(tmp_path, capsys):
    dataset = tmp_path / "ds"
    for sub in ("images", "QAs", "labels"):
        (dataset / "train" / sub).mkdir(parents=True)
    raw = os.fsencode(dataset / "train")
    write_geotiff(tmp_path / "g.tif", position_image(16, 16))
    os.rename(os.fsencode(tmp_path / "g.tif"), raw + b"/images/Gr\xfcn.tif")
    with open(raw + b"/QAs/Gr\xfcn.json", "w", encoding="utf-8") as qa:
        json.dump({"questions": ["Where is the field?"], "answer": ["Here."]}, qa)
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    Image.fromarray(mask).save(os.fsdecode(os.fsencode(masks) + b"/Gr\xfcn.png"))
    assert main(["data", "merge-masks", str(dataset), str(masks)]) == 0
    assert "merged 1 masks" in capsys.readouterr().out
    label = _pixels(os.fsdecode(raw + b"/labels/Gr\xfcn.png"))
    assert np.array_equal(label == 255, mask == 1)
    assert main(["data", "check", str(dataset)]) == 0
    assert "OK: no problems found" in capsys.readouterr().out


def test_read_pairs_keeps_jsonl_paths_exact(tmp_path):
    """A JSONL path written with a \\udcfc escape names the undecodable file exactly."""
    from georeason.predict import read_pairs

    (tmp_path / "q.jsonl").write_text(json.dumps({"image": MUNICH + ".tif", "question": "q"}) + "\n")
    pairs = read_pairs(Namespace(question=None, images=[], questions=str(tmp_path / "q.jsonl")))
    assert pairs == [(str(tmp_path / (MUNICH + ".tif")), "q")]
    with pytest.raises(GeoreasonError, match="no such image file"):
        from georeason.predict import plan_jobs

        plan_jobs(pairs)


def test_redundancy_report_lists_a_non_utf8_name_printable(tmp_path, capsys):
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(scenes / "a.png")
    _write_non_utf8_copy(scenes / "a.png", b"Gr\xfcn.png")
    out = tmp_path / "report"
    assert main(["redundancy", str(scenes), "--patch", "16", "--workers", "1", "--out", str(out)]) == 0
    rows = (out / "redundancy.csv").read_text(encoding="utf-8").splitlines()
    assert any(row.split(",")[1].endswith("Gr\\xfcn.png") for row in rows[1:]) and len(rows) == 3
    assert json.loads((out / "redundancy.json").read_text(encoding="utf-8"))["collections"][0]["analysed"] == 2


@pytest.mark.input_kind("file names", "dataset image whose name is not valid UTF-8 (eval)",
                        "scored like any other; its mask file gets a safe name; the report is valid UTF-8 JSON")
def test_eval_scores_a_dataset_with_a_non_utf8_image_name(tmp_path):
    from georeason.evaluate import evaluate

    split = tmp_path / "ds" / "val"
    for sub in ("images", "QAs", "labels"):
        (split / sub).mkdir(parents=True)
    raw = os.fsencode(split)
    Image.fromarray(np.full((16, 16, 3), 80, np.uint8)).save(tmp_path / "g.png")
    os.rename(os.fsencode(tmp_path / "g.png"), raw + b"/images/Gr\xfcn.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(os.fsdecode(raw + b"/labels/Gr\xfcn.png"))
    with open(raw + b"/QAs/Gr\xfcn.json", "w", encoding="utf-8") as qa:
        json.dump({"questions": ["Where is the field?"], "answer": ["Everywhere."]}, qa)
    masks = tmp_path / "masks"
    report = evaluate(None, tmp_path / "ds", "val", baseline="everything", image_size=32, save_masks=masks)
    assert report["metrics"]["gIoU"] == pytest.approx(1.0, abs=1e-4) and len(report["data"]["fingerprint"]) == 64
    assert [p.name for p in masks.iterdir()] == ["Gr_n.png"]
    json.dumps(printable_tree(report), ensure_ascii=False).encode("utf-8")
