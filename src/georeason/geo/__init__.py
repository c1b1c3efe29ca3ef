"""Model-independent geospatial I/O for inference: rasters in, tiles, GeoTIFF masks and vectors out.

GeoTIFF inference (docs/predict.md); never imports georeason.model. The public API is re-exported here.
"""

from georeason.geo.georef import Georeferencing, NoLonLatError, georeferencing
from georeason.geo.output import (
    MASK_NODATA,
    GeoTiffWindowWriter,
    read_mask_geotiff,
    write_mask_geotiff,
    write_mask_png,
)
from georeason.geo.raster import (
    RasterInfo,
    check_scene_size,
    open_raster,
    raster_info,
    read_rgb,
    resolve_bands,
    scene_limits,
)
from georeason.geo.tiling import (
    PredictFn,
    PredictManyFn,
    TiledOutput,
    TiledResult,
    blend_weights,
    plan_tiles,
    run_tiled,
    run_tiled_outputs,
    weight_sum,
)
from georeason.geo.vectors import PolygonResult, VectorResult, mask_to_polygons, write_vectors

__all__ = [
    "MASK_NODATA", "GeoTiffWindowWriter", "Georeferencing", "NoLonLatError", "PolygonResult", "PredictFn",
    "PredictManyFn", "RasterInfo", "TiledOutput", "TiledResult", "VectorResult", "blend_weights", "check_scene_size",
    "georeferencing", "mask_to_polygons", "open_raster", "plan_tiles", "raster_info", "read_mask_geotiff",
    "read_rgb", "resolve_bands", "run_tiled", "run_tiled_outputs", "scene_limits", "weight_sum",
    "write_mask_geotiff", "write_mask_png", "write_vectors",
]
