"""bench/RESULTS.md: each bench script owns one "## " section and replaces only that one (+ the shared timer).

The one writer of RESULTS.md, shared by the bench scripts (run as `python bench/NAME.py`, so this folder
is on sys.path); tests/test_bench_results.py checks that writing a section back unchanged keeps the file
byte-identical.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def median_seconds(run: Callable[[], object], repeats: int,
                   clock: Callable[[], float] = time.perf_counter) -> float:
    """Median seconds of `repeats` calls of `run` after one warm-up call (first-call allocations, oneDNN
    primitives, caches are not the steady cost). `clock`: wall time by default; time.process_time gives
    this process's CPU time, robust to other jobs on a shared machine for single-threaded work."""
    run()
    times = []
    for _ in range(repeats):
        started = clock()
        run()
        times.append(clock() - started)
    return statistics.median(times)


def section_lines(section: str, path: Path | None = None) -> list[str] | None:
    """The lines under `section` (a "## " heading) up to the next "## " heading, or None if absent."""
    path = path or RESULTS
    text = path.read_text() if path.exists() else ""
    _, found, rest = text.partition(section + "\n")
    if not found:
        return None
    following = rest.find("\n## ")
    return (rest if following < 0 else rest[:following]).splitlines()


def replace_section(section: str, lines: list[str], path: Path | None = None) -> None:
    """Write `section` (a "## " heading) with `lines` under it, in place of its old text or at the end.

    Blank lines around `lines` are normalised (one after the heading, one before the next section), so
    writing back what section_lines() read leaves the file unchanged.
    """
    path = path or RESULTS
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    before, found, rest = text.partition(section + "\n")
    following = rest.find("\n## ") if found else -1
    after = rest[following:] if following >= 0 else ""
    while lines and not lines[0].strip():
        lines = lines[1:]
    body = "\n".join([section, "", *lines]).rstrip("\n")
    path.write_text(before.rstrip("\n") + "\n\n" + body + "\n" + after)


def publish(section: str, lines: list[str], write: bool = True) -> None:
    """Print the table; unless told otherwise, also put it in its section of RESULTS.md."""
    print("\n".join(lines))
    if write:
        replace_section(section, lines)
        print(f"\nupdated the '{section}' section of {RESULTS}", file=sys.stderr)
