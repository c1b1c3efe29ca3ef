"""Several questions about one image: the first question's cost, each further question's, 6 vs 1.

Image features (Swin, connector tokens, pixel decoder, and the LLM's KV cache of the prompt up to the
question) are computed once per image (model.encode_image) and every question reuses them
(model.segment_features), one question at a time (bit-identical to one-at-a-time masks). Random weights
(cost does not depend on them), the preset's image size (1024 px for paper), the bench_model prompt
layout (58 opening + image tokens + 12 + 26 description + 30 positions), mask only, 2 threads. The
floor is the pass's FLOPs (torch.utils.flop_counter) over this machine's fp32 matmul rate measured in
the same run.

    python bench/bench_questions.py --preset paper --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from _results import publish

SECTION = "## Several questions per image (`bench/bench_questions.py`)"
QUESTIONS = 6


def matmul_gflops(torch, dtype) -> float:
    a, b = torch.randn(2048, 2048, dtype=dtype), torch.randn(2048, 2048, dtype=dtype)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * 2048**3 / min(times) / 1e9


def prompts(torch, config, count: int):
    """`count` prompts sharing the opening/image/template ids, each with its own 26 question ids."""
    from georeason.model.prompt import PromptBatch, TokenKind

    visual = config.num_visual_tokens
    kinds = [TokenKind.TEXT] * 58 + [TokenKind.IMAGE] * visual + [TokenKind.TEXT] * 12 + \
        [TokenKind.DESCRIPTION] * 26 + [TokenKind.TEXT] * 30
    generator = torch.Generator().manual_seed(0)
    vocab = min(config.llm.hf_config["vocab_size"], 1000)
    base = torch.randint(0, vocab, (len(kinds),), generator=generator)
    description = torch.tensor(kinds) == TokenKind.DESCRIPTION
    batches = []
    for _ in range(count):
        ids = base.clone()
        ids[description] = torch.randint(0, vocab, (int(description.sum()),), generator=generator)
        batches.append(PromptBatch(ids[None], torch.tensor([kinds]), torch.ones(1, len(kinds), dtype=torch.long),
                                   torch.full((1, len(kinds)), -100)))
    return batches


def measure(preset_name: str, dtype_name: str, repeats: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from georeason.model.factory import build_model

    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    model, _ = build_model(preset_name, pretrained_llm=False)
    model = model.to(dtype).eval()
    size = model.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)
    batches = prompts(torch, model.config, QUESTIONS)

    rows: dict[str, list[float]] = {"one question (segment)": [], "image part (encode_image)": [],
                                    "first question part": [], "further question part": [],
                                    f"{QUESTIONS} questions": []}
    masks_equal = True
    with torch.inference_mode():
        model.segment(pixels, batches[0])  # warm-up (also fills the LLM's opening cache)
        for _ in range(repeats):
            start = time.perf_counter()
            one = model.segment(pixels, batches[0])["logits"]
            rows["one question (segment)"].append(time.perf_counter() - start)
            start = time.perf_counter()
            features = model.encode_image(pixels)
            encoded = time.perf_counter()
            rows["image part (encode_image)"].append(encoded - start)
            for index, prompt in enumerate(batches):
                begun = time.perf_counter()
                logits = model.segment_features(features, prompt)["logits"]
                rows["first question part" if index == 0 else "further question part"].append(
                    time.perf_counter() - begun)
                if index == 0:
                    masks_equal &= torch.equal(logits, one)
            rows[f"{QUESTIONS} questions"].append(time.perf_counter() - start)
        counter = FlopCounterMode(display=False)
        with counter:
            model.segment(pixels, batches[0])
        total_flops = counter.get_total_flops()
        features = model.encode_image(pixels)
        model.segment_features(features, batches[0])  # fills the image prefix, as the first question does
        counter = FlopCounterMode(display=False)
        with counter:
            model.segment_features(features, batches[1])
        further_flops = counter.get_total_flops()
    return {"preset": preset_name, "dtype": dtype_name, "repeats": repeats, "image_size": size,
            "median": {k: statistics.median(v) for k, v in rows.items()},
            "flops_one": total_flops, "flops_further": further_flops,
            "gflops": matmul_gflops(torch, dtype), "masks_equal": masks_equal}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as stream:
            return next(line.split(":", 1)[1].strip() for line in stream if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def table(r: dict, load: tuple[float, float, float]) -> list[str]:
    m, rate = r["median"], r["gflops"] * 1e9
    one, further, six = m["one question (segment)"], m["further question part"], m[f"{QUESTIONS} questions"]
    floor_one, floor_further = r["flops_one"] / rate, r["flops_further"] / rate
    cpu = cpu_name()
    return [
        f"{r['preset']} preset, random weights, {r['dtype']}, one {r['image_size']} px image, mask only, 2 threads, "
        f"median of {r['repeats']} runs after a warm-up; fp32 matmul {r['gflops']:.0f} GFLOP/s measured in the same "
        f"run; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min; the machine is shared); "
        f"CPU {cpu}, {os.cpu_count()} cores. Questions run one at a time on the shared features (bit-identical to "
        f"one question at a time: first question's mask == segment()'s: {r['masks_equal']}).",
        "",
        "| what | median s | floor s (FLOPs / matmul rate) | target |",
        "|---|---|---|---|",
        f"| one question (`segment`, image + question) | {one:.2f} | {floor_one:.2f} "
        f"({r['flops_one'] / 1e12:.2f} TFLOP) | - |",
        f"| image part (`encode_image`) | {m['image part (encode_image)']:.2f} | - | - |",
        f"| first question part (fills the image prefix KV cache) | {m['first question part']:.2f} | - | - |",
        f"| each further question (`segment_features`) | {further:.2f} ({100 * further / one:.0f} % of one "
        f"question) | {floor_further:.3f} ({r['flops_further'] / 1e9:.0f} GFLOP) | <= 25 % of the first: "
        f"{'met' if further <= 0.25 * one else 'not met'} |",
        f"| {QUESTIONS} questions on one image | {six:.2f} ({six / one:.2f}x one question) | "
        f"{floor_one + (QUESTIONS - 1) * floor_further:.2f} | <= 2.5x: {'met' if six <= 2.5 * one else 'not met'} |",
        "",
        "bf16 is not measured here: this CPU (AVX2, no AVX-512 BF16/AMX) has no native bf16 matmul or "
        "convolution, so a bf16 run measures the emulation (a bf16 convolution is ~400x slower than fp32), "
        "not the method. The bf16 path is the same code (tests/test_image_features.py runs in the model's dtype).",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args()
    result = measure(args.preset, args.dtype, args.repeats)
    publish(SECTION, table(result, os.getloadavg()), write=not args.no_write)


if __name__ == "__main__":
    main()
