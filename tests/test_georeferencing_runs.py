"""`georeason predict` and `georeason serve` on GCP, local-CRS and CRS-less inputs (tiny model).

The rasters are made here (tests/_georef_fixtures.py); the expected polygons come from the mask the
run wrote, mapped by the function the GCPs were made from.
"""

from __future__ import annotations

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from fastapi.testclient import TestClient

from georeason.cli import main
from georeason.geo import mask_to_polygons
from tests._georef_fixtures import skewed, textured, write_kind

QUESTION = "Which area is water?"
LOCAL_ERROR = ('the CRS "Unknown" is a local/engineering CRS, not tied to the Earth, so the polygons cannot be '
               "expressed in EPSG:4326 (lon/lat), which GeoJSON (RFC 7946) requires; write a GeoPackage instead "
               "(--vector-format gpkg), which keeps the source CRS")
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _predict(*args) -> int:
    return main(["predict", *map(str, args), "--no-progress", "--no-answer"])


def _expected_lonlat(mask_tif) -> list[shapely.Polygon]:
    """The polygons of a GCP raster's mask, mapped by the affine map its 4 GCPs were made from."""
    with rasterio.open(mask_tif) as src:
        mask = src.read(1) == 1
    return mask_to_polygons(mask, lambda xy: np.column_stack(skewed(xy[:, 0], xy[:, 1]))).polygons


def _read(path) -> list[shapely.Polygon]:
    return [shapely.from_wkb(g) for g in pyogrio.raw.read(path)[2]]


def _by_place(polygons) -> list[shapely.Polygon]:
    return sorted(polygons, key=lambda p: p.centroid.coords[0])


def _same_polygons(got, expected, tolerance: float) -> None:
    """The same polygons, each vertex within `tolerance` (map units) of the expected outline."""
    assert len(got) == len(expected) > 0
    for a, b in zip(_by_place(got), _by_place(expected)):
        assert a.symmetric_difference(b).area < tolerance * max(b.length, 1e-12) and a.hausdorff_distance(b) < tolerance


@pytest.mark.input_kind("georeferencing", "GCPs only (Sentinel-1 GRD)",
                        "predict: mask GeoTIFF keeps the GCPs and their CRS; polygons in lon/lat; summary and note "
                        "say what the input had")
@pytest.mark.input_kind("georeferencing", "local/engineering CRS (LOCAL_CS)",
                        "predict --vector-format geojson: that pair fails with a clear error, the others run, "
                        "summary.json is written")
def test_predict_gcps_and_local_crs_in_one_geojson_run(tiny_model_dir, tmp_path, capsys):
    gcp = write_kind(tmp_path / "s1_gcp.tif", "gcps", textured(1))
    local = write_kind(tmp_path / "site_local.tif", "local", textured(2))
    plain = write_kind(tmp_path / "field.tif", "north_up", textured(3))
    out = tmp_path / "out"
    assert _predict("--model", tiny_model_dir, gcp, local, plain, "--question", QUESTION, "--out", out,
                    "--vector-format", "geojson") == 2
    printed = capsys.readouterr()
    assert f"georeason predict: error: {out / 'site_local.geojson'}: {LOCAL_ERROR}" in printed.err
    assert "internal error" not in printed.err and "no georeferencing" not in printed.out
    assert f"note: {out / 's1_gcp.geojson'}: the input is georeferenced by 4 GCPs only (no geotransform); the " \
           "polygons are in EPSG:4326 lon/lat, from EPSG:4326 through GDAL's GCP transformer (polynomial order 1), " \
           "and the mask GeoTIFF keeps the GCPs" in printed.out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["ok"] == 2 and summary["counts"]["failed"] == 1
    by_name = {entry["name"]: entry for entry in summary["inputs"]}
    assert by_name["site_local"] == {**by_name["site_local"], "status": "failed",
                                     "error": f"{out / 'site_local.geojson'}: {LOCAL_ERROR}"}
    assert not [p for p in out.iterdir() if p.name.startswith("site_local")]  # refused before any model work
    georef = by_name["s1_gcp"]["raster"]["georeferencing"]
    assert georef["kind"] == "gcps" and georef["gcps"] == 4 and georef["crs"] == "EPSG:4326"
    assert georef["mask_geotiff"] == "the 4 GCPs and their CRS EPSG:4326"
    assert georef["gcp_transform"] == "GDAL GCP polynomial, order 1" and by_name["s1_gcp"]["raster"]["georeferenced"]
    assert by_name["s1_gcp"]["vectors"]["crs"] == "EPSG:4326" and by_name["field"]["vectors"]["warning"] is None
    with rasterio.open(out / "s1_gcp.mask.tif") as mask_tif:
        gcps, gcp_crs = mask_tif.gcps
        assert gcp_crs.to_epsg() == 4326 and [(g.row, g.col, g.x, g.y) for g in gcps] == [
            (g.row, g.col, g.x, g.y) for g in rasterio.open(gcp).gcps[0]]
    # GeoJSON keeps 7 decimals; the polygons are the mask's, through the map the GCPs were made from.
    _same_polygons(_read(out / "s1_gcp.geojson"), _expected_lonlat(out / "s1_gcp.mask.tif"), 1e-6)


@pytest.mark.input_kind("georeferencing", "GCPs only (Sentinel-1 GRD)",
                        "predict --tile: the streamed mask GeoTIFF keeps the GCPs; GeoPackage in the GCPs' CRS")
@pytest.mark.input_kind("georeferencing", "local/engineering CRS (LOCAL_CS)",
                        "predict --tile: GeoPackage and mask GeoTIFF keep the local CRS; GeoJSON refused before "
                        "any tile is predicted")
def test_tiled_predict_carries_gcps_and_local_crs(tiny_model_dir, tmp_path, capsys):
    gcp = write_kind(tmp_path / "s1_gcp.tif", "gcps", textured(1))
    local = write_kind(tmp_path / "site_local.tif", "local", textured(2))
    out = tmp_path / "tiled"
    assert _predict("--model", tiny_model_dir, gcp, local, "--question", QUESTION, "--out", out, "--tile",
                    "--tile-size", 32, "--overlap", 8) == 0
    with rasterio.open(out / "s1_gcp.mask.tif") as mask_tif:
        assert len(mask_tif.gcps[0]) == 4 and mask_tif.gcps[1].to_epsg() == 4326
    assert pyogrio.read_info(out / "s1_gcp.gpkg")["crs"] == "EPSG:4326"
    _same_polygons(_read(out / "s1_gcp.gpkg"), _expected_lonlat(out / "s1_gcp.mask.tif"), 1e-9)
    with rasterio.open(out / "site_local.mask.tif") as mask_tif, rasterio.open(local) as source:
        assert mask_tif.crs == source.crs and mask_tif.transform == source.transform
    assert "Unknown" in pyogrio.read_info(out / "site_local.gpkg")["crs"]
    capsys.readouterr()
    refused = tmp_path / "refused"
    assert _predict("--model", tiny_model_dir, local, "--question", QUESTION, "--out", refused, "--tile",
                    "--vector-format", "geojson") == 2
    assert f"{refused / 'site_local.geojson'}: {LOCAL_ERROR}" in capsys.readouterr().err
    assert sorted(p.name for p in refused.iterdir()) == ["summary.json"]


@pytest.fixture(scope="module")
def client(tiny_model_dir):
    from georeason.reasoner import GeoReasoner
    from georeason.serve import ServeSettings, create_app

    with TestClient(create_app(GeoReasoner.from_pretrained(tiny_model_dir), ServeSettings())) as test_client:
        yield test_client


def _post(client, path):
    with open(path, "rb") as image:
        return client.post("/v1/predict", files={"image": (path.name, image, "image/tiff")},
                           data={"question": QUESTION, "answer": "false", "vectors": "true"})


@pytest.mark.input_kind("georeferencing", "local/engineering CRS (LOCAL_CS)",
                        "web service: 200 with the GeoPackage and mask GeoTIFF in the local CRS, no GeoJSON, a "
                        "warning saying why")
def test_service_answers_200_without_geojson_for_a_local_crs(client, tmp_path):
    local = write_kind(tmp_path / "site_local.tif", "local", textured(2))
    response = _post(client, local)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["georeferencing"] == "crs_transform" and body["georeferenced"] is True
    assert "Unknown" in body["crs"] and body["geojson"] is None and body["downloads"]["vectors_geojson"] is None
    # The service always writes the GeoPackage, so its warning says so instead of the CLI's --vector-format advice.
    service_wording = LOCAL_ERROR.split("; write a GeoPackage")[0] + "; vectors.gpkg has the polygons"
    assert f"no GeoJSON: {service_wording}" in body["warnings"]
    assert not any("--vector-format" in warning for warning in body["warnings"])
    mask_tif = client.get(body["downloads"]["mask_tif"])
    (tmp_path / "mask.tif").write_bytes(mask_tif.content)
    with rasterio.open(tmp_path / "mask.tif") as written, rasterio.open(local) as source:
        assert written.crs == source.crs and written.transform == source.transform
    (tmp_path / "v.gpkg").write_bytes(client.get(body["downloads"]["vectors_gpkg"]).content)
    assert "Unknown" in pyogrio.read_info(tmp_path / "v.gpkg")["crs"]


@pytest.mark.input_kind("georeferencing", "GCPs only (Sentinel-1 GRD)",
                        "web service: mask GeoTIFF keeps the GCPs; GeoJSON in lon/lat through the GCPs")
@pytest.mark.input_kind("georeferencing", "geotransform without CRS (e.g. a world file)",
                        "web service: 200, mask GeoTIFF keeps the transform, no GeoJSON and a warning saying why")
def test_service_gcps_and_transform_without_crs(client, tmp_path):
    body = _post(client, write_kind(tmp_path / "s1_gcp.tif", "gcps", textured(1))).json()
    assert (body["georeferencing"], body["georeferenced"], body["crs"]) == ("gcps", True, "EPSG:4326")
    (tmp_path / "mask.tif").write_bytes(client.get(body["downloads"]["mask_tif"]).content)
    with rasterio.open(tmp_path / "mask.tif") as written:
        assert len(written.gcps[0]) == 4 and written.gcps[1].to_epsg() == 4326
    polygons = [shapely.geometry.shape(f["geometry"]) for f in body["geojson"]["features"]]
    _same_polygons(polygons, _expected_lonlat(tmp_path / "mask.tif"), 1e-6)
    assert any("4 GCPs only" in warning for warning in body["warnings"])

    response = _post(client, write_kind(tmp_path / "world.tif", "transform_only", textured(4)))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["georeferencing"], body["georeferenced"], body["crs"], body["geojson"]) == (
        "transform_only", False, None, None)
    assert any(w.startswith("no GeoJSON: the input's geotransform has no CRS") for w in body["warnings"])
    assert any(w.endswith("; vectors.gpkg has the polygons") for w in body["warnings"])
    assert not any("--vector-format" in warning for warning in body["warnings"])
    assert any(w.startswith("vectors.gpkg: the input has a geotransform but no CRS") for w in body["warnings"])
    (tmp_path / "world.mask.tif").write_bytes(client.get(body["downloads"]["mask_tif"]).content)
    with rasterio.open(tmp_path / "world.mask.tif") as written:
        assert written.crs is None and written.transform == rasterio.transform.from_origin(1000, 2000, 2, 2)
