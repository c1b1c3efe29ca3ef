"""Text files people give georeason (JSONL pairs, question and category files, manifests): one way to read them.

No paper section. UTF-8 with or without a byte order mark, UTF-16 and UTF-32 with one are read; anything
else is refused naming the file, line and byte (docs/data.md, "Text files").
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError
from georeason.filenames import printable

# Longest BOMs first: the UTF-32 LE mark starts with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


def decode_text(data: bytes, name: str) -> str:
    """Bytes of a text file -> str without the byte order mark; GeoreasonError naming `name`, line and byte.

    Line ends are kept as they are (str.splitlines() handles \\n, \\r\\n and \\r).
    """
    encoding, label, payload = "utf-8", "UTF-8", data
    for bom, codec, codec_label in _BOMS:
        if data.startswith(bom):
            encoding, label, payload = codec, codec_label, data[len(bom):]
            break
    try:
        return payload.decode(encoding)
    except UnicodeDecodeError as error:
        before = payload[: error.start].decode(encoding, errors="replace")
        line = before.count("\n") + 1
        column = len(before) - (before.rfind("\n") + 1) + 1
        bad = payload[error.start : error.end].hex(" ")
        hint = "; save it as UTF-8"
        if label == "UTF-8" and b"\x00" in payload[:4096]:
            hint = "; it looks like UTF-16 without a byte order mark: save it as UTF-8"
        raise GeoreasonError(f"{name}:{line}: not valid {label} text (bytes {bad} at character {column}){hint}") \
            from None


def read_text_file(path: str | os.PathLike[str], what: str = "") -> str:
    """The text of a user's file (see decode_text); `what` (e.g. "--questions") prefixes the messages."""
    path = Path(path)
    name = f"{what} {printable(path)}" if what else printable(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GeoreasonError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise GeoreasonError(f"{name}: is a folder, expected a text file") from None
    except OSError as error:
        raise GeoreasonError(f"{name}: cannot read this file ({error.strerror})") from None
    return decode_text(data, name)


def read_json_file(path: str | os.PathLike[str], what: str = "") -> Any:
    """A JSON document from a user's file; errors name the file, line and column."""
    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        name = f"{what} {printable(path)}" if what else printable(path)
        raise GeoreasonError(f"{name}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None


__all__ = ["decode_text", "read_json_file", "read_text_file"]
