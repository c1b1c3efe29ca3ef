"""Training runs around the model: --overwrite, failed starts, SIGKILL during writes, damaged checkpoints.

Each test makes its own tiny-preset run; the SIGKILL test kills real subprocesses at chosen writes.
"""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from georeason.cli import main
from georeason.training.outputs import TEMPORARY, commit_folder, interrupted_writes, temporary_folder
from tests._train_helpers import MAX_STEPS, synth_benchmark, write_recipe


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return synth_benchmark(tmp_path_factory, num_train=4, num_test=1, max_size=192)


recipe_file = functools.partial(write_recipe, per_device_batch_size=2, warmup_ratio=0.25)


def train_in_process(*args: str) -> int:
    """`georeason train` in this process on one thread, as the subprocesses below run (Adam turns the
    rounding noise of other thread counts into visible differences of zero-gradient weights)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main(["train", *args, "--no-progress"])
    finally:
        torch.set_num_threads(threads)


def train(capsys, recipe: Path, *extra: str) -> tuple[int, str]:
    code = train_in_process(str(recipe), *extra)
    return code, capsys.readouterr().err


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6, msg=name)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def hidden_entries(output: Path) -> list[str]:
    folders = [output, output / "checkpoints"]
    return sorted(p.name for folder in folders if folder.is_dir() for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def finished_run(synth_data, tmp_path_factory) -> Path:
    """An uninterrupted 4-step run (checkpoints step-3 and step-4): the reference for exact resumes."""
    folder = tmp_path_factory.mktemp("finished")
    output = folder / "run"
    assert train_in_process(str(recipe_file(folder, synth_data, output))) == 0
    return output


# -- --overwrite --------------------------------------------------------------------------------------
@pytest.mark.input_kind("runs", "train --overwrite on a folder holding a dataset, other files and an earlier run",
                        "everything is checked before anything is written; a failed start changes nothing; only "
                        "the earlier run's outputs are replaced, other files stay byte for byte")
def test_overwrite_checks_first_and_replaces_only_what_a_run_writes(finished_run, synth_data, tmp_path, capsys):
    project = tmp_path / "project"
    shutil.copytree(finished_run, project)  # an earlier run: recipe.json, checkpoints/, final/, metrics.jsonl ...
    shutil.copytree(synth_data, project / "mydata")  # the training data inside the output folder
    (project / "notes.txt").write_text("precious")
    before = snapshot(project)

    code, error = train(capsys, recipe_file(tmp_path, project / "typo", project), "--overwrite")
    assert code == 2 and f"recipe data: {project / 'typo'}: no such dataset" in error
    assert snapshot(project) == before  # refused before anything was deleted or written

    code, error = train(capsys, recipe_file(tmp_path, project / "mydata", project, max_steps=1, lr=5e-4),
                        "--overwrite")
    assert code == 0, error
    after = snapshot(project)
    kept = {name: data for name, data in before.items() if name == "notes.txt" or name.startswith("mydata/")}
    assert {name: after[name] for name in kept} == kept and len(kept) > 10
    assert json.loads((project / "recipe.json").read_text())["lr"] == 5e-4
    assert sorted(p.name for p in (project / "checkpoints").iterdir()) == ["step-00000001"]  # the earlier ones went
    assert [json.loads(line)["step"] for line in (project / "metrics.jsonl").read_text().splitlines()] == [1]
    assert json.loads((project / "train_summary.json").read_text())["steps_done"] == 1
    new_final = weights(project / "final")
    assert_same_weights(new_final, weights(project / "checkpoints" / "step-00000001"))
    assert any(not torch.equal(new_final[k], t) for k, t in weights(finished_run / "final").items())
    assert hidden_entries(project) == []


# -- failed starts ------------------------------------------------------------------------------------
@pytest.mark.input_kind("runs", "train run refused at start (wrong data path, unreadable image), then rerun",
                        "a start that fails before its first step leaves no output folder; the same command "
                        "then runs; a recipe.json left by an older failed start is recognised and replaced")
def test_failed_start_leaves_nothing_and_the_same_command_runs(synth_data, tmp_path, capsys):
    output = tmp_path / "runs" / "a" / "run"
    code, error = train(capsys, recipe_file(tmp_path, tmp_path / "typo", output))
    assert code == 2 and "no such dataset" in error
    assert not (tmp_path / "runs").exists()

    broken = tmp_path / "broken"  # fails inside the first step, after the run began writing
    shutil.copytree(synth_data, broken)
    for image in (broken / "train" / "images").iterdir():
        image.write_bytes(b"not an image")
    code, error = train(capsys, recipe_file(tmp_path, broken, output))
    assert code == 2 and "cannot read this image" in error and "internal error" not in error
    assert not (tmp_path / "runs").exists()  # recipe.json and the folders this run made are gone

    # What an older version left after such a start: only recipe.json. The rerun recognises it.
    output.mkdir(parents=True)
    (output / "recipe.json").write_text(json.dumps({"model": "tiny", "data": [], "output_dir": str(output),
                                                    "max_steps": 9}))
    code, error = train(capsys, recipe_file(tmp_path, synth_data, output, max_steps=1))
    assert code == 0, error
    assert "holds only the recipe.json of an earlier start that never trained; replacing it" in error
    assert json.loads((output / "recipe.json").read_text())["max_steps"] == 1
    assert (output / "final" / "model.safetensors").is_file()


# -- unreadable training samples ------------------------------------------------------------------
def first_sample_files(data: Path) -> tuple[str, Path]:
    """(id, image file) of the training sample at stream position 0 (seed 0)."""
    from georeason.data import open_dataset
    from georeason.training.sampling import SampleStream

    dataset = open_dataset(data, "train", mode="eval")
    _, _, index = SampleStream([len(dataset)], [1.0], seed=0).locate(0)
    sample = dataset[index]
    return sample["id"], Path(sample["image_path"])


def test_unreadable_sample_is_replaced_by_the_next_one_in_the_stream(synth_data, tmp_path):
    from georeason.data import open_dataset
    from georeason.training.sampling import SampleStream, StreamDataset

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    sample_id, image = first_sample_files(data)
    image.write_bytes(b"not an image")
    dataset = open_dataset(data, "train", mode="train")
    stream = SampleStream([len(dataset)], [1.0], seed=0)
    _, _, index = stream.locate(0)

    sample = StreamDataset([dataset], stream)[0]
    dataset.set_epoch(0)  # what the stand-in was read as: the next index, at the same stream position
    expected = dataset[(index + 1) % len(dataset)]
    assert sample["id"] == expected["id"] and sample["question"] == expected["question"]
    assert (sample["image"] == expected["image"]).all() and (sample["mask"] == expected["mask"]).all()
    assert [(e["index"], e["id"]) for e in sample["unreadable"]] == [(index, sample_id)]
    assert f"{image}: cannot read this image" in sample["unreadable"][0]["error"]
    assert StreamDataset([dataset], stream)[1]["unreadable"] == []


@pytest.mark.input_kind("runs", "train on data with one unreadable image among readable ones",
                        "the sample is replaced by its neighbour, said once on stderr, listed in "
                        "train_summary.json; over max_unreadable_fraction the run checkpoints and stops, --resume "
                        "is refused until the file is mended, then finishes the run")
def test_unreadable_training_sample_is_skipped_said_and_limited(synth_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    sample_id, image = first_sample_files(data)
    good = image.read_bytes()
    image.write_bytes(b"not an image")

    # 4 samples, at most 2 unreadable: the run goes on. 4 steps of 2 = two epochs; said once all the same.
    output = tmp_path / "tolerant"
    code, error = train(capsys, recipe_file(tmp_path, data, output, max_unreadable_fraction=0.5))
    assert code == 0, error
    warnings = [line for line in error.splitlines() if line.startswith("warning: training sample")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: training sample {sample_id} skipped, a readable neighbour stands in: {image}: cannot read this image")
    assert "1 unreadable training sample(s) skipped" in error
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["steps_done"] == MAX_STEPS and not summary["stopped_by_unreadable_samples"]
    assert [e["id"] for e in summary["unreadable_samples"]] == [sample_id]
    assert f"{image}: cannot read this image" in summary["unreadable_samples"][0]["error"]

    # The default limit (1 % of 4 samples; 0 would do the same): the first one is too many. The step that
    # met it is kept in a checkpoint, the summary says why the run stopped, no final model.
    output = tmp_path / "strict"
    code, error = train(capsys, recipe_file(tmp_path, data, output))
    stop = (f"training stopped after step 1 (checkpoint written): 1 unreadable training sample, more than "
            f"max_unreadable_fraction=0.01 of the 4 in an epoch allows: {sample_id}: {image}: cannot read this image")
    assert code == 2 and stop in error and "then train again with --resume" in error
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-00000001"]
    assert not (output / "final").exists()
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["stopped_by_unreadable_samples"] and summary["steps_done"] == 1
    assert [e["id"] for e in summary["unreadable_samples"]] == [sample_id]

    # --resume with the file still broken: refused before any step; mended: the run finishes, and the
    # summary keeps the sample, marked mended.
    code, error = train(capsys, recipe_file(tmp_path, data, output), "--resume")
    assert code == 2 and ("--resume: the checkpoint of step 1 lists unreadable training samples that still cannot "
                          f"be read: 1 unreadable training sample, more than max_unreadable_fraction=0.01") in error
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["step-00000001"]
    image.write_bytes(good)
    code, error = train(capsys, recipe_file(tmp_path, data, output), "--resume")
    assert code == 0, error
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["steps_done"] == MAX_STEPS and not summary["stopped_by_unreadable_samples"]
    assert [(e["id"], e.get("mended")) for e in summary["unreadable_samples"]] == [(sample_id, True)]
    assert (output / "final" / "model.safetensors").is_file()


def test_unreadable_data_mid_run_names_the_step_and_the_checkpoint(synth_data, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    output = tmp_path / "run"
    code, error = train(capsys, recipe_file(tmp_path, data, output, max_minutes=0))  # stops after step 1
    assert code == 0, error
    for image in (data / "train" / "images").iterdir():  # every sample unreadable: no stand-in left
        image.write_bytes(b"")
    for workers in (0, 1):  # from a DataLoader worker too, the message arrives whole, without a traceback
        code, error = train(capsys, recipe_file(tmp_path, data, output, num_workers=workers), "--resume")
        assert code == 2 and "internal error" not in error and "Traceback" not in error
        lines = [line for line in error.splitlines() if "error:" in line]
        assert len(lines) == 1 and lines[0].startswith("georeason train: error: training stopped in step 2; "
                                                       "--resume continues from step 1: ")
        assert lines[0].endswith("the image file is empty (0 bytes); the 3 samples after it in the same dataset "
                                 "are unreadable too (check the data: georeason data check)")


def test_max_unreadable_fraction_is_checked(tmp_path, synth_data, capsys):
    code, error = train(capsys, recipe_file(tmp_path, synth_data, tmp_path / "run", max_unreadable_fraction=1))
    assert code == 2 and "recipe max_unreadable_fraction: expected a number in [0, 1), got 1" in error


# -- SIGKILL during writes, then --resume ------------------------------------------------------------
KILLER = r"""
import json, os, signal, sys

point = os.environ["KILL_AT"]


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point == "metrics":  # half a metrics.jsonl line written at step 2
    from georeason.training import loop

    original_log = loop.Logger.log

    def log(self, values):
        if values["step"] == 2:
            with open(self.path, "a") as stream:
                stream.write(json.dumps(values)[:25])
            die()
        original_log(self, values)

    loop.Logger.log = log
elif point == "checkpoint":  # checkpoint 3 written and fsynced, not yet renamed into place
    from georeason.training import checkpoint

    original_commit = checkpoint.commit_folder

    def commit(temporary, target):
        if target.name == "step-00000003":
            die()
        original_commit(temporary, target)

    checkpoint.commit_folder = commit
elif point == "final":  # the final model written into its temporary folder, not yet renamed to final/
    from georeason.model.segearth import SegEarthModel

    original_save = SegEarthModel.save_pretrained

    def save(self, folder, *args, **kwargs):
        original_save(self, folder, *args, **kwargs)
        die()

    SegEarthModel.save_pretrained = save
from georeason.cli import main

sys.exit(main(sys.argv[1:]))
"""


def run_killable(recipe: Path, kill_at: str, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, KILL_AT=kill_at, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONHASHSEED="0",
               ACCELERATE_USE_CPU="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, "-c", KILLER, "train", str(recipe), "--no-progress", *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.input_kind("runs", "train killed (SIGKILL) while writing metrics.jsonl, a checkpoint, final/",
                        "--resume removes the temporaries the killed writes left, drops the cut metrics line and "
                        "ends with the weights of an uninterrupted run")
def test_sigkill_during_each_write_then_resume_cleans_up(finished_run, synth_data, tmp_path):
    output = tmp_path / "run"
    recipe = recipe_file(tmp_path, synth_data, output)

    killed = run_killable(recipe, "metrics")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    last = (output / "metrics.jsonl").read_text().splitlines()[-1]
    assert last.startswith('{"step": 2') and not last.endswith("}")

    killed = run_killable(recipe, "checkpoint", "--resume")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert (output / "checkpoints" / ".tmp-step-00000003" / "model.safetensors").is_file()

    killed = run_killable(recipe, "final", "--resume")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "removed 1 temporary file(s) left by an interrupted run" in killed.stderr
    assert ".tmp-step-00000003" in killed.stderr
    assert not (output / "final").exists()
    leftovers = [p for p in output.iterdir() if p.name.startswith(".final.tmp-")]
    assert len(leftovers) == 1 and (leftovers[0] / "model.safetensors").stat().st_size > 1_000_000  # model-sized

    resumed = run_killable(recipe, "none", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"removed 1 temporary file(s) left by an interrupted run: {leftovers[0]}" in resumed.stderr
    assert hidden_entries(output) == []
    assert sorted(os.listdir(output / "final")) == sorted(os.listdir(finished_run / "final"))
    assert_same_weights(weights(output / "final"), weights(finished_run / "final"))
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, MAX_STEPS + 1))


# -- damaged checkpoints ------------------------------------------------------------------------------
def damage(path: Path) -> None:
    if path.suffix == ".json":
        path.write_text('{"step": 4, "recipe')
    else:
        with open(path, "r+b") as stream:
            stream.truncate(1000)


@pytest.mark.input_kind("runs", "train --resume with the newest checkpoint damaged (truncated or cut file)",
                        "the damaged file is named, the run falls back to the newest intact checkpoint and says "
                        "so, and ends with the weights of an uninterrupted run")
@pytest.mark.parametrize("name", ["model.safetensors", "training_state.pt", "checkpoint.json"])
def test_resume_falls_back_from_a_damaged_checkpoint(finished_run, synth_data, tmp_path, capsys, name):
    output = tmp_path / "run"
    shutil.copytree(finished_run, output)
    shutil.rmtree(output / "final")
    damaged = output / "checkpoints" / "step-00000004" / name
    damage(damaged)
    code, error = train(capsys, recipe_file(tmp_path, synth_data, output), "--resume")
    assert code == 0, error
    assert f"warning: --resume: skipping a damaged checkpoint: {damaged}: " in error
    assert f"resuming from {output / 'checkpoints' / 'step-00000003'} (step 3) instead, the newest intact" in error
    assert_same_weights(weights(output / "final"), weights(finished_run / "final"))
    assert_same_weights(weights(output / "checkpoints" / "step-00000004"), weights(finished_run / "final"))


@pytest.mark.input_kind("runs", "train --resume with every checkpoint damaged",
                        "refused with one line naming each damaged file; nothing is written")
def test_resume_with_no_intact_checkpoint_is_refused(finished_run, synth_data, tmp_path, capsys):
    output = tmp_path / "run"
    shutil.copytree(finished_run, output)
    damage(output / "checkpoints" / "step-00000004" / "model.safetensors")
    damage(output / "checkpoints" / "step-00000003" / "training_state.pt")
    before = snapshot(output)
    code, error = train(capsys, recipe_file(tmp_path, synth_data, output), "--resume")
    assert code == 2 and "internal error" not in error
    assert f"--resume: no intact checkpoint in {output / 'checkpoints'}: " in error
    assert f"{output / 'checkpoints' / 'step-00000004' / 'model.safetensors'}: damaged, cannot be read" in error
    assert f"{output / 'checkpoints' / 'step-00000003' / 'training_state.pt'}: damaged, cannot be read" in error
    assert snapshot(output) == before


# -- environment: a full disk -------------------------------------------------------------------------
@pytest.mark.input_kind("runs", "train on a full disk (ENOSPC while writing a checkpoint)",
                        "a one-line error naming the checkpoint folder and --resume; no temporary folder left")
def test_full_disk_while_writing_a_checkpoint_is_a_clear_error(synth_data, tmp_path, capsys, monkeypatch):
    import safetensors.torch

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    output = tmp_path / "run"
    code, error = train(capsys, recipe_file(tmp_path, synth_data, output, max_steps=1))
    assert code == 2 and "internal error" not in error
    assert (f"{output / 'checkpoints' / '.tmp-step-00000001'}: cannot write (No space left on device); free some "
            "space and run again with --resume") in error
    assert hidden_entries(output) == [] and not (output / "final").exists()
    assert [json.loads(line)["step"] for line in (output / "metrics.jsonl").read_text().splitlines()] == [1]


# -- the names of temporaries -------------------------------------------------------------------------
def test_temporary_names_are_the_runs_own_and_commit_replaces_whole_folders(tmp_path):
    from georeason.geo.atomic import temporary_sibling

    names = tmp_path / "names"
    names.mkdir()
    own = [temporary_sibling(names / "recipe.json").name, temporary_sibling(names / "metrics.jsonl").name,
           temporary_folder(names / "final").name, ".tmp-step-00000012", ".step-00000012.old-12-0123abcd"]
    assert all(TEMPORARY.match(name) for name in own), own
    others = [".git", ".final", ".recipe.json", ".mydata.tmp-1-0123abcd", "final", ".tmp-step-12", ".DS_Store"]
    assert not any(TEMPORARY.match(name) for name in others)

    target = tmp_path / "final"
    target.mkdir()
    (target / "old.txt").write_text("old")
    new = temporary_folder(target)
    (new / "model.safetensors").write_text("new")
    commit_folder(new, target)
    assert sorted(os.listdir(target)) == ["model.safetensors"] and interrupted_writes(tmp_path) == []
