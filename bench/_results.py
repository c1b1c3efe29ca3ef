"""bench/RESULTS.md: each bench script owns one "## " section and replaces only that one.

Shared by the bench scripts (run as `python bench/NAME.py`, so this folder is on sys.path).
"""

from __future__ import annotations

import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(section: str, lines: list[str]) -> None:
    """Write `section` (a "## " heading) with `lines` under it, in place of its old text or at the end."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    before, found, rest = text.partition(section + "\n")
    following = rest.find("\n## ") if found else -1
    after = rest[following:] if following >= 0 else ""
    body = "\n".join([section, "", *lines]).rstrip("\n")
    RESULTS.write_text(before.rstrip("\n") + "\n\n" + body + "\n" + after)


def publish(section: str, lines: list[str], write: bool = True) -> None:
    """Print the table; unless told otherwise, also put it in its section of RESULTS.md."""
    print("\n".join(lines))
    if write:
        replace_section(section, lines)
        print(f"\nupdated the '{section}' section of {RESULTS}", file=sys.stderr)
