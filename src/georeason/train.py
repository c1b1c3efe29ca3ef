"""The `georeason train` command: train a model from a recipe file plus `--set` overrides.

Implements the training recipe of docs/released_code.md#training-recipe (paper Table 8); the work is in
georeason.training.
"""

from __future__ import annotations

import argparse

CLI_DESCRIPTION = """Train SegEarth-R1 (or a smaller preset) with the paper's recipe.

CONFIG is a JSON or YAML recipe file (see configs/ and docs/train.md) or a named paper recipe
(paper-earthreason, paper-rrsisd, paper-refsegrs: then give at least --set data=PATH).
Works the same under `accelerate launch` or `torchrun` (global batch = per-device batch x processes x
gradient accumulation; the accumulation is computed from the number of processes)."""

CLI_EPILOG = """examples:
  georeason train configs/smol_synth.yaml --set data=synth_data --set output_dir=runs/smol
  georeason train configs/smol_synth.yaml --set output_dir=runs/smol --resume
  torchrun --nproc_per_node 2 -m georeason.cli train configs/tiny_synth.json --overwrite   # 2 CPU processes
  accelerate launch --multi_gpu --num_processes 8 -m georeason.cli train configs/paper_earthreason.yaml
  georeason train paper-rrsisd --set data=/data/RRSIS-D --set llm_path=/models/phi-1_5"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="recipe file (.json/.yaml) or paper-<dataset>")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field (JSON value or plain string); repeatable, e.g. "
                             "--set max_steps=100 --set lora.r=16 --set model_config.connector.depth=0")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest intact checkpoint in output_dir (a damaged newer one is "
                             "named and skipped); removes what an interrupted run left")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run's outputs in output_dir, each when this run writes its own; "
                             "other files there are never touched")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from georeason.training.loop import train
    from georeason.training.recipe import load_recipe

    recipe = load_recipe(args.config, args.overrides)
    final = train(recipe, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"final model: {final}")
    return 0
