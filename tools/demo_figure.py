"""Write docs/demo_overlay.png, the README figure, from the overlays a `georeason demo` run wrote.

    python tools/demo_figure.py [demo-output]

Side by side, the two held-out test scenes the demo shows (its demo_summary.json): the first one with a
target and a seeded random other one with a target (neither chosen by its result), each labelled with its IoU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

TARGET = Path(__file__).resolve().parents[1] / "docs" / "demo_overlay.png"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-output")
    scenes = json.loads((out / "demo_summary.json").read_text())["test_scenes"]
    images = [Image.open(out / scene["overlay"]).convert("RGB") for scene in scenes]
    header, gap, font = 24, 12, ImageFont.load_default(size=14)
    width = sum(image.width for image in images) + gap * (len(images) - 1)
    figure = Image.new("RGB", (width, max(image.height for image in images) + header), "white")
    draw = ImageDraw.Draw(figure)
    x = 0
    for scene, image in zip(scenes, images):
        draw.text((x + 4, 5), f"{scene['role']}: IoU {100 * scene['iou']:.1f}", fill="black", font=font)
        figure.paste(image, (x, header))
        x += image.width + gap
    figure.save(TARGET)
    print(f"wrote {TARGET}")


if __name__ == "__main__":
    main()
