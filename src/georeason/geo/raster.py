"""Raster input: open any GDAL raster, describe it, read RGB uint8 windows with a scene-wide stretch.

GeoTIFF inference I/O (issue 5); not in the paper, which works on 8-bit RGB images (Sec. 5.1).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.io import DatasetReader
from rasterio.windows import Window

from georeason.data.imageio import percentile_limits, stretch_to_uint8
from georeason.errors import GeoreasonError
from georeason.filenames import gdal_name, source_name

# Limits come from a decimated read whose long side is at most this (fast, and plenty for percentiles).
LIMITS_MAX_SIDE = 2048

try:  # GDAL errors surface as rasterio._err.CPLE_*; they are not RasterioError subclasses.
    from rasterio._err import CPLE_BaseError as _GdalError
except ImportError:  # pragma: no cover - layout of a future rasterio
    _GdalError = RasterioError

GDAL_ERRORS = (RasterioError, _GdalError)


def _reason(exc: BaseException) -> str:
    """The most specific message in a chain of GDAL/rasterio errors ("Read failed" hides the cause)."""
    messages = []
    current: BaseException | None = exc
    while current is not None and len(messages) < 5:
        messages.append(str(current).strip())
        current = current.__cause__ or current.__context__
    useful = [m for m in messages if m and "see previous exception" not in m.lower()]
    return useful[-1] if useful else messages[0]


@dataclass(frozen=True)
class RasterInfo:
    """What a writer or a caller needs to know about an input raster."""

    path: str
    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: CRS | None
    transform: Affine
    nodata: float | None
    georeferenced: bool  # False when there is no CRS or the transform is the identity (pixel space)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def output_crs(self) -> CRS | None:
        """The CRS to give outputs: None unless georeferenced (a CRS with an identity transform is not)."""
        return self.crs if self.georeferenced else None


@contextlib.contextmanager
def capped_block_cache(limit_bytes: int) -> Iterator[None]:
    """Cap GDAL's block cache while reading a big scene in passes, unless the user set GDAL_CACHEMAX.

    GDAL's default (5 % of RAM) keeps every block read, so resident memory would grow with the scene
    although nothing is reused once a pass has moved on. rasterio hands an integer GDAL_CACHEMAX to
    GDALSetCacheMax, so the limit is in bytes (64 would mean 64 bytes and thrash).
    """
    settings = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": int(limit_bytes)}
    with rasterio.Env(**settings):
        yield


@contextlib.contextmanager
def open_raster(path: str | os.PathLike[str]) -> Iterator[DatasetReader]:
    """Open a raster for reading; any failure becomes a GeoreasonError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise GeoreasonError(f"{path}: no such raster file")
    if path.stat().st_size == 0:
        raise GeoreasonError(f"{path}: the raster file is empty")
    try:
        with warnings.catch_warnings():
            # Plain PNG/JPEG inputs are fine: raster_info() records georeferenced=False instead.
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(gdal_name(path))
    except GDAL_ERRORS as exc:
        raise GeoreasonError(f"{path}: cannot read this raster (not a raster GDAL can open: {_reason(exc)})") from exc
    with dataset:
        if dataset.width <= 0 or dataset.height <= 0 or dataset.count <= 0:
            raise GeoreasonError(f"{path}: the raster has no pixels or no bands")
        yield dataset


def raster_info(src: DatasetReader) -> RasterInfo:
    """Describe an open raster."""
    transform = src.transform
    georeferenced = src.crs is not None and not transform.is_identity
    return RasterInfo(
        path=source_name(src.name),
        width=src.width,
        height=src.height,
        count=src.count,
        dtypes=tuple(src.dtypes),
        crs=src.crs,
        transform=transform,
        nodata=src.nodata,
        georeferenced=georeferenced,
    )


def check_scene_size(info: RasterInfo, max_pixels: int) -> None:
    """Refuse a scene too large to process in one piece (a decompression bomb or a huge mosaic)."""
    if info.pixels > max_pixels:
        raise GeoreasonError(
            f"{info.path}: the scene is {info.width} x {info.height} px ({info.pixels / 1e6:.1f} Mpx), above the "
            f"limit of {max_pixels / 1e6:.1f} Mpx for whole-image mode; use --tile to process it in tiles"
        )


def resolve_bands(src: DatasetReader, bands: Sequence[int] | None) -> tuple[int, int, int]:
    """The three 1-based band indexes to read as R, G, B (default 1,2,3, or 1,1,1 for gray)."""
    if bands is None:
        return (1, 2, 3) if src.count >= 3 else (1, 1, 1)
    chosen = [int(b) for b in bands]
    if len(chosen) == 1:
        chosen = chosen * 3
    if len(chosen) != 3:
        raise GeoreasonError(f"bands: expected 1 or 3 band indexes (e.g. 3,2,1), got {list(bands)}")
    for band in chosen:
        if not 1 <= band <= src.count:
            raise GeoreasonError(
                f"{src.name}: band {band} does not exist; the raster has {src.count} band(s), numbered from 1"
            )
    return chosen[0], chosen[1], chosen[2]


def _read_bands(
    src: DatasetReader, bands: Sequence[int], window: Window | None, out_shape: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Read the bands as [h, w, len(bands)] and the per-pixel validity (all bands valid) as [h, w]."""
    unique = sorted(set(bands))
    shape = None if out_shape is None else (len(unique), int(out_shape[0]), int(out_shape[1]))
    try:
        data = src.read(unique, window=window, out_shape=shape)
        masks = src.read_masks(unique, window=window, out_shape=shape)
    except GDAL_ERRORS as exc:
        reason = _reason(exc)
        raise GeoreasonError(f"{src.name}: cannot read the pixels (truncated or corrupt file?): {reason}") from exc
    valid = np.all(masks != 0, axis=0)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.all(np.isfinite(data), axis=0)
    order = [unique.index(b) for b in bands]
    return np.moveaxis(data[order], 0, -1), valid


def scene_limits(
    src: DatasetReader, bands: Sequence[int] | None = None, max_side: int = LIMITS_MAX_SIDE
) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2/98 % stretch limits of the whole scene, from a decimated read over valid pixels."""
    chosen = resolve_bands(src, bands)
    scale = min(1.0, max_side / max(src.height, src.width))
    out_shape = (max(1, math.ceil(src.height * scale)), max(1, math.ceil(src.width * scale)))
    data, valid = _read_bands(src, chosen, None, out_shape)
    if not valid.any():
        raise GeoreasonError(f"{src.name}: every pixel is nodata; there is nothing to segment")
    low, high = percentile_limits(data, valid)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def _palette(src: DatasetReader) -> np.ndarray | None:
    """The colour table of a single-band 8-bit paletted raster as a [256, 3] uint8 lookup, else None."""
    if src.count != 1 or src.dtypes[0] != "uint8" or src.colorinterp[0] != ColorInterp.palette:
        return None
    try:
        colormap = src.colormap(1)
    except ValueError:  # palette interpretation without a table
        return None
    lookup = np.zeros((256, 3), dtype=np.uint8)
    for index, colour in colormap.items():
        if 0 <= index < 256:
            lookup[index] = colour[:3]
    return lookup


def needs_stretch(src: DatasetReader, bands: Sequence[int] | None = None) -> bool:
    """True unless every chosen band is already 8-bit."""
    return any(src.dtypes[b - 1] != "uint8" for b in resolve_bands(src, bands))


def read_rgb(
    src: DatasetReader,
    window: Window | None = None,
    bands: Sequence[int] | None = None,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
    out_shape: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read a window (or the scene) as RGB uint8 [h, w, 3] plus a validity mask bool [h, w].

    8-bit bands pass through unless `limits` are given (a paletted image is expanded to its colours when
    `bands` is None); other types are stretched with `limits`, which
    default to scene_limits() of the whole scene so that every tile of a scene gets the same stretch.
    `out_shape` (h, w) resamples (nearest) for previews. Nodata pixels are black in the image.
    """
    chosen = resolve_bands(src, bands)
    data, valid = _read_bands(src, chosen, window, out_shape)
    palette = _palette(src) if bands is None else None
    if palette is not None:  # a paletted image shows its colours, not its indexes
        rgb = palette[data[..., 0]]
        rgb[~valid] = 0
        return rgb, valid
    if limits is None and needs_stretch(src, chosen):
        limits = scene_limits(src, chosen)
    if limits is None:
        rgb = data.astype(np.uint8, copy=False)
    else:
        rgb = stretch_to_uint8(data, np.asarray(limits[0]), np.asarray(limits[1]))
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    rgb[~valid] = 0
    return rgb, valid
