"""Speed of the synthetic benchmark generator (georeason.data.synth): per-scene time and throughput.

Prints a table and replaces the "## Synthetic benchmark generation" section of bench/RESULTS.md.
Run: python bench/bench_synth.py [--scenes 200] [--workers 2] [--no-results]
"""

from __future__ import annotations

import argparse
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

from georeason.data.synth import generate_benchmark, plan_split, render_scene  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Synthetic benchmark generation"


def per_scene_seconds(size: int, count: int = 7) -> float:
    """Median wall time of rendering one scene of size x size-ish (one process, no file I/O)."""
    plans = plan_split("train", count + 1, seed=123)
    times = []
    for k, plan in enumerate(plans):
        started = time.perf_counter()
        render_scene(plan, 123, size, size)
        if k:  # the first one warms up caches and imports
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def throughput(scenes: int, workers: int) -> tuple[float, float]:
    """(seconds, scenes per second) of a full write with the default 256-768 sizes."""
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        generate_benchmark(out, scenes, 0, 0, seed=5, workers=workers)
        seconds = time.perf_counter() - started
    return seconds, scenes / seconds


def write_section(lines: list[str]) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    before, _, rest = text.partition(SECTION)
    after = ""
    if rest:
        nxt = rest.find("\n## ")
        after = rest[nxt:] if nxt >= 0 else ""
    RESULTS.write_text(before.rstrip("\n") + "\n\n" + "\n".join([SECTION, "", *lines]) + "\n" + after)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-results", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args()
    rows = [(size, per_scene_seconds(size)) for size in (256, 512, 768)]
    seconds, rate = throughput(args.scenes, args.workers)
    load = os.getloadavg()[0]
    lines = [
        f"`python bench/bench_synth.py` on {platform.machine()}, {os.cpu_count()} cores, {date.today()}; "
        f"load average {load:.1f} at the end (other jobs share the machine: figures are upper bounds).",
        "",
        "Render time per scene (one process, median of 7 after a warm-up, no file writing):",
        "",
        "| scene side | s / scene |",
        "|---|---|",
        *[f"| {size} | {value:.3f} |" for size, value in rows],
        "",
        f"Full write (JPEG + PNG + JSON, sizes 256-768, {args.workers} workers): {args.scenes} scenes in "
        f"{seconds:.1f} s = {rate:.1f} scenes/s, i.e. {2800 / rate / 60:.1f} min for 2,800 scenes "
        "(2000/300/500).",
    ]
    print("\n".join(lines))
    if not args.no_results:
        write_section(lines)
        print(f"\nupdated the '{SECTION}' section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
