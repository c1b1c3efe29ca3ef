"""The driver loop of `georeason batch`: each unfinished pair's tiles from the pool, blended and written as predict does.

Tiled inference of paper Sec. 4; docs/batch.md, "How the work is shared". The mask GeoTIFF is assembled
by georeason.reasoner.write_tiled_scene and the pair's files by georeason.predict.write_outputs, the
functions `predict --tile` uses, so the outputs are the same bit for bit.
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from typing import Any

from georeason.batch.inputs import Pair
from georeason.batch.manifest import RunFolder
from georeason.errors import GeoreasonError
from georeason.filenames import printable


def _failure(error: BaseException, debug: bool) -> dict[str, Any]:
    from georeason.predict import failure_message

    return {"status": "failed", "error": failure_message(error, debug)}


def compute(args: argparse.Namespace, folder: RunFolder, todo: list[Pair], actors: list[Any], model_name: str,
            max_pixels: int, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Predict every pair of `todo` on the actors, write its outputs and record it; fill `results` by name.

    A pair that fails is recorded in `results` with its error and the others go on. Returns the tile
    counts and timing for the summary.
    """
    from tqdm import tqdm

    from georeason.batch.workers import TileScheduler
    from georeason.predict import Job, output_paths, staging_paths, write_and_record
    from georeason.predict import parse_bands
    from georeason.reasoner import write_tiled_scene

    bands = parse_bands(args.bands)
    debug = bool(getattr(args, "debug", False))
    started = time.perf_counter()
    tiles_done = 0
    with tqdm(total=0, unit="tile", desc="batch", disable=args.no_progress, file=sys.stderr) as bar:
        def more_tiles(count: int) -> None:
            bar.total += count
            bar.refresh()

        scheduler = TileScheduler(actors, todo, args.tile_size, args.overlap, bands, not args.no_answer,
                                  on_tiles=more_tiles)
        for index, pair in enumerate(todo):
            bar.set_postfix_str(f"pair {index + 1}/{len(todo)}: {printable(pair.name)}", refresh=True)
            job = Job(index, pair.scene.source, pair.question, pair.name)
            counted = 0

            def progress(done: int, total: int) -> None:
                nonlocal counted, tiles_done
                bar.update(done - counted)
                tiles_done += done - counted
                counted = done

            try:
                overview = scheduler.overview(index)
                targets = output_paths(folder.scenes, job, args.vector_format)
                staged = staging_paths(targets)
                replaceable = folder.existing_outputs(list(targets.values()))
                prediction = write_tiled_scene(pair.scene.source, overview, _tile_source(scheduler, index, pair),
                                               staged["mask_geotiff"], args.tile_size, args.overlap, bands,
                                               progress=progress, model_name=model_name, max_pixels=max_pixels)
                write_and_record(prediction, job, folder.scenes, args, True, replaceable, None, staged)
                results[pair.name] = folder.record(pair, job.result)
                results[pair.name].pop("file_sizes", None)
            except Exception as error:  # noqa: BLE001 - one pair fails alone, the summary says why
                results[pair.name] = _failure(error, debug)
                print(f"georeason batch: {printable(pair.name)}: error: {results[pair.name]['error']}",
                      file=sys.stderr)
                bar.total -= len(scheduler.windows(index)) - counted
            finally:
                scheduler.release(index)
    seconds = time.perf_counter() - started
    return {"tiles": tiles_done, "tile_seconds": round(seconds, 3),
            "tiles_per_second": round(tiles_done / seconds, 3) if seconds > 0 else None}


def _tile_source(scheduler, index: int, pair: Pair):
    """run_tiled's predict_fn for pair `index`: the pool's tiles in plan order, skipping all-nodata ones.

    run_tiled asks only for tiles with a valid pixel; the worker returned None for the others. The CRC of
    the tile's RGB proves both read the same tile (a scene changed during the run fails here).
    """
    cursor = iter(range(len(scheduler.windows(index))))

    def predict_fn(rgb, valid):
        for number in cursor:
            probability, checksum = scheduler.tile(index, number)
            if probability is None:
                continue
            if checksum != zlib.crc32(rgb.tobytes()):
                raise GeoreasonError(f"{printable(pair.scene.source)}: tile {number + 1} read differently by the "
                                     "worker and by the writer; was the scene changed during the run?")
            return probability
        raise GeoreasonError(f"{printable(pair.scene.source)}: more tiles with data than the worker computed; was "
                             "the scene changed during the run?")

    return predict_fn
