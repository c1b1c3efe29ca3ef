"""Write docs/inputs.md: the kinds of input georeason handles, collected from the tests' input_kind markers.

    python tools/inputs_table.py            # rewrite docs/inputs.md
    python tools/inputs_table.py --check    # exit 1 if docs/inputs.md is out of date (the docs test)

Each `@pytest.mark.input_kind(group, kind, handling)` on a test (or on one parameter of a test) becomes
a row: group, kind, what georeason does, and the test(s) that prove it. Tests are only collected, not run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / "docs" / "inputs.md"
# The documented groups, in this order; any other group follows, alphabetically.
GROUPS = ("georeferencing", "pixels", "labels", "file names", "text files", "outputs", "runs")

Row = tuple[str, str, str, str]  # group, kind, handling, test node id


class _MarkerCollector:
    """A pytest plugin that records the input_kind markers of every collected test."""

    def __init__(self) -> None:
        self.rows: set[Row] = set()
        self.problems: list[str] = []

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            callspec = getattr(item, "callspec", None)
            for mark in item.iter_markers("input_kind"):
                if len(mark.args) != 3 or mark.kwargs or not all(isinstance(a, str) and a.strip() for a in mark.args):
                    self.problems.append(f"{item.nodeid}: input_kind expects (group, kind, handling) as three "
                                         f"non-empty strings, got {mark.args!r} {mark.kwargs!r}")
                    continue
                # A marker on one parameter names that parameter; one on the function names the function.
                own = callspec is not None and any(mark == m for m in callspec.marks)
                test = item.nodeid if own else item.nodeid.split("[", 1)[0]
                group, kind, handling = (a.strip() for a in mark.args)
                self.rows.add((group, kind, handling, test))


def collect(tests: Path = REPO / "tests") -> list[Row]:
    """Collect the tests under `tests` (without running them) and return their input_kind rows."""
    collector = _MarkerCollector()
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                            "-c", str(REPO / "pyproject.toml"), str(tests)], plugins=[collector])
    if code != 0:
        raise SystemExit(f"inputs_table: collecting {tests} failed (pytest exit code {int(code)}):\n"
                         + output.getvalue()[-4000:])
    if collector.problems:
        raise SystemExit("inputs_table: bad input_kind markers:\n  " + "\n  ".join(collector.problems))
    return sorted(collector.rows)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row]) -> str:
    """The Markdown page: one table sorted by group (documented order), kind, handling; tests merged per row."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for group, kind, handling, test in rows:
        merged.setdefault((group, kind, handling), []).append(test)

    def order(key: tuple[str, str, str]) -> tuple:
        group = key[0]
        return (GROUPS.index(group) if group in GROUPS else len(GROUPS), group, key[1].lower(), key[2])

    lines = ["# Inputs we handle", "",
             "Every kind of input below has a test that proves what georeason does with it. The table is generated",
             "from the tests' `input_kind` markers by `python tools/inputs_table.py`; the test suite checks that it",
             "is current, so do not edit it by hand. How pixels and labels are read: [data.md](data.md).", "",
             "| group | kind | what georeason does | proven by |", "|---|---|---|---|"]
    for key in sorted(merged, key=order):
        tests = "<br>".join(f"`{t}`" for t in sorted(set(merged[key])))
        lines.append(f"| {_cell(key[0])} | {_cell(key[1])} | {_cell(key[2])} | {tests} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/inputs.md is not current")
    args = parser.parse_args(argv)
    text = render(collect())
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET} is out of date; run python tools/inputs_table.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET} ({text.count(chr(10)) - 8} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
