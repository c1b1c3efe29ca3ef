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
from georeason.geo.output import MASK_NODATA, GeoTiffWindowWriter, geotiff_profile, refuse_input_as_output
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
# The same for N outputs at once: one probability map per output, in order
PredictManyFn = Callable[[np.ndarray, np.ndarray], Sequence[np.ndarray]]


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
    The one-output case of run_tiled_outputs; raises its GeoreasonError, leaving no file behind.
    """
    (result,) = run_tiled_outputs(src, lambda rgb, valid: (predict_fn(rgb, valid),),
                                  [TiledOutput(out_path, prob_path, tags)], tile, overlap, bands, limits, threshold,
                                  overwrite, progress)
    if isinstance(result, GeoreasonError):
        raise result
    return result


@dataclass
class TiledOutput:
    """Where one blended result of run_tiled_outputs goes: a uint8 mask GeoTIFF, optionally a float32
    probability GeoTIFF (another file), and the tags written into both."""

    mask_path: str | os.PathLike[str]
    prob_path: str | os.PathLike[str] | None = None
    tags: dict[str, str] | None = None


def run_tiled_outputs(
    src: DatasetReader | PixelSource,
    predict_fn: PredictManyFn,
    outputs: Sequence[TiledOutput],
    tile: int = 1024,
    overlap: int = 128,
    bands: Sequence[int] | None = None,
    limits: tuple[np.ndarray, np.ndarray] | None = None,
    threshold: float = 0.5,
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[TiledResult | GeoreasonError]:
    """run_tiled for N results in one pass over the tiles (e.g. N questions about one scene).

    `predict_fn(rgb, valid)` returns one probability map (float32 [h, w] in [0, 1]) per output, in the
    order of `outputs`; each is blended and written as run_tiled writes one, atomically, with memory of
    one accumulator band per output. Returns, per output in order, its TiledResult, or the
    GeoreasonError that failed it alone: its file exists (without overwrite) or is the input, a map of
    the wrong shape or with NaN, a write or commit the file system refused. A failed output leaves no
    file and the others go on. A predict_fn that raises or returns the wrong number of maps fails the
    whole call (raised), and no output is left. Raises GeoreasonError for an output path given twice.
    """
    started = time.perf_counter()
    src = as_source(src)
    seen: set[Path] = set()
    for output in outputs:
        paths = {Path(p).resolve() for p in (output.mask_path, output.prob_path) if p is not None}
        if seen & paths:
            raise GeoreasonError(f"{min(seen & paths)}: the same file is given for two tiled outputs; each needs "
                                 "its own")
        seen |= paths
    with capped_block_cache(_block_cache_bytes(src, tile, bands)):
        return _run_tiled(src, predict_fn, list(outputs), tile, overlap, bands, limits, threshold, overwrite,
                          progress, started)


def _block_cache_bytes(src: PixelSource, tile: int, bands: Sequence[int] | None) -> int:
    """GDAL's block cache sized to twice one band of source blocks (tile + block rows x scene width)."""
    itemsize = max(dtype_itemsize(src.dtypes[b - 1]) for b in set(resolve_bands(src, bands)))
    band_bytes = (min(tile, src.height) + 512) * src.width * 3 * itemsize
    return max(16 * 2**20, 2 * band_bytes)


class _Blend:
    """One output of a tiled run: its writers, its accumulator band and its counts, or the error that failed it."""

    def __init__(self, output: TiledOutput, info, overwrite: bool, buffer_rows: int) -> None:
        self.output = output
        self.error: GeoreasonError | None = None
        self.counts = {"valid": 0, "positive": 0}
        self.writers: list[GeoTiffWindowWriter] = []  # entered ones, mask first
        width, height = info.width, info.height
        try:
            refuse_input_as_output(info, output.mask_path)
            if output.prob_path is not None:
                refuse_input_as_output(info, output.prob_path)
                if Path(output.prob_path).resolve() == Path(output.mask_path).resolve():
                    raise GeoreasonError(f"{output.prob_path}: the probability and mask outputs must be different "
                                         "files")
            self.writers.append(GeoTiffWindowWriter(
                output.mask_path, width, height, "uint8", MASK_NODATA, info, overwrite, output.tags,
                "georeason mask: 1 = answer, 0 = background, 255 = no data").__enter__())
            if output.prob_path is not None:
                self.writers.append(GeoTiffWindowWriter(
                    output.prob_path, width, height, "float32", float("nan"), info, overwrite, output.tags,
                    "georeason probability of the answer (NaN = no data)").__enter__())
        except GeoreasonError as error:
            self.fail(error)
            return
        except BaseException as error:
            self.abort(error)
            raise
        # Accumulated weighted probability of rows [top, top + buffer_rows); NaN marks nodata pixels.
        self.acc: np.ndarray | None = np.zeros((buffer_rows, width), dtype=np.float32)

    @property
    def live(self) -> bool:
        return self.error is None

    def fail(self, error: GeoreasonError) -> None:
        """Record `error` and remove this output's temporary files; the other outputs go on."""
        self.error = error
        self.abort(error)

    def abort(self, error: BaseException) -> None:
        """Close the writers without committing: their temporary files are removed."""
        writers, self.writers, self.acc = self.writers, [], None
        for writer in reversed(writers):
            with contextlib.suppress(Exception):
                writer.__exit__(type(error), error, error.__traceback__)

    def commit(self) -> None:
        """Close the writers, which puts the files in place (probability first, as nested writers would)."""
        writers, self.writers = self.writers, []
        try:
            while writers:
                writers[-1].__exit__(None, None, None)
                writers.pop()
        except GeoreasonError as error:
            self.writers = writers[:-1]  # the failed writer cleaned up after itself
            self.fail(error)

    def add(self, row: int, col: int, contribution: np.ndarray) -> None:
        self.acc[row : row + contribution.shape[0], col : col + contribution.shape[1]] += contribution

    def flush(self, top: int, end: int, block: int, width: int, row_total: np.ndarray, col_total: np.ndarray,
              threshold: float) -> None:
        """Normalise and write rows [top, end), one block row at a time, then slide the band up."""
        rows = end - top
        if rows <= 0:
            return
        acc = self.acc
        buffer_rows = acc.shape[0]
        try:
            for start in range(0, rows, block):
                stop = min(rows, start + block)
                # In place: these accumulator rows are final, so they become the blended probability.
                prob = acc[start:stop]
                prob /= row_total[top + start : top + stop, None]
                prob /= col_total[None, :]
                valid = np.isfinite(prob)
                positive = valid & (prob > threshold)
                mask = np.where(valid, positive.view(np.uint8), np.uint8(MASK_NODATA))
                window = Window(0, top + start, width, stop - start)
                self.writers[0].write(mask, window)
                if len(self.writers) > 1:
                    self.writers[1].write(prob, window)
                self.counts["valid"] += int(np.count_nonzero(valid))
                self.counts["positive"] += int(np.count_nonzero(positive))
        except GeoreasonError as error:  # e.g. the disk is full
            self.fail(error)
            return
        # Slide the band up (the rows below `end` are still being accumulated), in non-overlapping
        # chunks so numpy needs no temporary copy of the whole band.
        for dst in range(0, buffer_rows - rows, rows):
            count = min(rows, buffer_rows - rows - dst)
            acc[dst : dst + count] = acc[dst + rows : dst + rows + count]
        acc[buffer_rows - rows :] = 0.0


def _run_tiled(
    src: PixelSource,
    predict_fn: PredictManyFn,
    outputs: list[TiledOutput],
    tile: int,
    overlap: int,
    bands: Sequence[int] | None,
    limits: tuple[np.ndarray, np.ndarray] | None,
    threshold: float,
    overwrite: bool,
    progress: Callable[[int, int], None] | None,
    started: float,
) -> list[TiledResult | GeoreasonError]:
    info = source_info(src)
    height, width = info.height, info.width
    windows = plan_tiles(height, width, tile, overlap)
    chosen = resolve_bands(src, bands)
    if limits is None and needs_stretch(src, chosen):
        limits = scene_limits(src, chosen)
    row_ramp, row_total = _axis_weights(height, tile, overlap)
    col_ramp, col_total = _axis_weights(width, tile, overlap)
    weights = np.outer(row_ramp, col_ramp).astype(np.float32)
    row_total32, col_total32 = row_total.astype(np.float32), col_total.astype(np.float32)
    block = geotiff_profile(width, height, "uint8", MASK_NODATA, None)["blockysize"]  # every output's block rows
    tile_h = int(windows[0].height)
    buffer_rows = min(height, tile_h + block)
    blends: list[_Blend] = []
    empty = 0
    top = 0
    try:
        for output in outputs:
            blends.append(_Blend(output, info, overwrite, buffer_rows))

        def flush(end: int) -> None:
            nonlocal top
            for blend in blends:
                if blend.live:
                    blend.flush(top, end, block, width, row_total32, col_total32, threshold)
            top = max(top, end)

        for done, window in enumerate(windows, start=1):
            if not any(blend.live for blend in blends):
                break  # every output has failed: nothing left to compute
            row, col = int(window.row_off), int(window.col_off)
            if row > top:
                flush(row // block * block)  # rows above `row` are final; write whole block rows only
            rgb, valid = read_rgb(src, window, bands, limits)  # `bands` as given: None expands palettes
            if valid.any():
                probs = list(predict_fn(rgb, valid))
                if len(probs) != len(blends):
                    raise GeoreasonError(f"predict_fn returned {len(probs)} probability maps for "
                                         f"{len(blends)} outputs")
                for blend, prob in zip(blends, probs):
                    if not blend.live:
                        continue
                    try:
                        prob = _check_prediction(prob, valid, window)
                    except GeoreasonError as error:
                        blend.fail(error)
                        continue
                    blend.add(row - top, col, np.where(valid, prob * weights, np.float32(np.nan)))
            else:
                empty += 1
                nodata = np.full(weights.shape, np.nan, dtype=np.float32)
                for blend in blends:
                    if blend.live:
                        blend.add(row - top, col, nodata)
            if progress is not None:
                progress(done, len(windows))
        flush(height)
        for blend in blends:
            if blend.live:
                blend.commit()
    except BaseException as error:
        for blend in blends:
            blend.abort(error)
        raise
    seconds = time.perf_counter() - started
    stretch = None if limits is None else (list(map(float, limits[0])), list(map(float, limits[1])))
    return [blend.error if blend.error is not None else TiledResult(
        mask_path=Path(blend.output.mask_path),
        prob_path=None if blend.output.prob_path is None else Path(blend.output.prob_path), width=width,
        height=height, tiles=len(windows), tiles_all_nodata=empty, valid_pixels=blend.counts["valid"],
        positive_pixels=blend.counts["positive"], seconds=seconds, limits=stretch) for blend in blends]
