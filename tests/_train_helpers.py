"""Set-up shared by the tiny-preset training tests (test_train_runs.py, test_train_equivalence.py).

A small synthetic benchmark and the recipe file of a short run; each test module picks its own sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

MAX_STEPS = 4


def synth_benchmark(tmp_path_factory, num_train: int, num_test: int, max_size: int) -> Path:
    """A synthetic benchmark (seed 1, no val split, images 192..max_size pixels) in a new temporary folder."""
    from georeason.data.synth import generate_benchmark

    root = tmp_path_factory.mktemp("synth")
    generate_benchmark(root, num_train, 0, num_test, seed=1, min_size=192, max_size=max_size, workers=1)
    return root


def write_recipe(folder: Path, data: Path, output: Path, *, per_device_batch_size: int, warmup_ratio: float,
                **changes) -> Path:
    """folder/recipe-<output name>.json: a MAX_STEPS-step tiny run (image size 128, global batch 2, a
    checkpoint every step, the last 2 kept, float32) on `data` into `output`; `changes` override any key."""
    values = {"model": "tiny", "model_config": {"image_size": 128}, "data": str(data), "output_dir": str(output),
              "max_steps": MAX_STEPS, "global_batch_size": 2, "per_device_batch_size": per_device_batch_size,
              "save_every": 1, "keep_last": 2, "log_every": 1, "gradient_checkpointing": False,
              "mixed_precision": "no", "warmup_ratio": warmup_ratio, "lr": 1e-3}
    values.update(changes)
    path = folder / f"recipe-{output.name}.json"
    path.write_text(json.dumps(values))
    return path
