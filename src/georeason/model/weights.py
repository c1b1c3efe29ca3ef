"""Safetensors weights of a model folder: shards, streaming reads, and loading in the target dtype.

A folder holds `model.safetensors`, or shards listed in `model.safetensors.index.json` (the Hugging Face
layout). Tensors are read one at a time through safetensors' lazy `safe_open`, in chunks, so loading
peaks at the model in its target dtype plus one chunk (bench/RESULTS.md, "Conversion and loading memory").
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
import safetensors.torch
from torch import nn

from georeason.errors import GeoreasonError

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# A tensor larger than this is copied out of its file in row blocks: safetensors maps the file, and every
# mapped page a copy touches stays resident until the mapping is dropped.
CHUNK_BYTES = 64 << 20
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool}


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt")
    except FileNotFoundError:
        raise GeoreasonError(f"{path}: missing weights file") from None
    except Exception as error:  # safetensors raises its own error type for corrupt or truncated files
        raise GeoreasonError(f"{path}: unreadable or corrupted safetensors file ({error})") from None


def read_header(path: Path) -> tuple[dict[str, tuple[tuple[int, ...], torch.dtype]], dict[str, str]]:
    """({name: (shape, dtype)}, metadata) of one safetensors file, without reading any tensor data."""
    with _open(path) as handle:
        entries = {}
        for name in handle.keys():
            view = handle.get_slice(name)
            dtype = SAFETENSORS_DTYPES.get(view.get_dtype())
            if dtype is None:
                raise GeoreasonError(f"{path}: tensor {name} has unsupported dtype {view.get_dtype()}")
            entries[name] = (tuple(view.get_shape()), dtype)
        return entries, handle.metadata() or {}


def read_tensor(path: Path, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """One tensor as a fresh in-memory copy, cast to `dtype` when given; the file mapping is released."""
    try:
        with _open(path) as handle:
            view = handle.get_slice(name)
            shape = tuple(view.get_shape())
            source = SAFETENSORS_DTYPES[view.get_dtype()]
            nbytes = math.prod(shape) * source.itemsize
            if not shape or nbytes <= CHUNK_BYTES:
                return view[...].to(dtype or source, copy=True)
        out = torch.empty(shape, dtype=dtype or source)
        rows = max(1, CHUNK_BYTES // (nbytes // shape[0] or 1))
        for start in range(0, shape[0], rows):
            # A fresh handle per block: the previous block's mapped pages go with the previous handle.
            with _open(path) as handle:
                out[start:start + rows].copy_(handle.get_slice(name)[start:start + rows])
        return out
    except GeoreasonError:
        raise
    except Exception as error:
        raise GeoreasonError(f"{path}: cannot read tensor {name} ({error})") from None


# -- folder layout ----------------------------------------------------------------------------------

def weight_sources(folder: Path) -> dict[str, Path]:
    """{tensor name: file} of a model folder: model.safetensors (plus the shared encoder file its
    metadata names, see SegEarthModel.save_pretrained) or the shards of model.safetensors.index.json."""
    single, index = folder / WEIGHTS_NAME, folder / INDEX_NAME
    if single.is_file():
        entries, metadata = read_header(single)
        sources = dict.fromkeys(entries, single)
        if "encoder_weights" in metadata:
            encoder = folder / metadata["encoder_weights"]
            sources.update(dict.fromkeys(read_header(encoder)[0], encoder))
        return sources
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as error:
            raise GeoreasonError(f"{index}: not a safetensors index (expected a 'weight_map' object; "
                                 f"{error})") from None
        for shard in sorted(set(weight_map.values())):
            if not (folder / shard).is_file():
                raise GeoreasonError(f"{folder / shard}: missing weights shard listed in {index.name}")
        return {name: folder / shard for name, shard in weight_map.items()}
    raise GeoreasonError(f"{single}: missing weights file (nor is there a {INDEX_NAME})")


def weight_files(folder: Path) -> list[Path]:
    """The files holding a folder's weights, in a fixed order (the index first when sharded)."""
    if (folder / WEIGHTS_NAME).is_file():
        return [folder / WEIGHTS_NAME]
    return [folder / INDEX_NAME, *sorted(set(weight_sources(folder).values()))]


def sha256_of_files(paths: list[Path]) -> str:
    """SHA-256 (64 hex digits) of the files' bytes in order; for one file, the file's own SHA-256."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def model_fingerprint(folder: str | os.PathLike[str]) -> dict[str, str]:
    """What ties an output to the exact model: {"model_sha256": the weight files (weight_files order),
    "config_sha256": config.json}. The predict summary and the evaluation report both record it."""
    folder = Path(folder)
    return {"model_sha256": sha256_of_files(weight_files(folder)),
            "config_sha256": sha256_of_files([folder / "config.json"])}


def shard_names(count: int) -> list[str]:
    """model.safetensors for one shard, else the Hugging Face model-0000i-of-0000n.safetensors names."""
    return [WEIGHTS_NAME] if count == 1 else [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def plan_shards(sizes: list[tuple[str, int]], max_shard_bytes: int) -> list[list[str]]:
    """Group names (in order) into shards of at most `max_shard_bytes` (a larger tensor gets its own)."""
    shards: list[list[str]] = [[]]
    filled = 0
    for name, nbytes in sizes:
        if shards[-1] and filled + nbytes > max_shard_bytes:
            shards.append([])
            filled = 0
        shards[-1].append(name)
        filled += nbytes
    return shards


def save_safetensors(state: dict[str, torch.Tensor], path: str | os.PathLike[str], metadata: dict[str, str]) -> None:
    """safetensors' save_file, then the file mode any other file written here gets (0666 minus the umask):
    save_file itself leaves 0600, so a model saved for others on a shared machine would be unreadable to them."""
    safetensors.torch.save_file(state, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    """This process's umask, read without changing it where Linux allows (os.umask alone must set it)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save_tensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write one safetensors file atomically: a temporary sibling, fsync, rename."""
    # Not mkstemp: its 0600 file would keep the model unreadable to other users; this one gets the umask's mode.
    temporary = str(path.with_name(f".{path.stem}-{os.getpid()}-{uuid.uuid4().hex[:8]}.safetensors"))
    try:
        try:
            save_safetensors(state, temporary, metadata)
        except Exception as error:  # safetensors reports I/O failures (a full disk...) as its own error type
            code = re.search(r"os error (\d+)", str(error))
            if code is None:
                raise
            raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def write_index(folder: Path, weight_map: dict[str, str], total_bytes: int, metadata: dict[str, str]) -> None:
    index = {"metadata": {**metadata, "total_size": total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")


@contextlib.contextmanager
def folder_in_place(target: Path) -> Iterator[Path]:
    """Yield a hidden temporary folder beside `target`; on success it is renamed to `target` (which must
    not exist), on any error it is removed. A reader never sees a half-written model folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    temporary.mkdir()  # not mkdtemp: the folder gets the usual permissions (umask), not 0700
    try:
        yield temporary
        os.rename(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def check_tensor_shapes(expected: dict[str, tuple[int, ...]], got: dict[str, tuple[int, ...]], source: str) -> None:
    """Raise naming every missing, unexpected or wrong-shape tensor of `got` against `expected`."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if tuple(got[k]) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:30])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:30])}")
    if wrong:
        problems.append("wrong shape: " + ", ".join(
            f"{k} {tuple(got[k])} vs {tuple(expected[k])}" for k in wrong[:30]))
    if problems:
        raise GeoreasonError(f"{source}: " + "; ".join(problems))


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy a complete in-memory state dict into `model` (cast to each parameter's dtype); every missing,
    unexpected or wrong-shape tensor is a GeoreasonError naming it and `source`, raised before any copy."""
    expected = model.state_dict()
    check_tensor_shapes({k: tuple(v.shape) for k, v in expected.items()},
                        {k: tuple(v.shape) for k, v in state.items()}, source)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            tensor.copy_(state[name].to(tensor.dtype))


# -- loading ----------------------------------------------------------------------------------------

def load_into(model: nn.Module, sources: dict[str, Path], dtype: torch.dtype | None, label: str) -> None:
    """Fill a model built on the meta device (parameters only) from `sources`, tensor by tensor.

    Floating-point tensors arrive in `dtype` (default: the model's own, float32), so a bfloat16 load
    never holds the float32 model; buffers a module names in `full_precision_buffers` stay float32. Tied
    parameters are loaded once and stay tied. Every missing, unexpected or wrong-shape tensor is an error
    naming it, raised before any data is read.
    """
    owners: dict[int, list[str]] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *_persistent_buffers(model)]:
        owners.setdefault(id(tensor), []).append(name)
        tensors[name] = tensor
    headers = {path: read_header(path)[0] for path in set(sources.values())}
    stored = {name: headers[path][name][0] for name, path in sources.items() if name in headers[path]}
    # A tied group stored once counts as present under any of its names.
    expected = {name: tuple(tensors[name].shape) for names in owners.values() for name in names}
    present = {name: stored.get(name, expected[name]) for names in owners.values()
               if any(alias in stored for alias in names) for name in names}
    check_tensor_shapes(expected, {**stored, **present}, label)
    for names in owners.values():
        name = next(a for a in names if a in stored)
        placeholder = tensors[name]
        target = dtype if dtype is not None and placeholder.is_floating_point() else placeholder.dtype
        module_name, _, attribute = name.rpartition(".")
        if attribute in getattr(model.get_submodule(module_name), "full_precision_buffers", ()):
            target = placeholder.dtype  # statistics a module keeps in float32 whatever the model's dtype
        value = read_tensor(sources[name], name, target)
        for alias in names:
            module_name, _, attribute = alias.rpartition(".")
            module = model.get_submodule(module_name)
            if isinstance(placeholder, nn.Parameter):
                value = value if isinstance(value, nn.Parameter) else \
                    nn.Parameter(value, requires_grad=placeholder.requires_grad)
                module._parameters[attribute] = value
            else:
                module._buffers[attribute] = value


def _persistent_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    state = model.state_dict(keep_vars=True)
    return [(name, buffer) for name, buffer in model.named_buffers(remove_duplicate=False) if name in state]


def packaged_file(package: str, relative: str, distribution: str, missing: str) -> Path:
    """The file `relative` inside the installed Python package `package` (PyPI name `distribution`).

    Raises GeoreasonError with `missing` (what needs it and the pip command) when the package is not installed,
    or naming the path when the package lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise GeoreasonError(missing)
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise GeoreasonError(f"{path}: the {distribution} package does not contain {relative}")
    return path


def check_sha256(path: Path, expected: str, what: str, hint: str = "") -> None:
    """Raise GeoreasonError naming `path` unless its SHA-256 is `expected` (`what`: the file it should be)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != expected:
        raise GeoreasonError(f"{path}: SHA-256 {digest} is not that of {what} ({expected}){hint}")
