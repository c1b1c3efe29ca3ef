"""The driver loop of `georeason batch`: each scene's unfinished pairs in one pass over its tiles from the pool,
blended and written by the functions `predict --tile` uses (tiled mode of paper Sec. 4; docs/batch.md)."""

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


def _record_failure(results: dict[str, dict[str, Any]], pair: Pair, error: BaseException, debug: bool) -> None:
    """Record `pair` as failed with `error` and say so on stderr; the other pairs go on."""
    results[pair.name] = _failure(error, debug)
    print(f"georeason batch: {printable(pair.name)}: error: {results[pair.name]['error']}", file=sys.stderr)


def plan_passes(pairs: list[Pair], per_pass: int | None = None) -> list[list[Pair]]:
    """The pairs grouped by scene (source), in order of each scene's first pair; a scene with more than
    `per_pass` questions (None: no limit) is split into passes of at most that many, in order."""
    scenes: dict[str, list[Pair]] = {}
    for pair in pairs:
        scenes.setdefault(pair.scene.source, []).append(pair)
    size = per_pass or max((len(group) for group in scenes.values()), default=1)
    return [group[start:start + size] for group in scenes.values() for start in range(0, len(group), size)]


def compute(args: argparse.Namespace, folder: RunFolder, todo: list[Pair], actors: list[Any], model_name: str,
            max_pixels: int, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Predict every pair of `todo` on the actors, write its outputs and record it; fill `results` by name.

    The pairs of one scene share one overview task and one pass over the tiles (plan_passes with
    args.questions_per_pass). A pair that fails is recorded in `results` with its error and the others go
    on: a question alone, or every pair of its pass when the scene or a tile fails. Returns the tile
    counts and timing for the summary: "tiles" counts each pair's tiles (a tile shared by k questions k
    times), "tiles_encoded" the tiles a worker encoded (each once per pass; all-nodata tiles are not).
    """
    from tqdm import tqdm

    from georeason.batch.workers import TileScheduler
    from georeason.predict import parse_bands

    bands = parse_bands(args.bands)
    todo = _refuse_unwritable_vectors(args, folder, todo, results)
    passes = plan_passes(todo, getattr(args, "questions_per_pass", None))
    started = time.perf_counter()
    counts = {"tiles": 0, "encoded": 0}
    with tqdm(total=0, unit="tile", desc="batch", disable=args.no_progress, file=sys.stderr) as bar:
        def more_tiles(count: int) -> None:
            bar.total += count
            bar.refresh()

        scheduler = TileScheduler(actors, passes, args.tile_size, args.overlap, bands, not args.no_answer,
                                  on_tiles=more_tiles)
        done = 0
        for index, pairs in enumerate(passes):
            names = printable(pairs[0].name) + (f" (+{len(pairs) - 1})" if len(pairs) > 1 else "")
            bar.set_postfix_str(f"pairs {done + 1}-{done + len(pairs)}/{len(todo)}: {names}", refresh=True)
            try:
                _write_pass(args, folder, scheduler, index, pairs, done, bands, model_name, max_pixels, results,
                            bar, counts)
            finally:
                scheduler.release(index)
            done += len(pairs)
    seconds = time.perf_counter() - started
    return {"tiles": counts["tiles"], "tiles_encoded": counts["encoded"], "tile_seconds": round(seconds, 3),
            "tiles_per_second": round(counts["tiles"] / seconds, 3) if seconds > 0 else None}


def _refuse_unwritable_vectors(args, folder: RunFolder, todo: list[Pair],
                               results: dict[str, dict[str, Any]]) -> list[Pair]:
    """The pairs whose polygons can be written in --vector-format; the others fail here, before any model
    work, as in `georeason predict` (GeoJSON needs coordinates that go to EPSG:4326: not a local CRS)."""
    if args.vector_format != "geojson":
        return todo  # a GeoPackage takes any CRS, or none
    from georeason.geo import open_raster, raster_info
    from georeason.predict import Job, check_vector_format

    debug = bool(getattr(args, "debug", False))
    infos: dict[str, Any] = {}
    kept = []
    for number, pair in enumerate(todo):
        try:
            source = pair.scene.source
            if source not in infos:
                with open_raster(source) as src:
                    infos[source] = raster_info(src)
            check_vector_format(infos[source], Job(number, source, pair.question, pair.name), folder.scenes,
                                args.vector_format)
            kept.append(pair)
        except Exception as error:  # noqa: BLE001 - this pair fails alone, the others go on
            _record_failure(results, pair, error, debug)
    return kept


def _write_pass(args, folder: RunFolder, scheduler, index: int, pairs: list[Pair], first: int, bands,
                model_name: str, max_pixels: int, results: dict[str, dict[str, Any]], bar, counts) -> None:
    """Pass `index`: its overviews, one blend of its tiles into every question's mask GeoTIFF, then each
    pair's files and record; every failure is recorded for the pairs it concerns."""
    from georeason.geo.atomic import remove_temporaries
    from georeason.predict import Job, output_paths, staging_paths, write_and_record
    from georeason.reasoner import write_tiled_questions

    debug = bool(getattr(args, "debug", False))

    def fail(pair: Pair, error: BaseException) -> None:
        _record_failure(results, pair, error, debug)

    try:
        overviews = scheduler.overview(index)
    except Exception as error:  # noqa: BLE001 - the scene's pairs fail, the other scenes go on
        for pair in pairs:
            fail(pair, error)
        return
    ready = []  # (pair, job, overview, staged paths, replaceable outputs)
    for number, (pair, overview) in enumerate(zip(pairs, overviews, strict=True)):
        if isinstance(overview, Exception):  # this question failed alone
            fail(pair, overview)
            continue
        job = Job(first + number, pair.scene.source, pair.question, pair.name)
        targets = output_paths(folder.scenes, job, args.vector_format)
        ready.append((pair, job, overview, staging_paths(targets), folder.existing_outputs(list(targets.values()))))
    if not ready:
        return
    counted = 0

    def progress(done: int, total: int) -> None:
        nonlocal counted
        bar.update((done - counted) * len(ready))
        counts["tiles"] += (done - counted) * len(ready)
        counted = done

    try:
        predictions = write_tiled_questions(
            pairs[0].scene.source, [overview for _, _, overview, _, _ in ready],
            _tile_source(scheduler, index, pairs[0], counts), [staged["mask_geotiff"] for *_, staged, _ in ready],
            args.tile_size, args.overlap, bands, progress=progress, model_name=model_name, max_pixels=max_pixels)
    except Exception as error:  # noqa: BLE001 - the scene or a tile failed: the pass's pairs fail
        for pair, *_ in ready:
            fail(pair, error)
        bar.total -= (len(scheduler.windows(index)) - counted) * len(ready)
        return
    try:
        for (pair, job, _, staged, replaceable), prediction in zip(ready, predictions, strict=True):
            try:
                if isinstance(prediction, Exception):  # this question's mask GeoTIFF failed alone
                    raise prediction
                write_and_record(prediction, job, folder.scenes, args, True, replaceable, None, staged)
                results[pair.name] = folder.record(pair, job.result)
                results[pair.name].pop("file_sizes", None)
            except Exception as error:  # noqa: BLE001 - one pair fails alone, the summary says why
                fail(pair, error)
    finally:  # interrupted between two pairs: the blended masks not yet committed are not left behind
        for *_, staged, _ in ready:
            remove_temporaries(staged["mask_geotiff"])


def _tile_source(scheduler, index: int, pair: Pair, counts: dict[str, int]):
    """run_tiled_outputs' predict_fn for pass `index`: the pool's tiles (one probability per question) in
    plan order, skipping all-nodata ones (which no worker encoded); counts["encoded"] counts the others.

    run_tiled asks only for tiles with a valid pixel; the worker returned None for the others. The CRC of
    the tile's RGB proves both read the same tile (a scene changed during the run fails here).
    """
    cursor = iter(range(len(scheduler.windows(index))))

    def predict_fn(rgb, valid):
        for number in cursor:
            probabilities, checksum = scheduler.tile(index, number)
            if probabilities is None:
                continue
            if checksum != zlib.crc32(rgb.tobytes()):
                raise GeoreasonError(f"{printable(pair.scene.source)}: tile {number + 1} read differently by the "
                                     "worker and by the writer; was the scene changed during the run?")
            counts["encoded"] += 1
            return probabilities
        raise GeoreasonError(f"{printable(pair.scene.source)}: more tiles with data than the worker computed; was "
                             "the scene changed during the run?")

    return predict_fn
