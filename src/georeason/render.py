"""Overlay PNGs: the predicted mask filled and outlined over the image, with the question and answer below.

Visual output of inference (docs/predict.md); the paper's qualitative figures (Fig. 5) show masks the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from georeason.errors import GeoreasonError
from georeason.geo.atomic import atomic_output

FILL = (255, 32, 32)
OUTLINE = (255, 230, 0)
CAPTION_BACKGROUND = (255, 255, 255)
CAPTION_TEXT = (20, 20, 20)


def _boundary(mask: np.ndarray, thickness: int) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (the image border counts as outside)."""
    edge = np.zeros_like(mask)
    for _ in range(thickness):
        inner = mask & ~edge
        padded = np.pad(inner, 1, constant_values=False)
        eroded = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & inner
        edge |= inner & ~eroded
    return edge


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: float) -> list[str]:
    """Greedy word wrap to a pixel width; a word longer than a line is cut by characters."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if draw.textlength(candidate, font=font) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = ""
        for char in word:
            if current and draw.textlength(current + char, font=font) > width:
                lines.append(current)
                current = ""
            current += char
    lines.append(current)
    return lines


def _resize_to(image: np.ndarray, mask: np.ndarray, max_side: int | None) -> tuple[np.ndarray, np.ndarray]:
    height, width = mask.shape
    if max_side is None or max(height, width) <= max_side:
        return image, mask
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
    small_mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST))
    return small, small_mask > 127


def render_overlay(
    image_rgb: np.ndarray,
    mask: np.ndarray,
    caption_lines: Sequence[str] = (),
    opacity: float = 0.45,
    max_side: int | None = None,
) -> Image.Image:
    """The overlay as a PIL image: mask fill blended at `opacity`, outline, caption strip below."""
    image = np.asarray(image_rgb)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise GeoreasonError(f"image: expected RGB uint8 [h, w, 3], got {image.dtype} {image.shape}")
    if mask.shape != image.shape[:2]:
        raise GeoreasonError(f"mask: shape {mask.shape} does not match the image's {image.shape[:2]}")
    if not 0.0 <= opacity <= 1.0:
        raise GeoreasonError(f"opacity: expected a value in [0, 1], got {opacity}")
    image, mask = _resize_to(image, mask != 0, max_side)
    height, width = mask.shape
    out = image.astype(np.float32)
    out[mask] = out[mask] * (1.0 - opacity) + np.asarray(FILL, np.float32) * opacity
    out[_boundary(mask, 1 if max(height, width) < 512 else 2)] = OUTLINE
    overlay = Image.fromarray(np.rint(out).astype(np.uint8))

    font_size = max(12, min(32, width // 40))
    font = ImageFont.load_default(size=font_size)
    margin = max(4, font_size // 2)
    measure = ImageDraw.Draw(overlay)
    lines = [line for text in caption_lines for line in _wrap(measure, str(text), font, width - 2 * margin)]
    line_height = round(font_size * 1.3)
    strip = 2 * margin + line_height * max(1, len(lines))
    canvas = Image.new("RGB", (width, height + strip), CAPTION_BACKGROUND)
    canvas.paste(overlay, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for index, line in enumerate(lines):
        draw.text((margin, height + margin + index * line_height), line, fill=CAPTION_TEXT, font=font)
    return canvas


def overlay_png(
    path: str | os.PathLike[str],
    image_rgb: np.ndarray,
    mask: np.ndarray,
    caption_lines: Sequence[str] = (),
    opacity: float = 0.45,
    max_side: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write render_overlay() as a PNG, atomically (refuses an existing file unless overwrite=True)."""
    canvas = render_overlay(image_rgb, mask, caption_lines, opacity, max_side)
    with atomic_output(path, overwrite=overwrite) as temporary:
        canvas.save(temporary, format="PNG")
    return Path(path)
