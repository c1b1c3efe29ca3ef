"""Loading an image as 8-bit RGB and a label as a bool mask: the entry points of the pixel reader.

Feeds the RGB 0-255 input of the paper (Sec. 5.1); the reading itself is georeason.data.pixels
(images) and georeason.data.labels (labels), the stretch georeason.data.stretch (docs/data.md).
"""

from __future__ import annotations

from georeason.data.labels import LabelRead, load_mask, read_label
from georeason.data.pixels import DEFAULT_MAX_PIXELS, load_image
from georeason.data.stretch import DEFAULT_PERCENTILES, percentile_limits, stretch_to_uint8, to_rgb_uint8

__all__ = ["DEFAULT_MAX_PIXELS", "DEFAULT_PERCENTILES", "LabelRead", "load_image", "load_mask", "percentile_limits",
           "read_label", "stretch_to_uint8", "to_rgb_uint8"]
