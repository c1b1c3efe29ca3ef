"""Raster input: open any GDAL raster and describe it for the writers; its pixels come from data.pixels.

GeoTIFF inference I/O (docs/predict.md); not in the paper, which works on 8-bit RGB images (Sec. 5.1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import DatasetReader

# The pixels of every input are read by georeason.data.pixels (one reader for every mode); these names
# are re-exported here for the geo API.
from georeason.data.pixels import (  # noqa: F401 - re-exported
    GDAL_ERRORS,
    LIMITS_MAX_SIDE,
    PixelSource,
    check_pixel_budget,
    needs_stretch,
    read_rgb,
    resolve_bands,
    scene_limits,
)
from georeason.data.pixels import NoPixels, open_with_gdal
from georeason.data.pixels import gdal_reason as _reason
from georeason.errors import GeoreasonError
from georeason.filenames import source_name
from georeason.geo.georef import NONE as NO_GEOREFERENCING
from georeason.geo.georef import Georeferencing, georeferencing


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
    georef: Georeferencing  # what places the raster on the Earth; every writer asks it (geo/georef.py)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def georeferenced(self) -> bool:
        """True when outputs get map coordinates in a known CRS (a geotransform or GCPs, with a CRS)."""
        return self.georef.georeferenced

    @property
    def output_crs(self) -> CRS | None:
        """The CRS of the outputs' map coordinates: the geotransform's or the GCPs' CRS, else None."""
        return self.georef.map_crs


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
        dataset = open_with_gdal(path)  # plain PNG/JPEG are fine: raster_info() records georeferenced=False
    except GDAL_ERRORS as exc:
        raise GeoreasonError(f"{path}: cannot read this raster (not a raster GDAL can open: {_reason(exc)})") from exc
    except NoPixels:
        raise GeoreasonError(f"{path}: the raster has no pixels or no bands") from None
    with dataset:
        yield dataset


def raster_info(src: DatasetReader) -> RasterInfo:
    """Describe an open raster (its georeferencing decided by georef.georeferencing)."""
    transform = src.transform
    return RasterInfo(
        path=source_name(src.name),
        width=src.width,
        height=src.height,
        count=src.count,
        dtypes=tuple(src.dtypes),
        crs=src.crs,
        transform=transform,
        nodata=src.nodata,
        georef=georeferencing(src),
    )


def check_scene_size(info: RasterInfo, max_pixels: int) -> None:
    """Refuse a scene too large to process in one piece in whole-image mode (check_pixel_budget)."""
    check_pixel_budget(info.path, info.width, info.height, max_pixels, "whole")


def source_info(source: PixelSource) -> RasterInfo:
    """What the writers need to know about an input read by the pixel reader (see raster_info).

    The georeferencing comes from the GDAL header; an image GDAL could not open, or one turned upright
    by its EXIF orientation (never a georeferenced one), is described in pixel space at its shown size.
    """
    if source.header is not None and source.orientation == 1:
        return raster_info(source.header)
    return RasterInfo(path=source.name, width=source.width, height=source.height, count=source.count,
                      dtypes=tuple(source.dtypes), crs=None, transform=Affine.identity(), nodata=None,
                      georef=NO_GEOREFERENCING)
