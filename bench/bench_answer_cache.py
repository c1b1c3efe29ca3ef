"""Answer steps with transformers' dynamic KV cache against the preallocated one (model.answer_cache), with
the floors beside them (paper Sec. 4.2: the LLM runs once per answer token, reading every weight).

Same run, interleaved: each round times every format (float32, bfloat16, int8, int4 g32) with both caches,
greedy decoding steps alone from one mask forward's KV cache, in one thread's CPU time (time.process_time,
which other jobs on a shared machine hardly change). Floors: bytes read per token (the LLM's weights as
stored, embedding table aside, plus the KV cache) / the measured read bandwidth (bench/bench_memory.py),
and the arithmetic (2 flops per weight) / the measured matmul rate, both one thread. Replaces the
"## Answer KV cache" section of bench/RESULTS.md.

Run: python bench/bench_answer_cache.py [--presets paper smol] [--tokens 16] [--repeats 3] [--no-results]
"""

from __future__ import annotations

import argparse
import copy
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
from bench_answer import format_runs  # noqa: E402
from bench_memory import bandwidth_gbs, matmul_gflops  # noqa: E402

import torch  # noqa: E402

from georeason.model import prompt_builder_for  # noqa: E402
from georeason.model.factory import build_model  # noqa: E402

SECTION = "## Answer KV cache (`bench/bench_answer_cache.py`)"
CACHES = ("dynamic", "static")


def bytes_per_token(model, decoder, output, tokens: int) -> tuple[int, int]:
    """(bytes of the LLM weights one step reads, mean bytes of the KV cache it reads): every parameter and
    buffer of the decoding LLM once (the input embedding table only when the LM head shares it)."""
    llm = decoder or model.llm
    embedding = llm.causal_lm.get_input_embeddings().weight
    tied = getattr(llm.causal_lm.get_output_embeddings(), "weight", None) is embedding  # quantised heads have none
    seen, weights = set(), 0
    for tensor in [*llm.parameters(), *llm.buffers()]:
        if tensor.data_ptr() in seen or (tensor is embedding and not tied):
            continue
        seen.add(tensor.data_ptr())
        weights += tensor.nbytes
    layers = output.past_key_values.layers
    per_position = sum(layer.keys[0, :, 0].nbytes + layer.values[0, :, 0].nbytes for layer in layers)
    return weights, per_position * (output.past_key_values.get_seq_length() + tokens // 2)


def linear_weights(model) -> int:
    """Weights of the LLM's matrix products per token (every nn.Linear, the LM head included)."""
    return sum(m.weight.numel() for m in model.llm.modules() if isinstance(m, torch.nn.Linear))


def measure(preset: str, args: argparse.Namespace, rates: dict) -> list[dict]:
    model, tokenizer = build_model(preset, seed=0, pretrained_llm=preset == "smol")
    model.eval()
    runs, prompt = format_runs(model, prompt_builder_for(model, tokenizer), [32],
                               with_bfloat16="bfloat16" in args.formats)
    runs = {name: run for name, run in runs.items() if name.split()[0] in args.formats}
    times = {(name, cache): [] for name in runs for cache in CACHES}
    answers = {}
    torch.set_num_threads(1)
    with torch.inference_mode():
        for repeat in range(args.repeats + 1):
            for name, (owner, output, decoder) in runs.items():
                for cache in CACHES:
                    owner.answer_cache = cache
                    owner.__dict__.pop("_answer_llm", None)
                    if decoder is not None:
                        owner.__dict__["_answer_llm"] = decoder
                    run = copy.copy(output)
                    run.past_key_values = copy.deepcopy(output.past_key_values)
                    started = time.process_time()
                    answer = owner._greedy_answers(run, prompt, args.tokens, ())
                    elapsed = time.process_time() - started
                    owner.__dict__.pop("_answer_llm", None)
                    answers[name, cache] = answer
                    if repeat:
                        times[name, cache].append(elapsed / (len(answer[0]) - 1))
    rows = []
    flops = 2 * linear_weights(model)
    for name, (owner, output, decoder) in runs.items():
        weights, kv = bytes_per_token(owner, decoder, output, args.tokens)
        rows.append({"preset": preset, "format": name, "weights": weights, "kv": kv,
                     "dynamic": statistics.median(times[name, "dynamic"]),
                     "static": statistics.median(times[name, "static"]),
                     "same": answers[name, "dynamic"] == answers[name, "static"],
                     "memory_floor": (weights + kv) / (rates["read"] * 1e9),
                     "compute_floor": flops / (rates["float32"] * 1e9)})
        print(rows[-1], file=sys.stderr)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "smol"], choices=["paper", "smol"])
    parser.add_argument("--formats", nargs="+", default=["float32", "bfloat16", "int8", "int4"],
                        choices=["float32", "bfloat16", "int8", "int4"],
                        help="bfloat16 costs a bfloat16 mask forward first (minutes for paper without AVX-512 BF16)")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after a warm-up round (median)")
    parser.add_argument("--note", action="append", default=[], help="a line added under the table")
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    load_before = os.getloadavg()
    measured = bandwidth_gbs(threads=1)
    rates = {"read": measured["read"], "copy": measured["copy"],
             "float32": matmul_gflops(torch.float32)}
    print(rates, file=sys.stderr)
    rows = [row for preset in args.presets for row in measure(preset, args, rates)]
    load = os.getloadavg()
    lines = [
        f"`python bench/bench_answer_cache.py {' '.join(sys.argv[1:])}`, {os.cpu_count()} cores "
        f"({platform.machine()}, AVX2), torch {torch.__version__}, {date.today()}, load average "
        f"{load_before[0]:.1f} at the start and {load[0]:.1f} at the end (shared machine). Greedy decoding steps "
        f"alone, {args.tokens} tokens, one thread's CPU time, median of {args.repeats} rounds after a warm-up, "
        "formats and caches interleaved in each round. dynamic: transformers' DynamicCache (grows by torch.cat, "
        "copying the whole cache every step); static: transformers' StaticCache preallocated for the answer "
        "(model.answer_cache = \"static\"; its one copy of the prompt's cache counted in the time). paper: random "
        "weights; smol: the real SmolLM2-135M-Instruct weights. Measured here, one thread "
        f"(bench/bench_memory.py): read {rates['read']:.1f} GB/s, copy {rates['copy']:.1f} GB/s, float32 matmul "
        f"{rates['float32']:.0f} GFLOP/s.",
        "",
        "| preset | format | dynamic s / token | static s / token | same tokens | read per token | "
        "memory floor s | arithmetic floor s |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {r['preset']} | {r['format']} | {r['dynamic']:.3f} | {r['static']:.3f} "
          f"({r['dynamic'] / r['static']:.2f}x) | {'yes' if r['same'] else 'NO'} | "
          f"{r['weights'] / 1e9:.2f} GB + KV {r['kv'] / 1e6:.0f} MB | {r['memory_floor']:.3f} | "
          f"{r['compute_floor']:.3f} |" for r in rows],
        "",
        "- Floors: memory = (weights + KV cache read per token) / read bandwidth; arithmetic = 2 flops per "
        "weight of the LLM's nn.Linear layers / the float32 matmul rate (the cores' float FMA rate: without "
        "AVX-512 BF16 or VNNI, the bfloat16, int8 and int4 kernels widen to float32 and do the same FMAs, plus "
        "the unpacking). A step costs at least the larger of the two.",
        *[f"- {note}" for note in args.note],
    ]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
