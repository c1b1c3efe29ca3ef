"""Raster output: masks and probability maps as tiled, compressed GeoTIFFs (whole or window by window) and PNGs.

GeoTIFF inference I/O (docs/predict.md); the source's georeferencing (CRS, geotransform, GCPs, RPCs; see
geo/georef.py) and nodata are carried over unchanged.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
from PIL import Image
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from georeason.errors import GeoreasonError
from georeason.geo.atomic import atomic_output
from georeason.geo.raster import GDAL_ERRORS, RasterInfo

MASK_NODATA = 255  # uint8 masks: 0 = background, 1 = answer, 255 = no input data
AUTO = "auto"


def _default_nodata(dtype: str) -> float:
    return float("nan") if np.dtype(dtype).kind == "f" else MASK_NODATA


def refuse_input_as_output(info: RasterInfo | None, path: str | os.PathLike[str]) -> None:
    """Never let an output replace the raster it is computed from (even with overwrite=True)."""
    if info is not None and Path(info.path).exists() and Path(info.path).resolve() == Path(path).resolve():
        raise GeoreasonError(f"{path}: this is the input raster; choose another output path")


def geotiff_profile(
    width: int, height: int, dtype: str, nodata: float | None, profile_from: RasterInfo | None
) -> dict[str, Any]:
    """A tiled, deflate-compressed single-band GeoTIFF profile, georeferenced like `profile_from`.

    Everything the source has is carried, as gdal_translate does: CRS and geotransform (rotated too),
    a geotransform without CRS, GCPs with their CRS, RPCs, or a CRS alone.
    """
    block = 512 if min(width, height) >= 1024 else 256
    profile: dict[str, Any] = dict(
        driver="GTiff", width=width, height=height, count=1, dtype=dtype, nodata=nodata,
        tiled=True, blockxsize=block, blockysize=block, compress="deflate",
        predictor=3 if np.dtype(dtype).kind == "f" else 2, BIGTIFF="IF_SAFER",
    )
    if profile_from is not None:
        profile.update(profile_from.georef.geotiff_items())
    return profile


class GeoTiffWindowWriter:
    """Write a single-band GeoTIFF window by window; the file appears atomically when the block exits.

    Windows should cover whole block rows (multiples of `block_size` rows, the last one ragged) so that
    each compressed block is written once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        dtype: str = "uint8",
        nodata: float | None | str = AUTO,
        profile_from: RasterInfo | None = None,
        overwrite: bool = False,
        tags: dict[str, str] | None = None,
        description: str | None = None,
    ) -> None:
        self.path = Path(path)
        nodata_value = _default_nodata(dtype) if nodata == AUTO else nodata
        self.profile = geotiff_profile(width, height, dtype, nodata_value, profile_from)  # type: ignore[arg-type]
        self.block_size: int = self.profile["blockysize"]
        self._overwrite = overwrite
        self._tags = tags or {}
        self._description = description
        self._stack = contextlib.ExitStack()
        self._dataset: Any = None

    def __enter__(self) -> GeoTiffWindowWriter:
        with self._stack as stack:
            temporary = stack.enter_context(atomic_output(self.path, overwrite=self._overwrite))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = rasterio.open(temporary, "w", **self.profile)
            stack.callback(self._dataset.close)
            if self._tags:
                self._dataset.update_tags(**{k: str(v) for k, v in self._tags.items()})
            if self._description:
                self._dataset.set_band_description(1, self._description)
            self._stack = stack.pop_all()
        return self

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write a 2-D array at `window` (row_off, col_off, height, width) of the output."""
        if array.shape != (int(window.height), int(window.width)):
            raise GeoreasonError(f"{self.path}: array of shape {array.shape} does not fit window {window}")
        try:
            self._dataset.write(array.astype(self.profile["dtype"], copy=False), 1, window=window)
        except GDAL_ERRORS as exc:  # e.g. the disk is full
            raise GeoreasonError(f"{self.path}: cannot write the output ({exc})") from exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        # Closing the dataset first flushes GDAL's blocks; then atomic_output fsyncs and renames (or cleans up).
        return self._stack.__exit__(exc_type, exc, tb)


def _as_output_array(array: np.ndarray, dtype: str | None) -> tuple[np.ndarray, str]:
    array = np.asarray(array)
    if array.ndim != 2:
        raise GeoreasonError(f"mask: expected a 2-D mask or probability map, got shape {array.shape}")
    if dtype is None:
        dtype = "float32" if array.dtype.kind == "f" else "uint8"
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array.astype(dtype, copy=False), dtype


def write_mask_geotiff(
    path: str | os.PathLike[str],
    mask_or_prob: np.ndarray,
    profile_from: RasterInfo | None = None,
    nodata: float | None | str = AUTO,
    dtype: str | None = None,
    valid: np.ndarray | None = None,
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> Path:
    """Write a mask (bool/uint8 -> uint8 0/1) or probability map (float -> float32) as a GeoTIFF.

    mask_or_prob: [H,W]; bool or integer -> uint8 (1 = target, 0 = background), float -> float32 (a
    probability in [0, 1]). The georeferencing (CRS, geotransform, GCPs, RPCs) comes from `profile_from`;
    pixels where `valid` (bool [H,W]) is False get `nodata` (default 255 for uint8, NaN for float32).
    Written atomically; raises GeoreasonError when `path` exists (without overwrite), is the input
    itself, the shape differs from `profile_from`, or the file system refuses the write.
    """
    refuse_input_as_output(profile_from, path)
    array, dtype = _as_output_array(mask_or_prob, dtype)
    height, width = array.shape
    if profile_from is not None and (profile_from.height, profile_from.width) != (height, width):
        raise GeoreasonError(
            f"{path}: the mask is {height} x {width} px but the source raster {profile_from.path} is "
            f"{profile_from.height} x {profile_from.width} px (height x width); they must match"
        )
    nodata_value = _default_nodata(dtype) if nodata == AUTO else nodata
    if valid is not None:
        if nodata_value is None:
            raise GeoreasonError(f"{path}: a valid mask was given but nodata=None; pass a nodata value")
        array = np.where(np.asarray(valid, dtype=bool), array, np.asarray(nodata_value).astype(dtype))
    writer = GeoTiffWindowWriter(
        path, width, height, dtype, nodata_value, profile_from, overwrite, tags, description
    )
    with writer:
        block = writer.block_size * 8  # a few block rows at a time keeps the copy small
        for top in range(0, height, block):
            rows = min(block, height - top)
            writer.write(array[top : top + rows], Window(0, top, width, rows))
    return Path(path)


def read_mask_geotiff(
    path: str | os.PathLike[str], out_shape: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray, RasterInfo]:
    """Read a mask written by this module: (mask bool [h, w], valid bool [h, w], RasterInfo).

    `out_shape` (h, w) reads a nearest-neighbour preview, e.g. for the overlay of a huge scene.
    """
    from georeason.geo.raster import open_raster, raster_info

    with open_raster(path) as src:
        info = raster_info(src)
        data = src.read(1, out_shape=out_shape)
        valid = src.read_masks(1, out_shape=out_shape) != 0
    if data.dtype.kind == "f":
        valid &= np.isfinite(data)
        mask = valid & (data > 0.5)
    else:
        mask = valid & (data == 1)
    return mask, valid, info


def write_mask_png(path: str | os.PathLike[str], mask: np.ndarray, overwrite: bool = False) -> Path:
    """Write a binary mask [H,W] (any dtype) as an 8-bit grayscale PNG: 255 where it is non-zero, else 0.

    Written atomically; raises GeoreasonError for a mask that is not 2-D, an existing `path` (without
    overwrite) or a write the file system refuses.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise GeoreasonError(f"{path}: expected a 2-D mask, got shape {mask.shape}")
    image = Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8))
    with atomic_output(path, overwrite=overwrite) as temporary:
        image.save(temporary, format="PNG")
    return Path(path)
