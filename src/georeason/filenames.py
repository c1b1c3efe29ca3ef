"""File names as people have them: printable forms, output names planned for a run, names GDAL can open.

No paper section. On Linux a file name is bytes; one that is not valid UTF-8 (e.g. a Windows zip
unpacked as is) reaches Python as a str with lone surrogates (PEP 383). See docs/predict.md, "File names".
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError

# Undecodable bytes 0x80..0xFF arrive as U+DC80..U+DCFF ("surrogateescape").
_ESCAPED_BYTES = range(0xDC80, 0xDD00)
_SURROGATES = range(0xD800, 0xE000)


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return os.fsdecode(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
        return os.fsdecode(value) if isinstance(value, bytes) else value
    return str(value)


def is_utf8(value: Any) -> bool:
    """True when the text (or path) encodes to UTF-8, i.e. holds no undecodable file-name bytes."""
    try:
        _text(value).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(value: Any, multiline: bool = False) -> str:
    """`value` (text, path, bytes or an exception) as valid UTF-8 text for messages, logs and JSON.

    Undecodable file-name bytes become \\xNN (as Python prints bytes), other lone surrogates \\uXXXX
    and control characters (a newline in a name would split a log line) \\xNN; `multiline` keeps
    newlines and tabs (for multi-line messages). Valid text is unchanged.
    """
    text = _text(value)
    if text.isprintable() and is_utf8(text):
        return text
    return _escape(text, lambda byte: f"\\x{byte:02x}", lambda code: f"\\u{code:04x}",
                   lambda code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}", "\n\t" if multiline else "")


def _escape(text: str, byte, surrogate, control, keep: str = "") -> str:
    """`text` with each undecodable byte (a surrogate-escaped one), other lone surrogate and control
    character (except those in `keep`) written by the given function of its value; the rest unchanged."""
    parts = []
    for char in text:
        code = ord(char)
        if code in _ESCAPED_BYTES:
            parts.append(byte(code - 0xDC00))
        elif code in _SURROGATES:
            parts.append(surrogate(code))
        elif char in keep:
            parts.append(char)
        elif unicodedata.category(char) == "Cc":
            parts.append(control(code))
        else:
            parts.append(char)
    return "".join(parts)


def printable_tree(value: Any) -> Any:
    """printable() applied to every string (keys too) of nested dicts, lists and tuples, e.g. before json.dump.

    Newlines and tabs are kept (JSON escapes them).
    """
    if isinstance(value, str):
        return value if value.isprintable() and is_utf8(value) else printable(value, multiline=True)
    if isinstance(value, dict):
        return {printable_tree(key): printable_tree(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable_tree(item) for item in value]
    return value


def portable_name(name: str) -> str:
    """A file name part that is valid UTF-8 on every file system: each undecodable byte becomes %NN.

    Other lone surrogates become %uXXXX and control characters %NN; a valid name is unchanged.
    """
    return _escape(name, lambda byte: f"%{byte:02X}", lambda code: f"%u{code:04X}", lambda code: f"%{code:02X}")


def _name_key(name: str) -> str:
    # Windows and macOS file systems ignore case: "Tile" and "tile" would be one file there.
    return unicodedata.normalize("NFC", name).casefold()


def unique_names(stems: Sequence[str]) -> list[str]:
    """One output name per input stem, all distinct (ignoring case): planned once for a whole run.

    The first input with a stem keeps it (made portable, see portable_name); a repeated stem gets -2, -3 ...,
    skipping every name that another input has as its own stem or that was given already. So inputs
    d1/tile.tif, d2/tile.tif, tile-2.tif are named tile, tile-3, tile-2.
    """
    portable = [portable_name(stem) for stem in stems]
    owner: dict[str, int] = {}
    for index, stem in enumerate(portable):
        owner.setdefault(_name_key(stem), index)
    taken = set(owner)
    names = []
    for index, stem in enumerate(portable):
        if owner[_name_key(stem)] == index:
            names.append(stem)
            continue
        number = 2
        while _name_key(f"{stem}-{number}") in taken:
            number += 1
        name = f"{stem}-{number}"
        taken.add(_name_key(name))
        names.append(name)
    return names


def require_utf8_path(path: Any, what: str) -> None:
    """Refuse a path GDAL cannot write to because its name is not valid UTF-8 (naming the option)."""
    if not is_utf8(path):
        raise GeoreasonError(f"{what} {printable(path)}: the name is not valid UTF-8, and GeoTIFF and GeoPackage "
                             "files cannot be written there; choose a folder whose name is UTF-8")


def same_file(a: Path, b: Path) -> bool:
    """True when both paths name one existing file (hard links and symlinks included) or resolve alike."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def inputs_among_outputs(inputs: Iterable[Any], outputs: Iterable[Any]) -> list[tuple[str, str]]:
    """(input, output) pairs where a planned output file is one of the run's input files."""
    existing = [Path(_text(p)) for p in inputs if Path(_text(p)).exists()]
    clashes = []
    for output in outputs:
        output = Path(_text(output))
        if not output.exists():
            continue
        clashes += [(str(source), str(output)) for source in existing if same_file(source, output)]
    return clashes


# -- names GDAL can open ------------------------------------------------------------------------------
# rasterio hands GDAL the path as UTF-8, so a name with undecodable bytes cannot be opened directly (GDAL
# itself would take the bytes). gdal_name() links the file, and every sibling sharing its stem (world
# file, .aux.xml, .ovr, .msk, .prj, RPC files ...), into a private folder under a portable name instead.
_LINK_LOCK = threading.Lock()
_LINKS: dict[bytes, str] = {}
_SOURCES: dict[str, str] = {}
_LINK_ROOT: list[str] = []


def _link_root() -> str:
    if not _LINK_ROOT:
        root = tempfile.mkdtemp(prefix="georeason-names-")
        atexit.register(shutil.rmtree, root, True)  # removes the links only, never what they point to
        _LINK_ROOT.append(root)
    return _LINK_ROOT[0]


def gdal_name(path: Any) -> str:
    """A path to `path` that rasterio/GDAL can open: the path itself, or for a name that is not valid UTF-8
    a symlink with a portable name (siblings sharing the stem are linked too, so sidecars are found).

    Raises GeoreasonError naming the file when no such link can be made.
    """
    text = _text(path)
    if is_utf8(text):
        return text
    try:
        raw = os.fsencode(os.path.abspath(text))
    except UnicodeEncodeError:
        raise GeoreasonError(f"{printable(text)}: this file name cannot be passed to GDAL") from None
    with _LINK_LOCK:
        if raw in _LINKS:
            return _LINKS[raw]
        folder, name = os.path.split(raw)
        stem = name.rsplit(b".", 1)[0] if b"." in name[1:] else name
        try:
            siblings = sorted(entry for entry in os.listdir(folder) if entry.startswith(stem) and entry != name)
            links = os.fsencode(tempfile.mkdtemp(dir=_link_root()))
            for entry in [name, *siblings]:  # the file first: a sibling whose portable name clashes is left out
                link = os.path.join(links, portable_name(os.fsdecode(entry)).encode("utf-8"))
                if not os.path.lexists(link):
                    os.symlink(os.path.join(folder, entry), link)
        except OSError as error:
            raise GeoreasonError(f"{printable(text)}: cannot make a UTF-8 name for GDAL to open this file "
                                 f"({error.strerror})") from None
        link = os.fsdecode(os.path.join(links, portable_name(os.fsdecode(name)).encode("utf-8")))
        _LINKS[raw] = link
        _SOURCES[link] = text
        return link


def source_name(name: Any) -> str:
    """The path a gdal_name() link stands for (the name itself when it is not such a link)."""
    text = _text(name)
    return _SOURCES.get(text, text)


__all__ = ["gdal_name", "inputs_among_outputs", "is_utf8", "portable_name", "printable", "printable_tree",
           "require_utf8_path", "same_file", "source_name", "unique_names"]
