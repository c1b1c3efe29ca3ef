"""Label images read as values: which pixels are target is decided from what the file is, never from alpha.

The binary ground-truth masks of the datasets (paper Sec. 3.2); how each kind of label file is read is listed
in docs/data.md ("How labels are read"). Files go through the one pixel reader, georeason.data.pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from georeason.data.pixels import DEFAULT_MAX_PIXELS, PixelSource, open_pixels
from georeason.errors import GeoreasonError

_KINDS = {
    (1, False): "gray: 0 = background, non-zero = target",
    (1, True): "gray + alpha: alpha 0 = background; gray 0 = background, non-zero = target",
    (3, False): "RGB: black = background, any other colour = target",
    (3, True): "RGBA: alpha 0 = background; black = background, any other colour = target",
}


@dataclass(frozen=True)
class LabelRead:
    """A label read as a mask, and how the file was interpreted."""

    mask: np.ndarray  # bool [H, W]: True = target
    kind: str  # e.g. "RGBA: alpha 0 = background; black = background, any other colour = target"


def read_label(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> LabelRead:
    """Read a label file (or array) as a bool target mask [H, W] and the rule that was applied.

    Gray: non-zero = target. RGB: any colour but black = target. Palette: any index but 0 = target.
    Alpha is never a label value: alpha 0 is background, and a file whose only drawing is in its alpha
    channel (black wherever it is opaque) is refused. Nodata, masked and transparent pixels are
    background. Arrays: non-zero in any band = target. EXIF orientation as for images.
    Raises GeoreasonError naming the file (missing, unreadable, alpha-only drawing).
    """
    if isinstance(source, np.ndarray):
        array = np.asarray(source)
        if array.ndim == 3:
            array = (array != 0).any(axis=2)
        if array.ndim != 2 or array.size == 0:
            raise GeoreasonError(f"array: expected a 2-D label image, got shape {np.asarray(source).shape}")
        return LabelRead(array != 0, "array: non-zero in any band = target")
    path = Path(source)
    if not path.is_file():
        raise GeoreasonError(f"{path}: no such mask file")
    with open_pixels(path, max_pixels, "read") as pixels:
        values, valid = pixels.read(range(1, pixels.count + 1))
        return _interpret(pixels, values, valid)


def load_mask(source: Any, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """read_label(source).mask: a label image as bool [H, W], True = target."""
    return read_label(source, max_pixels).mask


def _interpret(pixels: PixelSource, values: np.ndarray, valid: np.ndarray) -> LabelRead:
    alpha = pixels.alpha
    colour = [band for band in range(pixels.count) if band + 1 != alpha]
    if pixels.palette is not None:
        target = values[..., 0] != 0
        kind = "palette: index 0 = background, any other index = target"
    else:
        target = np.any(values[..., colour] != 0, axis=-1)
        kind = _KINDS.get((len(colour), alpha is not None),
                          f"{len(colour)} bands{' + alpha' if alpha else ''}: 0 in every band = background, "
                          "otherwise target")
    if alpha is not None:
        opaque = values[..., alpha - 1] != 0
        if opaque.any() and not opaque.all() and not (target & opaque).any():
            raise GeoreasonError(
                f"{pixels.name}: the label is black wherever it is opaque, so its only drawing is in the alpha "
                "channel, and alpha is not read as a label value (alpha 0 = background); save the mask with "
                "the target in gray or colour (for example white on black)")
    elif pixels.masked:
        kind += "; nodata, masked or transparent pixels = background"
    return LabelRead(target & valid, kind)
