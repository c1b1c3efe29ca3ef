"""Does bf16 inference change a trained model's masks? fp32 vs bf16 on the same model and test scenes.

bench_model.py measures bf16 agreement on random weights only, where most logits sit near 0. This runs a
trained model folder (default: the model `georeason demo` trained and cached, real SmolLM2 weights) over a
test split in both dtypes: pixel agreement of the masks, probability differences, and gIoU/cIoU with each.
Prints a table and replaces the "## bf16 vs fp32 on a trained model" section of bench/RESULTS.md.

Run: python bench/bench_bf16.py [--model DIR] [--data demo-output/data] [--no-results]
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

import numpy as np  # noqa: E402
import torch  # noqa: E402

from georeason.data import open_dataset  # noqa: E402
from georeason.evaluate import evaluate  # noqa: E402
from georeason.reasoner import GeoReasoner  # noqa: E402

SECTION = "## bf16 vs fp32 on a trained model"
BORDERLINE = 0.05  # probabilities within this of the 0.5 threshold count as borderline


def demo_model() -> Path | None:
    """The newest model `georeason demo` cached (GEOREASON_CACHE or ~/.cache/georeason)."""
    cache = Path(os.environ.get("GEOREASON_CACHE", Path.home() / ".cache" / "georeason"))
    found = sorted(cache.glob("demo-smol-*/final/model.safetensors"), key=lambda p: p.stat().st_mtime)
    return found[-1].parent if found else None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: the demo's cached model)")
    parser.add_argument("--data", type=Path, default=ROOT / "demo-output" / "data", help="dataset with a test split")
    parser.add_argument("--split", default="test")
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    args.model = args.model or demo_model()
    if args.model is None or not (args.model / "model.safetensors").is_file():
        parser.error(f"--model {args.model}: no trained model folder; run `make demo` first or pass --model DIR")
    if not args.data.is_dir():
        parser.error(f"--data {args.data}: no such dataset; run `make demo` first or pass --data DIR")
    return args


def probabilities(model: Path, dtype: str, samples: list[dict]) -> tuple[list[np.ndarray], float]:
    reasoner = GeoReasoner.from_pretrained(model, dtype=dtype)
    reasoner.predict(samples[0]["image_path"], samples[0]["question"], answer=False)  # warm-up
    maps, seconds = [], []
    for sample in samples:
        prediction = reasoner.predict(sample["image_path"], sample["question"], answer=False)
        maps.append(prediction.probability)
        seconds.append(prediction.seconds["mask"])
    return maps, statistics.median(seconds)




def main() -> int:
    args = parse_args()
    dataset = open_dataset(args.data, args.split, mode="eval")
    samples = [dataset[i] for i in range(len(dataset))]
    started = time.perf_counter()
    fp32, fp32_s = probabilities(args.model, "float32", samples)
    bf16, bf16_s = probabilities(args.model, "bfloat16", samples)
    reports = {name: evaluate(args.model, args.data, split=args.split, batch_size=4, dtype=dtype)
               for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}

    pixels = sum(p.size for p in fp32)
    disagree = sum(int(((a > 0.5) != (b > 0.5)).sum()) for a, b in zip(fp32, bf16))
    borderline = sum(int((np.abs(a - 0.5) < BORDERLINE).sum()) for a in fp32)
    positive = sum(int((a > 0.5).sum()) for a in fp32)
    worst = max(float(np.abs(a - b).max()) for a, b in zip(fp32, bf16))
    mean_difference = sum(float(np.abs(a - b).sum()) for a, b in zip(fp32, bf16)) / pixels
    scenes_changed = sum(bool(((a > 0.5) != (b > 0.5)).any()) for a, b in zip(fp32, bf16))
    iou = {name: {s["index"]: s["iou"] for s in report["samples"]} for name, report in reports.items()}
    iou_change = max(abs(iou["fp32"][i] - iou["bf16"][i]) for i in iou["fp32"])
    metric = {name: report["metrics"] for name, report in reports.items()}

    lines = [
        f"`python bench/bench_bf16.py` on {platform.machine()}, {os.cpu_count()} cores, {date.today()}, torch "
        f"{torch.__version__}; model `{args.model}` (the smol demo model: real SmolLM2-135M, trained 300 steps on "
        f"synthetic scenes), {len(samples)} `{args.split}` scenes of `{args.data.name}`, whole-image predict at the "
        f"original size, mask only. {(time.perf_counter() - started) / 60:.1f} min in all.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| mask pixels that differ (p > 0.5 in one dtype only) | {disagree:,} of {pixels:,} "
        f"({100 * disagree / pixels:.3f} %); fp32 marks {100 * positive / pixels:.2f} % positive |",
        f"| scenes whose mask changes at all | {scenes_changed} of {len(samples)} |",
        f"| fp32 pixels within {BORDERLINE} of the threshold | {100 * borderline / pixels:.2f} % |",
        f"| probability difference, mean / max | {mean_difference:.4f} / {worst:.3f} |",
        f"| largest per-scene IoU change | {100 * iou_change:.2f} points |",
        f"| gIoU / cIoU fp32 | {100 * metric['fp32']['gIoU']:.2f} / {100 * metric['fp32']['cIoU']:.2f} |",
        f"| gIoU / cIoU bf16 | {100 * metric['bf16']['gIoU']:.2f} / {100 * metric['bf16']['cIoU']:.2f} |",
        f"| mask time per scene, median fp32 / bf16 | {fp32_s:.3f} s / {bf16_s:.3f} s |",
    ]
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
