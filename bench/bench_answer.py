"""What the text answer costs on top of the mask: time per generated token, greedy and beam search.

Greedy answers continue from the mask forward's KV cache, one token per LLM step; each step reads every
LLM weight once, so on a CPU it is bound by memory bandwidth and bf16 halves it. Beam search runs
transformers' `generate` from the same cache (num_beams rows per step).
Random weights, one 1024 px image (the preset's size), no stop token, so every run makes exactly
--tokens tokens. Prints a table and replaces the "## Answer generation" section of bench/RESULTS.md.

Run: python bench/bench_answer.py [--presets paper smol] [--tokens 16] [--beams 3] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _results import median_seconds, publish  # noqa: E402

import torch  # noqa: E402

from georeason.model import prompt_builder_for  # noqa: E402
from georeason.model.factory import build_model  # noqa: E402

SECTION = "## Answer generation"
QUESTION = "Where could a small plane land safely?"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "smol"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--tokens", type=int, default=16, help="answer tokens generated per run")
    parser.add_argument("--beams", type=int, default=3, help="beam width of the beam-search column")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    return parser.parse_args()


def measure(preset: str, dtypes: list[str], args: argparse.Namespace) -> list[dict]:
    model, tokenizer = build_model(preset, seed=0, pretrained_llm=False)
    model.eval()
    prompts = prompt_builder_for(model, tokenizer)
    size = model.config.image_size
    prompt = prompts.batch([QUESTION], for_generation=True)
    rows = []
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        model.to(dtype)
        pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)
        with torch.inference_mode():
            mask = median_seconds(lambda: model.segment(pixels, prompt), args.repeats)
            greedy = median_seconds(lambda: model.segment(pixels, prompt, answer=True, max_new_tokens=args.tokens),
                                    args.repeats)
            beam = median_seconds(lambda: model.segment(pixels, prompt, answer=True, max_new_tokens=args.tokens,
                                                        num_beams=args.beams), args.repeats)
        rows.append({"preset": preset, "dtype": dtype_name, "mask": mask, "greedy_token": (greedy - mask) / args.tokens,
                     "beam_token": (beam - mask) / args.tokens,
                     "llm_parameters": sum(p.numel() for p in model.llm.parameters()),
                     "max_answer_tokens": model.config.prompt.max_answer_tokens})
        print(rows[-1], file=sys.stderr)
    return rows




def main() -> int:
    args = parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rows = [row for preset in args.presets for row in measure(preset, args.dtypes, args)]
    lines = [
        f"`python bench/bench_answer.py` on {platform.machine()}, {os.cpu_count()} cores, {date.today()}, torch "
        f"{torch.__version__}; random weights, one image at the preset's size, {args.tokens} tokens per run (no "
        f"stop token), median of {args.repeats} after a warm-up. Per-token times are (run - mask-only run) / "
        f"{args.tokens}.",
        "",
        f"| preset | dtype | LLM parameters | mask s | greedy s / token | {args.beams} beams s / token | "
        "greedy, answer of max_answer_tokens s |",
        "|---|---|---|---|---|---|---|",
        *[f"| {r['preset']} | {r['dtype']} | {r['llm_parameters'] / 1e6:.0f} M | {r['mask']:.2f} | "
          f"{r['greedy_token']:.3f} | {r['beam_token']:.3f} | {r['greedy_token'] * r['max_answer_tokens']:.1f} "
          f"({r['max_answer_tokens']} tokens) |" for r in rows],
    ]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
