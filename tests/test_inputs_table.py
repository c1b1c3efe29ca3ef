"""docs/inputs.md is generated from the input_kind markers and is current."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("inputs_table", REPO / "tools" / "inputs_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inputs_table_is_current():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "inputs_table.py"), "--check"],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rows_are_merged_sorted_by_group_and_escaped():
    tool = _tool()
    text = tool.render([
        ("runs", "a run", "kept", "tests/test_r.py::test_r"),
        ("labels", "RGBA label", "alpha | 0 is background", "tests/test_l.py::test_b"),
        ("labels", "RGBA label", "alpha | 0 is background", "tests/test_l.py::test_a[x]"),
        ("pixels", "palette", "colours", "tests/test_p.py::test_p"),
        ("zeta", "other", "listed last", "tests/test_z.py::test_z"),
    ])
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| group")]
    assert rows == [
        "| pixels | palette | colours | `tests/test_p.py::test_p` |",
        "| labels | RGBA label | alpha \\| 0 is background | `tests/test_l.py::test_a[x]`<br>"
        "`tests/test_l.py::test_b` |",
        "| runs | a run | kept | `tests/test_r.py::test_r` |",
        "| zeta | other | listed last | `tests/test_z.py::test_z` |",
    ]


def test_collection_names_parameters_only_for_their_own_markers(tmp_path):
    tool = _tool()
    (tmp_path / "test_fake.py").write_text(
        "import pytest\n"
        "@pytest.mark.input_kind('pixels', 'whole function', 'one row')\n"
        "@pytest.mark.parametrize('x', [1, 2])\n"
        "def test_function(x):\n    pass\n"
        "@pytest.mark.parametrize('x', [pytest.param(1, id='one', marks=pytest.mark.input_kind('labels', 'k1', 'h1')),"
        " pytest.param(2, id='two', marks=pytest.mark.input_kind('labels', 'k2', 'h2'))])\n"
        "def test_params(x):\n    pass\n")
    rows = tool.collect(tmp_path)
    tests = {(kind, Path(test.split("::")[0]).name + "::" + test.split("::")[1]) for _, kind, _, test in rows}
    assert tests == {("whole function", "test_fake.py::test_function"), ("k1", "test_fake.py::test_params[one]"),
                     ("k2", "test_fake.py::test_params[two]")}
