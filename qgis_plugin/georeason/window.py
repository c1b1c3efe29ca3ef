"""The pixel window of a raster that covers an area (no QGIS imports: unit-tested).

QGIS plugin (docs/qgis.md); not in the paper. The window is whole pixels of the layer's own grid, so
the mask the service returns for it has the layer's CRS, pixel size and grid (only the origin moves,
by whole pixels); nothing is resampled.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

# Corners closer than this (in pixels) to a pixel edge are taken to lie on it (floating-point noise of
# extents that were themselves computed from the grid).
SNAP_PIXELS = 1e-6


class AreaError(Exception):
    """The area cannot be cut from the layer; str() says why, for the user."""


def invert(geotransform: Sequence[float]) -> tuple[float, ...]:
    """The inverse of a GDAL geotransform (x0, a, b, y0, d, e): map (x, y) -> pixel (col, row)."""
    x0, a, b, y0, d, e = geotransform
    det = a * e - b * d
    if det == 0:
        raise AreaError("the layer's geotransform is degenerate (zero pixel size); it cannot be cut")
    return (-(e * x0 - b * y0) / det, e / det, -b / det, -(-d * x0 + a * y0) / det, -d / det, a / det)


def _edge(value: float, round_down: bool) -> int:
    nearest = round(value)
    if abs(value - nearest) < SNAP_PIXELS:
        return int(nearest)
    return math.floor(value) if round_down else math.ceil(value)


def pixel_window(geotransform: Sequence[float], width: int, height: int,
                 points: Iterable[tuple[float, float]]) -> tuple[int, int, int, int]:
    """(col_off, row_off, cols, rows): the whole pixels of a width x height raster that cover `points`
    (map coordinates in the raster's CRS, e.g. the corners of an extent), clipped to the raster.

    Raises AreaError when the points are outside the raster.
    """
    inverse = invert(geotransform)
    cols, rows = [], []
    for x, y in points:
        cols.append(inverse[0] + inverse[1] * x + inverse[2] * y)
        rows.append(inverse[3] + inverse[4] * x + inverse[5] * y)
    if not cols:
        raise AreaError("the area is empty")
    left, right = max(0, _edge(min(cols), True)), min(width, _edge(max(cols), False))
    top, bottom = max(0, _edge(min(rows), True)), min(height, _edge(max(rows), False))
    if right <= left or bottom <= top:
        raise AreaError("the area does not overlap the layer (check that the extent or polygon is over the "
                        "layer; they are compared in the layer's CRS)")
    return left, top, right - left, bottom - top


def window_geotransform(geotransform: Sequence[float], col_off: int, row_off: int) -> tuple[float, ...]:
    """The geotransform of the window starting at (col_off, row_off): the same grid, origin moved."""
    x0, a, b, y0, d, e = geotransform
    return (x0 + a * col_off + b * row_off, a, b, y0 + d * col_off + e * row_off, d, e)
