"""What an input raster's georeferencing is, and what each output carries of it.

GeoTIFF inference I/O; not in the paper. georeferencing() decides once per input; the mask GeoTIFF,
the vectors, summary.json and the web service all ask the Georeferencing it returns (docs/predict.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError, ProjError
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.io import DatasetReader
from rasterio.rpc import RPC

from georeason.errors import GeoreasonError

# The kinds, most informative first: a dataset with a geotransform is placed by it even if it also
# carries GCPs or RPCs (GDAL does the same); RPCs are kept in the mask GeoTIFF whatever the kind.
KINDS = {
    "crs_transform": "a CRS and a geotransform",
    "transform_only": "a geotransform without a CRS",
    "gcps": "ground control points (GCPs) without a geotransform",
    "rpcs": "rational polynomial coefficients (RPCs, a sensor model) without a geotransform",
    "crs_only": "a CRS without a geotransform",
    "none": "no georeferencing",
}

PIXEL_AXES = "pixel coordinates (x = column, y = row, pointing down)"

# pixel -> map: an Affine, or a callable taking an [n, 2] float array of (column, row) pixel-corner
# coordinates and returning the [n, 2] map (x, y) coordinates.
PixelToMap = Affine | Callable[[np.ndarray], np.ndarray]

try:  # GDAL errors surface as rasterio._err.CPLE_*; they are not RasterioError subclasses.
    from rasterio._err import CPLE_BaseError as _GdalError
except ImportError:  # pragma: no cover - layout of a future rasterio
    from rasterio.errors import RasterioError as _GdalError


def gcp_polynomial_order(count: int) -> int:
    """The polynomial order GDAL's GCP transformer picks for `count` GCPs when not told (as gdalwarp does)."""
    return 1 if count < 6 else 2 if count < 10 else 3


def crs_label(crs: Any) -> str:
    """A short name for a CRS: its authority code (EPSG:32633) or, for a CRS without one, its WKT name."""
    if crs is None:
        return "no CRS"
    code = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    if code is not None:
        return f"EPSG:{code}"
    try:
        name = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs).name
    except CRSError:
        name = ""
    return f'"{name}"' if name else str(crs)[:60]


def crs_kind(crs: Any) -> str | None:
    """'geographic', 'projected', 'engineering' (a local CRS) or 'other' (compound, geocentric ...)."""
    if crs is None:
        return None
    try:
        proj = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
    except CRSError:
        return "other"
    if proj.is_engineering:
        return "engineering"
    return "geographic" if proj.is_geographic else "projected" if proj.is_projected else "other"


class NoLonLatError(GeoreasonError):
    """Polygons that cannot be written as GeoJSON, whose coordinates are EPSG:4326 lon/lat (RFC 7946); a
    GeoPackage can hold them.

    `where`: the file or input named; `reason`: why, without advice; `keeps`: what a GeoPackage keeps. The
    message advises the Python API (driver='GPKG'); a front end words its own advice with `advising` (its
    option's name), and one that writes a GeoPackage anyway can use `reason` alone.
    """

    def __init__(self, where: str, reason: str, keeps: str):
        self.where, self.reason, self.keeps = where, reason, keeps
        super().__init__(self.advising("driver='GPKG'"))

    def __reduce__(self):  # rebuilt from its fields when it crosses processes (Ray workers)
        return type(self), (self.where, self.reason, self.keeps)

    def advising(self, how: str) -> str:
        """The message with `how` as the way to write a GeoPackage."""
        return f"{self.where}: {self.reason}; write a GeoPackage instead ({how}), which keeps {self.keeps}"


def wgs84_transformer(crs: Any, what: str) -> Transformer:
    """A pyproj transformer from `crs` to EPSG:4326 lon/lat, or NoLonLatError naming `what` and why not.

    A local/engineering CRS (LOCAL_CS / ENGCRS, as drone, CAD and some GIS tools write) has no relation
    to the Earth, so PROJ refuses it; the message suggests a GeoPackage, which keeps any CRS.
    """
    try:
        source = ProjCRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        return Transformer.from_crs(source, "EPSG:4326", always_xy=True)
    except (CRSError, ProjError) as exc:
        kind = crs_kind(crs)
        why = ("a local/engineering CRS, not tied to the Earth" if kind == "engineering"
               else f"not transformable by PROJ ({exc})")
        raise NoLonLatError(what, f"the CRS {crs_label(crs)} is {why}, so the polygons cannot be expressed in "
                            "EPSG:4326 (lon/lat), which GeoJSON (RFC 7946) requires", "the source CRS") from exc


class GcpMapping:
    """Pixel -> map coordinates through GDAL's GCP polynomial transformer (rasterio's GCPTransformer).

    The order is chosen by GDAL from the GCP count (1 below 6 GCPs, 2 below 10, else 3), as gdalwarp
    does by default, so polygons land where a gdalwarp of the mask GeoTIFF puts its pixels.
    """

    def __init__(self, gcps: tuple[GroundControlPoint, ...]) -> None:
        self.gcps = gcps
        self.order = gcp_polynomial_order(len(gcps))
        self.linear = self.order == 1  # affine: straight pixel edges stay straight, no need to cut them

    def __call__(self, pixel_xy: np.ndarray) -> np.ndarray:
        from rasterio.transform import GCPTransformer

        pixel_xy = np.asarray(pixel_xy, dtype=np.float64).reshape(-1, 2)
        if not len(pixel_xy):
            return pixel_xy
        with GCPTransformer(list(self.gcps)) as transformer:
            xs, ys = transformer.xy(pixel_xy[:, 1], pixel_xy[:, 0], offset="ul")
        return np.column_stack([np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)])


@dataclass(frozen=True)
class Georeferencing:
    """How an input raster is placed on the Earth (one of KINDS) and what each output can carry.

    `crs` is the CRS of the geotransform or of the GCPs (None when there is none); `transform` is the
    geotransform (identity unless the kind is crs_transform or transform_only); `gcps` and `rpcs` are
    the dataset's GCPs and RPCs, carried to the mask GeoTIFF whatever the kind.
    """

    kind: str
    crs: CRS | None = None
    transform: Affine = Affine.identity()
    gcps: tuple[GroundControlPoint, ...] = ()
    rpcs: RPC | None = None
    gcp_problem: str | None = None  # why GDAL could not fit a transform to the GCPs

    @property
    def rotated(self) -> bool:
        """True when the geotransform rotates or shears the pixel grid (not north-up)."""
        return self.kind in ("crs_transform", "transform_only") and (self.transform.b != 0 or self.transform.d != 0)

    @property
    def pixel_to_map(self) -> PixelToMap | None:
        """What maps pixel corners to map coordinates: the geotransform, the GCP transformer, or None."""
        if self.kind in ("crs_transform", "transform_only"):
            return self.transform
        if self.kind == "gcps" and self.gcp_problem is None:
            return GcpMapping(self.gcps)
        return None

    @property
    def map_crs(self) -> CRS | None:
        """The CRS of the map coordinates that pixel_to_map gives (None: pixel coordinates, or no CRS)."""
        return self.crs if self.pixel_to_map is not None else None

    @property
    def georeferenced(self) -> bool:
        """True when outputs get map coordinates in a known CRS (a geotransform or GCPs, with a CRS)."""
        return self.map_crs is not None

    @functools.cached_property
    def wgs84_problem(self) -> str | None:
        """Why the map coordinates cannot be expressed in EPSG:4326 lon/lat (no advice), or None when they can.

        Pixel-coordinate kinds (rpcs, crs_only, none) return None: they have no map coordinates to convert.
        """
        if self.pixel_to_map is None:
            return None
        if self.crs is None:
            placed_by = "GCPs have" if self.kind == "gcps" else "geotransform has"
            return (f"the input's {placed_by} no CRS, so its map coordinates cannot be expressed in EPSG:4326 "
                    "(lon/lat), which GeoJSON (RFC 7946) requires")
        try:
            wgs84_transformer(self.crs, "the input")
        except NoLonLatError as error:
            return error.reason
        return None

    def describe(self) -> str:
        """One phrase saying what the georeferencing is, e.g. '4 GCPs in EPSG:4326 (no geotransform)'."""
        crs = crs_label(self.crs)
        if self.kind == "crs_transform":
            local = " (a local/engineering CRS)" if crs_kind(self.crs) == "engineering" else ""
            grid = "a rotated geotransform" if self.rotated else "a north-up geotransform"
            text = f"{crs}{local} with {grid}"
        elif self.kind == "transform_only":
            text = f"{'a rotated' if self.rotated else 'a'} geotransform without a CRS"
        elif self.kind == "gcps":
            text = f"{len(self.gcps)} GCPs in {crs} (no geotransform)"
        elif self.kind == "rpcs":
            text = "RPCs (a sensor model; no geotransform)"
        elif self.kind == "crs_only":
            text = f"the CRS {crs} without a geotransform"
        else:
            text = "no georeferencing"
        if self.rpcs is not None and self.kind != "rpcs":
            text += ", plus RPCs"
        return text

    def geotiff_items(self) -> dict[str, Any]:
        """rasterio open() arguments that give a GeoTIFF this georeferencing (as gdal_translate copies it)."""
        items: dict[str, Any] = {}
        if self.kind == "crs_transform":
            items.update(crs=self.crs, transform=self.transform)
        elif self.kind == "transform_only":
            items.update(transform=self.transform)
        elif self.kind == "gcps":
            items.update(gcps=list(self.gcps), crs=self.crs)  # rasterio writes `crs` as the GCPs' CRS
        elif self.kind == "crs_only":
            items.update(crs=self.crs)
        if self.rpcs is not None:
            items.update(rpcs=self.rpcs)
        return items

    def mask_geotiff_carries(self) -> str:
        """What the mask GeoTIFF keeps of this georeferencing (everything; said in words for the summary)."""
        parts = {
            "crs_transform": f"the CRS {crs_label(self.crs)} and the geotransform",
            "transform_only": "the geotransform (no CRS: the input has none)",
            "gcps": f"the {len(self.gcps)} GCPs and their CRS {crs_label(self.crs)}",
            "rpcs": "the RPCs",
            "crs_only": f"the CRS {crs_label(self.crs)} (no geotransform: the input has none)",
            "none": "no georeferencing (the input has none)",
        }
        text = parts[self.kind]
        return text + (" and the RPCs" if self.rpcs is not None and self.kind != "rpcs" else "")

    def vector_coordinates(self, driver: str) -> str:
        """What coordinates the polygons get for `driver` ('GPKG' or 'GeoJSON')."""
        mapping = self.pixel_to_map
        if mapping is None:
            return PIXEL_AXES + ", no CRS"
        if self.kind == "gcps":
            via = f" through GDAL's GCP transformer (polynomial order {gcp_polynomial_order(len(self.gcps))})"
        else:
            via = " through the rotated geotransform" if self.rotated else ""
        if driver == "GeoJSON":
            return f"EPSG:4326 lon/lat, from {crs_label(self.crs)}{via}"
        if self.crs is None:
            return f"map coordinates without a CRS{via}"
        return f"{crs_label(self.crs)}{via}"

    def vector_note(self, path: Any, driver: str) -> str | None:
        """What the user must be told about the polygons written to `path` (None for plain CRS + transform).

        Raises NoLonLatError when `driver` is GeoJSON and the map coordinates cannot be put in EPSG:4326.
        """
        if driver == "GeoJSON" and self.wgs84_problem is not None:
            keeps = "the coordinates without a CRS" if self.crs is None else "the source CRS"
            raise NoLonLatError(str(path), self.wgs84_problem, keeps)
        geojson_pixels = ("; GeoJSON readers will assume lon/lat degrees, so prefer .gpkg for pixel coordinates"
                          if driver == "GeoJSON" else "")
        if self.kind == "crs_transform":
            return None
        if self.kind == "transform_only":
            return (f"{path}: the input has a geotransform but no CRS, so the polygons are in the geotransform's "
                    "map coordinates and the file has no CRS; assign the CRS in your GIS")
        if self.kind == "gcps" and self.gcp_problem is None:
            return (f"{path}: the input is georeferenced by {len(self.gcps)} GCPs only (no geotransform); the "
                    f"polygons are in {self.vector_coordinates(driver)}, and the mask GeoTIFF keeps the GCPs")
        if self.kind == "gcps":
            return (f"{path}: the input has {len(self.gcps)} GCPs but GDAL cannot fit a transform to them "
                    f"({self.gcp_problem}), so the polygons are in {PIXEL_AXES} and the file has no CRS; the mask "
                    f"GeoTIFF keeps the GCPs{geojson_pixels}")
        if self.kind == "rpcs":
            return (f"{path}: the input is georeferenced by RPCs only (a sensor model that needs terrain heights), "
                    f"so the polygons are in {PIXEL_AXES} and the file has no CRS; the mask GeoTIFF keeps the "
                    f"RPCs, so gdalwarp -rpc (with -to RPC_DEM=dem.tif) can orthorectify it{geojson_pixels}")
        if self.kind == "crs_only":
            return (f"{path}: the input has the CRS {crs_label(self.crs)} but no geotransform, so the polygons are "
                    f"in {PIXEL_AXES} and the file has no CRS; the mask GeoTIFF keeps the CRS{geojson_pixels}")
        return (f"{path}: the input has no georeferencing, so the polygons are in {PIXEL_AXES} and the file has "
                f"no CRS{geojson_pixels}")

    def to_dict(self) -> dict[str, Any]:
        """The summary.json record: kind, description, CRS, transform, GCP/RPC presence, what is carried."""
        has_transform = self.kind in ("crs_transform", "transform_only")
        return {
            "kind": self.kind,
            "description": self.describe(),
            "crs": None if self.crs is None else self.crs.to_string(),
            "crs_kind": crs_kind(self.crs),
            "transform": list(self.transform)[:6] if has_transform else None,
            "rotated": self.rotated,
            "gcps": len(self.gcps),
            "gcp_transform": (None if self.kind != "gcps" or self.gcp_problem is not None
                              else f"GDAL GCP polynomial, order {gcp_polynomial_order(len(self.gcps))}"),
            "gcp_problem": self.gcp_problem,
            "rpcs": self.rpcs is not None,
            "mask_geotiff": self.mask_geotiff_carries(),
            "vectors": self.vector_coordinates("GPKG"),
            "geojson": self.wgs84_problem or self.vector_coordinates("GeoJSON"),
        }


NONE = Georeferencing("none")


def _gcp_problem(gcps: tuple[GroundControlPoint, ...]) -> str | None:
    """None if GDAL can fit its GCP transformer to `gcps` and map a point with it, else GDAL's reason."""
    if len(gcps) < 3:
        return f"{len(gcps)} GCP(s); at least 3 not on one line are needed"
    try:
        mapped = GcpMapping(gcps)(np.array([[gcps[0].col, gcps[0].row]]))
    except _GdalError as exc:
        return str(exc).strip() or type(exc).__name__
    if not np.isfinite(mapped).all():
        return "the fitted transform gives non-finite coordinates"
    return None


def georeferencing(src: DatasetReader) -> Georeferencing:
    """Decide what an open raster's georeferencing is (see KINDS); never raises for a readable raster.

    A geotransform that is the identity is GDAL's "none" (rasterio cannot tell them apart), so a raster
    whose transform is exactly the identity counts as having no geotransform.
    """
    transform = src.transform
    crs = src.crs
    rpcs = src.rpcs
    if not transform.is_identity:
        return Georeferencing("crs_transform" if crs is not None else "transform_only", crs, transform, rpcs=rpcs)
    gcps, gcp_crs = src.gcps
    if gcps:
        gcps = tuple(gcps)
        return Georeferencing("gcps", gcp_crs, gcps=gcps, rpcs=rpcs, gcp_problem=_gcp_problem(gcps))
    if rpcs is not None:
        return Georeferencing("rpcs", rpcs=rpcs)
    if crs is not None:
        return Georeferencing("crs_only", crs)
    return NONE
