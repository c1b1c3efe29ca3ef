"""Image redundancy of image collections: entropy redundancy R_e and patch self-similarity R_s.

Implements the redundancy analysis of paper Sec. 4.2.1 (Eq. 1 for R_e, Eq. 2-3 for R_s) and the
`georeason redundancy` command that reproduces the style of the paper's Figure 3. See docs/redundancy.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from georeason.errors import GeoreasonError

LEVELS = 256  # L in Eq. 1: 8-bit grayscale
C1 = (0.01 * 255) ** 2  # stability constants of Eq. 2 (K1 = 0.01, K2 = 0.03, data range 255)
C2 = (0.03 * 255) ** 2
DEFAULT_PATCH = 32
DEFAULT_MAX_SIDE = 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".jp2")
# Rows of the SSIM matrix computed at once: bounds memory to ~BLOCK_BYTES for any patch count.
BLOCK_BYTES = 32 * 1024 * 1024


# ----------------------------------------------------------------------------------------------
# The measures (pure numpy)
# ----------------------------------------------------------------------------------------------

def to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma of uint8 RGB [H,W,3]: round(0.299 R + 0.587 G + 0.114 B), halves up, uint8."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise GeoreasonError(f"to_gray: expected a uint8 RGB array [H,W,3], got {rgb.dtype} {rgb.shape}")
    channels = rgb.astype(np.int32)
    # Integer arithmetic makes the rounding exact (no float ties drifting either way).
    luma = (299 * channels[..., 0] + 587 * channels[..., 1] + 114 * channels[..., 2] + 500) // 1000
    return luma.astype(np.uint8)


def fit_to_patches(gray: np.ndarray, patch: int, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Resize so the long side <= max_side (area average), then centre-crop H and W to multiples of patch."""
    if patch < 1:
        raise GeoreasonError(f"--patch: expected a positive patch size, got {patch}")
    height, width = gray.shape
    if max_side and max(height, width) > max_side:
        from PIL import Image

        scale = max_side / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BOX))
        height, width = gray.shape
    crop_h, crop_w = (height // patch) * patch, (width // patch) * patch
    if crop_h * crop_w // (patch * patch) < 2:
        raise GeoreasonError(
            f"image of {width}x{height} pixels holds fewer than 2 patches of {patch}x{patch}; "
            "R_s needs at least 2 (use a smaller --patch)"
        )
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return gray[top:top + crop_h, left:left + crop_w]


def entropy_redundancy(gray: np.ndarray) -> float:
    """Eq. 1: R_e = 1 - H / log2(L) with H the Shannon entropy (bits) of the 256-bin histogram."""
    counts = np.bincount(gray.ravel(), minlength=LEVELS).astype(np.float64)
    probabilities = counts[counts > 0] / counts.sum()
    entropy = float(-(probabilities * np.log2(probabilities)).sum())
    return 1.0 - entropy / math.log2(LEVELS)


def split_patches(gray: np.ndarray, patch: int) -> np.ndarray:
    """Non-overlapping patch x patch tiles of `gray` (H, W multiples of patch), row-major, as float64 [N, patch²]."""
    height, width = gray.shape
    if height % patch or width % patch:
        raise GeoreasonError(f"split_patches: image {width}x{height} is not a multiple of patch {patch}")
    tiles = gray.reshape(height // patch, patch, width // patch, patch).swapaxes(1, 2)
    return tiles.reshape(-1, patch * patch).astype(np.float64)


def _patch_statistics(patches: np.ndarray, sample_covariance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Means, centred patch vectors, and the divisor of the (co)variances (P-1 sample, P population)."""
    pixels = patches.shape[1]
    if sample_covariance and pixels < 2:
        raise GeoreasonError("sample covariance needs patches of at least 2 pixels")
    means = patches.mean(axis=1)
    centred = patches - means[:, None]
    return means, centred, np.float64(pixels - 1 if sample_covariance else pixels)


def _ssim_block(means: np.ndarray, centred: np.ndarray, variances: np.ndarray, divisor: np.float64,
                rows: slice, cols: slice) -> np.ndarray:
    """Eq. 2 for patches `rows` against patches `cols`; the covariances come from one matmul."""
    # In-place arithmetic: at patch 8 on a 1024² image each block is large, and temporaries dominate.
    ssim = centred[rows] @ centred[cols].T  # sigma_ij * divisor
    ssim *= 2.0 / divisor
    ssim += C2
    ssim /= np.add.outer(variances[rows], variances[cols]) + C2
    ssim *= np.multiply.outer(2.0 * means[rows], means[cols]) + C1
    squares = means * means
    ssim /= np.add.outer(squares[rows], squares[cols]) + C1
    return ssim


def ssim_matrix(patches: np.ndarray, sample_covariance: bool = True) -> np.ndarray:
    """Eq. 2: the N x N SSIM matrix of patch vectors [N, P] (whole-patch statistics)."""
    means, centred, divisor = _patch_statistics(patches, sample_covariance)
    variances = (centred * centred).sum(axis=1) / divisor
    return _ssim_block(means, centred, variances, divisor, slice(None), slice(None))


def structural_redundancy(patches: np.ndarray, sample_covariance: bool = True) -> float:
    """Eq. 3: mean off-diagonal element of the SSIM matrix, built in row blocks to bound memory.

    M is symmetric, so each row block is only compared with itself and the patches after it (half the work).
    """
    count = patches.shape[0]
    if count < 2:
        raise GeoreasonError(f"R_s needs at least 2 patches, got {count}")
    means, centred, divisor = _patch_statistics(patches, sample_covariance)
    variances = (centred * centred).sum(axis=1) / divisor
    block = max(1, BLOCK_BYTES // (8 * count))
    off_diagonal_sum = 0.0
    for start in range(0, count, block):
        stop = min(start + block, count)
        ssim = _ssim_block(means, centred, variances, divisor, slice(start, stop), slice(start, count))
        square = ssim[:, : stop - start]  # pairs inside the block: both (i, j) and (j, i), plus the diagonal
        off_diagonal_sum += float(square.sum()) - float(np.trace(square)) + 2.0 * float(ssim[:, stop - start:].sum())
    return off_diagonal_sum / (count * (count - 1))


# ----------------------------------------------------------------------------------------------
# One image, many images
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageTask:
    collection: str
    path: str
    patch: int
    max_side: int | None
    bands: tuple[int, ...] | None


@dataclass
class ImageResult:
    collection: str
    path: str
    width: int = 0  # of the analysed image (after resize and crop)
    height: int = 0
    patches: int = 0
    R_e: float = math.nan
    R_s: float = math.nan
    resized: bool = False
    error: str | None = None


def analyse_gray(
    gray: np.ndarray, patch: int, max_side: int | None = DEFAULT_MAX_SIDE
) -> tuple[np.ndarray, float, float]:
    """Fit an 8-bit gray image to whole patches; return (analysed image, R_e, R_s)."""
    fitted = fit_to_patches(gray, patch, max_side)
    return fitted, entropy_redundancy(fitted), structural_redundancy(split_patches(fitted, patch))


def analyse_image(task: ImageTask) -> ImageResult:
    """Load, convert and measure one image; any failure is returned as `error`, never raised (worker side)."""
    from georeason.data.imageio import load_image

    result = ImageResult(task.collection, task.path)
    try:
        gray = to_gray(load_image(task.path, bands=task.bands))
        fitted, result.R_e, result.R_s = analyse_gray(gray, task.patch, task.max_side)
    except Exception as error:  # noqa: BLE001 - one bad file must not stop the collection; it is reported
        result.error = f"{type(error).__name__}: {error}" if not isinstance(error, GeoreasonError) else str(error)
        return result
    result.height, result.width = fitted.shape
    result.patches = (result.height // task.patch) * (result.width // task.patch)
    result.resized = bool(task.max_side) and max(gray.shape) > task.max_side
    return result


def find_images(folder: Path) -> tuple[list[Path], int]:
    """Image files under `folder` (recursive, sorted) and the number of other files ignored."""
    if not folder.exists():
        raise GeoreasonError(f"{folder}: folder does not exist")
    if not folder.is_dir():
        raise GeoreasonError(f"{folder}: not a folder (pass folders of images)")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise GeoreasonError(f"{folder}: folder contains no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return images, len(files) - len(images)


def run_tasks(tasks: Sequence[ImageTask], workers: int, progress: bool = True) -> list[ImageResult]:
    """Analyse all tasks, in parallel processes when workers > 1; results in task order."""
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="redundancy", unit="img", disable=not progress, file=sys.stderr)
    if workers <= 1 or len(tasks) <= 1:
        results = []
        for task in tasks:
            results.append(analyse_image(task))
            bar.update()
        bar.close()
        return results
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # Spawned workers with single-threaded BLAS: the parallelism is over images, so letting every worker
    # also start one BLAS thread per core would oversubscribe the machine.
    saved = {name: os.environ.get(name) for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update({name: "1" for name in saved})
    workers = min(workers, len(tasks))
    chunk = max(1, min(16, len(tasks) // (4 * workers)))  # fewer round trips for many small images
    results = []
    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for result in pool.map(analyse_image, tasks, chunksize=chunk):  # in task order
                results.append(result)
                bar.update()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        bar.close()
    return results


# ----------------------------------------------------------------------------------------------
# Collections, report files, chart
# ----------------------------------------------------------------------------------------------

@dataclass
class CollectionSummary:
    name: str
    folders: list[str]
    images: int  # image files found
    analysed: int
    failed: int
    resized: int
    ignored_files: int  # non-image files in the folders
    R_e: dict[str, float | None] = field(default_factory=dict)
    R_s: dict[str, float | None] = field(default_factory=dict)
    failures: list[dict[str, str]] = field(default_factory=list)


def describe(values: Sequence[float]) -> dict[str, float | None]:
    """mean, median, std (population, ddof=0), min, max; None for an empty list."""
    if not values:
        return {key: None for key in ("mean", "median", "std", "min", "max")}
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "median": float(np.median(array)), "std": float(array.std()),
            "min": float(array.min()), "max": float(array.max())}


def summarise(name: str, folders: Sequence[Path], results: Sequence[ImageResult], ignored: int) -> CollectionSummary:
    good = [r for r in results if r.error is None]
    return CollectionSummary(
        name=name, folders=[str(f) for f in folders], images=len(results), analysed=len(good),
        failed=len(results) - len(good), resized=sum(r.resized for r in good), ignored_files=ignored,
        R_e=describe([r.R_e for r in good]), R_s=describe([r.R_s for r in good]),
        failures=[{"path": r.path, "error": r.error or ""} for r in results if r.error is not None],
    )


def write_csv(results: Sequence[ImageResult], path: Path) -> None:
    """One row per analysed image: collection, path, width, height, patches, R_e, R_s."""
    from georeason.filenames import printable

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["collection", "path", "width", "height", "patches", "R_e", "R_s"])
        for r in results:
            if r.error is None:
                writer.writerow([r.collection, printable(r.path), r.width, r.height, r.patches, f"{r.R_e:.6f}", f"{r.R_s:.6f}"])


def plot_chart(summaries: Sequence[CollectionSummary], path: Path, title: str = "Image redundancy") -> None:
    """Grouped bars in the style of the paper's Figure 3: per collection, mean R_e and mean R_s (± std)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [s.name for s in summaries]
    positions = np.arange(len(names))
    width = 0.38
    figure = Figure(figsize=(max(5.0, 1.6 * len(names) + 2.0), 4.2), dpi=150)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for offset, key, colour, label in ((-width / 2, "R_e", "#4C72B0", "entropy redundancy $R_e$"),
                                       (width / 2, "R_s", "#DD8452", "self-similarity redundancy $R_s$")):
        means = [getattr(s, key)["mean"] or 0.0 for s in summaries]
        stds = [getattr(s, key)["std"] or 0.0 for s in summaries]
        bars = axes.bar(positions + offset, means, width, yerr=stds, capsize=3, color=colour, label=label,
                        error_kw={"elinewidth": 0.8, "ecolor": "#333333"})
        for bar, value, std in zip(bars, means, stds):
            axes.annotate(f"{value:.3f}", (bar.get_x() + bar.get_width() / 2, value + std),
                          xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)
    axes.set_xticks(positions, [f"{s.name}\n(n={s.analysed})" for s in summaries], fontsize=8)
    axes.set_ylabel("redundancy (mean ± std)")
    top = max([0.0] + [(getattr(s, k)["mean"] or 0.0) + (getattr(s, k)["std"] or 0.0)
                       for s in summaries for k in ("R_e", "R_s")])
    axes.set_ylim(0, min(1.05, top * 1.2 + 0.02) if top > 0 else 1.0)
    axes.set_title(title, fontsize=10, pad=22)
    # Above the axes, so it never hides a tall bar.
    axes.legend(fontsize=8, frameon=False, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2)
    axes.spines[["top", "right"]].set_visible(False)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)


def analyse_collections(
    folders: Sequence[Path],
    names: Sequence[str] | None = None,
    patch: int = DEFAULT_PATCH,
    max_side: int | None = DEFAULT_MAX_SIDE,
    workers: int | None = None,
    bands: Sequence[int] | None = None,
    progress: bool = True,
) -> tuple[list[ImageResult], list[CollectionSummary]]:
    """Analyse every image of every folder (one collection per folder); raises on a missing/empty folder."""
    folders = [Path(f) for f in folders]
    names = list(names) if names else [f.resolve().name or str(f) for f in folders]
    if len(names) != len(folders):
        raise GeoreasonError(f"--names: got {len(names)} name(s) for {len(folders)} folder(s); give one per folder")
    if len(set(names)) != len(names):
        raise GeoreasonError(f"--names: collection names must be unique, got {names} (set --names)")
    if patch < 1:
        raise GeoreasonError(f"--patch: expected a positive patch size, got {patch}")
    if max_side is not None and max_side < 0:
        raise GeoreasonError(f"--max-side: expected 0 (no resize) or a positive side in pixels, got {max_side}")
    listing = [find_images(folder) for folder in folders]
    tasks = [ImageTask(name, str(image), patch, max_side or None, tuple(bands) if bands else None)
             for name, (images, _) in zip(names, listing) for image in images]
    results = run_tasks(tasks, workers or os.cpu_count() or 1, progress)
    summaries = [summarise(name, [folder], [r for r in results if r.collection == name], ignored)
                 for name, folder, (_, ignored) in zip(names, folders, listing)]
    return results, summaries


REPORT_FILES = {"csv": "redundancy.csv", "json": "redundancy.json", "chart": "redundancy.png"}


def check_report_folder(out: Path, overwrite: bool) -> None:
    """Raise GeoreasonError before any work if `out` already holds a report and overwrite was not asked for."""
    from georeason.filenames import printable

    if out.exists() and not out.is_dir():
        raise GeoreasonError(f"--out {printable(out)}: exists and is not a folder")
    found = [name for name in REPORT_FILES.values() if (out / name).exists() or (out / name).is_symlink()]
    if found and not overwrite:
        raise GeoreasonError(f"--out {printable(out)}: already holds {', '.join(found)} from an earlier run; "
                             "choose another --out or pass --overwrite to replace them")


def write_report(results: Sequence[ImageResult], summaries: Sequence[CollectionSummary], out: Path,
                 settings: dict, overwrite: bool = False) -> dict[str, Path]:
    """Write redundancy.csv, redundancy.json and redundancy.png into `out`; return their paths.

    The three are written into a hidden folder beside `out` and moved in together, so a failed run leaves
    the earlier report (or nothing); existing ones are replaced only with `overwrite`, else GeoreasonError.
    """
    from georeason.filenames import printable_tree
    from georeason.geo.atomic import commit_folder, staging_folder

    check_report_folder(out, overwrite)
    paths = {key: out / name for key, name in REPORT_FILES.items()}
    summary = {"settings": settings, "collections": [asdict(s) for s in summaries]}
    with staging_folder(out) as staging:
        write_csv(results, staging / REPORT_FILES["csv"])
        (staging / REPORT_FILES["json"]).write_text(json.dumps(printable_tree(summary), indent=2) + "\n",
                                                     encoding="utf-8")
        plot_chart(summaries, staging / REPORT_FILES["chart"], title=f"Image redundancy (patch {settings['patch']})")
        commit_folder(staging, out, set(paths.values()) if overwrite else set())
    return paths


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------

CLI_DESCRIPTION = (
    "Measure the redundancy of image collections (paper Sec. 4.2.1): entropy redundancy R_e (Eq. 1) of the\n"
    "8-bit BT.601 grayscale histogram and self-similarity redundancy R_s (Eq. 2-3), the mean SSIM between\n"
    "all pairs of non-overlapping patches. Each DIR is one collection (searched recursively). Writes\n"
    "redundancy.csv (per image), redundancy.json (per collection: mean/median/std/min/max, failures) and\n"
    "redundancy.png (a Figure-3-style bar chart) into --out. Exit status 1 if any image could not be analysed (listed, not dropped)."
)
CLI_EPILOG = (
    "example:\n"
    "  georeason redundancy data/loveda data/coco --names LoveDA COCO --patch 32 --out report/\n"
    "  georeason redundancy scenes/ --bands 4 3 2 --max-side 2048 --workers 4 --out report/"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="folders of images, one collection each")
    parser.add_argument("--patch", type=int, default=DEFAULT_PATCH,
                        help=f"patch side in pixels for R_s (default {DEFAULT_PATCH})")
    parser.add_argument("--out", type=Path, default=Path("redundancy-report"),
                        help="output folder (default ./redundancy-report)")
    parser.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                        help=f"first shrink images whose long side exceeds this (area average); 0 = never "
                             f"(default {DEFAULT_MAX_SIDE})")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel worker processes (default: all cores)")
    parser.add_argument("--bands", type=int, nargs="+", default=None, metavar="BAND",
                        help="1-based band(s) to read as R G B (1 or 3; default the first three)")
    parser.add_argument("--names", nargs="+", default=None, metavar="NAME",
                        help="collection labels, one per DIR (default: the folder names)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the report files of an earlier run in --out (refused otherwise)")


def run(args: argparse.Namespace) -> int:
    if args.workers is not None and args.workers < 1:
        raise GeoreasonError(f"--workers: expected at least 1, got {args.workers}")
    workers = args.workers or os.cpu_count() or 1
    check_report_folder(Path(args.out), args.overwrite)  # before the analysis, which can take long
    results, summaries = analyse_collections(args.dirs, args.names, args.patch, args.max_side, workers, args.bands)
    settings = {"patch": args.patch, "max_side": args.max_side, "bands": args.bands, "workers": workers,
                "gray": "BT.601 luma, integer-rounded", "covariance": "sample (divide by P-1)",
                "C1": C1, "C2": C2, "levels": LEVELS}
    paths = write_report(results, summaries, Path(args.out), settings, args.overwrite)
    print(format_table(summaries))
    failed = sum(s.failed for s in summaries)
    for s in summaries:
        for failure in s.failures:
            print(f"failed: [{s.name}] {failure['path']}: {failure['error']}", file=sys.stderr)
        if s.ignored_files:
            print(f"note: [{s.name}] ignored {s.ignored_files} non-image file(s)", file=sys.stderr)
    print(f"wrote {paths['csv']}, {paths['json']}, {paths['chart']}")
    if failed:
        print(f"{failed} image(s) could not be analysed (listed above and in {paths['json']})", file=sys.stderr)
        return 1
    return 0


def format_table(summaries: Sequence[CollectionSummary]) -> str:
    """A plain-text table: per collection, counts and mean/median/std/min/max of R_e and R_s."""

    def cells(stats: dict[str, float | None]) -> str:
        keys = ("mean", "median", "std", "min", "max")
        return " ".join("    -" if stats[k] is None else f"{stats[k]:.3f}" for k in keys)

    width = max([10] + [len(s.name) for s in summaries])
    stats = " ".join(f"{k:>5}" for k in ("mean", "med", "std", "min", "max"))
    lines = [f"{'':<{width}} {'':>6} {'':>6} | {'R_e':^29} | {'R_s':^29}",
             f"{'collection':<{width}} {'images':>6} {'failed':>6} | {stats} | {stats}"]
    lines += [f"{s.name:<{width}} {s.images:>6} {s.failed:>6} | {cells(s.R_e)} | {cells(s.R_s)}" for s in summaries]
    return "\n".join(lines)
