"""Preprocessing identical to the released code, and its inverse (masks back at the original size).

Implements the released preprocessing (docs/released_code.md#preprocessing): long side -> S (cv2 INTER_LINEAR; short
side int(s*S/long)),
centred zero pad (top/left = pad//2), normalise after padding; masks with INTER_NEAREST, same pad.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from georeason.config import PIXEL_MEAN, PIXEL_STD
from georeason.errors import GeoreasonError


@dataclass(frozen=True)
class Geometry:
    """Where the original image sits inside the padded S x S model input."""

    height: int  # original
    width: int
    resized_height: int
    resized_width: int
    top: int
    left: int
    size: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Geometry:
        return cls(**{k: int(data[k]) for k in cls.__dataclass_fields__})


def compute_geometry(height: int, width: int, size: int) -> Geometry:
    """Resize/pad geometry of an H x W image for an S x S input, with the released code's rounding."""
    if height <= 0 or width <= 0:
        raise GeoreasonError(f"image size must be positive, got {height}x{width} (HxW)")
    if size <= 0:
        raise GeoreasonError(f"image_size must be positive, got {size}")
    long_side = max(height, width)
    # Same expression as the released code: int(short * S / long) in floating point.
    if height >= width:
        resized_h, resized_w = size, int(width * size / long_side)
    else:
        resized_h, resized_w = int(height * size / long_side), size
    resized_h, resized_w = max(resized_h, 1), max(resized_w, 1)
    return Geometry(height, width, resized_h, resized_w, (size - resized_h) // 2, (size - resized_w) // 2, size)


def resize_and_pad_image(image: np.ndarray, size: int) -> tuple[np.ndarray, Geometry]:
    """uint8 [H,W,3] -> uint8 [S,S,3] (bilinear resize of the long side to S, centred zero pad)."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise GeoreasonError(f"image: expected an RGB array [H,W,3], got shape {image.shape}")
    geometry = compute_geometry(image.shape[0], image.shape[1], size)
    resized = cv2.resize(image, (geometry.resized_width, geometry.resized_height), interpolation=cv2.INTER_LINEAR)
    return _pad(resized, geometry), geometry


def resize_and_pad_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """[H,W] mask (bool or label values) -> [S,S] (nearest resize, same centred zero pad).

    Values are kept (0/255 stays 0/255); a bool mask comes back as uint8 0/1.
    """
    if mask.ndim != 2:
        raise GeoreasonError(f"mask: expected a 2-D array [H,W], got shape {mask.shape}")
    geometry = compute_geometry(mask.shape[0], mask.shape[1], size)
    source = mask.astype(np.uint8) if mask.dtype == np.bool_ else mask
    resized = cv2.resize(source, (geometry.resized_width, geometry.resized_height), interpolation=cv2.INTER_NEAREST)
    return _pad(resized, geometry)


def normalize(
    image: np.ndarray, mean: Sequence[float] = PIXEL_MEAN, std: Sequence[float] = PIXEL_STD
) -> np.ndarray:
    """uint8 [S,S,3] -> float32 [3,S,S]: (x - mean) / std per RGB channel, in float32 as released."""
    chw = np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)
    mean32 = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std32 = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (chw - mean32) / std32


def preprocess_image(
    image: np.ndarray, size: int, mean: Sequence[float] = PIXEL_MEAN, std: Sequence[float] = PIXEL_STD
) -> tuple[np.ndarray, Geometry]:
    """uint8 RGB [H,W,3] -> (normalised float32 [3,S,S], Geometry): the model input of
    docs/released_code.md#preprocessing."""
    padded, geometry = resize_and_pad_image(image, size)
    return normalize(padded, mean, std), geometry


def restore_to_original(array: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Inverse of the preprocessing for a float map [S,S] (probabilities or logits) -> float32 [H,W].

    Crops the padding, then resizes bilinearly to the original size. Threshold afterwards for a binary
    mask (`restore_mask_to_original`).
    """
    size = geometry.size
    if array.shape != (size, size):
        raise GeoreasonError(f"restore_to_original: expected an array [{size},{size}], got shape {array.shape}")
    crop = array[geometry.top: geometry.top + geometry.resized_height,
                 geometry.left: geometry.left + geometry.resized_width].astype(np.float32)
    if crop.shape == (geometry.height, geometry.width):
        return np.ascontiguousarray(crop)
    return cv2.resize(crop, (geometry.width, geometry.height), interpolation=cv2.INTER_LINEAR)


def restore_mask_to_original(logits: np.ndarray, geometry: Geometry, threshold: float = 0.0) -> np.ndarray:
    """Logits [S,S] -> bool mask [H,W] at the original size (logit > threshold, i.e. sigmoid > 0.5)."""
    return restore_to_original(logits, geometry) > threshold


def _pad(resized: np.ndarray, geometry: Geometry) -> np.ndarray:
    shape = (geometry.size, geometry.size) + resized.shape[2:]
    out = np.zeros(shape, dtype=resized.dtype)
    out[geometry.top: geometry.top + geometry.resized_height,
        geometry.left: geometry.left + geometry.resized_width] = resized
    return out


class SampleTransform:
    """Adds the model tensors to a dataset sample dict (see georeason.data datasets).

    Adds "pixel_values" torch.float32 [3,S,S] (normalised), "target" torch.float32 [S,S] with 0/1
    (the dataset mask is already binary: non-zero = target; no dataset here has an ignore label) and
    "geometry" (a Geometry) to undo the padding.
    """

    def __init__(self, image_size: int, mean: Sequence[float] = PIXEL_MEAN, std: Sequence[float] = PIXEL_STD):
        self.image_size = int(image_size)
        self.mean = tuple(mean)
        self.std = tuple(std)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        import torch

        pixels, geometry = preprocess_image(sample["image"], self.image_size, self.mean, self.std)
        mask = np.asarray(sample["mask"]).astype(bool)
        if mask.shape != sample["image"].shape[:2]:
            raise GeoreasonError(
                f"sample {sample.get('id', '?')}: mask shape {mask.shape} differs from image shape "
                f"{sample['image'].shape[:2]}"
            )
        target = resize_and_pad_mask(mask, self.image_size)
        out = dict(sample)
        out["pixel_values"] = torch.from_numpy(pixels)
        out["target"] = torch.from_numpy(target.astype(np.float32))
        out["geometry"] = geometry
        return out
