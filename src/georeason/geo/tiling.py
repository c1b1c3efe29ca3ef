"""Tiled inference over scenes far larger than the model input, in constant memory per scene height.

GeoTIFF inference I/O (docs/predict.md, --tile): overlapping tiles, a normalised linear blend, row-band streaming
output.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rasterio.io import DatasetReader
from rasterio.windows import Window

from georeason.errors import GeoreasonError
from georeason.geo.output import MASK_NODATA, GeoTiffWindowWriter, refuse_input_as_output
from georeason.data.pixels import PixelSource, as_source, dtype_itemsize
from georeason.geo.raster import (
    capped_block_cache,
    needs_stretch,
    read_rgb,
    resolve_bands,
    scene_limits,
    source_info,
)

# predict_fn(rgb uint8 [h, w, 3], valid bool [h, w]) -> probability float32 [h, w] in [0, 1]
PredictFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Tile offsets along one axis; the last one is shifted inward so every tile is full size."""
    if length <= tile:
        return [0]
    return list(range(0, length - tile, stride)) + [length - tile]


def _check_tiling(tile: int, overlap: int) -> None:
    if tile < 16:
        raise GeoreasonError(f"tile: expected a tile size of at least 16 px, got {tile}")
    if not 0 <= overlap <= tile // 2:
        raise GeoreasonError(f"overlap: expected 0 <= overlap <= tile/2 ({tile // 2}), got {overlap}")


def plan_tiles(height: int, width: int, tile: int, overlap: int) -> list[Window]:
    """Row-major windows of size min(tile, scene) covering every pixel, neighbours sharing >= `overlap` px."""
    _check_tiling(tile, overlap)
    stride = tile - overlap
    rows = _tile_starts(height, tile, stride)
    cols = _tile_starts(width, tile, stride)
    tile_h, tile_w = min(tile, height), min(tile, width)
    return [Window(col, row, tile_w, tile_h) for row, col in itertools.product(rows, cols)]


def _ramp(length: int, overlap: int) -> np.ndarray:
    """1-D weights: linear from ~0 to 1 over `overlap` px at both ends, 1 inside; always > 0."""
    if overlap <= 0:
        return np.ones(length, dtype=np.float64)
    index = np.arange(length, dtype=np.float64)
    return np.minimum(1.0, np.minimum(index + 0.5, length - index - 0.5) / overlap)


def blend_weights(tile_h: int, tile_w: int, overlap: int) -> np.ndarray:
    """Separable per-pixel tile weights (float32 [tile_h, tile_w]), strictly positive everywhere."""
    return np.outer(_ramp(tile_h, overlap), _ramp(tile_w, overlap)).astype(np.float32)


def _axis_weights(length: int, tile: int, overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D ramp used on this axis and the sum of the ramps of all tiles at each position.

    An axis with a single tile needs no blending; it gets weight 1 so that a scene no larger than one
    tile reproduces the predictions exactly. Because the weights are separable and tiles form a grid,
    the 2-D weight sum is the outer product of the two axis sums, so it is never stored.
    """
    starts = _tile_starts(length, tile, tile - overlap)
    size = min(tile, length)
    ramp = _ramp(size, overlap if len(starts) > 1 else 0)
    total = np.zeros(length, dtype=np.float64)
    for start in starts:
        total[start : start + size] += ramp
    return ramp, total


def weight_sum(height: int, width: int, tile: int, overlap: int) -> np.ndarray:
    """The sum of all tiles' blend weights at every pixel (float64 [height, width]); > 0 everywhere."""
    _check_tiling(tile, overlap)
    return np.outer(_axis_weights(height, tile, overlap)[1], _axis_weights(width, tile, overlap)[1])


@dataclass
class TiledResult:
    """What run_tiled did, for the CLI to report."""

    mask_path: Path
    prob_path: Path | None
    width: int
    height: int
    tiles: int
    tiles_all_nodata: int  # tiles skipped because every pixel was nodata (predicted as 0, written as nodata)
    valid_pixels: int
    positive_pixels: int
    seconds: float
    limits: tuple[list[float], list[float]] | None = field(default=None)


def _check_prediction(prob: np.ndarray, valid: np.ndarray, window: Window) -> np.ndarray:
    prob = np.asarray(prob, dtype=np.float32)
    expected = (int(window.height), int(window.width))
    if prob.shape != expected:
        raise GeoreasonError(f"predict_fn returned shape {prob.shape} for a tile of shape {expected}")
    if not np.isfinite(prob[valid]).all():
        raise GeoreasonError(f"predict_fn returned NaN or infinite probabilities in the tile at {window}")
    return prob


def run_tiled(
    src: DatasetReader | PixelSource,
    predict_fn: PredictFn,
    out_path: str | os.PathLike[str],
    tile: int = 1024,
    overlap: int = 128,
    bands: Sequence[int] | None = None,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
    threshold: float = 0.5,
    prob_path: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    tags: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TiledResult:
    """Predict a whole scene tile by tile and stream the blended result to GeoTIFF(s).

    Writes a uint8 mask (1 where the blended probability > threshold, 0 elsewhere, 255 on nodata) at
    `out_path` and, if `prob_path` is given, the float32 blended probability (NaN on nodata). Both keep
    the source CRS and transform. Memory holds one float32 band of (tile + block) rows x scene width,
    whatever the scene height; GDAL's block cache is capped likewise unless GDAL_CACHEMAX is set.
    8-bit inputs pass through; others get one stretch for the whole scene. `src` is an open raster or
    a PixelSource from georeason.data.pixels.open_pixels (which reads every input kind).
    """
    started = time.perf_counter()
    src = as_source(src)
    with capped_block_cache(_block_cache_bytes(src, tile, bands)):
        return _run_tiled(src, predict_fn, out_path, tile, overlap, bands, limits, threshold, prob_path,
                          overwrite, tags, progress, started)


def _block_cache_bytes(src: PixelSource, tile: int, bands: Sequence[int] | None) -> int:
    """GDAL's block cache sized to twice one band of source blocks (tile + block rows x scene width)."""
    itemsize = max(dtype_itemsize(src.dtypes[b - 1]) for b in set(resolve_bands(src, bands)))
    band_bytes = (min(tile, src.height) + 512) * src.width * 3 * itemsize
    return max(16 * 2**20, 2 * band_bytes)


def _run_tiled(
    src: PixelSource,
    predict_fn: PredictFn,
    out_path: str | os.PathLike[str],
    tile: int,
    overlap: int,
    bands: Sequence[int] | None,
    limits: tuple[np.ndarray, np.ndarray] | None,
    threshold: float,
    prob_path: str | os.PathLike[str] | None,
    overwrite: bool,
    tags: dict[str, str] | None,
    progress: Callable[[int, int], None] | None,
    started: float,
) -> TiledResult:
    info = source_info(src)
    refuse_input_as_output(info, out_path)
    if prob_path is not None:
        refuse_input_as_output(info, prob_path)
        if Path(prob_path).resolve() == Path(out_path).resolve():
            raise GeoreasonError(f"{prob_path}: the probability and mask outputs must be different files")
    height, width = info.height, info.width
    windows = plan_tiles(height, width, tile, overlap)
    chosen = resolve_bands(src, bands)
    if limits is None and needs_stretch(src, chosen):
        limits = scene_limits(src, chosen)
    row_ramp, row_total = _axis_weights(height, tile, overlap)
    col_ramp, col_total = _axis_weights(width, tile, overlap)
    weights = np.outer(row_ramp, col_ramp).astype(np.float32)
    row_total32, col_total32 = row_total.astype(np.float32), col_total.astype(np.float32)

    writers = [GeoTiffWindowWriter(out_path, width, height, "uint8", MASK_NODATA, info, overwrite, tags,
                                   "georeason mask: 1 = answer, 0 = background, 255 = no data")]
    if prob_path is not None:
        writers.append(GeoTiffWindowWriter(prob_path, width, height, "float32", float("nan"), info, overwrite,
                                           tags, "georeason probability of the answer (NaN = no data)"))
    counts = {"valid": 0, "positive": 0, "empty": 0}
    optional_prob_writer = writers[1] if len(writers) > 1 else contextlib.nullcontext()
    with writers[0] as mask_writer, optional_prob_writer as prob_writer:
        block = mask_writer.block_size
        tile_h = int(windows[0].height)
        # Accumulated weighted probability of rows [top, top + buffer_rows); NaN marks nodata pixels.
        buffer_rows = min(height, tile_h + block)
        acc = np.zeros((buffer_rows, width), dtype=np.float32)
        top = 0

        def flush(end: int) -> None:
            """Normalise and write rows [top, end), one block row at a time, then slide the band up."""
            nonlocal top
            rows = end - top
            if rows <= 0:
                return
            for start in range(0, rows, block):
                stop = min(rows, start + block)
                # In place: these accumulator rows are final, so they become the blended probability.
                prob = acc[start:stop]
                prob /= row_total32[top + start : top + stop, None]
                prob /= col_total32[None, :]
                valid = np.isfinite(prob)
                positive = valid & (prob > threshold)
                mask = np.where(valid, positive.view(np.uint8), np.uint8(MASK_NODATA))
                window = Window(0, top + start, width, stop - start)
                mask_writer.write(mask, window)
                if prob_writer is not None:
                    prob_writer.write(prob, window)
                counts["valid"] += int(np.count_nonzero(valid))
                counts["positive"] += int(np.count_nonzero(positive))
            # Slide the band up (the rows below `end` are still being accumulated), in non-overlapping
            # chunks so numpy needs no temporary copy of the whole band.
            for dst in range(0, buffer_rows - rows, rows):
                count = min(rows, buffer_rows - rows - dst)
                acc[dst : dst + count] = acc[dst + rows : dst + rows + count]
            acc[buffer_rows - rows :] = 0.0
            top = end

        for done, window in enumerate(windows, start=1):
            row, col = int(window.row_off), int(window.col_off)
            if row > top:
                flush(row // block * block)  # rows above `row` are final; write whole block rows only
            rgb, valid = read_rgb(src, window, bands, limits)  # `bands` as given: None expands palettes
            if valid.any():
                prob = _check_prediction(predict_fn(rgb, valid), valid, window)
                contribution = np.where(valid, prob * weights, np.float32(np.nan))
            else:
                counts["empty"] += 1
                contribution = np.full(weights.shape, np.nan, dtype=np.float32)
            acc[row - top : row - top + weights.shape[0], col : col + weights.shape[1]] += contribution
            if progress is not None:
                progress(done, len(windows))
        flush(height)
    return TiledResult(
        mask_path=Path(out_path), prob_path=None if prob_path is None else Path(prob_path), width=width,
        height=height, tiles=len(windows), tiles_all_nodata=counts["empty"], valid_pixels=counts["valid"],
        positive_pixels=counts["positive"], seconds=time.perf_counter() - started,
        limits=None if limits is None else (list(map(float, limits[0])), list(map(float, limits[1]))),
    )

