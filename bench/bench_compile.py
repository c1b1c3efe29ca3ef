"""The compiled image part (`--compile`, torch.compile/inductor of encoder + pixel decoder) against eager.

Random weights (cost does not depend on them), one image at the preset's size, mask only (model.segment),
float32, 2 threads. Times: eager median, the first compiled call (compilation included), compiled median;
and how far the compiled mask is from the eager one (max |logit difference|, share of equal mask pixels).
Replaces the "## Compiled image part" section of bench/RESULTS.md.

    python bench/bench_compile.py [--preset paper] [--repeats 3] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _results import publish  # noqa: E402

import torch  # noqa: E402

from georeason.model import prompt_builder_for  # noqa: E402
from georeason.model.factory import build_model  # noqa: E402

SECTION = "## Compiled image part (`bench/bench_compile.py`)"
QUESTION = "Where could a small plane land safely?"


def timed(function, repeats: int) -> tuple[float, torch.Tensor]:
    """(median seconds of `repeats` calls, the last call's result)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = build_model(args.preset, seed=0, pretrained_llm=False)
    model.eval()
    size = model.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompt = prompt_builder_for(model, tokenizer).batch([QUESTION], for_generation=True)
    with torch.inference_mode():
        model.segment(pixels, prompt)  # warm-up
        eager_s, eager = timed(lambda: model.segment(pixels, prompt).logits, args.repeats)
        model.compile_image_part()
        started = time.perf_counter()
        model.segment(pixels, prompt)
        first_s = time.perf_counter() - started
        compiled_s, compiled = timed(lambda: model.segment(pixels, prompt).logits, args.repeats)
    difference = float((compiled - eager).abs().max())
    agree = float(((compiled > 0) == (eager > 0)).float().mean())
    load = os.getloadavg()
    lines = [
        f"`python bench/bench_compile.py --preset {args.preset}` on {platform.machine()}, {os.cpu_count()} cores, "
        f"{date.today()}, torch {torch.__version__}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; "
        f"random weights, one {size} px image, mask only (`segment`), float32, 2 threads, median of "
        f"{args.repeats} after a warm-up.",
        "",
        "| what | eager | compiled (`--compile`) |",
        "|---|---|---|",
        f"| mask s | {eager_s:.2f} | {compiled_s:.2f} ({eager_s / compiled_s:.2f}x) |",
        f"| first image s (compilation included) | - | {first_s:.0f} |",
        f"| max abs logit difference to eager; mask pixels equal | - | {difference:.2e}; {100 * agree:.3f} % |",
    ]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
