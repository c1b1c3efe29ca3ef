"""`georeason synth OUT`: write the synthetic geospatial reasoning benchmark (EarthReason layout).

Front end of data/synth.py (a deterministic stand-in for EarthReason, paper Sec. 3; layout of
docs/released_code.md#earthreason).
"""

from __future__ import annotations

import argparse
import sys
import time

CLI_DESCRIPTION = (
    "Generate the synthetic geospatial pixel-reasoning benchmark: aerial-looking scenes with one target "
    "region each, 4-6 implicit questions and 1-3 reasoning answers, ~5% empty targets, two categories held "
    "out of train and held-out question phrasings in test. Written in the EarthReason layout "
    "(OUT/{train,val,test}/images|labels|QAs) plus OUT/synth_meta.json. Same seed -> identical files."
)
CLI_EPILOG = """examples:
  georeason synth synth-out --num-train 2000 --num-val 300 --num-test 500 --seed 0
  georeason synth tiny --num-train 40 --num-val 10 --num-test 10 --min-size 256 --max-size 384 --grid tiny/grid.png
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", help="output folder (created; existing files with the same names are replaced)")
    parser.add_argument("--num-train", type=int, default=2000, help="training scenes (default 2000)")
    parser.add_argument("--num-val", type=int, default=300, help="validation scenes (default 300)")
    parser.add_argument("--num-test", type=int, default=500, help="test scenes (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--min-size", type=int, default=256, help="smallest image side in pixels (default 256)")
    parser.add_argument("--max-size", type=int, default=768, help="largest image side in pixels (default 768)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    parser.add_argument("--grid", default=None, help="also write a thumbnail grid PNG of 12 samples here")


def run(args: argparse.Namespace) -> int:
    from georeason.data.synth import generate_benchmark, save_sample_grid

    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % 100 == 0:
            print(f"\r{done}/{total} scenes", end="\n" if done == total else "", file=sys.stderr, flush=True)

    meta = generate_benchmark(args.out, args.num_train, args.num_val, args.num_test, seed=args.seed,
                              min_size=args.min_size, max_size=args.max_size, workers=args.workers,
                              progress=progress)
    seconds = time.perf_counter() - started
    print(f"wrote {args.out} in {seconds:.1f} s (seed {args.seed})")
    print(f"{'split':<7}{'scenes':>8}{'empty':>7}{'held-out category':>19}{'held-out phrasing':>19}")
    for split, counts in meta["counts"].items():
        print(f"{split:<7}{counts['samples']:>8}{counts['empty']:>7}{counts['heldout_category']:>19}"
              f"{counts['heldout_phrasing']:>19}")
    print(f"held-out categories (absent from train): {', '.join(meta['heldout_categories'])}")
    if args.grid:
        print(f"sample grid: {save_sample_grid(args.out, args.grid)}")
    return 0
