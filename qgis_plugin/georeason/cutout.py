"""Write the part of a raster layer that the service should see as a GeoTIFF: a grid-aligned window,
the chosen bands, and pixels outside a polygon area marked invalid in an internal mask.

QGIS plugin (docs/qgis.md); not in the paper. Uses the GDAL bindings that ship with QGIS.
"""

from __future__ import annotations

from .window import AreaError, pixel_window, window_geotransform


def open_source(source: str):
    """The GDAL dataset of a layer source, or AreaError naming it."""
    from osgeo import gdal

    gdal.ErrorReset()
    dataset = gdal.Open(source)
    if dataset is None:
        raise AreaError(f"GDAL cannot open the layer's data ({source}): {gdal.GetLastErrorMsg() or 'unknown error'}")
    return dataset


def area_window(dataset, points) -> tuple[int, int, int, int]:
    """The window of `dataset` covering `points` (layer CRS), or the whole raster when points is None."""
    if points is None:
        return 0, 0, dataset.RasterXSize, dataset.RasterYSize
    geotransform = dataset.GetGeoTransform(can_return_null=True)
    if geotransform is None:
        raise AreaError("the layer has no geotransform (it is georeferenced by GCPs only, or not at all), so "
                        "an extent or polygon cannot be cut from it; run on the whole layer, or warp it first "
                        "(Raster > Projections > Warp)")
    return pixel_window(geotransform, dataset.RasterXSize, dataset.RasterYSize, points)


def write_window(dataset, window: tuple[int, int, int, int], bands: list[int] | None, polygon_wkt: str | None,
                 out_path: str) -> None:
    """GeoTIFF of `window` of `dataset` with `bands` (1-based, in order; None = all) at `out_path`.

    With `polygon_wkt` (in the layer's CRS), pixels outside the polygon are marked invalid in an internal
    per-dataset mask (as are the source's nodata pixels), so the service predicts nothing there and its
    mask GeoTIFF has nodata (255) outside the polygon.
    """
    from osgeo import gdal

    col_off, row_off, cols, rows = window
    count = dataset.RasterCount
    for band in bands or []:
        if not 1 <= band <= count:
            raise AreaError(f"band {band} does not exist; the layer has {count} band(s), numbered from 1")
    options = gdal.TranslateOptions(format="GTiff", srcWin=[col_off, row_off, cols, rows], bandList=bands or None,
                                    creationOptions=["COMPRESS=DEFLATE", "TILED=YES", "BIGTIFF=IF_SAFER"])
    gdal.ErrorReset()
    with _internal_masks():
        written = gdal.Translate(out_path, dataset, options=options)
        if written is None:
            raise AreaError(f"GDAL could not write the area as a GeoTIFF: {gdal.GetLastErrorMsg() or 'unknown error'}")
        if polygon_wkt is not None:
            _mask_outside(written, polygon_wkt, dataset.GetGeoTransform(), col_off, row_off)
        written.FlushCache()
        written = None  # closes the file


def _mask_outside(written, polygon_wkt: str, geotransform, col_off: int, row_off: int) -> None:
    import numpy as np
    from osgeo import gdal, ogr, osr

    cols, rows = written.RasterXSize, written.RasterYSize
    inside = gdal.GetDriverByName("MEM").Create("", cols, rows, 1, gdal.GDT_Byte)
    inside.SetGeoTransform(window_geotransform(geotransform, col_off, row_off))
    crs = None
    if written.GetProjection():  # the polygon is already in the layer's CRS: declare it on both sides
        inside.SetProjection(written.GetProjection())
        crs = osr.SpatialReference(wkt=written.GetProjection())
        crs.SetAxisMappingStrategy(osr.OAMS_TRADITIONAL_GIS_ORDER)  # x = easting/longitude, as QGIS writes it
    vectors = ogr.GetDriverByName("Memory").CreateDataSource("area")
    layer = vectors.CreateLayer("area", srs=crs, geom_type=ogr.wkbMultiPolygon)
    feature = ogr.Feature(layer.GetLayerDefn())
    geometry = ogr.CreateGeometryFromWkt(polygon_wkt)
    if geometry is None:
        raise AreaError("the polygon area is not a valid geometry")
    feature.SetGeometry(geometry)
    layer.CreateFeature(feature)
    if gdal.RasterizeLayer(inside, [1], layer, burn_values=[255]) != 0:  # pixel centres inside the polygon
        raise AreaError(f"GDAL could not rasterize the polygon area: {gdal.GetLastErrorMsg()}")
    valid = inside.GetRasterBand(1).ReadAsArray() == 255
    for index in range(1, written.RasterCount + 1):  # keep the source's own nodata/mask invalid too
        valid &= written.GetRasterBand(index).GetMaskBand().ReadAsArray() != 0
    if not valid.any():
        raise AreaError("the polygon covers no valid pixel of the layer (it may be smaller than one pixel, or "
                        "lie over nodata only)")
    written.CreateMaskBand(gdal.GMF_PER_DATASET)
    written.GetRasterBand(1).GetMaskBand().WriteArray(np.where(valid, 255, 0).astype(np.uint8))


class _internal_masks:
    """Masks inside the GeoTIFF rather than a .msk sidecar (the default before GDAL 3.8): one file to upload."""

    def __enter__(self):
        from osgeo import gdal

        self._was = gdal.GetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", None)
        gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", "YES")

    def __exit__(self, *exc):
        from osgeo import gdal

        gdal.SetThreadLocalConfigOption("GDAL_TIFF_INTERNAL_MASK", self._was)
        return False
