"""Write docs/cli.md: the --help text (every option and an example) of every georeason command.

    python tools/cli_reference.py            # rewrite docs/cli.md
    python tools/cli_reference.py --check    # exit 1 if docs/cli.md is out of date (the docs test)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from georeason.cli import SUBCOMMANDS, _top_level_help

TARGET = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _help(name: str) -> str:
    module = importlib.import_module(SUBCOMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"georeason {name}", description=getattr(module, "CLI_DESCRIPTION", ""),
                                     epilog=getattr(module, "CLI_EPILOG", None),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    module.add_arguments(parser)
    text = parser.format_help()
    # Sub-subcommands (`data check`, `data merge-masks`) get their own help too.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub_parser in action.choices.items():
                text += f"\n--- georeason {name} {sub_name} ---\n\n" + sub_parser.format_help()
    return text


def render() -> str:
    parts = ["# Command reference", "",
             "Generated from the commands' own `--help` by `python tools/cli_reference.py`; the test suite",
             "checks that it is current.", "", "```text", _top_level_help(), "```", ""]
    for name in SUBCOMMANDS:
        parts += [f"## georeason {name}", "", "```text", _help(name).rstrip(), "```", ""]
    return "\n".join(parts)


def main() -> int:
    import os

    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal; fix it so the file is stable
    text = render()
    if "--check" in sys.argv:
        if not TARGET.is_file() or TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python tools/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
