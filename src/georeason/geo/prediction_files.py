"""The one writer of a prediction's files (mask PNG, overlay, mask GeoTIFF, vectors), all or none.

Used by `georeason predict` and the service (docs/predict.md, docs/serve.md); not in the paper. Files are
written under hidden staging names and committed together; a failure removes every staged file, so
files from before stay as they were and no half set is left.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from georeason.geo.atomic import cannot_write, refuse_existing, remove_temporaries, temporary_sibling

# The kinds of file, in the order they are written: target paths are given per kind.
KINDS = ("mask_png", "overlay_png", "mask_geotiff", "vectors")


def staging_paths(targets: dict[str, Path]) -> dict[str, Path]:
    """A hidden temporary name next to each target: a prediction's files are written there, then committed."""
    return {kind: temporary_sibling(path) for kind, path in targets.items()}


def commit_outputs(staged: dict[str, Path], targets: dict[str, Path], replaceable: set[Path]) -> None:
    """Move staged files onto their names, all or none: every name is checked first.

    A name may be replaced only if it is in `replaceable` (files from before the run, with --overwrite);
    otherwise an existing target raises GeoreasonError naming it, before anything moves.
    """
    for kind in staged:
        refuse_existing(targets[kind], targets[kind] in replaceable)
    for kind, path in staged.items():
        try:
            os.replace(path, targets[kind])
        except OSError as error:
            raise cannot_write(targets[kind], error) from error


def write_prediction_files(prediction: Any, targets: dict[str, Path], *, tiled: bool = False,
                           vector_driver: str | None = "GPKG", simplify: float = 0.0, min_area: float = 0.0,
                           replaceable: set[Path] | None = None,
                           staged: dict[str, Path] | None = None) -> tuple[list[str], dict[str, Any] | None]:
    """Write a Prediction or TiledPrediction (georeason.reasoner) to `targets` (kind -> path, KINDS).

    mask_png (0/255 at the original size) and overlay_png always; mask_geotiff only for raster inputs
    (`prediction.raster` set) or tiled mode, where it is already at staged["mask_geotiff"]; vectors when
    `vector_driver` ("GPKG" or "GeoJSON") is given, simplified by `simplify` map units and without polygons
    under `min_area`. -> (the kinds written, the vector writer's report with the final path, or None).
    Raises GeoreasonError (or the writer's error) after removing every staged file.
    """
    replaceable = replaceable or set()
    kinds = ["mask_png", "overlay_png"]
    if tiled or prediction.raster is not None:
        kinds.append("mask_geotiff")
    if vector_driver is not None:
        kinds.append("vectors")
    staged = staged or staging_paths({kind: targets[kind] for kind in kinds})
    vectors = None
    try:
        prediction.save_mask_png(staged["mask_png"])
        prediction.save_overlay(staged["overlay_png"])
        if not tiled and "mask_geotiff" in kinds:
            prediction.save_geotiff(staged["mask_geotiff"])
        if vector_driver is not None:
            vectors = prediction.save_vectors(staged["vectors"], vector_driver, simplify, min_area)
        commit_outputs({kind: staged[kind] for kind in kinds}, targets, replaceable)
    except BaseException:
        for path in staged.values():
            remove_temporaries(path)
        raise
    if vectors is not None:
        vectors["path"] = str(targets["vectors"])
        if vectors.get("warning"):
            vectors["warning"] = vectors["warning"].replace(str(staged["vectors"]), str(targets["vectors"]))
    return kinds, vectors


__all__ = ["KINDS", "commit_outputs", "staging_paths", "write_prediction_files"]
