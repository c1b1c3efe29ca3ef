"""The pixel decoder's deformable attention backward on CPU: embedding_bag's own backward against WeightedRowSum.

Two measurements in one run, the two backward passes alternated round by round so that they share the
machine's load: (1) the weighted gather alone at the shape of the demo's training step (smol-pretrained,
256 px, batch 4), forward + backward, with the memory floor beside it; (2) the demo's whole training step
(`georeason.training.loop.train`, smol-pretrained, LLM frozen, fresh scenes so every step computes its
description embedding), median seconds per step from metrics.jsonl. Replaces its section of RESULTS.md.

Run: python bench/bench_deformable_backward.py [--steps 24] [--rounds 2] [--no-results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _results import median_seconds, publish  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from georeason.data.synth import generate_benchmark  # noqa: E402
from georeason.model import deformable_attention  # noqa: E402
from georeason.training.loop import train  # noqa: E402
from georeason.training.recipe import DataSource, TrainRecipe  # noqa: E402

SECTION = "## Deformable attention backward (`bench/bench_deformable_backward.py`)"
WARMUP_STEPS = 3
# The demo's training step: levels at strides 32/16/8 of a 256 px input, 4 heads of 24 values (conv_dim 96),
# 3 levels x 4 points x 4 bilinear corners read per output row.
LEVELS, HEADS, HEAD_DIM, BATCH = [(8, 8), (16, 16), (32, 32)], 4, 24, 4
BAG = len(LEVELS) * 4 * 4


class EmbeddingBagBackward:
    """What the pixel decoder used before: F.embedding_bag with autograd's own backward."""

    @staticmethod
    def apply(table, rows, weights):
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")


IMPLEMENTATIONS = {"WeightedRowSum (sorted gather)": deformable_attention.WeightedRowSum,
                   "embedding_bag's own": EmbeddingBagBackward}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="training steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="training runs per implementation, alternated")
    parser.add_argument("--repeats", type=int, default=9, help="timed calls of the gather alone")
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    return parser.parse_args()


def gather_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    queries = sum(h * w for h, w in LEVELS)
    table_rows = BATCH * HEADS * sum((h + 2) * (w + 2) for h, w in LEVELS)
    table = torch.randn(table_rows, HEAD_DIM, generator=g).requires_grad_(True)
    rows = torch.randint(0, table_rows, (BATCH * queries * HEADS, BAG), generator=g, dtype=torch.int32)
    weights = torch.rand(rows.shape, generator=g).requires_grad_(True)
    return table, rows, weights, torch.randn(rows.shape[0], HEAD_DIM, generator=g)


def gather_seconds(implementation, inputs, repeats: int) -> float:
    table, rows, weights, grad = inputs

    def forward_backward():
        table.grad = weights.grad = None
        implementation.apply(table, rows, weights).backward(grad)

    return median_seconds(forward_backward, repeats)


def copy_bandwidth() -> float:
    """Bytes per second of a large tensor copy (read + write) on this machine, now."""
    source = torch.randn(2**25)
    target = torch.empty_like(source)
    seconds = median_seconds(lambda: target.copy_(source), 7)
    return 2 * source.numel() * 4 / seconds


def recipe_for(data: Path, output: Path, steps: int) -> TrainRecipe:
    """The demo's recipe (georeason/demo.py), shortened to `steps`."""
    # One batch of description statistics (the demo: 64), so that the timed steps compute p for new rows
    # (with 256 statistics rows the first 64 steps would take p and the trunk features from the caches).
    config = {"llm.frozen": True, "image_size": 256, "d_projector.standardise_samples": BATCH}
    return TrainRecipe(model="smol-pretrained", model_config=config,
                       data=[DataSource(path=str(data))], output_dir=str(output), max_steps=steps, lr=1e-3,
                       warmup_ratio=0.05, global_batch_size=BATCH, per_device_batch_size=BATCH,
                       gradient_checkpointing=False, mixed_precision="no", save_every=10**9, keep_last=1,
                       log_every=1, seed=0)


def step_seconds(recipe: TrainRecipe) -> float:
    train(recipe, overwrite=True, progress=False)
    records = [json.loads(line) for line in (Path(recipe.output_dir) / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(BATCH / r["samples_per_s"] for r in records[WARMUP_STEPS:])


def main() -> int:
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    inputs = gather_inputs()
    gather = {name: [] for name in IMPLEMENTATIONS}
    for _ in range(3):
        for name, implementation in IMPLEMENTATIONS.items():
            gather[name].append(gather_seconds(implementation, inputs, args.repeats))
    bandwidth = copy_bandwidth()
    table, rows, weights, _ = inputs
    # Least traffic of forward + backward: read the rows and weights, read R*K table rows twice (forward,
    # weights' gradient), write the output and the two gradients.
    moved = (rows.numel() * 4 + weights.numel() * 4 * 2 + rows.numel() * HEAD_DIM * 4 * 2
             + rows.shape[0] * HEAD_DIM * 4 * 2 + table.numel() * 4)
    floor = moved / bandwidth

    steps = {name: [] for name in IMPLEMENTATIONS}
    with tempfile.TemporaryDirectory(prefix="georeason-bench-deformable-") as tmp:
        scenes = BATCH * args.steps  # every step reads new scenes, as the demo's 1,600 scenes in 400 steps do
        generate_benchmark(Path(tmp) / "data", scenes, 0, 0, seed=0, min_size=256, max_size=384)
        for round_ in range(args.rounds):
            for name, implementation in IMPLEMENTATIONS.items():
                deformable_attention.WeightedRowSum = implementation
                try:
                    seconds = step_seconds(recipe_for(Path(tmp) / "data", Path(tmp) / f"run-{round_}", args.steps))
                finally:
                    deformable_attention.WeightedRowSum = IMPLEMENTATIONS["WeightedRowSum (sorted gather)"]
                steps[name].append(seconds)
                print(f"round {round_}: {name}: {seconds:.3f} s/step", file=sys.stderr)

    new, old = IMPLEMENTATIONS
    lines = [
        f"`python bench/bench_deformable_backward.py --steps {args.steps} --rounds {args.rounds}` on "
        f"{os.cpu_count()} threads, {date.today()}, torch {torch.__version__}; the two implementations alternated "
        f"in the same run; {time.perf_counter() - started:.0f} s in all.",
        "",
        f"Gather alone at the demo's training shape ({rows.shape[0]} output rows x {BAG} table rows of "
        f"{HEAD_DIM} values, table {table.shape[0]} rows), forward + backward, median of {args.repeats} calls, "
        f"3 alternated rounds; floor = least traffic {moved / 1e6:.0f} MB / copy bandwidth "
        f"{bandwidth / 1e9:.1f} GB/s measured now = {1000 * floor:.1f} ms.",
        "",
        "| backward | gather fwd + bwd ms (median of rounds) | x floor | demo training step s (median of "
        f"{args.rounds} runs of {args.steps} steps) | step speed-up |",
        "|---|---|---|---|---|",
    ]
    for name in IMPLEMENTATIONS:
        op, step = statistics.median(gather[name]), statistics.median(steps[name])
        lines.append(f"| {name} | {1000 * op:.0f} | {op / floor:.1f}x | {step:.3f} | "
                     f"{statistics.median(steps[old]) / step:.2f}x |")
    def listed(values: dict[str, list[float]], scale: float, digits: int) -> str:
        return "; ".join(f"{n}: {', '.join(f'{scale * v:.{digits}f}' for v in values[n])}" for n in IMPLEMENTATIONS)

    speed_up = statistics.median(gather[old]) / statistics.median(gather[new])
    lines += ["", f"Rounds (ms): {listed(gather, 1000, 0)}", f"Runs (s/step): {listed(steps, 1, 3)}",
              f"Gather speed-up, median of rounds: {speed_up:.2f}x."]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
