"""Region outputs of a batch run: one polygon layer over all scenes (merged across scene borders) and VRT mosaics.

No paper section; what they hold is in docs/batch.md, "Outputs". Reads the per-scene outputs that
`georeason predict --tile` writes; never recomputes them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import shapely
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from pyproj.exceptions import CRSError, ProjError

from georeason.errors import GeoreasonError
from georeason.filenames import printable
from georeason.geo.atomic import atomic_output
from georeason.geo.output import MASK_NODATA
from georeason.geo.vectors import write_vectors

REGION_LAYER = "region"


@dataclass
class Finished:
    """What the region outputs need of one finished pair."""

    name: str
    question: str
    answer: str | None
    mask: Path | None  # the mask GeoTIFF (None for inputs without one)
    vectors: Path


def _read_polygons(path: Path) -> tuple[list[Any], ProjCRS | None]:
    try:
        meta, _, wkb, _ = pyogrio.raw.read(path)
    except Exception as error:  # noqa: BLE001 - pyogrio raises its own kinds for unreadable files
        raise GeoreasonError(f"{printable(path)}: cannot read the polygons ({printable(error)})") from None
    crs = None if not meta.get("crs") else ProjCRS.from_user_input(meta["crs"])
    return list(shapely.from_wkb(wkb)) if len(wkb) else [], crs


def _to_crs(geometries: list[Any], source: ProjCRS, target: ProjCRS) -> list[Any]:
    if source == target or not geometries:
        return geometries
    transformer = Transformer.from_crs(source, target, always_xy=True)
    return list(shapely.transform(np.asarray(geometries, dtype=object),
                                  lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))))


def merge_polygons(geometries: list[Any]) -> tuple[list[Any], list[list[int]]]:
    """Union of polygons as separate polygons, and for each the indices of the input polygons it holds.

    Polygons that share an edge or overlap (a region cut by a scene or tile border) become one; each input
    polygon belongs to the merged polygon holding its representative point.
    """
    if not geometries:
        return [], []
    merged = list(shapely.get_parts(shapely.unary_union(np.asarray(geometries, dtype=object))))
    merged = [part for part in merged if isinstance(part, shapely.Polygon) and not part.is_empty]
    tree = shapely.STRtree(merged)
    members: list[list[int]] = [[] for _ in merged]
    for index, geometry in enumerate(geometries):
        hits = tree.query(geometry.representative_point(), predicate="intersects")
        if len(hits):
            members[int(hits[0])].append(index)
    return merged, members


def write_region_layer(path: Path, finished: list[Finished], overwrite: bool) -> dict[str, Any]:
    """One GeoPackage layer of every finished pair's polygons, merged per question across scene borders.

    Attributes: scene (the names of the scenes a polygon lies in, comma-separated), question, answer
    (the distinct answers of those scenes, " | "-separated), area and area_unit in the layer's CRS, which
    is the first scene's that is not a local (engineering) CRS, else the first scene's; other CRSs are
    reprojected. Scenes without a CRS, or whose CRS cannot be transformed to the layer's (a local CRS beside
    a geographic one), are left out and listed with the reason.
    """
    polygons_of = [(entry, *_read_polygons(entry.vectors)) for entry in finished]
    crss = [crs for _, _, crs in polygons_of if crs is not None]
    region_crs = next((crs for crs in crss if not crs.is_engineering), crss[0] if crss else None)
    by_question: dict[str, list[tuple[Any, Finished]]] = {}
    left_out = []
    for entry, geometries, crs in polygons_of:
        if crs is None:
            left_out.append({"name": entry.name, "reason": "polygons without a CRS (pixel coordinates, or the map "
                                                           "coordinates of a geotransform without one)"})
            continue
        try:
            moved = _to_crs(geometries, crs, region_crs)
        except (CRSError, ProjError) as error:
            left_out.append({"name": entry.name, "reason": f"its CRS ({crs.name}) cannot be transformed to the "
                                                           f"layer's ({region_crs.name}): {printable(error)}"})
            continue
        by_question.setdefault(entry.question, [])
        by_question[entry.question] += [(g, entry) for g in moved]
    polygons, scenes, questions, answers = [], [], [], []
    for question, items in by_question.items():
        merged, members = merge_polygons([geometry for geometry, _ in items])
        for polygon, indices in zip(merged, members):
            entries = [items[i][1] for i in indices]
            polygons.append(polygon)
            scenes.append(",".join(sorted({e.name for e in entries})))
            questions.append(question)
            answers.append(" | ".join(dict.fromkeys(e.answer or "" for e in entries)))
    attributes = {"scene": scenes, "question": questions, "answer": answers}
    write_vectors(path, polygons, attributes, region_crs, driver="GPKG", overwrite=overwrite, layer=REGION_LAYER,
                  coordinates="map")
    return {"path": str(path), "layer": REGION_LAYER, "polygons": len(polygons),
            "crs": None if region_crs is None else region_crs.to_string(), "left_out": left_out}


def _grid(mask: Path) -> tuple[Any, dict[str, Any]] | str:
    """(group key, header) of a mask GeoTIFF for the mosaic, or why it cannot join one."""
    from georeason.geo import open_raster

    with open_raster(mask) as src:
        transform, crs = src.transform, src.crs
        if crs is None or transform.is_identity:
            return "no CRS and geotransform (GCPs, RPCs or none): cannot be placed without warping"
        if transform.b != 0 or transform.d != 0:
            return "rotated geotransform: cannot be placed without warping"
        header = {"path": mask, "width": src.width, "height": src.height, "transform": transform, "crs": crs,
                  "block": src.block_shapes[0]}
    return (crs.to_wkt(), transform.a, transform.e), header


def _vrt_xml(headers: list[dict[str, Any]], folder: Path) -> str:
    a, e = headers[0]["transform"].a, headers[0]["transform"].e
    lefts = [h["transform"].c for h in headers]
    tops = [h["transform"].f for h in headers]
    rights = [h["transform"].c + h["width"] * a for h in headers]
    bottoms = [h["transform"].f + h["height"] * e for h in headers]
    left, top = min(lefts), (max(tops) if e < 0 else min(tops))
    width = round((max(rights) - left) / a)
    height = round(((min(bottoms) if e < 0 else max(bottoms)) - top) / e)
    root = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(root, "SRS", dataAxisToSRSAxisMapping="1,2").text = headers[0]["crs"].to_wkt()
    ET.SubElement(root, "GeoTransform").text = ", ".join(repr(float(v)) for v in (left, a, 0.0, top, 0.0, e))
    band = ET.SubElement(root, "VRTRasterBand", dataType="Byte", band="1")
    ET.SubElement(band, "NoDataValue").text = str(MASK_NODATA)
    ET.SubElement(band, "Description").text = "georeason mask mosaic: 1 = answer, 0 = background, 255 = no data"
    for header in headers:  # later scenes are drawn over earlier ones where they have data
        source = ET.SubElement(band, "ComplexSource")
        ET.SubElement(source, "SourceFilename", relativeToVRT="1").text = \
            Path(header["path"]).relative_to(folder).as_posix()
        ET.SubElement(source, "SourceBand").text = "1"
        block_y, block_x = header["block"]
        ET.SubElement(source, "SourceProperties", RasterXSize=str(header["width"]),
                      RasterYSize=str(header["height"]), DataType="Byte", BlockXSize=str(block_x),
                      BlockYSize=str(block_y))
        size = {"xSize": str(header["width"]), "ySize": str(header["height"])}
        ET.SubElement(source, "SrcRect", xOff="0", yOff="0", **size)
        x_off = (header["transform"].c - left) / a
        y_off = (header["transform"].f - top) / e
        ET.SubElement(source, "DstRect", xOff=repr(round(x_off, 6)), yOff=repr(round(y_off, 6)), **size)
        ET.SubElement(source, "NODATA").text = str(MASK_NODATA)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_mosaics(folder: Path, finished: list[Finished], questions: list[str], own: set[Path]) -> dict[str, Any]:
    """VRT mosaics of the mask GeoTIFFs in `folder`: one per question and grid (CRS and pixel size).

    mosaic.vrt when the run has one question and its masks one grid, else mosaic-qK.vrt (K: the question's number
    in `questions`) and mosaic-qK-N.vrt for a question's further grids. Masks that cannot be placed
    without warping are left out and listed. `own`: existing files an earlier invocation wrote (replaced).
    """
    groups: dict[str, dict[Any, list[dict[str, Any]]]] = {}
    left_out = []
    for entry in finished:
        if entry.mask is None:
            left_out.append({"name": entry.name, "reason": "no mask GeoTIFF"})
            continue
        grid = _grid(entry.mask)
        if isinstance(grid, str):
            left_out.append({"name": entry.name, "reason": grid})
            continue
        key, header = grid
        groups.setdefault(entry.question, {}).setdefault(key, []).append({**header, "name": entry.name})
    single = len(questions) == 1 and all(len(grids) == 1 for grids in groups.values())
    written = []
    for question, grids in groups.items():
        number = questions.index(question) + 1
        for index, headers in enumerate(grids.values()):
            name = "mosaic.vrt" if single else f"mosaic-q{number}{'' if index == 0 else f'-{index + 1}'}.vrt"
            path = folder / name
            with atomic_output(path, overwrite=path in own) as temporary:
                temporary.write_text(_vrt_xml(headers, folder), encoding="utf-8")
            written.append({"path": str(path), "question": question, "crs": headers[0]["crs"].to_string(),
                            "scenes": [h["name"] for h in headers]})
    return {"mosaics": written, "left_out": left_out}
