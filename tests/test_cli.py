"""The `georeason` command: help for every subcommand, version, errors without tracebacks."""

from __future__ import annotations

import importlib

import pytest

from georeason import __version__
from georeason.cli import SUBCOMMANDS, main


def test_version_and_top_level_help(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"georeason {__version__}"
    assert main([]) == 0
    listing = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name}" in listing


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help_with_an_example(name, capsys):
    module = importlib.import_module(SUBCOMMANDS[name][0])
    assert "georeason " + name in (module.CLI_EPILOG or ""), f"{name}: --help needs an example"
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    assert "usage: georeason " + name in capsys.readouterr().out


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_errors_print_no_traceback_unless_debug(tmp_path, capsys):
    missing = tmp_path / "nope"
    assert main(["convert", str(missing), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"georeason convert: error: {missing}: no such released checkpoint folder" in err
    assert "Traceback" not in err
    assert main(["--debug", "convert", str(missing), str(tmp_path / "out")]) == 2
    assert "Traceback" in capsys.readouterr().err
