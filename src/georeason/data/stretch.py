"""The display stretch: raster values of any type to 8-bit RGB, per band, between two percentiles.

Feeds the RGB 0-255 input of the paper (Sec. 5.1). Non-8-bit data is stretched per band between its
2nd and 98th percentiles over valid pixels (the usual display stretch for 16-bit/float imagery).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from georeason.errors import GeoreasonError

DEFAULT_PERCENTILES = (2.0, 98.0)


def percentile_limits(
    array: np.ndarray,
    valid: np.ndarray | None = None,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band (low, high) percentiles of `array` [H,W,C] over `valid` [H,W] and finite pixels.

    Returns two float64 arrays of length C. A band with no valid pixel gets low = high = 0.
    """
    array = as_hwc(array, "array")
    channels = array.shape[2]
    if valid is not None and valid.shape != array.shape[:2]:
        raise GeoreasonError(f"valid mask has shape {valid.shape}, expected {array.shape[:2]} (the image's H,W)")
    low = np.zeros(channels, dtype=np.float64)
    high = np.zeros(channels, dtype=np.float64)
    for band in range(channels):
        values = array[..., band]
        values = values[valid] if valid is not None else values.ravel()
        values = values.astype(np.float64, copy=False)
        values = values[np.isfinite(values)]
        if values.size:
            low[band], high[band] = np.percentile(values, [percentiles[0], percentiles[1]])
    return low, high


def stretch_to_uint8(array: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Map each band linearly low -> 0, high -> 255 with clipping; constant bands and NaN map to 0."""
    array = as_hwc(array, "array")
    low = np.asarray(low, dtype=np.float64).reshape(1, 1, -1)
    high = np.asarray(high, dtype=np.float64).reshape(1, 1, -1)
    span = high - low
    safe_span = np.where(span > 0, span, 1.0)
    scaled = (array.astype(np.float64) - low) * (255.0 / safe_span)
    scaled = np.where(span > 0, scaled, 0.0)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def to_rgb_uint8(
    array: np.ndarray,
    bands: Sequence[int] | None = None,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """Select three bands (1-based; default the first three, or band 1 repeated) as uint8 [H,W,3].

    uint8 data passes through unchanged; any other dtype is stretched per band between the 2nd and
    98th percentiles of its valid, finite pixels (`percentile_limits` + `stretch_to_uint8`).
    """
    array = as_hwc(array, "array")
    count = array.shape[2]
    if bands is None:
        bands = [1, 2, 3] if count >= 3 else [1, 1, 1]
    bands = list(bands)
    if len(bands) == 1:
        bands = bands * 3
    if len(bands) != 3:
        raise GeoreasonError(f"bands: expected 1 or 3 band indices, got {len(bands)} ({bands})")
    for index in bands:
        if not 1 <= int(index) <= count:
            raise GeoreasonError(f"bands: band {index} does not exist; the image has {count} band(s) (1-based)")
    selected = array[..., [int(b) - 1 for b in bands]]
    if selected.dtype == np.uint8:
        return np.ascontiguousarray(selected)
    if selected.dtype == np.bool_:
        return selected.astype(np.uint8) * 255
    low, high = percentile_limits(selected, valid)
    return stretch_to_uint8(selected, low, high)


def as_hwc(array: np.ndarray, name: str) -> np.ndarray:
    """`array` as [H, W, C] (a 2-D array gets one channel); a clear error for other shapes or empty ones."""
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise GeoreasonError(f"{name}: expected an image array [H,W] or [H,W,C], got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise GeoreasonError(f"{name}: the image is empty (shape {array.shape})")
    return array
