"""Pickle readers that never import or call anything beyond a short list of data constructors.

Used for RRSIS-D's `refs(unc).p` and detectron2 Mask2Former `.pkl` checkpoints (no paper section): a
pickle from the internet must not run code on load.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from georeason.errors import GeoreasonError

try:
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]

# What the unpickler can meet besides the allowed globals: a malformed stream raises any of these.
_BROKEN = (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, OverflowError, RecursionError,
           MemoryError, pickle.UnpicklingError)


class Refused(pickle.UnpicklingError):
    """The stream names or calls something outside the allowed list."""


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    """`_codecs.encode(text, 'latin1')`, which Python 3 writes for bytes under protocols 0-2; any other
    codec (codecs can import modules) is refused."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "").replace("_", "") not in ("latin1",
                                                                                                     "iso88591"):
        raise Refused(f"the pickle calls _codecs.encode with {str(encoding)[:20]!r}; only the "
                                     "latin-1 form Python writes for bytes is allowed")
    return text.encode("latin-1")


class RestrictedUnpickler(pickle.Unpickler):
    """Builds dict/list/tuple/str/bytes/int/float/bool/None/set and nothing else.

    SAFE_GLOBALS maps the only (module, name) pairs a stream may name to what they load as; Python 2
    spellings (`copy_reg`, `__builtin__`) are listed as such, since find_class sees them unmapped.
    """

    SAFE_GLOBALS: dict[tuple[str, str], Any] = {("_codecs", "encode"): _latin1_bytes}
    REFUSAL = "the pickle wants to import {}; only plain containers and scalars are allowed"

    def find_class(self, module: str, name: str) -> Any:
        found = self.SAFE_GLOBALS.get((module, name))
        if found is None:
            raise Refused(self.REFUSAL.format(f"{module}.{name}"))
        return found


_CONTAINERS = (dict, collections.OrderedDict)


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """copyreg._reconstructor(cls, dict, items), which protocol 0/1 pickles use for dict subclasses,
    for dict and OrderedDict only: built as `cls(items)` (dict.__init__ on an OrderedDict would leave
    its order empty)."""
    if cls not in _CONTAINERS or base is not dict or not isinstance(state, (dict, type(None))):
        raise Refused(f"the pickle calls copyreg._reconstructor for {cls!r} on {base!r}; only dict and "
                      "OrderedDict are allowed")
    return cls(state or {})


class NumpyUnpickler(RestrictedUnpickler):
    """Plain containers plus the constructors numpy's own pickles use (arrays, dtypes, scalars) in every
    protocol (0-5) and every numpy/Python version (`numpy.core` or `numpy._core`; Python 2 names)."""

    SAFE_GLOBALS = {
        **RestrictedUnpickler.SAFE_GLOBALS,
        **{(package + ".multiarray", "_reconstruct"): _multiarray._reconstruct
           for package in ("numpy.core", "numpy._core")},
        **{(package + ".multiarray", "scalar"): _multiarray.scalar for package in ("numpy.core", "numpy._core")},
        **{(package + ".numeric", "_frombuffer"): _numeric._frombuffer for package in ("numpy.core", "numpy._core")},
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("copyreg", "_reconstructor"): _reconstructor,
        ("copy_reg", "_reconstructor"): _reconstructor,
        ("builtins", "dict"): dict,
        ("__builtin__", "dict"): dict,
    }
    REFUSAL = "refusing to load {}: only numpy arrays and plain containers are allowed"


def _load(unpickler: type[RestrictedUnpickler], data: bytes, source: str, encodings: tuple[str, ...]) -> Any:
    for encoding in encodings:
        try:
            return unpickler(io.BytesIO(data), encoding=encoding).load()
        except UnicodeDecodeError:
            continue
        except Refused as error:
            raise GeoreasonError(f"{source}: refused to load ({error})") from None
        except _BROKEN as error:
            raise GeoreasonError(f"{source}: not a readable pickle ({type(error).__name__}: {error})") from None
    raise GeoreasonError(f"{source}: text in the pickle is neither UTF-8 nor latin-1")  # pragma: no cover


def loads_plain(data: bytes, source: str = "pickle") -> Any:
    """Unpickle bytes that may only contain plain containers and scalars (Python 2 str read as UTF-8,
    falling back to latin-1)."""
    return _load(RestrictedUnpickler, data, source, ("utf-8", "latin-1"))


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise GeoreasonError(f"{path}: cannot read ({error})") from None


def load_plain(path: str | Path) -> Any:
    """Read a pickle file with `loads_plain`; errors name the file."""
    path = Path(path)
    return loads_plain(_read(path), str(path))


def load_numpy_pickle(path: str | Path) -> Any:
    """Read a pickle of numpy arrays in plain containers (a detectron2 checkpoint); errors name the file.

    Python 2 str is read as latin-1, as numpy needs for the array data of Python 2 pickles.
    """
    path = Path(path)
    return _load(NumpyUnpickler, _read(path), str(path), ("latin-1",))
