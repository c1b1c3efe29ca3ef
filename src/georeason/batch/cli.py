"""The `georeason batch` command: read the catalogue, start or join Ray, run every unfinished pair, write the region.

No paper section (the inference is Sec. 4's tiled mode, through georeason.reasoner); docs/batch.md.
Each pair's files are written by georeason.predict's writer, as `predict --tile` writes them.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from georeason.batch.inputs import Pair, plan_pairs, read_question_pairs, read_scenes
from georeason.batch.manifest import RunFolder, check_run_folder
from georeason.errors import GeoreasonError
from georeason.filenames import printable
from georeason.predict import add_inference_arguments

CLI_DESCRIPTION = """Segment what answers one or more questions in every scene of a catalogue, on Ray.

SCENE is a raster, a folder of rasters, a glob pattern, a text file listing paths or URLs (anything GDAL
opens, incl. /vsicurl/ and /vsis3/; http(s):// and s3:// are turned into those), or a STAC ItemCollection,
Item, Catalog or Collection JSON (--asset chooses the asset). Each (scene, question) pair is predicted
as `georeason predict --tile` does: a scene's overview pass on one worker, its tiles on all workers, each
tile encoded once for all of the scene's questions. Writes into
--out (the run folder): scenes/ with predict's outputs per pair, region.gpkg (all polygons, merged
across scene borders), mosaic*.vrt (the masks), summary.json, manifest.json and records/. Run the same
command again to resume: finished pairs are kept, unfinished ones computed. Exit status 3 when some pairs
failed (the others are written)."""

CLI_EPILOG = """examples:
  georeason batch --model runs/smol scenes/ --question "Which fields are flooded?" --out runs/flood
  georeason batch --model runs/smol items.json --asset visual --question "Where are the solar farms?" \\
      --question "Which roofs are flat?" --workers 2 --out runs/region
  georeason batch --model runs/smol --questions pairs.jsonl --address auto --workers 8 --gpus-per-worker 1 \\
      --out /shared/runs/country
"""

SUMMARY_NAME = "summary.json"
REGION_NAME = "region.gpkg"
PARTIAL_FAILURE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenes", nargs="*", metavar="SCENE",
                        help="raster, folder, glob, text list (.txt) or STAC JSON (.json); with --question")
    parser.add_argument("--model", required=True, metavar="DIR|HUB_ID",
                        help="model folder or hub id, as for georeason predict (every worker loads it)")
    parser.add_argument("--revision", help="with a hub id: branch, tag or commit hash (default main)")
    parser.add_argument("--out", required=True, metavar="RUN",
                        help="run folder: new or empty, or an earlier run's folder to resume it")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--question", action="append", metavar="TEXT",
                        help="a question asked about every SCENE (repeat for several)")
    source.add_argument("--questions", metavar="FILE.jsonl",
                        help='one {"scene": path or URL, "question": text} per line (paths relative to the file)')
    parser.add_argument("--asset", metavar="KEY", help="STAC input: the asset to read, e.g. visual (needed when "
                                                       "an item has more than one asset)")
    parser.add_argument("--bands", metavar="B,B,B", help="1-based bands to use as R,G,B, e.g. 3,2,1 (default 1,2,3)")
    add_inference_arguments(parser, per_scene=True, max_pixels_help=(
        "largest image decoded at once (default 64000000): a PNG/JPEG or other file that cannot be read by "
        "windows (tiled GeoTIFFs have no limit)"))
    parser.add_argument("--questions-per-pass", type=int, default=None, metavar="N",
                        help="at most N questions of a scene share one pass over its tiles, each tile encoded "
                             "once for them (default: all of the scene's questions; fewer bound the memory of "
                             "the driver's blending, one band per question; 1: each pair on its own)")
    parser.add_argument("--device", default=None,
                        help="device of each worker: cpu or cuda (default cpu; cuda with --gpus-per-worker)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                        help="model precision (default float32)")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="Ray actors, each holding one model replica (default 1)")
    parser.add_argument("--cpus-per-worker", type=float, default=None, metavar="N",
                        help="CPUs reserved per worker (also its torch threads; default: the embedded Ray's CPUs "
                             "divided by --workers, or 1 on a cluster)")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="N",
                        help="GPUs reserved per worker (default 0: CPU)")
    parser.add_argument("--address", metavar="ADDR",
                        help="an existing Ray cluster: auto, HOST:PORT or ray://HOST:10001 (default: start Ray on "
                             "this machine)")
    parser.add_argument("--num-cpus", type=int, default=None, metavar="N",
                        help="embedded Ray only: CPUs it may use (default: all of this machine's)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _check_arguments(args: argparse.Namespace) -> None:
    from georeason.geo import plan_tiles
    from georeason.predict import parse_bands

    parse_bands(args.bands)
    plan_tiles(args.tile_size, args.tile_size, args.tile_size, args.overlap)  # validates --tile-size/--overlap
    if args.simplify < 0 or args.min_area < 0:
        raise GeoreasonError("--simplify and --min-area: expected values >= 0")
    for option, value in (("--num-beams", args.num_beams), ("--workers", args.workers),
                          ("--questions-per-pass", 1 if args.questions_per_pass is None else args.questions_per_pass)):
        if value < 1:
            raise GeoreasonError(f"{option}: expected at least 1, got {value}")
    if args.cpus_per_worker is not None and args.cpus_per_worker <= 0:
        raise GeoreasonError(f"--cpus-per-worker: expected a number above 0, got {args.cpus_per_worker}")
    if args.gpus_per_worker < 0:
        raise GeoreasonError(f"--gpus-per-worker: expected 0 or more, got {args.gpus_per_worker}")
    if args.num_cpus is not None and (args.num_cpus < 1 or args.address):
        raise GeoreasonError("--num-cpus: expected at least 1, and only without --address (embedded Ray)")
    if args.asset is not None and not args.asset.strip():
        raise GeoreasonError("--asset: expected an asset key such as visual")


def _raw_pairs(args: argparse.Namespace) -> list[tuple[Any, str]]:
    if args.questions is not None:
        if args.scenes:
            raise GeoreasonError("SCENE: give scenes either on the command line (with --question) or in "
                                 "--questions, not both")
        return read_question_pairs(args.questions)
    scenes = read_scenes(args.scenes, args.asset)
    return [(scene, question) for scene in scenes for question in args.question]


def start_ray(args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    """Join the Ray of this process or --address, or start one here; (whether we started it, what to report)."""
    import ray

    started = False
    if not ray.is_initialized():
        try:
            if args.address:
                context = ray.init(address=args.address, logging_level=logging.WARNING, log_to_driver=False)
            else:
                context = ray.init(address="local", num_cpus=args.num_cpus or os.cpu_count(),
                                   include_dashboard=None, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise GeoreasonError(f"--address {args.address or '(embedded)'}: cannot start or reach Ray "
                                 f"({printable(error)})") from None
        started = True
        dashboard = getattr(context, "dashboard_url", None) or None
    else:
        dashboard = None
    resources = ray.cluster_resources()
    return started, {"address": args.address or "embedded", "dashboard": dashboard,
                     "cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0)}


# Actors kept for the next run in this process when Ray was started by the caller (a notebook, the tests):
# the models stay loaded. Keyed by the Ray job and everything a worker is built from.
_POOLS: dict[tuple[Any, ...], list[Any]] = {}


def start_workers(args: argparse.Namespace, cluster: dict[str, Any], keep: bool) -> list[Any]:
    """--workers actors, each loading the model once; restarted (and their tasks retried) if they die.

    With `keep`, actors of an earlier run in this process with the same model and resources are reused.
    """
    import uuid

    import ray

    from georeason.batch.workers import SceneWorker
    from georeason.reasoner import WHOLE_MAX_PIXELS

    cpus = args.cpus_per_worker
    if cpus is None:
        cpus = max(1, int(cluster["cpus"] // args.workers)) if not args.address else 1
    device = args.device or ("cuda" if args.gpus_per_worker > 0 else "cpu")
    build = (args.model, device, args.dtype, args.max_pixels or WHOLE_MAX_PIXELS, args.num_beams, args.revision)
    key = (ray.get_runtime_context().get_job_id(), *build, cpus, args.gpus_per_worker)
    for other in [k for k in _POOLS if k != key]:  # their reserved CPUs and GPUs would starve the new pool
        stop_workers(_POOLS.pop(other))
    _check_resources(args, cluster, cpus, strict=not keep)
    pool = _POOLS.get(key, []) if keep else []
    worker = ray.remote(SceneWorker)
    run_id = uuid.uuid4().hex[:8]
    pool += [worker.options(name=f"georeason-batch-{run_id}-{i}", num_cpus=cpus, num_gpus=args.gpus_per_worker,
                            max_restarts=-1, max_task_retries=3).remote(*build)
             for i in range(len(pool), args.workers)]
    if keep:
        _POOLS[key] = pool
    return pool[: args.workers]


def _check_resources(args: argparse.Namespace, cluster: dict[str, Any], cpus: float, strict: bool) -> None:
    """Refuse (embedded Ray) or warn about (a cluster that may scale up) a pool the cluster cannot place."""
    need_cpus, need_gpus = args.workers * cpus, args.workers * args.gpus_per_worker
    if need_cpus <= cluster["cpus"] and need_gpus <= cluster["gpus"]:
        return
    message = (f"--workers {args.workers} x (--cpus-per-worker {cpus:g}, --gpus-per-worker "
               f"{args.gpus_per_worker:g}) needs {need_cpus:g} CPUs and {need_gpus:g} GPUs; Ray has "
               f"{cluster['cpus']:g} CPUs and {cluster['gpus']:g} GPUs")
    if strict and not args.address:
        raise GeoreasonError(message + "; use fewer workers or smaller reservations (or --num-cpus)")
    print(f"georeason batch: note: {message} now; the workers wait until the cluster has room", file=sys.stderr)


def stop_workers(actors: list[Any]) -> None:
    """Kill actors (after a failed or interrupted run, whose queued tasks must not delay the next one)."""
    import ray

    for pool in _POOLS.values():
        pool[:] = [actor for actor in pool if actor not in actors]
    for actor in actors:
        ray.kill(actor)


def _settings(args: argparse.Namespace, fingerprint: dict[str, Any], max_pixels: int) -> dict[str, Any]:
    """What a resumed run must share with its start, or its outputs would not be one run's."""
    return {"model_sha256": fingerprint["model_sha256"], "config_sha256": fingerprint["config_sha256"],
            "dtype": args.dtype, "tile_size": args.tile_size, "overlap": args.overlap, "bands": args.bands,
            "answer": not args.no_answer, "num_beams": args.num_beams, "vector_format": args.vector_format,
            "simplify": args.simplify, "min_area": args.min_area, "max_pixels": max_pixels}


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    _check_arguments(args)
    raw = _raw_pairs(args)
    out = Path(args.out).absolute()  # records name their files absolutely: a rerun from elsewhere finds them
    check_run_folder(out)
    try:
        import ray  # noqa: F401
    except ImportError:
        raise GeoreasonError("georeason batch needs Ray: pip install 'georeason[batch]'") from None
    args.mode, args.batch_size = "tile", 1  # the settings predict's summary reports
    import builtins

    original_print = builtins.print  # a Ray driver replaces print; put it back when our Ray stops
    ours, cluster = start_ray(args)
    actors: list[Any] = []
    try:
        if cluster["dashboard"]:
            print(f"georeason batch: Ray dashboard at http://{cluster['dashboard']}", file=sys.stderr)
        actors = start_workers(args, cluster, keep=not ours)
        return _run(args, raw, out, actors, cluster, started)
    except BaseException:
        if not ours:
            stop_workers(actors)
        raise
    finally:
        if ours:
            import ray

            ray.shutdown()
            builtins.print = original_print


def _run(args, raw, out: Path, actors: list[Any], cluster: dict[str, Any], started: float) -> int:
    import ray

    from georeason.batch.workers import task_error

    try:
        about = ray.get([actor.about.remote() for actor in actors])
        questions = dict.fromkeys(question for _, question in raw)
        checked = dict(zip(questions, ray.get(actors[0].check_questions.remote(list(questions)))))
    except Exception as error:  # noqa: BLE001 - the model or a question is refused before any work
        raise task_error(error) from None
    ready = time.perf_counter()
    fingerprint, max_pixels = about[0]["fingerprint"], about[0]["max_pixels"]
    pairs = plan_pairs([(scene, checked[question]) for scene, question in raw], RunFolder.earlier_names(out))
    folder = RunFolder.open(out, _settings(args, fingerprint, max_pixels), pairs)
    results: dict[str, dict[str, Any]] = {}
    todo: list[Pair] = []
    for pair in folder.pairs:
        record = folder.finished(pair)
        if record is not None:
            results[pair.name] = {**{k: v for k, v in record.items() if k != "file_sizes"}, "resumed": True}
        elif pair.scene.error is not None:
            results[pair.name] = {"status": "failed", "error": pair.scene.error}
        else:
            todo.append(pair)
    from georeason.batch.runner import compute

    tiles = compute(args, folder, todo, actors, about[0]["name"], max_pixels, results)
    for entry, peak in zip(about, ray.get([actor.peak_rss_mb.remote() for actor in actors])):
        entry["peak_rss_mb"] = round(peak, 1)
    return _finish(args, folder, results, todo, about, cluster, tiles,
                   {"workers_ready": ready - started, "total": time.perf_counter() - started})


def _finish(args, folder: RunFolder, results, todo, about, cluster, tiles, seconds) -> int:
    from georeason.batch.mosaic import Finished, write_mosaics, write_region_layer
    from georeason.predict import Job, write_summary

    finished = [Finished(p.name, p.question, results[p.name].get("answer"),
                         Path(results[p.name]["outputs"]["mask_geotiff"])
                         if "mask_geotiff" in results[p.name]["outputs"] else None,
                         Path(results[p.name]["outputs"]["vectors"]))
                for p in folder.pairs if results.get(p.name, {}).get("status") == "ok"]
    questions = list(dict.fromkeys(p.question for p in folder.pairs))
    own = {path for path in folder.root.iterdir() if path.suffix in (".vrt", ".gpkg", ".json")}
    region = {"layer": write_region_layer(folder.root / REGION_NAME, finished, folder.root / REGION_NAME in own),
              **write_mosaics(folder.root, finished, questions, own)}
    jobs = [Job(index, p.scene.source, p.question, p.name) for index, p in enumerate(folder.pairs)]
    entries = [{"index": job.index, "origin": p.scene.origin, **results.get(p.name, {"status": "missing"})}
               for job, p in zip(jobs, folder.pairs)]
    computed = [p for p in todo if results.get(p.name, {}).get("status") == "ok"]
    failed = [p for p in folder.pairs if results.get(p.name, {}).get("status") == "failed"]
    batch = {"pairs": len(folder.pairs), "computed": len(computed), "finished_before": sum(
        1 for p in folder.pairs if results.get(p.name, {}).get("resumed")), "failed": len(failed),
        "workers": [{"actor": a["actor"], "pid": a["pid"], "threads": a["threads"], "peak_rss_mb": a["peak_rss_mb"]}
                    for a in about],
        "ray": cluster, **tiles}
    command = shlex.join(sys.argv) if "batch" in sys.argv else None
    reasoner = SimpleNamespace(fingerprint=lambda: about[0]["fingerprint"], max_pixels=about[0]["max_pixels"])
    path = folder.root / SUMMARY_NAME
    write_summary(path, jobs, entries, reasoner, args, len(about), seconds, {path} & own,
                  extra={"command": command, "run_folder": str(folder.root), "batch": batch, "region": region})
    for pair in failed:
        print(f"{pair.scene.source}: {pair.question!r}: failed: {results[pair.name]['error']}")
    print(f"{len(folder.pairs) - len(failed)} of {len(folder.pairs)} pairs written ({len(computed)} computed now, "
          f"{batch['finished_before']} finished before); {len(failed)} failed; region: "
          f"{region['layer']['polygons']} polygon(s) in {folder.root / REGION_NAME}; summary: {path}")
    return PARTIAL_FAILURE if failed else 0
