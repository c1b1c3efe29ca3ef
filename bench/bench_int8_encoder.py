"""Would int8 encoder matmuls bring the mask closer to the floor? Dynamic int8 Swin linears against float32.

Speed: the paper preset (random weights, one 1024 px image, mask only, float32, 2 threads): the encoder and the
whole mask with every nn.Linear of the Swin encoder replaced by torch.ao's dynamic int8 linear (weights int8
per tensor, activations rounded to int8 per call), interleaved with float32, medians. Mask: a trained model
(`--trained`, e.g. the smol run of bench_learning.py, a Swin trained from scratch) scored on its test split
both ways, with the share of equal mask pixels. Not a product option: it writes the "## Int8 encoder
matmuls" section of bench/RESULTS.md so the decision is measured.

    python bench/bench_int8_encoder.py --trained RUN/final --data SYNTH [--repeats 3] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _results import publish  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.ao.quantization import quantize_dynamic  # noqa: E402

from georeason.evaluate import evaluate, model_predictor  # noqa: E402
from georeason.model import SegEarthModel, prompt_builder_for  # noqa: E402
from georeason.model.factory import build_model  # noqa: E402
from georeason.processor import SegEarthProcessor  # noqa: E402

SECTION = "## Int8 encoder matmuls (`bench/bench_int8_encoder.py`)"
QUESTION = "Where could a small plane land safely?"
# torch.ao's quantised tensors are deprecated (torch 2.13 warns on every quantize_per_tensor): the reason
# this stays a measurement and not a product option.
warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")


def int8_encoder(model: SegEarthModel) -> torch.nn.Module:
    """A copy of model.encoder with every nn.Linear as a dynamic int8 linear."""
    return quantize_dynamic(model.encoder, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)


def speed(args) -> tuple[dict[str, list[float]], float]:
    """Seconds per call (encoder, mask) for float32 and int8 encoders, interleaved; share of equal mask pixels."""
    model, tokenizer = build_model("paper", seed=0, pretrained_llm=False)
    model.eval()
    size = model.config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    prompt = prompt_builder_for(model, tokenizer).batch([QUESTION], for_generation=True)
    encoders = {"float32": model.encoder, "int8": int8_encoder(model)}
    times: dict[str, list[float]] = {f"{kind} {name}": [] for kind in encoders for name in ("encoder", "mask")}
    masks = {}
    with torch.inference_mode():
        for round_ in range(args.repeats + 1):  # round 0 warms up
            for kind, encoder in encoders.items():
                model.encoder = encoder
                started = time.perf_counter()
                encoder(pixels)
                encoder_s = time.perf_counter() - started
                started = time.perf_counter()
                masks[kind] = model.segment(pixels, prompt).logits > 0
                mask_s = time.perf_counter() - started
                if round_:
                    times[f"{kind} encoder"].append(encoder_s)
                    times[f"{kind} mask"].append(mask_s)
    model.encoder = encoders["float32"]
    return times, float((masks["int8"] == masks["float32"]).float().mean())


def quality(args) -> dict[str, dict]:
    """The released-protocol report of the trained model with float32 and int8 encoders, and mask agreement."""
    model = SegEarthModel.from_pretrained(args.trained)
    processor = SegEarthProcessor.from_pretrained(args.trained, config=model.config)
    reports, logits = {}, {}
    for kind in ("float32", "int8"):
        encoder = model.encoder if kind == "float32" else int8_encoder(model)
        original, model.encoder = model.encoder, encoder
        predict = model_predictor(model, processor, answers=False)
        kept: list[np.ndarray] = []

        def recording(batch, predict=predict, kept=kept):
            out, texts = predict(batch)
            kept.append(out)
            return out, texts

        reports[kind] = evaluate(args.trained, args.data, split="test", predictor=recording, limit=args.limit)
        logits[kind] = np.concatenate(kept)
        model.encoder = original
    agree = float(((logits["int8"] > 0) == (logits["float32"] > 0)).mean())
    return {"reports": reports, "agree": agree}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trained", type=Path, required=True, help="a trained model folder with a Swin encoder")
    parser.add_argument("--data", type=Path, required=True, help="its dataset (the test split is scored)")
    parser.add_argument("--limit", type=int, default=100, help="test samples scored")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_before = os.getloadavg()
    times, paper_agree = speed(args)
    scored = quality(args)
    load = os.getloadavg()
    med = {name: statistics.median(values) for name, values in times.items()}
    f32, i8 = scored["reports"]["float32"]["metrics"], scored["reports"]["int8"]["metrics"]
    lines = [
        f"`python bench/bench_int8_encoder.py --trained {args.trained} --data {args.data}` on {platform.machine()}, "
        f"{os.cpu_count()} cores ({torch.backends.cpu.get_cpu_capability()}), {date.today()}, torch "
        f"{torch.__version__}, load average {load_before[0]:.1f} at the start, {load[0]:.1f} at the end. Speed: paper "
        f"preset, random weights, one 1024 px image, mask only, 2 threads, float32 and int8 interleaved, median of "
        f"{args.repeats} after a warm-up round. int8: every nn.Linear of the Swin encoder as torch.ao's dynamic "
        "int8 linear (fbgemm); everything else float32.",
        "",
        "| what | float32 | int8 encoder linears |",
        "|---|---|---|",
        f"| paper encoder s | {med['float32 encoder']:.2f} | {med['int8 encoder']:.2f} "
        f"({med['float32 encoder'] / med['int8 encoder']:.2f}x) |",
        f"| paper mask s | {med['float32 mask']:.2f} | {med['int8 mask']:.2f} "
        f"({med['float32 mask'] / med['int8 mask']:.2f}x) |",
        f"| paper, random weights: mask pixels equal to float32 | - | {100 * paper_agree:.2f} % |",
        f"| trained `{args.trained}`: gIoU / cIoU, {f32['n']} test scenes | {100 * f32['gIoU']:.1f} / "
        f"{100 * f32['cIoU']:.1f} | {100 * i8['gIoU']:.1f} / {100 * i8['cIoU']:.1f} |",
        f"| trained: mask pixels equal to float32 | - | {100 * scored['agree']:.2f} % |",
    ]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
