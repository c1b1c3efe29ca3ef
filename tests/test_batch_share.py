"""`georeason batch` with several questions per scene: each tile encoded once, outputs as one at a time.

The worker runs in this process behind a stand-in for its Ray actor handle, so its encoder can be counted.
"""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import ray
import torch

from georeason.batch import cli as batch_cli
from georeason.batch.workers import SceneWorker
from georeason.cli import main
from georeason.errors import GeoreasonError
from georeason.geo import plan_tiles
from georeason.reasoner import WHOLE_MAX_PIXELS
from tests._geo_fixtures import leftovers, write_geotiff

QUESTIONS = ["where could a small plane land?", "which roads are blocked?", "where is standing water?"]
TILING = ["--tile-size", "64", "--overlap", "8"]
SIDES = {"a": (150, 170), "b": (100, 120)}


def _scene(height: int, width: int, seed: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    noise = np.random.default_rng(seed).integers(0, 60, (3, height, width))
    waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90])
    data = np.clip(128 + waves + noise, 1, 255).astype(np.uint8)
    data[:, height - 64:, :64] = 0  # a nodata corner: the bottom-left tile (64 px, overlap 8) has no data
    return data


@ray.remote
def _raise(error: BaseException):
    raise error


class _Method:
    """handle.NAME.remote(...) / .options(num_returns=2): runs SceneWorker.NAME here, returns object refs."""

    def __init__(self, worker: SceneWorker, name: str, returns: int = 1) -> None:
        self.worker, self.name, self.returns = worker, name, returns

    def options(self, num_returns: int = 1) -> _Method:
        return _Method(self.worker, self.name, num_returns)

    def remote(self, *args):
        args = [ray.get(a) if isinstance(a, ray.ObjectRef) else a for a in args]
        try:
            value = getattr(self.worker, self.name)(*args)
        except Exception as error:  # noqa: BLE001 - raised by ray.get, as a Ray task's error is
            refs = [_raise.remote(error) for _ in range(self.returns)]
        else:
            refs = [ray.put(v) for v in value] if self.returns > 1 else [ray.put(value)]
        return refs if self.returns > 1 else refs[0]


class _LocalActor:
    def __init__(self, worker: SceneWorker) -> None:
        self.worker = worker

    def __getattr__(self, name: str) -> _Method:
        return _Method(self.worker, name)


@pytest.fixture(scope="module")
def ray_cluster():
    import builtins

    original_print = builtins.print  # Ray's driver replaces print and leaves it replaced after shutdown
    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()
    builtins.print = original_print


@pytest.fixture(scope="module")
def worker(tiny_model_dir):
    return SceneWorker(str(tiny_model_dir), "cpu", "float32", WHOLE_MAX_PIXELS, 1, None)


@pytest.fixture
def local_pool(ray_cluster, worker, monkeypatch):
    """georeason batch runs on `worker` in this process; yields the list of its encoder calls."""
    calls: list[int] = []
    hook = worker.reasoner.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    monkeypatch.setattr(batch_cli, "start_workers", lambda *_, **__: [_LocalActor(worker)])
    monkeypatch.setattr(batch_cli, "stop_workers", lambda actors: None)
    yield calls
    hook.remove()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    for seed, (name, (height, width)) in enumerate(SIDES.items()):
        write_geotiff(folder / f"{name}.tif", _scene(height, width, seed), nodata=0, tiled=True)
    return folder


def _tiles(name: str) -> int:
    return len(plan_tiles(*SIDES[name], 64, 8))


WITH_DATA = _tiles("a") + _tiles("b") - 2  # tiles a worker encodes (not the all-nodata ones)


def _batch(scenes, run, *extra) -> int:
    questions = [part for q in QUESTIONS for part in ("--question", q)]
    return main(["batch", "--model", "unused", str(scenes), *questions, "--out", str(run), *TILING, "--no-progress",
                 *map(str, extra)])


def _summary(run):
    return json.loads((run / "summary.json").read_text())


def _layer(path) -> tuple:
    _, _, wkb, fields = pyogrio.raw.read(path)
    return list(wkb), [list(field) for field in fields]


def _names() -> list[str]:
    return [f"{scene}-q{k}" for scene in SIDES for k in (1, 2, 3)]


def test_tile_and_overview_tasks_equal_one_question_at_a_time_in_float32(worker, scenes):
    source = str(scenes / "a.tif")
    overviews, shared_p = worker.describe(source, QUESTIONS, 64, None, True)
    alone = [worker.describe(source, [question], 64, None, True) for question in QUESTIONS]
    assert len(shared_p) == 3
    for overview, p, (one_overview, one_p) in zip(overviews, shared_p, alone, strict=True):
        assert torch.equal(p, one_p[0]) and p.dtype == torch.float32
        assert (overview.answer, overview.question) == (one_overview[0].answer, one_overview[0].question)
    assert not torch.equal(shared_p[0], shared_p[1])  # the questions give different p
    assert torch.equal(worker.reasoner.describe_scene(source, QUESTIONS[1], 64).description, shared_p[1])
    with pytest.raises(GeoreasonError, match="question"):
        worker.reasoner.describe_scene(source, " ", 64)
    refused = worker.describe(source, [QUESTIONS[0], " "], 64, None, True)
    assert isinstance(refused[0][1], GeoreasonError) and len(refused[1]) == 1  # the bad question fails alone
    assert torch.equal(refused[1][0], shared_p[0])
    for window in plan_tiles(*SIDES["a"], 64, 8)[:3]:
        box = (int(window.col_off), int(window.row_off), int(window.width), int(window.height))
        many, checksum = worker.tile(source, box, None, overviews[0].limits, shared_p)
        for probability, p in zip(many, shared_p, strict=True):
            (one,), same = worker.tile(source, box, None, overviews[0].limits, [p])
            assert same == checksum and one.dtype == np.float32 and np.array_equal(probability, one)
        assert not np.array_equal(many[0], many[1])


def test_each_tile_is_encoded_once_for_all_questions_and_the_masks_are_one_at_a_time(local_pool, scenes, tmp_path):
    assert _batch(scenes, tmp_path / "shared") == 0
    tiles = _tiles("a") + _tiles("b")
    assert len(local_pool) == 2 + WITH_DATA  # one overview per scene, then each tile once for its 3 questions
    batch = _summary(tmp_path / "shared")["batch"]
    assert (batch["tiles_encoded"], batch["tiles"], batch["computed"]) == (WITH_DATA, 3 * tiles, 6)
    local_pool.clear()
    assert _batch(scenes, tmp_path / "alone", "--questions-per-pass", 1) == 0
    assert len(local_pool) == 3 * (2 + WITH_DATA)  # what one pair at a time costs
    batch = _summary(tmp_path / "alone")["batch"]
    assert (batch["tiles_encoded"], batch["tiles"]) == (3 * WITH_DATA, 3 * tiles)
    masks = []
    for name in _names():
        for suffix in (".mask.tif", ".mask.png", ".overlay.png"):
            shared = (tmp_path / "shared" / "scenes" / f"{name}{suffix}").read_bytes()
            assert shared == (tmp_path / "alone" / "scenes" / f"{name}{suffix}").read_bytes(), name + suffix
        assert _layer(tmp_path / "shared" / "scenes" / f"{name}.gpkg") == \
            _layer(tmp_path / "alone" / "scenes" / f"{name}.gpkg")  # a GeoPackage's bytes hold its write time
        masks.append((tmp_path / "shared" / "scenes" / f"{name}.mask.png").read_bytes())
    assert len(set(masks[:3])) == 3  # the three questions give three different masks of scene a
    shared, alone = _summary(tmp_path / "shared")["inputs"], _summary(tmp_path / "alone")["inputs"]
    assert [(e["name"], e["answer"], e["tiles"], e["positive_pixels"]) for e in shared] == \
        [(e["name"], e["answer"], e["tiles"], e["positive_pixels"]) for e in alone]


def test_a_run_stopped_mid_scene_resumes_with_only_the_unwritten_questions(local_pool, scenes, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    assert _batch(scenes, reference) == 0
    import georeason.predict

    write_and_record = georeason.predict.write_and_record
    written: list[str] = []

    def interrupted(prediction, job, *args, **kwargs):
        if written:
            raise KeyboardInterrupt  # after the first question of scene a is written
        write_and_record(prediction, job, *args, **kwargs)
        written.append(job.name)

    monkeypatch.setattr(georeason.predict, "write_and_record", interrupted)
    run = tmp_path / "run"
    assert _batch(scenes, run) == 130
    monkeypatch.setattr(georeason.predict, "write_and_record", write_and_record)
    assert written == ["a-q1"] and [p.stem for p in (run / "records").glob("*.json")] == ["a-q1"]
    committed = sorted(p.name for p in (run / "scenes").iterdir() if not p.name.startswith("."))
    assert committed == ["a-q1.gpkg", "a-q1.mask.png", "a-q1.mask.tif", "a-q1.overlay.png"]  # nothing half-written
    stamp = (run / "scenes" / "a-q1.mask.tif").stat().st_mtime_ns

    local_pool.clear()
    assert _batch(scenes, run) == 0
    assert len(local_pool) == 2 + WITH_DATA  # a's two other questions share one pass
    batch = _summary(run)["batch"]
    assert (batch["computed"], batch["finished_before"], batch["failed"]) == (5, 1, 0)
    assert (run / "scenes" / "a-q1.mask.tif").stat().st_mtime_ns == stamp  # not redone
    for name in _names():
        for suffix in (".mask.tif", ".mask.png", ".overlay.png"):
            assert (run / "scenes" / f"{name}{suffix}").read_bytes() == \
                (reference / "scenes" / f"{name}{suffix}").read_bytes(), name + suffix
    assert leftovers(run / "scenes") == [] and leftovers(run / "records") == []


def test_a_failing_question_or_tile_fails_only_its_pairs(local_pool, worker, scenes, tmp_path, monkeypatch, capsys):
    segment = worker.reasoner._segment_features

    def refuse_one(features, prompt, answer):
        if "roads" in worker.reasoner.processor.tokenizer.decode(prompt.input_ids[0]):
            raise GeoreasonError("the roads question broke")
        return segment(features, prompt, answer)

    monkeypatch.setattr(worker.reasoner, "_segment_features", refuse_one)
    tile = worker.tile

    def refuse_scene_b(source, *args):
        if source.endswith("b.tif"):
            raise GeoreasonError("scene b: a tile broke")
        return tile(source, *args)

    monkeypatch.setattr(worker, "tile", refuse_scene_b)
    run = tmp_path / "run"
    assert _batch(scenes, run) == 3
    status = {e["name"]: (e["status"], e.get("error")) for e in _summary(run)["inputs"]}
    assert status["a-q1"] == status["a-q3"] == ("ok", None)
    assert status["a-q2"] == ("failed", "the roads question broke")
    assert status["b-q1"] == status["b-q3"] == ("failed", "scene b: a tile broke")
    assert status["b-q2"] == ("failed", "the roads question broke")
    assert "2 of 6 pairs written (2 computed now, 0 finished before); 4 failed" in capsys.readouterr().out
    assert sorted(p.stem for p in (run / "records").glob("*.json")) == ["a-q1", "a-q3"]
    assert leftovers(run / "scenes") == []
    monkeypatch.undo()
    monkeypatch.setattr(batch_cli, "start_workers", lambda *_, **__: [_LocalActor(worker)])
    assert _batch(scenes, run) == 0
    batch = _summary(run)["batch"]
    assert (batch["computed"], batch["finished_before"]) == (4, 2)


def test_questions_per_pass_must_be_positive(tmp_path, capsys):
    assert _batch(tmp_path, tmp_path / "run", "--questions-per-pass", 0) == 2
    assert "--questions-per-pass: expected at least 1, got 0" in capsys.readouterr().err


def test_passes_group_a_scene_s_pairs_in_order_and_split_at_the_limit():
    from georeason.batch.inputs import Pair, Scene
    from georeason.batch.runner import plan_passes

    a, b = Scene("/x/a.tif", "a", "list:1"), Scene("/x/b.tif", "b", "list:2")
    pairs = [Pair(a, "q1", "a-q1"), Pair(b, "q1", "b-q1"), Pair(a, "q2", "a-q2"), Pair(a, "q3", "a-q3")]
    names = [[p.name for p in group] for group in plan_passes(pairs)]
    assert names == [["a-q1", "a-q2", "a-q3"], ["b-q1"]]  # a's pairs together, whatever the listing order
    assert [[p.name for p in group] for group in plan_passes(pairs, 2)] == [["a-q1", "a-q2"], ["a-q3"], ["b-q1"]]
    alone = [[p.name] for p in (pairs[0], pairs[2], pairs[3], pairs[1])]
    assert [[p.name for p in group] for group in plan_passes(pairs, 1)] == alone
    assert plan_passes([]) == []
