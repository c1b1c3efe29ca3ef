"""A pickle reader that only builds plain containers and scalars, never imports or calls anything.

Used for RRSIS-D's `refs(unc).p` (SPEC 2): a pickle from the internet must not run code on load.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError


class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global lookup, so only dict/list/tuple/str/bytes/int/float/bool/None/set can load."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"the pickle wants to import {module}.{name}; only plain containers and scalars are allowed"
        )


def loads_plain(data: bytes, source: str = "pickle") -> Any:
    """Unpickle bytes that may only contain plain containers and scalars (Python 2 str read as UTF-8,
    falling back to latin-1)."""
    for encoding in ("utf-8", "latin-1"):
        try:
            return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
        except UnicodeDecodeError:
            continue
        except pickle.UnpicklingError as error:
            raise GeoreasonError(f"{source}: refused to load ({error})") from None
        except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise GeoreasonError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from None
    raise GeoreasonError(f"{source}: text in the pickle is neither UTF-8 nor latin-1")  # pragma: no cover


def load_plain(path: str | Path) -> Any:
    """Read a pickle file with `loads_plain`; errors name the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise GeoreasonError(f"{path}: cannot read ({error})") from None
    return loads_plain(data, str(path))
