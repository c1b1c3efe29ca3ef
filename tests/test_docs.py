"""Every command example in the README and docs/ stays valid (issue: docs that cannot rot).

Each `georeason ...` line in a fenced code block is parsed by the real argument parser of its
subcommand (options, arity, choices). Blocks preceded by `<!-- runnable -->` are executed, in order,
in a scratch folder: their commands must succeed as written.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from georeason.cli import SUBCOMMANDS
from tests.conftest import REPO

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"(<!-- runnable -->\s*\n)?```[a-z]*\n(.*?)```", re.S)


def _command_lines(block: str) -> list[str]:
    lines, pending = [], ""
    for raw in block.splitlines():
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        if pending:
            line = pending + " " + line
            pending = ""
        if line.endswith("\\"):
            pending = line[:-1].strip()
            continue
        # usage lines, diagrams and the version banner are not examples
        synopsis = re.search(r"\[-|\[[A-Z]|\||[^\x00-\x7f]|^georeason \d", line)
        if (line.startswith("georeason ") or line == "georeason") and not synopsis:
            lines.append(line)
    return lines


def documented_commands() -> list[tuple[str, str, bool]]:
    found = []
    for document in DOCUMENTS:
        for match in FENCE.finditer(document.read_text()):
            runnable = bool(match.group(1))
            for line in _command_lines(match.group(2)):
                found.append((f"{document.name}: {line}", line, runnable))
    for name, (module_name, _) in SUBCOMMANDS.items():
        epilog = getattr(importlib.import_module(module_name), "CLI_EPILOG", "") or ""
        for line in _command_lines(epilog):
            found.append((f"{name} --help: {line}", line, False))
    return found


COMMANDS = documented_commands()


def _strip_comment(line: str) -> list[str]:
    return shlex.split(line, comments=True)


@pytest.mark.parametrize("line", [c[1] for c in COMMANDS], ids=[c[0][:90] for c in COMMANDS])
def test_documented_command_parses(line):
    words = _strip_comment(line)[1:]
    words = [w for w in words if w != "--debug"]
    if not words or words[0] in ("--help", "-h", "--version"):
        return
    name = words[0]
    assert name in SUBCOMMANDS, f"unknown subcommand in docs: {line}"
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"georeason {name}", exit_on_error=False)
    module.add_arguments(parser)
    try:
        parser.parse_args(words[1:])
    except SystemExit as error:  # --help of a sub-subcommand exits 0; anything else is a bad example
        assert error.code == 0, f"documented command does not parse: {line}"


RUNNABLE = [c[1] for c in COMMANDS if c[2]]


@pytest.mark.skipif(not RUNNABLE, reason="no runnable examples marked in the docs")
def test_runnable_examples_succeed(tmp_path):
    for line in RUNNABLE:
        words = _strip_comment(line)
        result = subprocess.run([sys.executable, "-m", "georeason.cli", *words[1:]], cwd=tmp_path,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{line}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def test_docs_reference_existing_files():
    for document in DOCUMENTS:
        for target in re.findall(r"\]\(((?:docs/|bench/|\.\./)?[\w./-]+\.(?:md|png|py|json))\)", document.read_text()):
            path = (document.parent / target).resolve()
            assert path.exists(), f"{document.name} links to missing {target}"


def test_command_reference_is_current():
    result = subprocess.run([sys.executable, str(REPO / "tools" / "cli_reference.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
