"""Inference benchmark: tiled GeoTIFF throughput and peak memory vs scene size, whole-image latency.

Measures georeason.reasoner (docs/predict.md) with random-weight tiny and smol models; each measurement runs in
a fresh subprocess (peak RSS from resource.getrusage). Writes the "## Inference (predict)" section of
bench/RESULTS.md. Run: `python bench/bench_predict.py` (about 10-15 min on 2 cores; --quick: tiny only).
"""

from __future__ import annotations

import argparse
import ast
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
from _results import RESULTS, replace_section  # noqa: E402 - the one RESULTS.md writer (bench/ is on sys.path)
SECTION = "## Inference (predict)"
QUESTION = "Which areas could be flooded after heavy rain?"
TILE, OVERLAP = 1024, 128


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def current_rss_mb() -> float:
    with open("/proc/self/statm") as stream:
        return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_scene(path: Path, side: int, strip: int = 512) -> None:
    """A side x side 3-band uint8 GeoTIFF (UTM, 1 m pixels), written strip by strip in constant memory."""
    import rasterio
    from affine import Affine

    profile = dict(driver="GTiff", width=side, height=side, count=3, dtype="uint8", crs="EPSG:32633",
                   transform=Affine(1.0, 0, 500_000.0, 0, -1.0, 4_100_000.0), tiled=True, blockxsize=512,
                   blockysize=512, compress="deflate")
    rng = np.random.default_rng(0)
    cols = np.arange(side)
    with rasterio.open(path, "w", **profile) as out:
        for top in range(0, side, strip):
            rows = np.arange(top, min(side, top + strip))[:, None]
            base = np.stack([np.sin(rows / 57.0) * 80 + np.cos(cols / 91.0) * 40,
                             np.cos((rows + cols) / 133.0) * 90, np.sin(cols / 37.0) * 70 + rows * 0])
            noise = rng.integers(0, 24, base.shape)
            data = np.clip(128 + base + noise, 0, 255).astype(np.uint8)
            out.write(data, window=((top, top + data.shape[1]), (0, side)))


def build_models(folder: Path, presets: list[str]) -> dict[str, Path]:
    """Random-weight model folders (smol without its GGUF weights: same shapes, same speed)."""
    from georeason.model.factory import build_model

    folders = {}
    for name in presets:
        target = folder / name
        if not (target / "model.safetensors").is_file():
            model, tokenizer = build_model(name, seed=0, pretrained_llm=False)
            model.save_pretrained(target, tokenizer=tokenizer)
        folders[name] = target
    return folders


# -- workers (run in a fresh subprocess each) -------------------------------------------------------
def reset_peak_rss() -> None:
    """Restart the peak-RSS count (Linux clear_refs 5), so getrusage reports the peak of the next phase only."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as stream:
        stream.write("5")


def worker_tiled(model: str, scene: str, out: str, vectors: bool) -> dict:
    from georeason.reasoner import GeoReasoner

    reasoner = GeoReasoner.from_pretrained(model)
    report = {"load_peak_rss_mb": peak_rss_mb(), "loaded_rss_mb": current_rss_mb()}
    reset_peak_rss()
    started = time.perf_counter()
    result = reasoner.predict_tiled(scene, QUESTION, Path(out) / "mask.tif", TILE, OVERLAP, answer=False)
    report["seconds"] = time.perf_counter() - started
    result.save_mask_png(Path(out) / "mask.png")
    result.save_overlay(Path(out) / "overlay.png")
    report.update(tiles=result.tiles, pixels=result.raster.pixels, peak_rss_mb=peak_rss_mb(),
                  description_s=result.seconds["description"])
    if vectors:
        reset_peak_rss()
        started = time.perf_counter()
        written = result.save_vectors(Path(out) / "mask.gpkg")
        report.update(vector_seconds=time.perf_counter() - started, polygons=written["count"],
                      peak_rss_vectors_mb=peak_rss_mb())
    return report


def worker_whole(model: str, dtype: str, runs: int) -> dict:
    from georeason.reasoner import GeoReasoner

    reasoner = GeoReasoner.from_pretrained(model, dtype=dtype)
    image = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    reasoner.predict(image, QUESTION, answer=False)  # warm-up
    masks = [reasoner.predict(image, QUESTION, answer=False).seconds for _ in range(runs)]
    with_answer = reasoner.predict(image, QUESTION, answer=True)
    tokens = len(reasoner.processor.tokenizer.encode(with_answer.answer or "", add_special_tokens=False))
    return {"mask_s": statistics.median(s["total"] for s in masks),
            "model_s": statistics.median(s.get("mask", s.get("model", 0.0)) for s in masks),
            "answer_total_s": with_answer.seconds["total"], "answer_s": with_answer.seconds.get("answer"),
            "answer_tokens_max": reasoner.model.config.prompt.max_answer_tokens, "answer_tokens": tokens,
            "peak_rss_mb": peak_rss_mb()}


def run_worker(*args: str, timeout: float = 1800) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- report -----------------------------------------------------------------------------------------
def write_section(lines: list[str]) -> None:
    """Replace (or append) this script's section of bench/RESULTS.md (the shared writer, bench/_results.py)."""
    assert lines[:2] == [SECTION, ""]
    replace_section(SECTION, lines[2:])


def format_section(tiled_rows: list[dict], notes: list[str], whole_rows: list[dict], runs: int,
                   minutes: float | None, load: float) -> list[str]:
    lines = [SECTION, "",
             f"`python bench/bench_predict.py` on {platform.machine()}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')}, load average at the end {load:.1f} "
             f"({'other jobs shared the machine, so times are noisy' if load > 2.5 else 'nothing else running'}), "
             "random-weight models (smol without its GGUF "
             "weights: same shapes and speed)." + ("" if minutes is None else f" Total {minutes:.1f} min."), "",
             f"Tiled inference (`GeoReasoner.predict_tiled`, tile {TILE}, overlap {OVERLAP}, no answer) on a "
             "generated 3-band uint8 GeoTIFF; each row a fresh process. Peak RSS (getrusage) per phase, the "
             "count restarted after each phase via /proc/self/clear_refs: model load; the tiled run (overview, "
             "description, tiles, streamed GeoTIFF, full-size mask PNG, overlay) - the figure that must stay "
             "flat; polygonising the full-resolution mask (holds the mask in memory), on the largest scene.", "",
             "| preset | scene | tiles | seconds | Mpx/s | s/tile | RSS after load MB | peak load MB "
             "| peak tiled run MB | peak vectors MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in tiled_rows:
        vectors = f"{row['peak_rss_vectors_mb']:.0f} ({row['polygons']} polygons, {row['vector_seconds']:.1f} s)" \
            if "peak_rss_vectors_mb" in row else "-"
        lines.append(f"| {row['preset']} | {row['side']}x{row['side']} | {row['tiles']} | {row['seconds']:.1f} | "
                     f"{row['pixels'] / 1e6 / row['seconds']:.2f} | {row['seconds'] / row['tiles']:.2f} | "
                     f"{row['loaded_rss_mb']:.0f} | {row['load_peak_rss_mb']:.0f} | {row['peak_rss_mb']:.0f} | "
                     f"{vectors} |")
    lines += ["", *notes]
    for preset in dict.fromkeys(row["preset"] for row in tiled_rows):
        rows = sorted((row for row in tiled_rows if row["preset"] == preset), key=lambda row: row["side"])
        if len(rows) > 1:
            small, large = rows[0], rows[-1]
            lines.append(f"- {preset}: {large['pixels'] / small['pixels']:.0f}x the pixels "
                         f"({small['side']} -> {large['side']}), tiled-run peak {small['peak_rss_mb']:.0f} -> "
                         f"{large['peak_rss_mb']:.0f} MB ({large['peak_rss_mb'] - small['peak_rss_mb']:+.0f} MB). "
                         "What grows is proportional to the scene width, not its area: the blending row band "
                         f"((tile + 512) rows x width float32 = {(TILE + 512) * large['side'] * 4 / 2**20:.0f} MB at "
                         f"{large['side']} px) and GDAL's block cache filling up to its 32 MB cap.")
    lines += ["", f"Whole-image latency (`GeoReasoner.predict`, a 1024x1024 RGB array, median of {runs} after a "
              "warm-up, mask only; then one run that also generates the answer up to the preset's token limit - "
              "random weights rarely stop early). 'mask stage' = encoder + LLM prefill + decoders.", "",
              "| preset | dtype | mask-only total s | mask stage s | answer generation s | mask + answer total s "
              "| max answer tokens | peak RSS MB |",
              "|---|---|---|---|---|---|---|---|"]
    for row in whole_rows:
        answer = "-" if row.get("answer_s") is None else f"{row['answer_s']:.2f}"
        lines.append(f"| {row['preset']} | {row['dtype']} | {row['mask_s']:.2f} | {row['model_s']:.2f} | {answer} | "
                     f"{row['answer_total_s']:.2f} | {row['answer_tokens_max']} | {row['peak_rss_mb']:.0f} |")
    return lines


def rows_from_log(path: Path) -> tuple[list[dict], list[str], list[dict]]:
    """The rows of a previous run, from the progress lines it printed to stderr."""
    tiled, notes, whole = [], [], []
    for line in path.read_text().splitlines():
        if line.startswith(("tiled ", "whole ")):
            row = ast.literal_eval(line.split(": ", 1)[1])
            (tiled if line.startswith("tiled ") else whole).append(row)
        elif line.startswith("- skipped"):
            notes.append(line)
    return tiled, notes, whole


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny,smol")
    parser.add_argument("--sizes", default="2048,4096,8192")
    parser.add_argument("--runs", type=int, default=3, help="whole-image timing runs (median)")
    parser.add_argument("--budget-minutes", type=float, default=14.0,
                        help="skip (and report) tiled runs whose estimated time would exceed the budget")
    parser.add_argument("--quick", action="store_true", help="tiny only, sizes 2048,4096")
    parser.add_argument("--workdir", help="keep scenes and models here (default: a temporary folder)")
    parser.add_argument("--no-results", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--from-log", metavar="LOG",
                        help="rebuild the section from the stderr of an earlier run (no measuring)")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        if kind == "tiled":
            report = worker_tiled(rest[0], rest[1], rest[2], rest[3] == "1")
        elif kind == "whole":
            report = worker_whole(rest[0], rest[1], int(rest[2]))
        elif kind == "build":
            report = {name: str(path) for name, path in build_models(Path(rest[0]), rest[1].split(",")).items()}
        else:
            make_scene(Path(rest[0]), int(rest[1]))
            report = {}
        print(json.dumps(report))
        return 0

    if args.from_log:
        log = Path(args.from_log)
        tiled_rows, notes, whole_rows = rows_from_log(log)
        total = re.search(r"Total ([0-9.]+) min", log.read_text())
        load = re.search(r"load average at the end ([0-9.]+)", log.read_text())
        lines = format_section(tiled_rows, notes, whole_rows, args.runs, total and float(total.group(1)),
                               float(load.group(1)) if load else os.getloadavg()[0])
        print("\n".join(lines))
        if not args.no_results:
            write_section(lines)
        return 0

    from georeason.geo import plan_tiles

    presets = ["tiny"] if args.quick else args.presets.split(",")
    sizes = [2048, 4096] if args.quick else [int(s) for s in args.sizes.split(",")]
    began = time.perf_counter()
    budget = args.budget_minutes * 60
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as temporary:
        work = Path(args.workdir or temporary)
        work.mkdir(parents=True, exist_ok=True)
        # Built in subprocesses: a child inherits its parent's peak RSS across exec, so the parent stays small.
        models = {name: Path(path) for name, path in run_worker("build", str(work), ",".join(presets)).items()}
        scenes = {}
        for side in sizes:
            scenes[side] = work / f"scene{side}.tif"
            if not scenes[side].is_file():
                run_worker("scene", str(scenes[side]), str(side))
        tiled_rows, notes = [], []
        for preset in presets:
            per_tile = None
            for side in sizes:
                tiles = len(plan_tiles(side, side, TILE, OVERLAP))
                remaining = budget - (time.perf_counter() - began)
                if per_tile is not None and per_tile * tiles > remaining:
                    notes.append(f"- skipped {preset} at {side}x{side}: {tiles} tiles x {per_tile:.2f} s/tile "
                                 f"= {per_tile * tiles / 60:.1f} min estimated, over the remaining budget")
                    print(notes[-1], file=sys.stderr)
                    continue
                out = work / f"out-{preset}-{side}"
                out.mkdir(exist_ok=True)
                for old in out.iterdir():
                    old.unlink()
                report = run_worker("tiled", str(models[preset]), str(scenes[side]), str(out),
                                    "1" if side == max(sizes) else "0")
                per_tile = report["seconds"] / report["tiles"]
                report.update(preset=preset, side=side)
                tiled_rows.append(report)
                print(f"tiled {preset} {side}: {report}", file=sys.stderr)
        whole_rows = []
        for preset in presets:
            for dtype in ("float32", "bfloat16"):
                report = run_worker("whole", str(models[preset]), dtype, str(args.runs))
                report.update(preset=preset, dtype=dtype)
                whole_rows.append(report)
                print(f"whole {preset} {dtype}: {report}", file=sys.stderr)
    minutes = (time.perf_counter() - began) / 60
    lines = format_section(tiled_rows, notes, whole_rows, args.runs, minutes, os.getloadavg()[0])
    print("\n".join(lines))
    if not args.no_results:
        write_section(lines)
        print(f"\nupdated the '{SECTION}' section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
