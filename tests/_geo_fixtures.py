"""Small georeferenced rasters for the geo tests (UTM 33N, 10 m pixels, a known origin)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

CRS = "EPSG:32633"
ORIGIN_X, ORIGIN_Y, PIXEL = 500_000.0, 4_000_000.0, 10.0
TRANSFORM = Affine(PIXEL, 0.0, ORIGIN_X, 0.0, -PIXEL, ORIGIN_Y)  # north-up, origin at the top-left corner


def write_geotiff(
    path: Path, data: np.ndarray, nodata: float | None = None, crs: str | None = CRS, tiled: bool = False
) -> Path:
    """Write [bands, h, w] `data` as a GeoTIFF in UTM 33N (or without georeferencing if crs is None)."""
    count, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=data.dtype.name, nodata=nodata)
    if crs is not None:
        profile.update(crs=crs, transform=TRANSFORM)
    if tiled:
        profile.update(tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as out:
            out.write(data)
    return path


def position_image(height: int, width: int) -> np.ndarray:
    """uint8 [3, h, w], never 0, whose band 1 encodes the pixel position, so tile placement errors show."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([(rows * 7 + cols * 3) % 251 + 1, rows % 255 + 1, cols % 255 + 1]).astype(np.uint8)


def leftovers(folder: Path) -> list[str]:
    """Temporary files a failed write might have left behind."""
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)
