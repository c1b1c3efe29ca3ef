"""Vector output: mask -> polygons (holes kept) -> GeoPackage or RFC 7946 GeoJSON that QGIS opens.

GeoTIFF inference I/O (docs/predict.md); not in the paper. Areas are in the source map units; what the
coordinates are for each kind of georeferencing is decided by geo/georef.py.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from rasterio.features import shapes
from shapely.geometry import Polygon, shape

from georeason.errors import GeoreasonError
from georeason.geo.atomic import atomic_output
from georeason.geo.georef import PIXEL_AXES, NoLonLatError, PixelToMap, wgs84_transformer

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


@dataclass
class PolygonResult:
    """Polygons of a mask, largest first, and what was dropped as too small."""

    polygons: list[Polygon]
    dropped_small: int = 0
    dropped_area: float = 0.0
    areas: list[float] = field(default_factory=list)  # area of each kept polygon before simplification


def mask_to_polygons(
    mask: np.ndarray,
    transform: PixelToMap | None = None,
    simplify_tolerance: float = 0.0,
    min_area: float = 0.0,
) -> PolygonResult:
    """Polygonise the nonzero pixels of a 2-D mask (4-connected regions, holes preserved).

    `transform` maps pixel corners to map coordinates: an Affine geotransform, or a callable taking an
    [n, 2] float64 array of (column, row) and returning [n, 2] map (x, y), such as the GCP transformer
    of Georeferencing.pixel_to_map (edges are then cut into 1-pixel segments first, so a nonlinear
    mapping bends them as it bends the raster, unless the callable has a true `linear` attribute).
    None means pixel coordinates (x = column, y = row, pointing down). Regions smaller than `min_area`
    (map units squared) are dropped and counted; `simplify_tolerance` (map units) simplifies while
    preserving topology.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise GeoreasonError(f"mask: expected a 2-D mask, got shape {mask.shape}")
    if simplify_tolerance < 0 or min_area < 0:
        raise GeoreasonError("simplify_tolerance and min_area must be >= 0")
    inside = mask != 0
    result = PolygonResult(polygons=[])
    if not inside.any():
        return result
    mapping = None if transform is None or isinstance(transform, Affine) else transform
    affine = transform if isinstance(transform, Affine) else Affine.identity()
    polygons = [shape(geometry) for geometry, _ in
                shapes(inside.astype(np.uint8), mask=inside, connectivity=4, transform=affine)]
    if mapping is not None:  # one call for all vertices: the GCP transformer is set up once
        pixel_polygons = np.asarray(polygons, dtype=object)
        if not getattr(mapping, "linear", False):
            pixel_polygons = shapely.segmentize(pixel_polygons, 1.0)
        polygons = list(shapely.transform(pixel_polygons, mapping))
    found: list[tuple[float, Polygon]] = []
    for polygon in polygons:
        if polygon.area < min_area:
            result.dropped_small += 1
            result.dropped_area += polygon.area
            continue
        area = polygon.area
        if simplify_tolerance > 0:
            polygon = polygon.simplify(simplify_tolerance, preserve_topology=True)
        found.append((area, polygon))
    found.sort(key=lambda item: item[0], reverse=True)
    result.areas = [area for area, _ in found]
    result.polygons = [polygon for _, polygon in found]
    return result


@dataclass
class VectorResult:
    """What write_vectors wrote; `warning` is a message for the CLI to print, or None."""

    path: Path
    driver: str
    count: int
    georeferenced: bool
    crs: str | None  # the CRS written, e.g. "EPSG:4326" for GeoJSON; None for pixel coordinates
    warning: str | None
    coordinates: str = "map"  # "map" (in `crs`, or in a geotransform's units when crs is None) or "pixel"


def _driver_for(path: Path, driver: str | None) -> str:
    if driver is not None:
        if driver not in ("GPKG", "GeoJSON"):
            raise GeoreasonError(f"{path}: vector driver {driver!r} is not supported; use GPKG or GeoJSON")
        return driver
    suffix = path.suffix.lower()
    if suffix not in DRIVERS:
        raise GeoreasonError(f"{path}: cannot tell the vector format from the extension; use .gpkg or .geojson")
    return DRIVERS[suffix]


def _area_unit(crs: ProjCRS | None, coordinates: str) -> str:
    if crs is None:
        return "pixel^2" if coordinates == "pixel" else "map unit^2"
    unit = crs.axis_info[0].unit_name if crs.axis_info else "unknown"
    return {"metre": "m^2", "degree": "degree^2"}.get(unit, f"{unit}^2")


def _field_column(name: str, value: Any, count: int) -> np.ndarray:
    """A per-feature column from a scalar (repeated) or a sequence of one value per polygon."""
    if isinstance(value, (str, bytes, int, float, np.number)) or value is None:
        values: Sequence[Any] = [value] * count
    else:
        values = list(value)
        if len(values) != count:
            raise GeoreasonError(f"attributes[{name!r}]: {len(values)} values for {count} polygons")
    if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in values) and count:
        return np.asarray(values, dtype=np.float64)
    return np.asarray(["" if v is None else str(v) for v in values], dtype=object)


def write_vectors(
    path: str | os.PathLike[str],
    polygons: Sequence[Polygon] | PolygonResult,
    attributes: dict[str, Any],
    crs: Any,
    driver: str | None = None,
    overwrite: bool = False,
    layer: str = "georeason",
    coordinates: str = "pixel",
    note: str | None = None,
) -> VectorResult:
    """Write polygons with attributes (e.g. question, answer, model, source) plus `area` and `area_unit`.

    `crs` is the CRS of the polygons (anything pyproj accepts, e.g. a rasterio CRS) or None. GeoJSON is
    reprojected to EPSG:4326 lon/lat (RFC 7946); GeoPackage keeps `crs`. Without a CRS nothing is
    reprojected and no CRS is written; `coordinates` then says whether the polygons are "pixel"
    coordinates or "map" coordinates of a geotransform without CRS (for `area_unit`). `note` is what to
    tell the user (VectorResult.warning; Georeferencing.vector_note writes it); by default, a CRS-less
    file gets a note saying it is in pixel coordinates.
    Raises GeoreasonError when the CRS cannot be expressed in EPSG:4326 for GeoJSON (e.g. a local CRS),
    or a polygon falls where that conversion has no answer.
    """
    path = Path(path)
    driver = _driver_for(path, driver)
    if isinstance(polygons, PolygonResult):
        polygons = polygons.polygons
    geometries = list(polygons)
    for index, geometry in enumerate(geometries):
        if not isinstance(geometry, Polygon):
            raise GeoreasonError(f"polygons[{index}]: expected a shapely Polygon, got {type(geometry).__name__}")
    source_crs = None if crs is None else ProjCRS.from_user_input(getattr(crs, "to_wkt", lambda: crs)())
    columns: dict[str, np.ndarray] = {
        name: _field_column(name, value, len(geometries)) for name, value in attributes.items()
    }
    columns["area"] = np.asarray([g.area for g in geometries], dtype=np.float64)
    if coordinates not in ("pixel", "map"):
        raise GeoreasonError(f"coordinates: expected 'pixel' or 'map', got {coordinates!r}")
    coordinates = "map" if source_crs is not None else coordinates
    columns["area_unit"] = np.asarray([_area_unit(source_crs, coordinates)] * len(geometries), dtype=object)

    warning = note
    written_crs: str | None = None
    layer_options: dict[str, str] = {}
    if source_crs is None:
        if warning is None and coordinates == "pixel":
            warning = (f"{path}: the polygons are in {PIXEL_AXES} and the file has no CRS")
            if driver == "GeoJSON":
                warning += "; GeoJSON readers will assume lon/lat degrees, so prefer .gpkg for pixel coordinates"
        elif driver == "GeoJSON" and coordinates == "map":
            raise NoLonLatError(str(path), "the polygons are in the map coordinates of a geotransform without a "
                                "CRS, which cannot be expressed in EPSG:4326 (lon/lat) as GeoJSON (RFC 7946) requires",
                                "the coordinates without a CRS")
    elif driver == "GeoJSON":
        to_wgs84 = wgs84_transformer(source_crs, str(path))
        geometries = list(shapely.transform(np.asarray(geometries, dtype=object),
                                            lambda xy: np.column_stack(to_wgs84.transform(xy[:, 0], xy[:, 1]))))
        if geometries and not np.isfinite(shapely.get_coordinates(np.asarray(geometries, dtype=object))).all():
            raise NoLonLatError(str(path), f"some polygon vertices lie where the CRS {source_crs.name!r} has no "
                                "EPSG:4326 (lon/lat) equivalent", "the source CRS")
        written_crs = "EPSG:4326"
        layer_options["RFC7946"] = "YES"
    else:
        written_crs = source_crs.to_string()
    wkb = np.asarray(shapely.to_wkb(np.asarray(geometries, dtype=object)) if geometries else [], dtype=object)
    crs_wkt = None if written_crs is None else ProjCRS.from_user_input(written_crs).to_wkt()
    with atomic_output(path, overwrite=overwrite) as temporary, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="'crs' was not provided")  # reported via `warning`
        pyogrio.raw.write(
            temporary, wkb, list(columns.values()), list(columns), layer=layer, driver=driver,
            geometry_type="Polygon", crs=crs_wkt, promote_to_multi=False, layer_options=layer_options or None,
        )
    return VectorResult(path, driver, len(geometries), source_crs is not None, written_crs, warning, coordinates)
