"""Single-image inference cost of a preset, broken down by component (docs/released_code.md#cpu-cost for the released
figures).

Random weights, saved once per preset and loaded in each row through `SegEarthModel.from_pretrained`
in the row's dtype (as every command loads a model), one 1024x1024 image (or the preset's size), a
reasoning prompt of ~190 positions after expansion like the released measurement (64 image tokens, 26
description, the rest template), mask only. Each dtype runs in a fresh subprocess so its peak resident
memory (loading included) is its own.

The `released-equivalent` row rebuilds the released code's cost on this machine, in the same run:
the same weights run the way docs/released_code.md#cpu-cost describes it (Swin twice, eager attention everywhere,
transformers' grid_sample deformable attention, the LLM over all ~190 positions with vocabulary
logits). It is a reconstruction, not the released code, but it makes the ratio a same-machine one.

    python bench/bench_model.py --presets paper smol --dtypes float32 bfloat16 released-equivalent --repeats 3
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# docs/released_code.md#cpu-cost: released code, paper size, fp32, 2 threads, median after warm-up.
RELEASED_SECONDS = 19.9
from _results import replace_section  # noqa: E402 - the one RESULTS.md writer (bench/ is on sys.path)


RELEASED_EQUIVALENT = "released-equivalent"


def use_grid_sample_deformable_attention(model) -> None:
    """Put transformers' own (grid_sample) deformable attention back, as the released code has it."""
    import types

    from georeason.model.deformable_attention import DeformableAttention

    for module in model.pixel_decoder.modules():
        if isinstance(module, DeformableAttention):
            module.forward = types.MethodType(DeformableAttention.__mro__[1].forward, module)


def save_random(preset_name: str, folder: str) -> None:
    """The preset with random weights (seed 0), written once for all rows of that preset."""
    from georeason.model.factory import build_model

    model, tokenizer = build_model(preset_name, pretrained_llm=False)
    model.save_pretrained(folder, tokenizer=tokenizer)


def measure(preset_name: str, dtype_name: str, repeats: int, folder: str) -> dict:
    import torch

    from georeason.model.prompt import PromptBatch, TokenKind
    from georeason.model.segearth import SegEarthModel

    torch.set_num_threads(2)
    released = dtype_name == RELEASED_EQUIVALENT
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, RELEASED_EQUIVALENT: torch.float32}[dtype_name]
    started = time.perf_counter()
    model = SegEarthModel.from_pretrained(folder, dtype=dtype, attn_implementation="eager" if released else "sdpa")
    if released:
        use_grid_sample_deformable_attention(model)
    load_seconds = time.perf_counter() - started
    config = model.config
    size, visual = config.image_size, config.num_visual_tokens
    kinds = [TokenKind.TEXT] * 58 + [TokenKind.IMAGE] * visual + [TokenKind.TEXT] * 12 + \
        [TokenKind.DESCRIPTION] * 26 + [TokenKind.TEXT] * 30
    length = len(kinds)
    vocab = config.llm.hf_config["vocab_size"]
    prompt = PromptBatch(torch.randint(0, min(vocab, 1000), (1, length)), torch.tensor([kinds]),
                         torch.ones(1, length, dtype=torch.long), torch.full((1, length), -100))
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)

    # Component times come from hooks inside the real call, so they add up to what a user waits for.
    components = ("encoder", "connector", "llm", "d_projector", "pixel_decoder", "mask_decoder")
    spent: dict[str, float] = {}

    def hooks(name):
        def before(module, args):
            spent["_" + name] = time.perf_counter()

        def after(module, args, output):
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - spent.pop("_" + name)
        return before, after

    for name in components:
        before, after = hooks(name)
        getattr(model, name).register_forward_pre_hook(before)
        getattr(model, name).register_forward_hook(after)

    def released_forward():
        # The released forward: a second encoder pass, then the whole prompt with vocabulary logits.
        model.encoder(pixels)
        return {"logits": model._upsample(model(pixels, prompt, return_lm_logits=True).mask_logits)}

    rows: dict[str, list[float]] = {k: [] for k in components + ("other", "total (segment)")}
    # The released code runs under no_grad; inference mode would also let ours reuse the prompt opening.
    with torch.no_grad() if released else torch.inference_mode():
        for repeat in range(repeats + 1):  # the first run is warm-up
            spent.clear()
            start = time.perf_counter()
            result = released_forward() if released else model.segment(pixels, prompt)
            total = time.perf_counter() - start
            if repeat == 0:
                continue
            for name in components:
                rows[name].append(spent.get(name, 0.0))
            rows["other"].append(total - sum(spent.get(name, 0.0) for name in components))
            rows["total (segment)"].append(total)
    # This machine's dense fp32 rate now (docs/released_code.md#cpu-cost: the reference machine measured 317 GFLOP/s
    # where the released code took 19.9 s):
    # shared machines vary, and the ratio to the released time only means something at a similar rate.
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    matmul = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        matmul.append(time.perf_counter() - start)
    matmul_gflops = 2 * 2048**3 / min(matmul) / 1e9
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    # Same seed, same random weights in every child: the float32 mask is the reference for agreement.
    mask = (result["logits"][0] > 0).numpy()
    reference = Path(f"/tmp/georeason-bench-{preset_name}-float32-mask.npy")
    agreement = None
    positive = float(mask.mean())
    if dtype_name == "float32":
        np.save(reference, mask)
    elif reference.exists():
        agreement = float((np.load(reference) == mask).mean())
    return {"preset": preset_name, "dtype": dtype_name, "load_seconds": load_seconds,
            "parameters": model.num_parameters(), "median": {k: statistics.median(v) for k, v in rows.items()},
            "peak_rss_gb": peak_gb, "mask_agreement_with_fp32": agreement, "mask_positive_fraction": positive,
            "fp32_matmul_gflops": matmul_gflops, "prompt_positions": length, "image_size": size, "repeats": repeats}


def write_results(results: list[dict], machine_note: str) -> str:
    lines = ["## Single-image inference by component (`bench/bench_model.py`)", "",
             "Random weights loaded through `from_pretrained` in the row's dtype (peak RSS includes loading), "
             f"2 threads, mask only, median of {results[0]['repeats']} runs after one warm-up, "
             "prompt positions " + ", ".join(sorted({f"{r['preset']} {r['prompt_positions']}" for r in results}))
             + f". {machine_note}", "",
             "| preset | dtype | encoder s | connector s | LLM s | D-Projector s | pixel decoder s | mask decoder s "
             "| other s | total s | vs released-equivalent, same run | vs released 19.9 s (reference machine) "
             "| peak RSS GB | mask = fp32 mask (mask > 0 share) | fp32 matmul GFLOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    baselines = {r["preset"]: r["median"]["total (segment)"] for r in results if r["dtype"] == RELEASED_EQUIVALENT}
    for r in results:
        m, baseline = r["median"], baselines.get(r["preset"])
        agree = "-" if r["mask_agreement_with_fp32"] is None else f"{100 * r['mask_agreement_with_fp32']:.2f}%"
        ratio = f"{RELEASED_SECONDS / m['total (segment)']:.1f}x faster" if r["preset"] == "paper" else "-"
        same_run = "-" if baseline is None else f"{baseline / m['total (segment)']:.2f}x faster"
        lines.append(f"| {r['preset']} | {r['dtype']} | {m['encoder']:.2f} | {m['connector']:.3f} | {m['llm']:.2f} | "
                     f"{m['d_projector']:.3f} | {m['pixel_decoder']:.2f} | {m['mask_decoder']:.2f} | "
                     f"{m['other']:.2f} | "
                     f"{m['total (segment)']:.2f} | {same_run} | {ratio} | {r['peak_rss_gb']:.1f} | {agree} "
                     f"({100 * r['mask_positive_fraction']:.1f}%) | {r['fp32_matmul_gflops']:.0f} |")
    replace_section(lines[0], lines[2:])  # the shared writer, bench/_results.py
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16", RELEASED_EQUIVALENT],
                        choices=["float32", "bfloat16", RELEASED_EQUIVALENT],
                        help="rows to measure; float32 first (the other masks are compared with its mask)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--note", default="", help="a note on the machine state, written with the table")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.save:
        save_random(args.presets[0], args.save)
        return
    if args.child:
        print(json.dumps(measure(args.presets[0], args.child[0], int(args.child[1]), args.child[2])))
        return
    results = []
    for preset_name in args.presets:
        with tempfile.TemporaryDirectory(prefix=f"georeason-bench-{preset_name}-") as folder:
            subprocess.run([sys.executable, __file__, "--presets", preset_name, "--save", folder], check=True,
                           capture_output=True, text=True)
            for dtype in args.dtypes:
                out = subprocess.run([sys.executable, __file__, "--presets", preset_name, "--child", dtype,
                                      str(args.repeats), folder], check=True, capture_output=True, text=True)
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(preset_name, dtype, json.dumps(results[-1]["median"]),
                      f"peak {results[-1]['peak_rss_gb']:.1f} GB", flush=True)
    print(write_results(results, args.note))


if __name__ == "__main__":
    main()
