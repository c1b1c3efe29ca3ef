"""Region outputs of `georeason batch`: polygons cut by scene borders merged into one, VRT mosaics of the masks."""

from __future__ import annotations

import numpy as np
import pyogrio
import rasterio
import scipy.ndimage
import shapely
from affine import Affine

from georeason.batch.mosaic import Finished, merge_polygons, write_mosaics, write_region_layer
from georeason.geo import raster_info, write_mask_geotiff
from georeason.reasoner import save_mask_vectors
from tests._geo_fixtures import CRS, ORIGIN_X, ORIGIN_Y, PIXEL

FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])


def _info(path, height, width, col_off):
    """The RasterInfo of a source scene at `col_off` columns east of the fixture origin."""
    transform = Affine(PIXEL, 0.0, ORIGIN_X + col_off * PIXEL, 0.0, -PIXEL, ORIGIN_Y)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=CRS,
                       transform=transform) as out:
        out.write(np.zeros((1, height, width), np.uint8))
    with rasterio.open(path) as src:
        return raster_info(src)


def _split_scene(tmp_path, mask, cut):
    """The mask cut at column `cut` into two scenes: their mask GeoTIFFs and polygons, as batch writes them."""
    (tmp_path / "scenes").mkdir()
    finished = []
    for name, part, col_off in (("west", mask[:, :cut], 0), ("east", mask[:, cut:], cut)):
        info = _info(tmp_path / f"{name}.tif", part.shape[0], part.shape[1], col_off)
        tif = write_mask_geotiff(tmp_path / "scenes" / f"{name}.mask.tif", part, profile_from=info)
        vectors = tmp_path / "scenes" / f"{name}.gpkg"
        save_mask_vectors(vectors, part, info, {"question": "roads?", "answer": f"{name} answer"})
        finished.append(Finished(name, "roads?", f"{name} answer", tif, vectors))
    return finished


def test_polygons_cut_by_a_scene_border_become_one(tmp_path):
    mask = np.zeros((40, 60), dtype=bool)
    mask[5:30, 10:50] = True  # crosses the border at column 31
    mask[12:18, 20:40] = False  # a hole that crosses it too
    mask[35:38, 2:8] = True  # only in the west scene
    mask[34:36, 52:58] = True  # only in the east scene
    finished = _split_scene(tmp_path, mask, 31)
    result = write_region_layer(tmp_path / "region.gpkg", finished, overwrite=False)
    assert result["polygons"] == 3 and result["crs"] == CRS and result["left_out"] == []
    meta, _, wkb, fields = pyogrio.raw.read(tmp_path / "region.gpkg")
    table = dict(zip(meta["fields"], fields))
    polygons = shapely.from_wkb(wkb)
    crossing = int(np.argmax(shapely.area(polygons)))
    assert table["scene"][crossing] == "east,west" and table["answer"][crossing] == "west answer | east answer"
    assert shapely.get_num_interior_rings(polygons[crossing]) == 1  # the hole survived the merge
    assert np.isclose(table["area"][crossing], (25 * 40 - 6 * 20) * PIXEL**2)
    assert sorted(table["scene"]) == ["east", "east,west", "west"] and set(table["question"]) == {"roads?"}
    labels, count = scipy.ndimage.label(mask, structure=FOUR)
    assert count == len(polygons) and np.isclose(shapely.area(polygons).sum(), mask.sum() * PIXEL**2)


def test_merge_keeps_corner_touching_regions_apart():
    square = shapely.box(0, 0, 1, 1)
    merged, members = merge_polygons([square, shapely.box(1, 0, 2, 1), shapely.box(2, 1, 3, 2)])
    assert len(merged) == 2 and sorted(map(sorted, members)) == [[0, 1], [2]]


def test_vrt_mosaic_reads_back_as_the_whole_mask(tmp_path):
    mask = np.random.default_rng(0).random((30, 50)) > 0.6
    finished = _split_scene(tmp_path, mask, 23)
    result = write_mosaics(tmp_path, finished, ["roads?"], own=set())
    assert [m["scenes"] for m in result["mosaics"]] == [["west", "east"]] and result["left_out"] == []
    with rasterio.open(tmp_path / "mosaic.vrt") as vrt:
        assert vrt.crs.to_string() == CRS and vrt.transform == Affine(PIXEL, 0, ORIGIN_X, 0, -PIXEL, ORIGIN_Y)
        assert vrt.nodata == 255 and np.array_equal(vrt.read(1), mask.astype(np.uint8))
    second = write_mosaics(tmp_path, finished + [Finished("photo", "fields?", None, None, tmp_path / "x.gpkg")],
                           ["roads?", "fields?"], own={tmp_path / "mosaic.vrt"})
    assert [m["path"] for m in second["mosaics"]] == [str(tmp_path / "mosaic-q1.vrt")]
    assert second["left_out"] == [{"name": "photo", "reason": "no mask GeoTIFF"}]


LOCAL_WKT = ('LOCAL_CS["site grid",LOCAL_DATUM["site",32767],UNIT["metre",1],AXIS["Easting",EAST],'
             'AXIS["Northing",NORTH]]')


def _scene_with_crs(tmp_path, name, crs):
    """A 20 x 20 scene in `crs` (None: a geotransform without one) with one square, as batch writes it."""
    path = tmp_path / f"{name}.tif"
    with rasterio.open(path, "w", driver="GTiff", width=20, height=20, count=1, dtype="uint8", crs=crs,
                       transform=Affine(PIXEL, 0.0, ORIGIN_X, 0.0, -PIXEL, ORIGIN_Y)) as out:
        out.write(np.zeros((1, 20, 20), np.uint8))
    with rasterio.open(path) as src:
        info = raster_info(src)
    mask = np.zeros((20, 20), dtype=bool)
    mask[4:10, 4:10] = True
    vectors = tmp_path / f"{name}.gpkg"
    save_mask_vectors(vectors, mask, info, {"question": "stockpiles?", "answer": ""})
    return Finished(name, "stockpiles?", "", None, vectors)


def test_a_local_crs_beside_a_projected_one_is_left_out_not_a_crash(tmp_path):
    finished = [_scene_with_crs(tmp_path, "site", rasterio.crs.CRS.from_wkt(LOCAL_WKT)),
                _scene_with_crs(tmp_path, "utm", CRS), _scene_with_crs(tmp_path, "plain", None)]
    result = write_region_layer(tmp_path / "region.gpkg", finished, overwrite=False)
    # The layer takes the first CRS that is not a local one, so the projected scene is kept.
    assert result["crs"] == CRS and result["polygons"] == 1
    reasons = {item["name"]: item["reason"] for item in result["left_out"]}
    assert sorted(reasons) == ["plain", "site"]
    assert reasons["site"].startswith("its CRS (site grid) cannot be transformed to the layer's (WGS 84 / UTM")
    assert reasons["plain"].startswith("polygons without a CRS")
    meta, _, wkb, fields = pyogrio.raw.read(tmp_path / "region.gpkg")
    assert list(dict(zip(meta["fields"], fields))["scene"]) == ["utm"]
    # Local scenes alone still make a layer, in their CRS.
    alone = write_region_layer(tmp_path / "local.gpkg", finished[:1], overwrite=False)
    assert alone["polygons"] == 1 and alone["left_out"] == [] and "site grid" in alone["crs"]
