"""Rasters of every kind of georeferencing for the georeferencing tests (each made on the fly)."""

from __future__ import annotations

import warnings

import numpy as np
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC
from rasterio.transform import from_origin

WIDTH, HEIGHT = 40, 30
LOCAL_WKT = ('LOCAL_CS["Unknown",UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
             'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
ROTATED = Affine.translation(500_000, 4_000_000) @ Affine.rotation(30) @ Affine.scale(10, -10)


def skewed(col, row):
    """The affine map the 4-GCP raster is built from: lon/lat degrees, sheared (not north-up)."""
    return 10.0 + 0.001 * col + 0.0002 * row, 45.0 - 0.0008 * row + 0.0001 * col


def curved(col, row):
    """A quadratic map for the 16-GCP raster; GDAL's order-3 polynomial (>= 10 GCPs) reproduces it exactly."""
    return 500_000.0 + 10.0 * col + 0.05 * col * row, 4_000_000.0 - 10.0 * row + 0.02 * col * col


def _gcps(mapping, points) -> list[GroundControlPoint]:
    return [GroundControlPoint(row, col, *mapping(col, row)) for col, row in points]


def _rpc() -> RPC:
    """A valid, simple RPC sensor model (sample = longitude, line = latitude, no height term)."""
    num_line, num_samp, den = [0.0] * 20, [0.0] * 20, [1.0] + [0.0] * 19
    num_line[2], num_samp[1] = -1.0, 1.0
    return RPC(height_off=100, height_scale=500, lat_off=45.0, lat_scale=0.01, line_den_coeff=den,
               line_num_coeff=num_line, line_off=HEIGHT / 2, line_scale=HEIGHT / 2, long_off=10.0,
               long_scale=0.01, samp_den_coeff=den, samp_num_coeff=num_samp, samp_off=WIDTH / 2,
               samp_scale=WIDTH / 2, err_bias=1.0, err_rand=0.5)


CORNERS = [(0, 0), (WIDTH, 0), (0, HEIGHT), (WIDTH, HEIGHT)]
GRID = [(c, r) for r in (0, 10, 20, 30) for c in (0, 13, 27, 40)]
KINDS = {
    "north_up": dict(crs="EPSG:32633", transform=from_origin(500_000, 4_000_000, 10, 10)),
    "rotated": dict(crs="EPSG:32633", transform=ROTATED),
    "geographic": dict(crs="EPSG:4326", transform=from_origin(10.0, 46.0, 0.001, 0.001)),
    "local": dict(crs=rasterio.crs.CRS.from_wkt(LOCAL_WKT), transform=from_origin(50, 70, 0.25, 0.25)),
    "transform_only": dict(transform=from_origin(1000, 2000, 2, 2)),
    "gcps": dict(gcps=_gcps(skewed, CORNERS), crs="EPSG:4326"),
    "gcps_curved": dict(gcps=_gcps(curved, GRID), crs="EPSG:32633"),
    "gcps_on_a_line": dict(gcps=_gcps(skewed, [(0, 0), (10, 10), (20, 20)]), crs="EPSG:4326"),
    "rpcs": dict(rpcs=_rpc()),
    "crs_only": dict(crs="EPSG:32633"),
    "none": dict(),
}


def textured(seed: int = 0) -> np.ndarray:
    """uint8 [3, HEIGHT, WIDTH] with structure at several scales, so a random model gives a non-trivial mask."""
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    noise = np.random.default_rng(seed).integers(0, 60, (3, HEIGHT, WIDTH))
    waves = np.stack([np.sin(rows / 3.0) * 90, np.cos(cols / 5.0) * 90, np.sin((rows + cols) / 7.0) * 90])
    return np.clip(128 + waves + noise, 1, 255).astype(np.uint8)


def write_kind(path, kind: str, data: np.ndarray | None = None):
    """A WIDTH x HEIGHT uint8 GeoTIFF georeferenced the way `kind` names (see KINDS); 3 bands by default."""
    if data is None:
        data = (np.arange(3 * HEIGHT * WIDTH) % 251 + 1).astype(np.uint8).reshape(3, HEIGHT, WIDTH)
    count = data.shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", driver="GTiff", width=WIDTH, height=HEIGHT, count=count, dtype="uint8",
                           **KINDS[kind]) as out:
            out.write(data)
    return path
