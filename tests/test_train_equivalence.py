"""End-to-end training runs on the tiny preset: 2 processes == 1 process with doubled accumulation,
and a run killed with SIGKILL then resumed == an uninterrupted run. Also the config-mismatch refusal.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests._train_helpers import MAX_STEPS, synth_benchmark, write_recipe


@pytest.fixture(scope="module")
def synth_data(tmp_path_factory) -> Path:
    return synth_benchmark(tmp_path_factory, num_train=8, num_test=2, max_size=256)


# With standardised description embeddings: their statistics (4 rows) must not depend on the world size.
recipe_file = functools.partial(write_recipe, per_device_batch_size=1, warmup_ratio=0.2,
                                model_config={"image_size": 128, "d_projector.standardise_samples": 4})


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0",
                "ACCELERATE_USE_CPU": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def train_command(recipe: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "georeason.cli", "train", str(recipe), "--no-progress", *extra]


def run(command: list[str]) -> None:
    result = subprocess.run(command, env=environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def weights(output: Path) -> dict[str, torch.Tensor]:
    return load_file(str(output / "final" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference_run(synth_data, tmp_path_factory) -> Path:
    """One process, per-device batch 1, global batch 2: gradient accumulation 2."""
    folder = tmp_path_factory.mktemp("reference")
    output = folder / "one-process"
    run(train_command(recipe_file(folder, synth_data, output)))
    return output


def test_reference_run_outputs(reference_run):
    lines = [json.loads(line) for line in (reference_run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, MAX_STEPS + 1))
    assert lines[0]["lr"] == pytest.approx(1e-3 * 1 / 1)  # after step 1 of a 1-step warmup
    steps = sorted(p.name for p in (reference_run / "checkpoints").iterdir())
    assert steps == [f"step-{MAX_STEPS - 1:08d}", f"step-{MAX_STEPS:08d}"]  # keep_last 2
    info = json.loads((reference_run / "checkpoints" / steps[-1] / "checkpoint.json").read_text())
    assert info["step"] == MAX_STEPS and info["sampler"]["consumed_samples"] == 2 * MAX_STEPS
    assert (reference_run / "final" / "config.json").is_file() and (reference_run / "final" / "tokenizer.json").is_file()
    state = torch.load(reference_run / "checkpoints" / steps[-1] / "training_state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == MAX_STEPS


def test_two_processes_equal_one_process_with_double_accumulation(reference_run, synth_data, tmp_path):
    output = tmp_path / "two-processes"
    recipe = recipe_file(tmp_path, synth_data, output)
    # torchrun (accelerate 1.x `launch --cpu` starts multi-CPU runs only through mpirun).
    run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
         "-m", "georeason.cli", "train", str(recipe), "--no-progress"])
    one, two = weights(reference_run), weights(output)
    assert one.keys() == two.keys()
    start = load_file(str(reference_run / "checkpoints" / f"step-{MAX_STEPS:08d}" / "model.safetensors"))
    moved = sum(float((one[k] - start[k]).abs().sum()) for k in start if k in one)
    assert moved == 0.0  # the last checkpoint is the final model
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    info = json.loads((output / "checkpoints" / f"step-{MAX_STEPS:08d}" / "checkpoint.json").read_text())
    assert info["world_size"] == 2
    assert int(two["d_projector.description_norm.count"]) == 4
    assert torch.equal(two["d_projector.description_norm.mean"], one["d_projector.description_norm.mean"])


def test_sigkill_then_resume_equals_uninterrupted_run(reference_run, synth_data, tmp_path):
    output = tmp_path / "killed"
    recipe = recipe_file(tmp_path, synth_data, output)
    process = subprocess.Popen(train_command(recipe), env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    target = output / "checkpoints" / "step-00000002"
    deadline = time.time() + 240
    while not target.is_dir() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert target.is_dir(), process.stderr.read().decode()[-3000:]
    assert not (output / "final").exists(), "the run finished before it could be killed"
    assert process.returncode == -signal.SIGKILL

    run(train_command(recipe, "--resume"))
    resumed, reference = weights(output), weights(reference_run)
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=1e-6, msg=name)
    lines = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, MAX_STEPS + 1))


def test_resume_refuses_a_checkpoint_from_another_config(reference_run, synth_data, tmp_path, capsys):
    from georeason.cli import main

    output = tmp_path / "copy"
    shutil.copytree(reference_run, output)
    shutil.rmtree(output / "final")
    recipe = recipe_file(tmp_path, synth_data, output, lr=5e-4)
    assert main(["train", str(recipe), "--resume", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "written by a different training config (different: lr)" in error
    assert main(["train", str(recipe), "--no-progress"]) == 2
    assert "already exists; pass --resume to continue it or --overwrite" in capsys.readouterr().err


def test_runs_with_different_precisions_follow_each_other_in_one_process(synth_data, tmp_path):
    from georeason.cli import main

    for precision in ("bf16", "no"):  # accelerate's process-wide state must not pin the first precision
        output = tmp_path / precision
        recipe = recipe_file(tmp_path, synth_data, output, max_steps=1, mixed_precision=precision)
        assert main(["train", str(recipe), "--no-progress"]) == 0
        assert (output / "final" / "model.safetensors").is_file()
        assert json.loads((output / "train_summary.json").read_text())["mixed_precision"] == precision


def test_auto_precision_is_bf16_exactly_where_it_is_native(monkeypatch):
    from georeason.training.loop import resolve_mixed_precision

    for explicit in ("no", "bf16", "fp16"):
        assert resolve_mixed_precision(explicit) == explicit
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert resolve_mixed_precision("auto") == expected
