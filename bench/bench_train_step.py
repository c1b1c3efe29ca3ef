"""Where a training step's time goes with the demo's settings: data loading, fp32 vs bf16, loader workers,
and the frozen part (image trunk + SmolLM2 giving p) against the part that learns, at 1 and 2 threads.

Runs `georeason.training.loop.train` (the code of `georeason train` and `georeason demo`) on the demo's
smol-pretrained preset with the LLM frozen, 256 px, batch 4, lr 1e-3, for a few steps per setting, and
reads each step's time from metrics.jsonl. Every timed step reads new scenes, as the demo's steps after its
first 64 do: the demo computes p for its first 256 rows before step 0 (the description statistics) and its
first 64 steps reuse them from the description cache, so here the statistics take one batch only. Then, in
one process, the frozen part (trunk + connector + LLM, no gradients) and the learning part (the step with
the frozen outputs cached) are timed apart, interleaved at 1 and 2 threads. Separately times the data
pipeline alone (decode, resize, collate) over the same samples. Prints the tables and replaces the
"## Training step" section of bench/RESULTS.md.

Run: python bench/bench_train_step.py [--steps 24] [--scenes 120] [--precisions no bf16] [--no-results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _results import publish  # noqa: E402

import torch  # noqa: E402

from georeason.data.synth import generate_benchmark  # noqa: E402
from georeason.training.loop import (  # noqa: E402
    build_model_for_recipe,
    open_training_data,
    resolve_mixed_precision,
    train,
)
from georeason.training.recipe import DataSource, TrainRecipe  # noqa: E402
from georeason.training.sampling import collate_samples, rank_positions  # noqa: E402

SECTION = "## Training step (demo settings)"
WARMUP_STEPS = 3  # the first steps pay for oneDNN primitive creation and allocator growth


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per setting")
    parser.add_argument("--scenes", type=int, default=120, help="synthetic training scenes to generate")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--precisions", nargs="+", default=["no", "bf16"], choices=["no", "bf16"])
    parser.add_argument("--workers", nargs="+", type=int, default=[0, 1], help="DataLoader workers to compare")
    parser.add_argument("--split-rounds", type=int, default=2, help="interleaved rounds of the frozen/learning split")
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    return parser.parse_args()


def recipe_for(data: Path, output: Path, args: argparse.Namespace, precision: str, workers: int) -> TrainRecipe:
    """The demo's recipe (georeason/demo.py), shortened to `args.steps`."""
    # One batch of description statistics (the demo: 64), so that the timed steps compute p for new rows.
    config = {"llm.frozen": True, "image_size": args.image_size, "d_projector.standardise_samples": args.batch_size}
    return TrainRecipe(model="smol-pretrained", model_config=config,
                       data=[DataSource(path=str(data))], output_dir=str(output), max_steps=args.steps, lr=1e-3,
                       warmup_ratio=0.05, global_batch_size=args.batch_size, per_device_batch_size=args.batch_size,
                       gradient_checkpointing=False, mixed_precision=precision, save_every=10**9, keep_last=1,
                       log_every=1, seed=0, num_workers=workers)


def data_seconds_per_batch(recipe: TrainRecipe, image_size: int) -> float:
    """Median time to produce one collated batch on the main process (what num_workers=0 waits for)."""
    from georeason.data.transforms import SampleTransform

    dataset = open_training_data(recipe, SampleTransform(image_size))  # the released preprocessing, as the model's
    positions = list(rank_positions(0, recipe.max_steps, recipe.global_batch_size, recipe.per_device_batch_size, 1, 0))
    times = []
    for start in range(0, len(positions), recipe.per_device_batch_size):
        started = time.perf_counter()
        collate_samples([dataset[p] for p in positions[start:start + recipe.per_device_batch_size]])
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def run(recipe: TrainRecipe) -> dict[str, float]:
    started = time.perf_counter()
    train(recipe, overwrite=True, progress=False)
    total = time.perf_counter() - started
    out = Path(recipe.output_dir)
    summary = json.loads((out / "train_summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    step_seconds = [recipe.global_batch_size / r["samples_per_s"] for r in records[WARMUP_STEPS:]]
    return {"step": statistics.median(step_seconds), "first": recipe.global_batch_size / records[0]["samples_per_s"],
            "loop": summary["train_seconds"], "setup": total - summary["train_seconds"]}




def split_seconds(recipe: TrainRecipe, rounds: int) -> dict[tuple[str, int], float]:
    """Median seconds per batch of the frozen part and of the learning part, at 1 and 2 threads, interleaved.

    frozen: trunk + connector + LLM up to p, no gradients (what a step computes for rows it has not seen);
    learning: forward and backward of a step whose trunk features and p come from the caches.
    """
    from georeason.processor import SegEarthProcessor

    model, tokenizer = build_model_for_recipe(recipe)
    processor = SegEarthProcessor(tokenizer, model.config)
    data = open_training_data(recipe, processor.sample_transform())
    model.train()
    size = recipe.per_device_batch_size
    batches = [collate_samples([data[p] for p in range(size * i, size * (i + 1))]) for i in range(10)]

    def prompt(batch):
        return processor.prompt(batch["question"], batch["answer"], batch["task"], for_generation=True)

    def frozen(batch):
        model.description_embedding(batch["pixel_values"], prompt(batch))

    def learning(batch):
        model(batch["pixel_values"], prompt(batch), target_masks=batch["target"]).loss.backward()
        model.zero_grad(set_to_none=True)

    def median_over(part) -> float:
        times = []
        for batch in batches[2:]:
            started = time.perf_counter()
            part(batch)
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    found: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model.description_cache, model.encoder.feature_cache = None, None
            for batch in batches[:2]:
                frozen(batch)  # warm-up
            found.setdefault(("frozen", threads), []).append(median_over(frozen))
            model.enable_description_cache(2**30)
            model.encoder.enable_feature_cache(2**30)
            for batch in batches:
                frozen(batch)
            learning(batches[0])  # warm-up
            found.setdefault(("learning", threads), []).append(median_over(learning))
    torch.set_num_threads(os.cpu_count() or 1)
    return {key: statistics.median(values) for key, values in found.items()}


def main() -> int:
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="georeason-bench-train-") as tmp:
        data = Path(tmp) / "data"
        generate_benchmark(data, args.scenes, 0, 0, seed=0, min_size=256, max_size=384)
        loading = data_seconds_per_batch(recipe_for(data, Path(tmp) / "unused", args, "no", 0), args.image_size)
        for precision in args.precisions:
            for workers in args.workers:
                result = run(recipe_for(data, Path(tmp) / f"run-{precision}-{workers}", args, precision, workers))
                rows.append((precision, workers, result))
                print(f"{precision} workers={workers}: {result['step']:.3f} s/step", file=sys.stderr)
        split = split_seconds(recipe_for(data, Path(tmp) / "unused", args, "no", 0), args.split_rounds)
    reference = rows[0][2]["step"]
    lines = [
        f"`python bench/bench_train_step.py` on {platform.machine()}, {os.cpu_count()} cores, {date.today()}, "
        f"torch {torch.__version__}; oneDNN native bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()} "
        f"(`mixed_precision: auto` resolves to `{resolve_mixed_precision('auto')}` here). The demo's recipe: "
        f"smol-pretrained preset, LLM frozen, {args.image_size} px, batch {args.batch_size}, "
        f"{args.steps} steps per row; "
        f"s/step is the median after {WARMUP_STEPS} warm-up steps, data loading included.",
        "",
        f"Data pipeline alone (decode, augment, resize, collate one batch on the main process): {loading:.3f} s.",
        "",
        "| precision | loader workers | s / step | speed-up vs fp32, 0 workers | first step s "
        "| setup s (model build, GGUF read) |",
        "|---|---|---|---|---|---|",
        *[f"| {'fp32' if p == 'no' else p} | {w} | {r['step']:.3f} | {reference / r['step']:.2f}x | "
          f"{r['first']:.2f} | {r['setup']:.1f} |" for p, w, r in rows],
        "",
        f"The fp32 step in two parts, per batch of {args.batch_size}, medians of 8 batches, {args.split_rounds} rounds "
        "interleaved: frozen = image trunk + connector + SmolLM2 up to p, without gradients (what a step computes "
        "for rows it has not seen); learning = forward and backward of the same step with the frozen outputs "
        "taken from the caches (what a step costs when the trunk features and p are known).",
        "",
        "| threads | frozen s | learning s | sum s |",
        "|---|---|---|---|",
        *[f"| {threads} | {split[('frozen', threads)]:.3f} | {split[('learning', threads)]:.3f} | "
          f"{split[('frozen', threads)] + split[('learning', threads)]:.3f} |" for threads in (1, 2)],
    ]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
