"""Speed of the synthetic benchmark generator (georeason.data.synth): per-scene time and throughput.

Prints a table and replaces the "## Synthetic benchmark generation" section of bench/RESULTS.md.
Run: python bench/bench_synth.py [--scenes 200] [--workers 2] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _results import publish  # noqa: E402

from georeason.data.synth import generate_benchmark, plan_split, render_scene  # noqa: E402

SECTION = "## Synthetic benchmark generation"


def per_scene_seconds(size: int, count: int = 7) -> tuple[float, float]:
    """Median (CPU, wall) seconds to render one scene of about size x size (one process, no file I/O).

    CPU time is what the scene costs; wall time also counts waiting for a core on a shared machine."""
    plans = plan_split("train", count + 1, seed=123)
    cpu, wall = [], []
    for k, plan in enumerate(plans):
        started, started_cpu = time.perf_counter(), time.process_time()
        render_scene(plan, 123, size, size)
        if k:  # the first one warms up caches and imports
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started)
    return statistics.median(cpu), statistics.median(wall)


def throughput(scenes: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the worker processes) of a full write with the default 256-768 sizes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        generate_benchmark(out, scenes, 0, 0, seed=5, workers=workers)
        seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)




def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-results", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    rows = [(size, *per_scene_seconds(size)) for size in (256, 512, 768)]
    seconds, cpu = throughput(args.scenes, args.workers)
    load = os.getloadavg()[0]
    idle_minutes = 2800 * cpu / args.scenes / min(args.workers, os.cpu_count() or 1) / 60
    lines = [
        f"`python bench/bench_synth.py` on {platform.machine()}, {os.cpu_count()} cores, {date.today()}; "
        f"load average {load:.1f} at the end (other jobs shared the machine, so wall times are inflated; "
        "CPU times are what the work costs).",
        "",
        "Render time per scene (one process, median of 7 after a warm-up, no file writing):",
        "",
        "| scene side | CPU s / scene | wall s / scene |",
        "|---|---|---|",
        *[f"| {size} | {c:.3f} | {w:.3f} |" for size, c, w in rows],
        "",
        f"Full write (JPEG + PNG + JSON, sizes 256-768, {args.workers} spawned workers): {args.scenes} scenes in "
        f"{seconds:.1f} s wall, {cpu / args.scenes:.3f} CPU s per scene. On {args.workers} idle cores 2,800 scenes "
        f"(2000/300/500) would take about {idle_minutes:.1f} min.",
    ]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
