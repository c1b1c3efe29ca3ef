"""bench/_results.py is the one writer of bench/RESULTS.md: writing a section back unchanged keeps the file
byte-identical, for the generic sections and for the scripts that merge into their section (tiling, learning)."""

from __future__ import annotations

import importlib
import re
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    module = importlib.import_module("_results")
    copy = tmp_path / "RESULTS.md"
    shutil.copy(BENCH / "RESULTS.md", copy)
    monkeypatch.setattr(module, "RESULTS", copy)
    return module, copy


def test_every_section_writes_back_byte_identical(results):
    module, copy = results
    original = copy.read_bytes()
    headings = [line for line in original.decode().splitlines() if line.startswith("## ")]
    assert len(headings) >= 10
    for heading in headings:
        module.replace_section(heading, module.section_lines(heading))
        assert copy.read_bytes() == original, heading


def test_a_new_section_is_appended_and_others_stay(results):
    module, copy = results
    original = copy.read_text()
    module.replace_section("## New", ["", "a table", ""])
    assert copy.read_text() == original.rstrip("\n") + "\n\n## New\n\na table\n"


def test_tiling_and_learning_merges_write_back_identically(results, monkeypatch):
    module, copy = results
    original = copy.read_bytes()
    monkeypatch.setitem(sys.modules, "_results", module)
    tiling = importlib.import_module("bench_tiling")
    monkeypatch.setattr(tiling, "section_lines", module.section_lines)
    lines = module.section_lines(tiling.SECTION)
    table_start = next(i for i, line in enumerate(lines) if line.startswith("| predict"))
    note = [line for line in lines[:table_start] if line.strip()]
    rows = [line for line in lines[table_start + 2:] if line.startswith("| ")]
    hook = rows[0].split("|")[1].strip()
    mine = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows
            if row.split("|")[1].strip() == hook]
    tiling.write_section(mine, hook, note)
    assert copy.read_bytes() == original

    learning = importlib.import_module("bench_learning")
    body = "\n".join(module.section_lines(learning.SECTION))
    subsections = re.split(r"\n(?=### )", body.strip())
    assert len(subsections) >= 2  # each run keeps its own dated subsection
    for subsection in reversed(subsections):  # a rerun replaces its subsection in place
        learning.write_section(subsection.strip().splitlines())
    assert copy.read_bytes() == original
    learning.write_section(["### a new run (2026-12-02)", "", "its table"])  # a new run goes first
    after = re.split(r"\n(?=### )", "\n".join(module.section_lines(learning.SECTION)).strip())
    assert after[0].splitlines() == ["### a new run (2026-12-02)", "", "its table"]
    assert [part.strip() for part in after[1:]] == [part.strip() for part in subsections]
