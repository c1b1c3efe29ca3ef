"""Every kind of georeferencing reaches every output: mask GeoTIFF (whole and tiled), vectors, notes.

No model here (see test_georeferencing_runs.py for the CLI and the web service). Each raster is made
by the test; the expected coordinates come from the mapping the raster was built with.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin
from shapely.geometry import Polygon, box

from georeason.errors import GeoreasonError
from georeason.geo import (
    NoLonLatError,
    mask_to_polygons,
    open_raster,
    raster_info,
    run_tiled,
    write_mask_geotiff,
    write_vectors,
)
from georeason.reasoner import load_input, save_mask_vectors
from tests._georef_fixtures import HEIGHT, KINDS, ROTATED, WIDTH, curved, skewed, write_kind

ATTRIBUTES = {"question": "q", "answer": "a", "model": "m", "source": "s"}
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def info_of(path):
    with open_raster(path) as src:
        return raster_info(src)


def _mask() -> np.ndarray:
    """A 10 x 10 px square: columns 5..15, rows 10..20 (pixel corners)."""
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[10:20, 5:15] = True
    return mask


def _polygons(path) -> list[Polygon]:
    return [shapely.from_wkb(g) for g in pyogrio.raw.read(path)[2]]


def _marked(kind: str, name: str, handling: str):
    return pytest.param(kind, marks=pytest.mark.input_kind("georeferencing", name, handling), id=kind)


EXPECTED = [
    ("north_up", "crs_transform", "EPSG:32633 with a north-up geotransform"),
    ("rotated", "crs_transform", "EPSG:32633 with a rotated geotransform"),
    ("geographic", "crs_transform", "EPSG:4326 with a north-up geotransform"),
    ("local", "crs_transform", '"Unknown" (a local/engineering CRS) with a north-up geotransform'),
    ("transform_only", "transform_only", "a geotransform without a CRS"),
    ("gcps", "gcps", "4 GCPs in EPSG:4326 (no geotransform)"),
    ("gcps_curved", "gcps", "16 GCPs in EPSG:32633 (no geotransform)"),
    ("gcps_on_a_line", "gcps", "3 GCPs in EPSG:4326 (no geotransform)"),
    ("rpcs", "rpcs", "RPCs (a sensor model; no geotransform)"),
    ("crs_only", "crs_only", "the CRS EPSG:32633 without a geotransform"),
    ("none", "none", "no georeferencing"),
]


@pytest.mark.parametrize("kind, decided, described", EXPECTED, ids=[e[0] for e in EXPECTED])
def test_one_function_decides_each_kind(tmp_path, kind, decided, described):
    info = info_of(write_kind(tmp_path / f"{kind}.tif", kind))
    georef = info.georef
    assert (georef.kind, georef.describe()) == (decided, described)
    record = georef.to_dict()
    assert record["kind"] == decided and record["description"] == described
    assert record["rotated"] is (kind == "rotated")
    assert record["gcps"] == len(KINDS[kind].get("gcps", [])) and record["rpcs"] is (kind == "rpcs")
    crs_kinds = {"north_up": "projected", "rotated": "projected", "geographic": "geographic", "local": "engineering",
                 "gcps": "geographic", "gcps_curved": "projected", "gcps_on_a_line": "geographic",
                 "crs_only": "projected"}
    assert record["crs_kind"] == crs_kinds.get(kind)
    # Map coordinates with a CRS only through a geotransform or fitted GCPs.
    assert info.georeferenced is (kind in ("north_up", "rotated", "geographic", "local", "gcps", "gcps_curved"))
    if kind == "gcps_on_a_line":
        assert "not solvable" in record["gcp_problem"] and georef.pixel_to_map is None
    if kind in ("gcps", "gcps_curved"):
        assert record["gcp_transform"] == f"GDAL GCP polynomial, order {1 if kind == 'gcps' else 3}"


MASK_CASES = [
    _marked("north_up", "CRS + north-up geotransform", "mask GeoTIFF keeps the CRS and geotransform"),
    _marked("rotated", "rotated geotransform", "mask GeoTIFF keeps the rotated geotransform and CRS"),
    _marked("geographic", "geographic CRS (EPSG:4326)", "mask GeoTIFF keeps the CRS and geotransform"),
    _marked("local", "local/engineering CRS (LOCAL_CS)", "mask GeoTIFF keeps the local CRS and geotransform"),
    _marked("transform_only", "geotransform without CRS", "mask GeoTIFF keeps the geotransform, no CRS invented"),
    _marked("gcps", "GCPs only (Sentinel-1 GRD)", "mask GeoTIFF keeps the GCPs and their CRS, as gdal_translate"),
    _marked("gcps_on_a_line", "GCPs GDAL cannot fit (collinear)", "mask GeoTIFF still keeps the GCPs and their CRS"),
    _marked("rpcs", "RPCs only (L1 optical sensor model)", "mask GeoTIFF keeps the RPCs"),
    _marked("crs_only", "CRS without geotransform", "mask GeoTIFF keeps the CRS"),
    _marked("none", "no georeferencing (plain image)", "mask GeoTIFF without CRS or transform"),
]


def _same_georeferencing(written, source) -> None:
    assert written.kind == source.kind
    assert written.crs == source.crs and written.transform == source.transform
    assert [(g.row, g.col, g.x, g.y) for g in written.gcps] == [(g.row, g.col, g.x, g.y) for g in source.gcps]
    assert (written.rpcs is None) == (source.rpcs is None)
    if source.rpcs is not None:
        assert written.rpcs.to_dict() == source.rpcs.to_dict()


@pytest.mark.parametrize("kind", MASK_CASES)
def test_mask_geotiff_whole_and_tiled_carries_the_georeferencing(tmp_path, kind):
    source_path = write_kind(tmp_path / f"{kind}.tif", kind)
    info = info_of(source_path)
    write_mask_geotiff(tmp_path / "whole.tif", _mask(), profile_from=info)
    with open_raster(source_path) as src:  # tiled mode streams through the same profile
        run_tiled(src, lambda rgb, valid: np.full(valid.shape, 0.9, np.float32), tmp_path / "tiled.tif", tile=16,
                  overlap=4)
    for name in ("whole.tif", "tiled.tif"):
        _same_georeferencing(info_of(tmp_path / name).georef, info.georef)
    with rasterio.open(tmp_path / "whole.tif") as whole:
        assert np.array_equal(whole.read(1), _mask().astype(np.uint8))
    assert info.georef.mask_geotiff_carries() == {
        "north_up": "the CRS EPSG:32633 and the geotransform", "rotated": "the CRS EPSG:32633 and the geotransform",
        "geographic": "the CRS EPSG:4326 and the geotransform", "local": 'the CRS "Unknown" and the geotransform',
        "transform_only": "the geotransform (no CRS: the input has none)",
        "gcps": "the 4 GCPs and their CRS EPSG:4326", "gcps_on_a_line": "the 3 GCPs and their CRS EPSG:4326",
        "rpcs": "the RPCs", "crs_only": "the CRS EPSG:32633 (no geotransform: the input has none)",
        "none": "no georeferencing (the input has none)",
    }[kind]


def _corners(polygon: Polygon) -> set[tuple[float, float]]:
    return {(round(x, 9), round(y, 9)) for x, y in polygon.exterior.coords}


@pytest.mark.input_kind("georeferencing", "GCPs only (Sentinel-1 GRD)",
                        "polygons in the GCPs' CRS through GDAL's GCP transformer; GeoJSON lon/lat; note says so")
def test_gcp_polygons_are_in_map_coordinates(tmp_path):
    info = info_of(write_kind(tmp_path / "s1.tif", "gcps"))
    gpkg = save_mask_vectors(tmp_path / "s1.gpkg", _mask(), info, ATTRIBUTES, "GPKG")
    square = [(5, 10), (15, 10), (15, 20), (5, 20)]
    expected = {(round(x, 9), round(y, 9)) for x, y in (skewed(c, r) for c, r in square)}
    (polygon,) = _polygons(tmp_path / "s1.gpkg")
    # Order 1 (4 GCPs) is affine: the four corners, mapped exactly, and straight edges between them.
    assert _corners(polygon) == expected and polygon.area == pytest.approx(
        shapely.Polygon([skewed(c, r) for c, r in square]).area, rel=1e-9)
    assert pyogrio.read_info(tmp_path / "s1.gpkg")["crs"] == "EPSG:4326"
    assert gpkg["crs"] == "EPSG:4326" and gpkg["coordinates"] == "map" and gpkg["georeferenced"]
    assert gpkg["warning"] == (
        f"{tmp_path / 's1.gpkg'}: the input is georeferenced by 4 GCPs only (no geotransform); the polygons are in "
        "EPSG:4326 through GDAL's GCP transformer (polynomial order 1), and the mask GeoTIFF keeps the GCPs")
    geojson = save_mask_vectors(tmp_path / "s1.geojson", _mask(), info, ATTRIBUTES, "GeoJSON")
    ring = json.loads((tmp_path / "s1.geojson").read_text())["features"][0]["geometry"]["coordinates"][0]
    assert expected <= {(round(x, 9), round(y, 9)) for x, y in ring} and geojson["crs"] == "EPSG:4326"


@pytest.mark.input_kind("georeferencing", "GCPs, 10 or more (a curved grid)",
                        "polygon edges cut into 1-px steps and bent by GDAL's order-3 GCP polynomial, as gdalwarp")
def test_many_gcps_bend_polygon_edges_like_gdalwarp(tmp_path):
    info = info_of(write_kind(tmp_path / "curved.tif", "gcps_curved"))
    save_mask_vectors(tmp_path / "curved.gpkg", _mask(), info, ATTRIBUTES, "GPKG")
    (polygon,) = _polygons(tmp_path / "curved.gpkg")
    pixel_square = shapely.segmentize(box(5, 10, 15, 20), 1.0)
    expected = np.array([curved(c, r) for c, r in shapely.get_coordinates(pixel_square)])
    got = shapely.get_coordinates(polygon)
    assert len(got) == len(expected) == 41  # 40 one-pixel steps round a 10 x 10 square, closed
    # Every vertex of the polygon is a pixel corner mapped by the quadratic the GCPs were made from.
    assert min(np.abs(got - e).max(axis=1).min() for e in expected) < 1e-6
    assert max(np.abs(expected - g).max(axis=1).min() for g in got) < 1e-6
    top = [curved(c, 10) for c in (5, 10, 15)]  # the top edge's midpoint is off the chord: the edge is bent
    assert abs((top[1][1] - top[0][1]) - (top[2][1] - top[0][1]) / 2) == pytest.approx(0.5)  # metres


@pytest.mark.input_kind("georeferencing", "rotated geotransform",
                        "polygons through the rotated transform; GeoJSON is the same shape in lon/lat")
def test_rotated_transform_polygons(tmp_path):
    info = info_of(write_kind(tmp_path / "rot.tif", "rotated"))
    result = save_mask_vectors(tmp_path / "rot.gpkg", _mask(), info, ATTRIBUTES, "GPKG")
    (polygon,) = _polygons(tmp_path / "rot.gpkg")
    expected = {(round(x, 6), round(y, 6)) for x, y in (ROTATED @ p for p in [(5, 10), (15, 10), (15, 20), (5, 20)])}
    assert {(round(x, 6), round(y, 6)) for x, y in polygon.exterior.coords} == expected
    assert polygon.area == pytest.approx(100 * 100.0) and result["warning"] is None
    save_mask_vectors(tmp_path / "rot.geojson", _mask(), info, ATTRIBUTES, "GeoJSON")
    ring = np.array(json.loads((tmp_path / "rot.geojson").read_text())["features"][0]["geometry"]["coordinates"][0])
    to_lonlat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    lon, lat = to_lonlat.transform(*zip(*(ROTATED @ p for p in [(5, 10), (15, 10), (15, 20), (5, 20)])))
    # GDAL's RFC 7946 writer keeps 7 decimals (about 1 cm)
    assert np.allclose(sorted(map(tuple, ring[:-1])), sorted(zip(lon, lat)), rtol=0, atol=1e-7)


@pytest.mark.input_kind("georeferencing", "geographic CRS (EPSG:4326)",
                        "polygons and GeoJSON in lon/lat degrees, areas in degree^2")
def test_geographic_crs_polygons(tmp_path):
    info = info_of(write_kind(tmp_path / "geo.tif", "geographic"))
    save_mask_vectors(tmp_path / "geo.gpkg", _mask(), info, ATTRIBUTES, "GPKG")
    save_mask_vectors(tmp_path / "geo.geojson", _mask(), info, ATTRIBUTES, "GeoJSON")
    expected = box(10.005, 45.98, 10.015, 45.99)
    for name in ("geo.gpkg", "geo.geojson"):
        (polygon,) = _polygons(tmp_path / name)
        assert polygon.normalize().equals_exact(expected.normalize(), 1e-12)
    meta, _, _, columns = pyogrio.raw.read(tmp_path / "geo.gpkg")
    names = meta["fields"].tolist()
    assert columns[names.index("area_unit")][0] == "degree^2"
    assert columns[names.index("area")][0] == pytest.approx(1e-4)


@pytest.mark.input_kind("georeferencing", "geotransform without CRS (e.g. a world file)",
                        "polygons in the transform's map units without CRS and a note; GeoJSON refused per pair")
def test_transform_without_crs(tmp_path):
    info = info_of(write_kind(tmp_path / "wld.tif", "transform_only"))
    result = save_mask_vectors(tmp_path / "wld.gpkg", _mask(), info, ATTRIBUTES, "GPKG")
    (polygon,) = _polygons(tmp_path / "wld.gpkg")
    assert polygon.normalize().equals_exact(box(1010, 1960, 1030, 1980).normalize(), 1e-9)
    meta, _, _, columns = pyogrio.raw.read(tmp_path / "wld.gpkg")
    assert meta["crs"] is None and columns[meta["fields"].tolist().index("area_unit")][0] == "map unit^2"
    assert result["coordinates"] == "map" and result["crs"] is None and not result["georeferenced"]
    assert "geotransform but no CRS" in result["warning"] and "no georeferencing" not in result["warning"]
    with pytest.raises(GeoreasonError) as error:
        save_mask_vectors(tmp_path / "wld.geojson", _mask(), info, ATTRIBUTES, "GeoJSON")
    assert str(error.value) == (
        f"{tmp_path / 'wld.geojson'}: the input's geotransform has no CRS, so its map coordinates cannot be "
        "expressed in EPSG:4326 (lon/lat), which GeoJSON (RFC 7946) requires; write a GeoPackage instead "
        "(driver='GPKG'), which keeps the coordinates without a CRS")
    assert not (tmp_path / "wld.geojson").exists()


@pytest.mark.input_kind("georeferencing", "local/engineering CRS (LOCAL_CS)",
                        "GeoPackage keeps the local CRS; GeoJSON is a clear error suggesting --vector-format gpkg")
def test_local_crs_geojson_is_a_clear_error(tmp_path):
    info = info_of(write_kind(tmp_path / "site.tif", "local"))
    result = save_mask_vectors(tmp_path / "site.gpkg", _mask(), info, ATTRIBUTES, "GPKG")
    assert "Unknown" in pyogrio.read_info(tmp_path / "site.gpkg")["crs"] and result["warning"] is None
    (polygon,) = _polygons(tmp_path / "site.gpkg")
    assert polygon.normalize().equals_exact(box(51.25, 65.0, 53.75, 67.5).normalize(), 1e-9)
    expected = ('the CRS "Unknown" is a local/engineering CRS, not tied to the Earth, so the polygons cannot be '
                "expressed in EPSG:4326 (lon/lat), which GeoJSON (RFC 7946) requires; write a GeoPackage instead "
                "(driver='GPKG'), which keeps the source CRS")
    with pytest.raises(GeoreasonError) as error:
        save_mask_vectors(tmp_path / "site.geojson", _mask(), info, ATTRIBUTES, "GeoJSON")
    assert str(error.value) == f"{tmp_path / 'site.geojson'}: {expected}"
    # The reprojection itself (write_vectors, called directly) says the same rather than a ProjError.
    with pytest.raises(GeoreasonError) as direct:
        write_vectors(tmp_path / "direct.geojson", [box(0, 0, 1, 1)], ATTRIBUTES, crs=info.crs)
    assert str(direct.value) == f"{tmp_path / 'direct.geojson'}: {expected}"
    assert not (tmp_path / "site.geojson").exists() and not (tmp_path / "direct.geojson").exists()
    # Ray workers pickle a failed pair's error: it comes back with its fields, so the CLI can word its advice.
    again = pickle.loads(pickle.dumps(error.value))
    assert type(again) is NoLonLatError and str(again) == str(error.value)
    assert again.advising("--vector-format gpkg") == (f"{tmp_path / 'site.geojson'}: {expected}".replace(
        "(driver='GPKG')", "(--vector-format gpkg)"))


def test_vertices_outside_the_crs_domain_are_a_clear_error(tmp_path):
    # An orthographic projection has no lon/lat beyond its disk: PROJ gives inf, never written as GeoJSON.
    ortho = "+proj=ortho +lat_0=0 +lon_0=0 +ellps=WGS84 +units=m +no_defs"
    with pytest.raises(GeoreasonError, match="no EPSG:4326 \\(lon/lat\\) equivalent; write a GeoPackage"):
        write_vectors(tmp_path / "far.geojson", [box(9e6, 0, 9.1e6, 1e5)], ATTRIBUTES, crs=ortho)
    assert not (tmp_path / "far.geojson").exists()


PIXEL_CASES = [
    _marked("rpcs", "RPCs only (L1 optical sensor model)",
            "polygons in pixel coordinates with a note naming the RPCs and gdalwarp -rpc"),
    _marked("crs_only", "CRS without geotransform", "polygons in pixel coordinates with a note naming the CRS"),
    _marked("gcps_on_a_line", "GCPs GDAL cannot fit (collinear)",
            "polygons in pixel coordinates with a note giving GDAL's reason"),
    _marked("none", "no georeferencing (plain image)", "polygons in pixel coordinates with a note"),
]


@pytest.mark.parametrize("kind", PIXEL_CASES)
def test_kinds_without_map_coordinates_say_exactly_what_they_have(tmp_path, kind):
    info = info_of(write_kind(tmp_path / f"{kind}.tif", kind))
    result = save_mask_vectors(tmp_path / f"{kind}.gpkg", _mask(), info, ATTRIBUTES, "GPKG")
    (polygon,) = _polygons(tmp_path / f"{kind}.gpkg")
    assert polygon.bounds == (5.0, 10.0, 15.0, 20.0) and result["coordinates"] == "pixel" and result["crs"] is None
    must_say = {"rpcs": "georeferenced by RPCs only", "crs_only": "has the CRS EPSG:32633 but no geotransform",
                "gcps_on_a_line": "has 3 GCPs but GDAL cannot fit a transform to them",
                "none": "the input has no georeferencing"}[kind]
    assert must_say in result["warning"] and "pixel coordinates" in result["warning"]
    if kind != "none":
        assert "no georeferencing" not in result["warning"] and "mask GeoTIFF keeps the" in result["warning"]
    geojson = save_mask_vectors(tmp_path / f"{kind}.geojson", _mask(), info, ATTRIBUTES, "GeoJSON")
    assert "prefer .gpkg for pixel coordinates" in geojson["warning"]  # as for any pixel-coordinate GeoJSON


def test_mask_to_polygons_with_a_mapping_applies_min_area_in_map_units():
    mask = np.zeros((30, 40), dtype=bool)
    mask[0:2, 0:2] = True  # 4 px
    mask[10:20, 5:15] = True  # 100 px
    double = mask_to_polygons(mask, lambda xy: xy * 2.0, min_area=20.0)  # map area = 4 x pixel area
    assert len(double.polygons) == 1 and double.dropped_small == 1 and double.dropped_area == pytest.approx(16.0)
    assert double.polygons[0].equals(box(10, 20, 30, 40))  # same shape; edges cut into 1-px steps (2 map units)
    assert len(shapely.get_coordinates(double.polygons[0])) == 41


@pytest.mark.input_kind("georeferencing", "geotransform without CRS (e.g. a world file)",
                        "a PNG with a .pgw world file is read as a raster, so the mask GeoTIFF keeps the transform")
def test_png_with_world_file_keeps_its_transform(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((HEIGHT, WIDTH, 3), 90, np.uint8)).save(tmp_path / "photo.png")
    (tmp_path / "photo.pgw").write_text("2.0\n0.0\n0.0\n-2.0\n1001.0\n1999.0\n")  # centre of the top-left pixel
    loaded = load_input(tmp_path / "photo.png")
    assert loaded.raster is not None and loaded.raster.georef.kind == "transform_only"
    assert loaded.raster.transform == from_origin(1000, 2000, 2, 2)
    write_mask_geotiff(tmp_path / "photo.mask.tif", _mask(), profile_from=loaded.raster)
    written = info_of(tmp_path / "photo.mask.tif")
    assert written.transform == from_origin(1000, 2000, 2, 2) and written.crs is None


@pytest.mark.parametrize("kind, sentence", [
    ("gcps", "It is georeferenced by 4 GCPs in EPSG:4326 (no geotransform), so its ground resolution is not known."),
    ("rpcs", "It is georeferenced by RPCs (a sensor model; no geotransform), so its ground resolution is not known."),
    ("transform_only", "It is georeferenced by a geotransform without a CRS, so its ground resolution is not known."),
    ("crs_only", "It is georeferenced by the CRS EPSG:32633 without a geotransform, so its ground resolution is "
                 "not known."),
    ("none", "It is not georeferenced."),
])
def test_annotation_metadata_sentence_names_the_georeferencing(tmp_path, kind, sentence):
    from georeason.annotate.backends import describe_image

    path = write_kind(tmp_path / f"{kind}.tif", kind)
    assert describe_image(path) == f"The image is {WIDTH} x {HEIGHT} pixels. {sentence}"
