"""This machine's memory bandwidth and matrix rate: the floors under an answer token (paper Sec. 4.2's LLM
run one token at a time reads every weight once; bench/bench_answer_cache.py prints them beside s/token).

Bandwidth: a float32 tensor far larger than the caches, summed (read only) and copied (read + write),
GB/s = bytes moved / seconds, median of --repeats after a warm-up. Matrix rate: a square float32 (and
bfloat16) matmul, GFLOP/s = 2 n^3 / seconds. Both in one thread's CPU time (time.process_time; other jobs
on a shared machine hardly change it) and, with --threads 2, on the wall clock.

Run: python bench/bench_memory.py [--gib 1] [--repeats 7] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from _results import median_seconds  # noqa: E402 - bench/ is on sys.path when run as a script


def _clock(threads: int):
    """One thread: its CPU time (robust to other jobs); more: the wall clock."""
    return time.process_time if threads == 1 else time.perf_counter


def bandwidth_gbs(gib: float = 1.0, repeats: int = 7, threads: int = 1) -> dict[str, float]:
    """{"read": GB/s of summing a float32 tensor of `gib` GiB, "copy": GB/s (read + write) of copying it}."""
    torch.set_num_threads(threads)
    source = torch.rand(int(gib * 2**30) // 4)
    target = torch.empty_like(source)
    clock = _clock(threads)
    read = median_seconds(lambda: source.sum(), repeats, clock)
    copy = median_seconds(lambda: target.copy_(source), repeats, clock)
    return {"read": source.nbytes / read / 1e9, "copy": 2 * source.nbytes / copy / 1e9}


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 1024, repeats: int = 5,
                  threads: int = 1) -> float:
    """GFLOP/s of an n x n by n x n matmul in `dtype` (2 n^3 flops)."""
    torch.set_num_threads(threads)
    a = torch.rand(n, n).to(dtype)
    b = torch.rand(n, n).to(dtype)
    return 2 * n**3 / median_seconds(lambda: a @ b, repeats, _clock(threads)) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0, help="size of the tensor read and copied")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    for threads in args.threads:
        found = bandwidth_gbs(args.gib, args.repeats, threads)
        # bfloat16 at n = 512: without AVX-512 BF16 its matmul runs about 50x below float32's rate.
        rates = {"float32": matmul_gflops(torch.float32, threads=threads),
                 "bfloat16": matmul_gflops(torch.bfloat16, n=512, threads=threads)}
        print(f"{threads} thread(s): read {found['read']:.1f} GB/s, copy {found['copy']:.1f} GB/s, matmul "
              + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
