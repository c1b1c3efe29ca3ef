"""A run never destroys its own or someone's data: output names planned per run, --overwrite checked, writes atomic."""

from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image

from georeason.cli import main
from georeason.errors import GeoreasonError
from tests._geo_fixtures import leftovers, position_image, write_geotiff

QUESTION = "Which area is bare land?"


def _pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def _predict(model, *args) -> int:
    return main(["predict", "--model", str(model), *map(str, args), "--question", QUESTION, "--no-progress",
                 "--no-answer"])


def _tile_inputs(folder: Path) -> list[Path]:
    """d1/tile.tif, d2/tile.tif, tile-2.tif: widths 40, 50, 60 px and origins 1 km apart, so outputs tell apart."""
    paths = []
    for i, name in enumerate(("d1/tile.tif", "d2/tile.tif", "tile-2.tif")):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(path, "w", driver="GTiff", width=40 + 10 * i, height=30, count=3, dtype="uint8",
                           crs="EPSG:32633", transform=Affine(1, 0, 500000 + 1000 * i, 0, -1, 4000000)) as dataset:
            dataset.write((np.random.default_rng(i).random((3, 30, 40 + 10 * i)) * 255).astype("uint8"))
        paths.append(path)
    return paths


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _width(path: Path) -> int:
    with rasterio.open(path) as dataset:
        return dataset.width


@pytest.mark.input_kind("outputs", "inputs with one stem in two folders and a file already called <stem>-2",
                        "three distinct output names (tile, tile-3, tile-2); --overwrite replaces only files from "
                        "before the run, and the summary lists them")
def test_output_names_are_unique_within_a_run_and_overwrite_is_truthful(tiny_model_dir, tmp_path):
    inputs = _tile_inputs(tmp_path)
    out = tmp_path / "out"
    assert _predict(tiny_model_dir, *inputs, "--out", out) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [(e["name"], e["status"]) for e in summary["inputs"]] == [("tile", "ok"), ("tile-3", "ok"), ("tile-2", "ok")]
    assert [_width(out / f"{name}.mask.tif") for name in ("tile", "tile-3", "tile-2")] == [40, 50, 60]
    assert all("replaced" not in e for e in summary["inputs"])

    # Again into the same folder with --overwrite: every output existed before this run and is replaced once.
    (out / "tile-3.mask.png").unlink()  # one that did not exist any more is written, not "replaced"
    assert _predict(tiny_model_dir, *inputs, "--out", out, "--overwrite") == 0
    entries = json.loads((out / "summary.json").read_text())["inputs"]
    assert [_width(out / f"{name}.mask.tif") for name in ("tile", "tile-3", "tile-2")] == [40, 50, 60]
    assert [_pixels(out / f"{name}.mask.png").shape[1] for name in ("tile", "tile-3", "tile-2")] == [40, 50, 60]
    assert str(out / "tile-3.mask.png") not in entries[1]["replaced"]
    assert str(out / "tile-3.mask.tif") in entries[1]["replaced"] and len(entries[0]["replaced"]) == 4
    assert leftovers(out) == []


def test_overwrite_never_replaces_a_file_the_run_wrote(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Even if two pairs were given one name, --overwrite lets the second fail rather than replace the first."""
    import georeason.predict

    inputs = _tile_inputs(tmp_path)[:2]
    monkeypatch.setattr(georeason.predict, "unique_names", lambda stems: ["tile"] * len(stems))
    out = tmp_path / "out"
    assert _predict(tiny_model_dir, *inputs, "--out", out, "--overwrite") == 2
    assert "tile.mask.png: output file already exists; pass --overwrite" in capsys.readouterr().err
    entries = json.loads((out / "summary.json").read_text())["inputs"]
    assert [e["status"] for e in entries] == ["ok", "failed"]
    assert _width(out / "tile.mask.tif") == 40 and _pixels(out / "tile.mask.png").shape[1] == 40
    assert leftovers(out) == []


@pytest.mark.input_kind("outputs", "an output name that is one of the run's inputs, or existing outputs",
                        "refused before the model loads (inputs even with --overwrite); no file is touched")
def test_outputs_are_checked_against_inputs_and_disk_before_any_model_work(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    scene = write_geotiff(out / "x.tif", position_image(20, 20))
    also_input = write_geotiff(out / "x.mask.tif", position_image(20, 20))  # would be x.tif's mask GeoTIFF
    before = _digests(out)
    model = tmp_path / "no-model"  # never loaded: the checks come first
    assert _predict(model, scene, also_input, "--out", out, "--overwrite") == 2
    assert "x.mask.tif: this output of the run is also one of its inputs" in capsys.readouterr().err
    (tmp_path / "old").mkdir()
    for name in ("a.mask.png", "a.gpkg"):
        (tmp_path / "old" / name).write_text("someone's file")
    a = write_geotiff(tmp_path / "a.tif", position_image(20, 20))
    assert _predict(model, a, "--out", tmp_path / "old") == 2
    assert "a.mask.png: output file already exists (and 1 more); pass --overwrite" in capsys.readouterr().err
    assert _digests(out) == before and (tmp_path / "old" / "a.gpkg").read_text() == "someone's file"


@pytest.mark.input_kind("outputs", "--out that is a file or a folder that is not writable",
                        "refused before the model loads, naming the folder")
def test_unusable_out_folder_is_refused_first(tmp_path, monkeypatch, capsys):
    a = write_geotiff(tmp_path / "a.tif", position_image(20, 20))
    (tmp_path / "file").write_text("x")
    assert _predict(tmp_path / "no-model", a, "--out", tmp_path / "file") == 2
    assert "file: exists and is not a folder" in capsys.readouterr().err
    (tmp_path / "locked").mkdir()
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: False)  # as a read-only mount answers
    assert _predict(tmp_path / "no-model", a, "--out", tmp_path / "locked" / "out") == 2
    assert "locked, where it would be created, is not writable" in capsys.readouterr().err


@pytest.mark.input_kind("outputs", "full disk or no permission while writing a pair's outputs (predict)",
                        "that pair fails with a GeoreasonError naming the file; the others and summary.json are "
                        "written; nothing half-written; files from before the run are kept")
def test_a_full_disk_fails_one_pair_and_keeps_earlier_files(tiny_model_dir, tmp_path, monkeypatch, capsys):
    a = write_geotiff(tmp_path / "a.tif", position_image(24, 24))
    b = write_geotiff(tmp_path / "b.tif", position_image(30, 24))
    out = tmp_path / "out"
    out.mkdir()
    for name in ("b.mask.png", "b.mask.tif", "b.gpkg", "b.overlay.png"):
        (out / name).write_text(f"earlier {name}")
    save = Image.Image.save

    def full_disk(self, fp, *args, **kwargs):
        if Path(fp).name.lstrip(".").startswith("b.overlay"):  # b's overlay, at its temporary name
            with open(fp, "wb") as partial:
                partial.write(b"\x89PNG half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", full_disk)
    assert _predict(tiny_model_dir, a, b, "--out", out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "b.overlay.tmp-" in err and "cannot write this file (No space left on device)" in err
    summary = json.loads((out / "summary.json").read_text())
    assert [e["status"] for e in summary["inputs"]] == ["ok", "failed"]
    assert "No space left on device" in summary["inputs"][1]["error"]
    for name in ("b.mask.png", "b.mask.tif", "b.gpkg", "b.overlay.png"):  # none of b's new files committed
        assert (out / name).read_text() == f"earlier {name}"
    assert _pixels(out / "a.mask.png").shape == (24, 24) and leftovers(out) == []


def test_tiled_mode_write_failure_removes_the_staged_geotiff(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import pyogrio.raw
    from pyogrio.errors import DataSourceError

    def refuse(*args, **kwargs):
        raise DataSourceError("sqlite3_open failed: disk I/O error")

    monkeypatch.setattr(pyogrio.raw, "write", refuse)
    scene = write_geotiff(tmp_path / "s.tif", position_image(40, 40))
    out = tmp_path / "out"
    assert _predict(tiny_model_dir, scene, "--out", out, "--tile", "--tile-size", "32", "--overlap", "8") == 2
    assert "cannot write this file (sqlite3_open failed: disk I/O error)" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]


def test_an_interrupted_run_leaves_temporaries_the_next_run_removes(tiny_model_dir, tmp_path, capsys):
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", ""])
    gone.wait()  # a process id that no longer runs: its files are left by a killed run
    out = tmp_path / "out"
    out.mkdir()
    stale = out / f".a.mask.tmp-{gone.pid}-0123abcd.png"
    stale.write_bytes(b"half")
    other = out / ".notes.tmp-keep"  # not a name georeason makes: left alone
    other.write_text("mine")
    a = write_geotiff(tmp_path / "a.tif", position_image(20, 20))
    assert _predict(tiny_model_dir, a, "--out", out) == 0
    assert "removed 1 temporary file(s) left by an interrupted run" in capsys.readouterr().err
    assert not stale.exists() and other.read_text() == "mine"


# -- the other commands that write outputs ------------------------------------------------------------
@pytest.mark.input_kind("outputs", "init / convert into a folder holding other files (even a dataset)",
                        "nothing is deleted: checked before any work, model files staged and replaced one by one "
                        "with --overwrite, other files kept and listed")
def test_init_and_convert_never_delete_what_they_did_not_write(tmp_path, capsys):
    out = tmp_path / "models"
    (out / "dataset" / "train").mkdir(parents=True)
    (out / "dataset" / "train" / "a.png").write_bytes(b"not mine")
    (out / "notes.txt").write_text("keep me")
    assert main(["init", "--preset", "tiny", str(out)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "notes.txt"]

    assert main(["init", "--preset", "tiny", str(out), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "note: kept 2 entries of" in printed and "dataset, notes.txt" in printed
    assert (out / "dataset" / "train" / "a.png").read_bytes() == b"not mine"
    assert (out / "notes.txt").read_text() == "keep me" and (out / "model.safetensors").is_file()
    first = (out / "model.safetensors").read_bytes()
    assert main(["init", "--preset", "tiny", str(out), "--overwrite", "--seed", "1"]) == 0
    assert (out / "model.safetensors").read_bytes() != first and leftovers(tmp_path) == []

    # convert checks the folder before it reads the release, and a failed conversion deletes nothing.
    assert main(["convert", str(tmp_path / "no-release"), str(out)]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    before = _digests(out)
    assert main(["convert", str(tmp_path / "no-release"), str(out), "--overwrite"]) == 2
    assert _digests(out) == before and (out / "dataset" / "train" / "a.png").is_file()
    (tmp_path / "a-file").write_text("x")
    assert main(["init", "--preset", "tiny", str(tmp_path / "a-file"), "--overwrite"]) == 2
    assert "a-file: exists and is not a folder" in capsys.readouterr().err


@pytest.mark.input_kind("outputs", "data merge-masks onto labels that already exist",
                        "a label with other content is replaced only with --overwrite (and reported); an identical "
                        "one is left as is; nothing is written when one conflicts")
def test_merge_masks_replaces_a_different_label_only_with_overwrite(tmp_path, capsys):
    from georeason.data.merge import merge_masks

    dataset = tmp_path / "ds"
    (dataset / "train" / "images").mkdir(parents=True)
    (dataset / "train" / "labels").mkdir()
    masks = tmp_path / "masks"
    masks.mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(dataset / "train" / "images" / f"{stem}.png")
        mask = np.zeros((8, 8), np.uint8)
        mask[:4] = 1
        Image.fromarray(mask).save(masks / f"{stem}.png")
    same = np.zeros((8, 8), np.uint8)
    same[:4] = 255
    Image.fromarray(same).save(dataset / "train" / "labels" / "a.png")  # what merge would write
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(dataset / "train" / "labels" / "b.png")  # someone's label
    before = _digests(dataset / "train" / "labels")
    with pytest.raises(GeoreasonError, match=r"these labels exist with other content.*\n  .*labels/b.png$"):
        merge_masks(dataset, masks)
    assert _digests(dataset / "train" / "labels") == before

    report = merge_masks(dataset, masks, overwrite=True)
    assert (report.merged, report.replaced, report.unchanged) == (["a", "b"], ["b"], ["a"])
    assert np.array_equal(_pixels(dataset / "train" / "labels" / "b.png"), same)
    assert _digests(dataset / "train" / "labels")["a.png"] == before["a.png"]
    assert "replaced label (--overwrite): b" in report.text()


@pytest.mark.input_kind("outputs", "eval --save-masks/--save-overlays with ids that clash once made file-safe",
                        "one file per item (a_b, a_b-2), planned before the run; files from before are replaced only "
                        "with --overwrite")
def test_eval_output_names_are_planned_and_unique(tmp_path):
    from georeason.evaluate import evaluate

    data = tmp_path / "data"
    data.mkdir()
    lines = []
    for index, item_id in enumerate(("a b", "a_b", "c")):
        image = np.full((16, 16, 3), 40 * index, np.uint8)
        Image.fromarray(image).save(data / f"{index}.png")
        lines.append(json.dumps({"id": item_id, "image": f"{index}.png", "questions": ["q"], "answers": []}))
    (data / "val.jsonl").write_text("\n".join(lines) + "\n")
    masks, overlays = tmp_path / "masks", tmp_path / "overlays"
    masks.mkdir()
    (masks / "c.png").write_text("from before")
    evaluate(None, data, "val", baseline="everything", image_size=32, save_masks=masks, save_overlays=overlays)
    assert sorted(p.name for p in masks.iterdir()) == ["a_b-2.png", "a_b.png", "c.png"]
    assert sorted(p.name for p in overlays.iterdir()) == ["a_b-2.png", "a_b.png", "c.png"]
    assert _pixels(masks / "c.png").min() == 255 and leftovers(masks) == []


@pytest.mark.input_kind("outputs", "annotate --out holding another image with the same name or stem",
                        "that image is not annotated (listed as failed with the reason); the dataset's image and "
                        "QA file are kept; the other images go on")
def test_annotate_never_replaces_another_datasets_image(tmp_path, monkeypatch):
    from tests.test_annotate_pipeline import LoopbackServer, ScriptedLLM, annotate_args, make_images

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    csv_path = make_images(tmp_path / "scenes", ["lake", "harbor"])
    out = tmp_path / "dataset"
    (out / "train" / "images").mkdir(parents=True)
    (out / "train" / "QAs").mkdir()
    (out / "train" / "images" / "img_00.png").write_bytes(b"another dataset's image")
    (out / "train" / "QAs" / "img_00.json").write_text(json.dumps({"questions": ["theirs"], "answer": ["theirs"]}))
    with LoopbackServer(ScriptedLLM()) as server:
        assert main(annotate_args(tmp_path / "scenes", csv_path, out, server)) == 1
    summary = json.loads((out / "annotate_summary.json").read_text())
    assert list(summary["failed"]) == ["img_00"] and "exists with other content" in summary["failed"]["img_00"]
    assert (out / "train" / "images" / "img_00.png").read_bytes() == b"another dataset's image"
    assert json.loads((out / "train" / "QAs" / "img_00.json").read_text())["questions"] == ["theirs"]
    assert (out / "train" / "QAs" / "img_01.json").is_file() and summary["generated"] == 1
