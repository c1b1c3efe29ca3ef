"""`georeason predict`: masks, answers, overlays, GeoTIFFs and vectors for images and GeoTIFF scenes.

Inference of paper Sec. 4 (docs/released_code.md#inference) through georeason.reasoner; under torchrun/accelerate the
inputs
are split across processes (input i goes to rank i mod N) and rank 0 writes the merged summary.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georeason.config import ANSWER_WEIGHTS
from georeason.errors import GeoreasonError
from georeason.filenames import (
    inputs_among_outputs,
    printable,
    printable_tree,
    require_utf8_path,
    unique_names,
)

CLI_DESCRIPTION = """Segment what answers a question in images or GeoTIFF scenes.

Writes, per image and question, into --out: NAME.mask.png (original size, 255 = answer),
NAME.overlay.png (mask over the image, question and answer below) and NAME.gpkg (or .geojson)
polygons; for raster inputs (GeoTIFF etc.) also NAME.mask.tif (the source's CRS/transform, GCPs or
RPCs; 1 = answer, 0 = background, 255 = nodata). summary.json lists inputs, outputs, answers, timings and the model.
Scenes above --max-pixels need --tile (tiled inference, constant memory); a PNG, JPEG or other
file that cannot be read by windows must first become a tiled GeoTIFF (docs/predict.md)."""

CLI_EPILOG = """examples:
  georeason predict --model runs/smol IMG_0001.jpg --question "Where could a small plane land?" --out pred
  georeason predict --model runs/smol scene.tif --question "Which fields are flooded?" --tile --out pred
  georeason predict --model runs/smol --questions pairs.jsonl --out pred --vector-format geojson
  torchrun --nproc_per_node 2 -m georeason.cli predict --model runs/smol --questions pairs.jsonl --out pred
"""

SUMMARY_NAME = "summary.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image or raster files (with --question)")
    parser.add_argument("--model", required=True, metavar="DIR|HUB_ID",
                        help="model folder (config.json, weights, tokenizer) or hub id, e.g. "
                             "earth-insights/SegEarth-R1-EarthReason (downloaded and converted once)")
    parser.add_argument("--revision", help="with a hub id: branch, tag or commit hash (default main)")
    parser.add_argument("--out", required=True, metavar="OUTDIR", help="output folder (created if missing)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--question", metavar="TEXT", action="append",
                        help="the question asked about every IMAGE; repeat it to ask several (each image is "
                             "then encoded once for all its questions)")
    source.add_argument("--questions", metavar="FILE.jsonl",
                        help='one {"image": path, "question": text} per line (paths relative to the file)')
    parser.add_argument("--bands", metavar="B,B,B", help="1-based bands to use as R,G,B, e.g. 3,2,1 (default 1,2,3)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--tile", dest="mode", action="store_const", const="tile",
                      help="tiled inference: any scene size, GeoTIFF written window by window")
    mode.add_argument("--whole", dest="mode", action="store_const", const="whole",
                      help="resize the whole image to the model size (the paper's way; the default)")
    add_inference_arguments(parser, max_pixels_help=(
        "largest image decoded at once (default 64000000): any scene in whole-image mode, and with --tile a "
        "PNG/JPEG or other file that cannot be read by windows; larger scenes need --tile (tiled GeoTIFFs have "
        "no limit)"))
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that exist before the run (never a file this run wrote)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto (default cpu)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="model precision (default float32; bfloat16 halves memory)")
    answers = parser.add_mutually_exclusive_group()
    answers.add_argument("--answer-weights", choices=ANSWER_WEIGHTS,
                         help="answer steps with int8 or int4 (groups of 32) LLM weights (CPU, float32; the mask "
                              "unchanged, answers may differ in a few tokens; docs/performance.md)")
    answers.add_argument("--answer-int8", dest="answer_weights", action="store_const", const="int8",
                         help="the same as --answer-weights int8 (about 2x faster answers)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder and pixel decoder (needs a C++ compiler; the first image "
                             "pays minutes of compilation; masks within float rounding of eager)")
    parser.add_argument("--batch-size", type=int, default=1, metavar="N",
                        help="images per model call in whole-image mode (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_inference_arguments(parser: argparse.ArgumentParser, *, max_pixels_help: str, per_scene: bool = False) -> None:
    """--tile-size, --overlap, --max-pixels, --vector-format, --simplify, --min-area, --no-answer, --num-beams:
    the options `georeason predict` and `georeason batch` (which writes each pair as `predict --tile` does)
    share, in this order. `max_pixels_help`: what --max-pixels limits in that command; `per_scene`: the
    command writes polygons per scene (batch), which the help of --vector-format and --min-area says.
    """
    vectors = "per-scene polygons: " if per_scene else ""
    parser.add_argument("--tile-size", type=int, default=1024, metavar="PX", help="tile side in pixels (default 1024)")
    parser.add_argument("--overlap", type=int, default=128, metavar="PX",
                        help="overlap of neighbouring tiles, blended linearly (default 128, at most tile/2)")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N", help=max_pixels_help)
    parser.add_argument("--vector-format", choices=("gpkg", "geojson"), default="gpkg",
                        help=f"{vectors}gpkg keeps the source CRS; geojson is RFC 7946 lon/lat (EPSG:4326)")
    parser.add_argument("--simplify", type=float, default=0.0, metavar="T",
                        help="simplify polygons with this tolerance in map units (0 = exact pixel edges)")
    parser.add_argument("--min-area", type=float, default=0.0, metavar="A",
                        help="drop polygons smaller than this area in map units squared"
                             + (" (per scene)" if per_scene else ""))
    parser.add_argument("--no-answer", action="store_true", help="masks only; do not generate the answer text")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N",
                        help="beam search over N beams for the answer (default 1: greedy, continuing from the "
                             "mask's KV cache); the mask is the same either way")


@dataclass
class Job:
    """One (image, question) pair and where its outputs go."""

    index: int
    image: str
    question: str
    name: str
    result: dict[str, Any] = field(default_factory=dict)
    checked: Any = None  # the georeason.processor.Question: checked and tokenised once, before any work


def parse_bands(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise GeoreasonError(
            f"--bands: expected 1-based band numbers separated by commas like 3,2,1, got {text!r}") from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise GeoreasonError(f"--bands: expected one or three band numbers >= 1 like 3,2,1, got {text!r}")
    return bands


def read_pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(image, question) pairs from IMAGE... --question or from --questions FILE.jsonl."""
    if args.question is not None:
        if not args.images:
            raise GeoreasonError("IMAGE: give at least one image file with --question")
        questions = [args.question] if isinstance(args.question, str) else list(args.question)
        return [(image, question) for image in args.images for question in questions]
    if args.images:
        raise GeoreasonError("IMAGE: give images either on the command line (with --question) or in --questions, "
                             "not both")
    from georeason.textfiles import read_text_file

    path = Path(args.questions)
    if not path.is_file():
        raise GeoreasonError(f"{printable(path)}: no such questions file (--questions expects a JSONL file)")
    pairs = []
    for number, line in enumerate(read_text_file(path, "--questions").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise GeoreasonError(f"{printable(path)}:{number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("image"), str) \
                or not isinstance(record.get("question"), str):
            raise GeoreasonError(f'{printable(path)}:{number}: expected {{"image": "path", "question": "text"}}')
        image = Path(record["image"])
        pairs.append((str(image if image.is_absolute() else path.parent / image), record["question"]))
    if not pairs:
        raise GeoreasonError(f"{printable(path)}: the questions file has no entries")
    return pairs


def plan_jobs(pairs: list[tuple[str, str]]) -> list[Job]:
    """Jobs with output names unique within the run (see georeason.filenames.unique_names).

    The image stem, made portable; a repeated stem gets -2, -3 ..., skipping names that other inputs
    have as their own stem: d1/tile.tif, d2/tile.tif, tile-2.tif -> tile, tile-3, tile-2.
    """
    for image, _ in pairs:
        if not Path(image).is_file():
            raise GeoreasonError(f"{printable(image)}: no such image file")
    names = unique_names([Path(image).stem for image, _ in pairs])
    return [Job(index, image, question, name) for index, ((image, question), name) in enumerate(zip(pairs, names))]


def output_paths(out: Path, job: Job, vector_format: str) -> dict[str, Path]:
    """Every file a job may write (the GeoTIFF only for raster inputs)."""
    return {"mask_png": out / f"{job.name}.mask.png", "overlay_png": out / f"{job.name}.overlay.png",
            "mask_geotiff": out / f"{job.name}.mask.tif", "vectors": out / f"{job.name}.{vector_format}"}


def check_out_folder(out: Path) -> None:
    """Refuse an --out that cannot hold the outputs, before the model is loaded."""
    require_utf8_path(out, "--out")
    if out.exists() and not out.is_dir():
        raise GeoreasonError(f"--out {printable(out)}: exists and is not a folder")
    existing = next((p for p in [out, *out.absolute().parents] if p.exists()), None)
    if existing is not None and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        where = "the folder" if existing == out else f"{printable(existing)}, where it would be created,"
        raise GeoreasonError(f"--out {printable(out)}: {where} is not writable")


def planned_outputs(out: Path, jobs: list[Job], vector_format: str) -> list[Path]:
    """Every file the run may write: summary.json and each job's outputs."""
    return [out / SUMMARY_NAME] + [p for job in jobs for p in output_paths(out, job, vector_format).values()]


def check_planned_outputs(out: Path, jobs: list[Job], vector_format: str, overwrite: bool) -> set[Path]:
    """Check the run's output files against its inputs and the disk before any model work.

    Returns the files that exist now and may be replaced (--overwrite); every other output is written only
    if no file has that name when it is written, so a run never replaces a file it wrote itself. An output
    that is an input of the run, or a folder, is refused even with --overwrite.
    """
    planned = planned_outputs(out, jobs, vector_format)
    clashes = inputs_among_outputs([job.image for job in jobs], planned)
    if clashes:
        source, output = clashes[0]
        raise GeoreasonError(f"{printable(output)}: this output of the run is also one of its inputs "
                             f"({printable(source)}); choose another --out")
    existing = [path for path in planned if path.exists() or path.is_symlink()]
    for path in existing:
        if path.is_dir():
            raise GeoreasonError(f"{printable(path)}: an output of this run is a folder; remove it or choose "
                                 "another --out")
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise GeoreasonError(f"{printable(existing[0])}: output file already exists{more}; pass --overwrite to "
                             "replace it")
    return set(existing)


def _remove_leftovers(out: Path, jobs: list[Job]) -> None:
    """Remove temporary files that an interrupted run left for this run's output names (and say so)."""
    from georeason.geo.atomic import remove_stale_temporaries

    stems = {"summary"} | {stem for job in jobs for stem in (job.name, f"{job.name}.mask", f"{job.name}.overlay")}
    removed = remove_stale_temporaries(out, stems)
    if removed:
        print(f"georeason predict: removed {len(removed)} temporary file(s) left by an interrupted run in "
              f"{printable(out)}", file=sys.stderr)


def distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the torchrun / accelerate launch environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world > 1 and not 0 <= rank < world:
        raise GeoreasonError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return rank, world, local


def _raster_summary(raster) -> dict[str, Any] | None:
    if raster is None:
        return None
    crs = None if raster.crs is None else raster.crs.to_string()
    return {"width": raster.width, "height": raster.height, "crs": crs,
            "transform": list(raster.transform)[:6], "nodata": raster.nodata, "georeferenced": raster.georeferenced,
            "georeferencing": raster.georef.to_dict()}


def check_vector_format(raster, job: Job, out: Path, vector_format: str) -> None:
    """Fail a pair before any model work when its polygons cannot be written in --vector-format."""
    if raster is not None:
        driver = "GeoJSON" if vector_format == "geojson" else "GPKG"
        raster.georef.vector_note(output_paths(out, job, vector_format)["vectors"], driver)


def staging_paths(targets: dict[str, Path]) -> dict[str, Path]:
    """A hidden temporary name next to each output (georeason.geo.prediction_files.staging_paths)."""
    from georeason.geo.prediction_files import staging_paths as stage

    return stage(targets)


def write_outputs(prediction, job: Job, out: Path, args: argparse.Namespace, tiled: bool,
                  replaceable: set[Path], staged: dict[str, Path] | None = None) -> dict[str, Any]:
    """All outputs of one prediction, through the writer the service uses too
    (georeason.geo.prediction_files): staged, then committed together, or none of them.

    In tiled mode the mask GeoTIFF is already at staged["mask_geotiff"].
    """
    from georeason.geo.prediction_files import write_prediction_files

    targets = output_paths(out, job, args.vector_format)
    kinds, vectors = write_prediction_files(
        prediction, targets, tiled=tiled, vector_driver="GeoJSON" if args.vector_format == "geojson" else "GPKG",
        simplify=args.simplify, min_area=args.min_area, replaceable=replaceable, staged=staged)
    files: dict[str, Any] = {"outputs": {kind: str(targets[kind]) for kind in kinds}, "vectors": vectors}
    replaced = [str(targets[kind]) for kind in kinds if targets[kind] in replaceable]
    if replaced:
        files["replaced"] = replaced
    return files


def write_and_record(prediction, job: Job, out: Path, args: argparse.Namespace, tiled: bool, replaceable: set[Path],
                     rank: int | None, staged: dict[str, Path] | None = None) -> None:
    """write_outputs, timed as prediction.seconds["outputs"] (seconds), then the pair's "ok" job.result
    (`rank`: this process's, None in georeason batch). Raises what write_outputs raises."""
    started = time.perf_counter()
    files = write_outputs(prediction, job, out, args, tiled, replaceable, staged)
    prediction.seconds["outputs"] = time.perf_counter() - started
    _record(job, prediction, tiled, files, rank)


def _record(job: Job, prediction, tiled: bool, files: dict[str, Any], rank: int) -> None:
    raster = prediction.raster
    job.result = {
        "status": "ok", "rank": rank, "mode": "tile" if tiled else "whole", "answer": prediction.answer,
        "empty": bool(prediction.empty), "raster": _raster_summary(raster), **files,
        "seconds": {k: round(v, 4) for k, v in prediction.seconds.items()},
        "notes": list(getattr(prediction, "notes", [])),  # how the input was read (complex amplitude, EXIF)
    }
    if tiled:
        job.result["tiles"] = prediction.tiles
        job.result["positive_pixels"] = prediction.positive_pixels


def failure_message(error: BaseException, debug: bool = False) -> str:
    """A failed pair's message: a GeoreasonError's own text (GeoJSON refusals advising --vector-format gpkg);
    anything else named as an internal error (with its traceback on stderr when `debug`)."""
    from georeason.geo import NoLonLatError

    if isinstance(error, NoLonLatError):  # its message advises the Python API's driver='GPKG'
        return printable(error.advising("--vector-format gpkg"), multiline=True)
    if isinstance(error, GeoreasonError):
        return printable(error, multiline=True)
    if debug:
        import traceback

        traceback.print_exception(error)
    return f"internal error: {type(error).__name__}: {printable(error, multiline=True)}"


def _fail(job: Job, error: Exception, rank: int, debug: bool = False) -> None:
    """Record and print one failed pair; the run goes on. An unexpected exception is named as such."""
    message = failure_message(error, debug)
    job.result = {"status": "failed", "rank": rank, "error": message}
    print(f"georeason predict: error: {message}", file=sys.stderr)


def process(reasoner, jobs: list[Job], out: Path, args: argparse.Namespace, rank: int, bar,
            replaceable: set[Path] | None = None) -> None:
    """Predict this process's jobs: whole-mode ones in batches, tiled ones one scene at a time (each scene's
    questions together, every tile encoded once for all of them).

    Each pair fails alone (recorded in job.result); `replaceable` lists the files --overwrite may replace.
    """
    from georeason.reasoner import load_input

    debug = bool(getattr(args, "debug", False))
    replaceable = replaceable or set()
    bands = parse_bands(args.bands)
    if args.mode == "tile":
        for group in scenes(jobs):
            _process_scene(reasoner, group, out, args, rank, bar, replaceable, bands, debug)
        return
    single, shared = group_by_image(jobs)
    for group in shared:
        _process_questions(reasoner, group, out, args, rank, bar, replaceable, bands, debug)
    for start in range(0, len(single), args.batch_size):
        batch = single[start : start + args.batch_size]
        loaded = []
        for job in batch:
            try:
                item = load_input(job.image, bands, reasoner.max_pixels)
                check_vector_format(item.raster, job, out, args.vector_format)
                loaded.append((job, item))
            except Exception as error:  # noqa: BLE001
                _fail(job, error, rank, debug)
                bar.update(1)
        if not loaded:
            continue
        try:
            predictions = reasoner.predict_loaded([item for _, item in loaded],
                                                  [job.checked or job.question for job, _ in loaded],
                                                  answer=not args.no_answer)
        except Exception as error:  # noqa: BLE001 - the batch's pairs fail, later batches go on
            for job, _ in loaded:
                _fail(job, error, rank, debug)
                bar.update(1)
            continue
        _write_each([job for job, _ in loaded], predictions, out, args, rank, bar, replaceable, debug)


def scenes(jobs: list[Job]) -> list[list[Job]]:
    """The jobs grouped by image (the same file by absolute path), in order of each image's first job."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(os.path.abspath(job.image), []).append(job)
    return list(groups.values())


def group_by_image(jobs: list[Job]) -> tuple[list[Job], list[list[Job]]]:
    """(jobs whose image is asked one question, groups of jobs asking several questions of one image)."""
    groups = scenes(jobs)
    return ([g[0] for g in groups if len(g) == 1], [g for g in groups if len(g) > 1])


def _process_scene(reasoner, group: list[Job], out: Path, args: argparse.Namespace, rank: int, bar,
                   replaceable: set[Path], bands, debug: bool) -> None:
    """Tiled mode: every question about one scene in one pass over its tiles
    (GeoReasoner.predict_tiled_questions); each job keeps its own outputs, record and error."""
    from georeason.geo import open_raster, raster_info

    def fail(job: Job, error: Exception) -> None:
        _fail(job, error, rank, debug)
        bar.update(1)

    try:
        with open_raster(group[0].image) as src:
            info = raster_info(src)
    except Exception as error:  # noqa: BLE001 - this scene's pairs fail, the other scenes go on
        for job in group:
            fail(job, error)
        return
    ready = []
    for job in group:
        try:
            check_vector_format(info, job, out, args.vector_format)
            ready.append((job, staging_paths(output_paths(out, job, args.vector_format))))
        except Exception as error:  # noqa: BLE001 - this pair fails alone
            fail(job, error)
    if not ready:
        return
    jobs = [job for job, _ in ready]
    try:
        predictions = reasoner.predict_tiled_questions(
            group[0].image, [job.checked or job.question for job in jobs],
            [staged["mask_geotiff"] for _, staged in ready], args.tile_size, args.overlap,
            answer=not args.no_answer, bands=bands, progress=_tile_progress(bar, _scene_label(jobs)),
            return_errors=True)
    except Exception as error:  # noqa: BLE001 - this scene's pairs fail, the other scenes go on
        for job in jobs:
            fail(job, error)
        return
    for (job, staged), prediction in zip(ready, predictions, strict=True):
        if isinstance(prediction, Exception):  # this question's mask GeoTIFF failed; the others are written
            fail(job, prediction)
            continue
        try:
            write_and_record(prediction, job, out, args, True, replaceable, rank, staged)
        except Exception as error:  # noqa: BLE001
            _fail(job, error, rank, debug)
        bar.update(1)


def _process_questions(reasoner, group: list[Job], out: Path, args: argparse.Namespace, rank: int, bar,
                       replaceable: set[Path], bands, debug: bool) -> None:
    """Several questions about one image: read and encoded once (GeoReasoner.predict_questions)."""
    from georeason.reasoner import load_input

    try:
        item = load_input(group[0].image, bands, reasoner.max_pixels)
        for job in group:
            check_vector_format(item.raster, job, out, args.vector_format)
        predictions = reasoner.predict_questions(item, [job.checked or job.question for job in group],
                                                 answer=not args.no_answer)
    except Exception as error:  # noqa: BLE001 - this image's pairs fail, the other images go on
        for job in group:
            _fail(job, error, rank, debug)
            bar.update(1)
        return
    _write_each(group, predictions, out, args, rank, bar, replaceable, debug)


def _write_each(jobs: list[Job], predictions: list[Any], out: Path, args: argparse.Namespace, rank: int, bar,
                replaceable: set[Path], debug: bool) -> None:
    """Write and record the whole-image outputs of each (job, prediction); a pair whose files fail fails alone."""
    for job, prediction in zip(jobs, predictions):
        try:
            write_and_record(prediction, job, out, args, False, replaceable, rank)
        except Exception as error:  # noqa: BLE001
            _fail(job, error, rank, debug)
        bar.update(1)


def _scene_label(group: list[Job]) -> str:
    """The progress label of a scene: its first output name, and how many questions ride along."""
    more = len(group) - 1
    return group[0].name + (f" (+{more} question{'s' if more > 1 else ''})" if more else "")


def _tile_progress(bar, label: str):
    """A progress callback showing tiles done of the current scene in the bar's postfix."""
    def update(done: int, total: int) -> None:
        bar.set_postfix_str(f"{label}: tile {done}/{total}", refresh=done == total or done % 8 == 0)
    return update


def _gather(jobs: list[Job], world: int) -> list[dict[str, Any]]:
    """Every rank's job results on rank 0 (after a barrier); other ranks get []."""
    mine = [{"index": job.index, **job.result} for job in jobs]
    if world == 1:
        return mine
    import torch.distributed as dist

    gathered: list[Any] = [None] * world if dist.get_rank() == 0 else None  # type: ignore[assignment]
    dist.gather_object(mine, gathered, dst=0)
    return [] if gathered is None else [entry for part in gathered for entry in part]


def write_summary(path: Path, all_jobs: list[Job], results: list[dict[str, Any]], reasoner, args, world: int,
                  seconds: dict[str, float], replaceable: set[Path] | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write summary.json (every name made printable, see georeason.filenames.printable) and return it.

    `reasoner` needs fingerprint() and max_pixels; `extra` adds or replaces top-level keys (georeason batch).
    """
    from georeason import __version__
    from georeason.geo.atomic import atomic_output

    by_index = {entry["index"]: entry for entry in results}
    inputs = [{"index": job.index, "image": job.image, "question": job.question, "name": job.name,
               **{k: v for k, v in by_index.get(job.index, {"status": "missing"}).items() if k != "index"}}
              for job in all_jobs]
    counts = Counter(entry["status"] for entry in inputs)
    summary = {
        "georeason_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(sys.argv) if "predict" in sys.argv else None,
        "model": reasoner.fingerprint(),
        "settings": {"mode": args.mode or "whole", "tile_size": args.tile_size, "overlap": args.overlap,
                     "bands": args.bands, "answer": not args.no_answer, "vector_format": args.vector_format,
                     "simplify": args.simplify, "min_area": args.min_area, "batch_size": args.batch_size,
                     "num_beams": args.num_beams, "max_pixels": reasoner.max_pixels,
                     "answer_int8": getattr(args, "answer_weights", None) == "int8",
                     "answer_weights": getattr(args, "answer_weights", None),
                     "compile": getattr(args, "compile", False)},
        "processes": world,
        "counts": {"inputs": len(inputs), "ok": counts.get("ok", 0), "failed": counts.get("failed", 0),
                   "missing": counts.get("missing", 0), "results": len(results)},
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "inputs": inputs,
    }
    summary.update(extra or {})
    summary = printable_tree(summary)
    with atomic_output(path, overwrite=path in (replaceable or set())) as temporary:
        temporary.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def _report(summary: dict[str, Any], path: Path) -> None:
    for entry in summary["inputs"]:
        if entry["status"] != "ok":
            continue
        answer = "(no answer)" if entry["answer"] is None else repr(entry["answer"])
        print(f"{printable(entry['image'])}: {answer}{' [empty mask]' if entry['empty'] else ''} -> "
              + ", ".join(printable(Path(p).name) for p in entry["outputs"].values()))
        for note in entry.get("notes", []):
            print(f"  note: {note}")
        warning = entry["vectors"].get("warning")
        if warning:
            print(f"  note: {warning}")
    counts = summary["counts"]
    print(f"{counts['ok']} of {counts['inputs']} predictions written; {counts['failed']} failed; "
          f"summary: {printable(path)}")


def run(args: argparse.Namespace) -> int:
    from georeason.reasoner import WHOLE_MAX_PIXELS, GeoReasoner

    started = time.perf_counter()
    if args.batch_size < 1:
        raise GeoreasonError(f"--batch-size: expected at least 1, got {args.batch_size}")
    if args.num_beams < 1:
        raise GeoreasonError(f"--num-beams: expected at least 1, got {args.num_beams}")
    parse_bands(args.bands)
    if args.mode == "tile":
        from georeason.geo import plan_tiles

        plan_tiles(args.tile_size, args.tile_size, args.tile_size, args.overlap)  # validates --tile-size/--overlap
    if args.simplify < 0 or args.min_area < 0:
        raise GeoreasonError("--simplify and --min-area: expected values >= 0")
    jobs = plan_jobs(read_pairs(args))
    out = Path(args.out)
    check_out_folder(out)
    replaceable = check_planned_outputs(out, jobs, args.vector_format, args.overwrite)
    rank, world, local = distributed()
    device = args.device
    if world > 1 and device in ("cuda", "auto"):
        import torch

        if device == "cuda" or torch.cuda.is_available():
            device = f"cuda:{local}"  # one GPU per process; a missing GPU is still reported by the reasoner
    reasoner = GeoReasoner.from_pretrained(args.model, device=device, dtype=args.dtype,
                                           max_pixels=args.max_pixels or WHOLE_MAX_PIXELS, num_beams=args.num_beams,
                                           revision=args.revision, answer_weights=args.answer_weights,
                                           compile_image=args.compile)
    for job in jobs:  # refuse bad questions before writing anything; each is tokenised here, once
        job.checked = reasoner.processor.question(job.question)
        job.question = job.checked.text
    loaded = time.perf_counter()
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise GeoreasonError(f"--out {printable(out)}: cannot create the folder ({error.strerror})") from None
        if rank == 0:
            _remove_leftovers(out, jobs)
        mine = jobs[rank::world]
        from tqdm import tqdm

        with tqdm(total=len(mine), desc=f"predict[{rank}]" if world > 1 else "predict", unit="image",
                  disable=args.no_progress, position=rank, file=sys.stderr) as bar:
            process(reasoner, mine, out, args, rank, bar, replaceable)
        results = _gather(mine, world)
        if rank == 0:
            seconds = {"model_load": loaded - started, "total": time.perf_counter() - started}
            summary = write_summary(out / SUMMARY_NAME, jobs, results, reasoner, args, world, seconds, replaceable)
            _report(summary, out / SUMMARY_NAME)
            return 0 if summary["counts"]["ok"] == len(jobs) else 2
        return 0 if all(job.result.get("status") == "ok" for job in mine) else 2
    finally:
        if world > 1:
            import torch.distributed as dist

            dist.destroy_process_group()
