"""Training checkpoints: atomic folders with everything an exact resume needs, and their validation.

Supports the training recipe of SPEC 3 (long runs, interrupted and resumed). Model weights in
safetensors; optimizer/scheduler/RNG states through torch.save, read back with weights_only=True.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from georeason.errors import GeoreasonError

CHECKPOINT_DIR = "checkpoints"
STEP_PATTERN = re.compile(r"^step-(\d{8})$")
MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.pt"  # optimizer + scheduler
INFO_FILE = "checkpoint.json"  # step, sampler position, recipe, model config, fingerprints


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINT_DIR


def step_folder(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f"step-{step:08d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed into place) sorted by step; temporary folders are ignored."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for folder in root.iterdir():
        match = STEP_PATTERN.match(folder.name)
        if match and (folder / INFO_FILE).is_file():
            found.append((int(match.group(1)), folder))
    return sorted(found)


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as plain lists/tensors (loadable with weights_only=True)."""
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(state), gauss], "numpy": [name, keys.tolist(), int(pos), int(has_gauss),
                                                                float(cached)],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as stream:
                os.fsync(stream.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def temporary_folder(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f".tmp-step-{step:08d}"


def write_rank_rng(folder: Path, rank: int) -> None:
    """Each process writes its own RNG state into the temporary folder (before the main one commits)."""
    torch.save(rng_state(), folder / f"rng_rank{rank}.pt")


def write_checkpoint(folder: Path, final: Path, model_state: dict[str, torch.Tensor], optimizer_state: dict,
                     scheduler_state: dict, info: dict[str, Any], keep_last: int) -> Path:
    """Main process: fill the temporary `folder`, fsync, rename it to `final`, prune to `keep_last`."""
    from safetensors.torch import save_file

    contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in model_state.items()}
    save_file(contiguous, str(folder / MODEL_FILE), metadata={"format": "pt"})
    torch.save({"optimizer": optimizer_state, "scheduler": scheduler_state}, folder / STATE_FILE)
    (folder / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    _fsync_tree(folder)
    if final.exists():  # a checkpoint of the same step from an earlier, overwritten attempt
        shutil.rmtree(final)
    os.replace(folder, final)
    _fsync_dir(final.parent)
    for _, old in list_checkpoints(final.parent.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the second name of tied tensors (safetensors refuses shared storage)."""
    seen: dict[int, str] = {}
    result = {}
    for name, tensor in state.items():
        key = tensor.data_ptr() if tensor.numel() else id(tensor)
        if key in seen:
            continue
        seen[key] = name
        result[name] = tensor
    return result


def read_info(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise GeoreasonError(f"{folder / INFO_FILE}: unreadable checkpoint description ({error})") from None


def check_compatible(folder: Path, info: dict[str, Any], recipe: dict[str, Any], recipe_fingerprint: str,
                     model_config: dict) -> None:
    """Refuse a checkpoint written by a different recipe or model configuration."""
    if info.get("recipe_fingerprint") != recipe_fingerprint:
        theirs = info.get("recipe", {})
        ignored = {"output_dir", "save_every", "keep_last", "log_every", "num_workers", "max_minutes"}
        changed = sorted(k for k in (set(theirs) | set(recipe)) - ignored if theirs.get(k) != recipe.get(k))
        detail = f" (different: {', '.join(changed)})" if changed else ""
        raise GeoreasonError(
            f"{folder}: this checkpoint was written by a different training config{detail}; resume with the "
            "same config, or start a new run with --overwrite or another output_dir")
    if info.get("model_config") != model_config:
        raise GeoreasonError(f"{folder}: this checkpoint was written for a different model configuration; "
                             "resume with the same model, or start a new run with --overwrite")


def load_model_weights(module: torch.nn.Module, folder: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(folder / MODEL_FILE))
    missing, unexpected = module.load_state_dict(state, strict=False)
    # Tied tensors were saved once; every missing name must be a tied alias of a loaded one.
    loaded_ptrs = {t.data_ptr() for n, t in module.state_dict().items() if n in state}
    really_missing = [n for n in missing if module.state_dict()[n].data_ptr() not in loaded_ptrs]
    if really_missing or unexpected:
        raise GeoreasonError(f"{folder / MODEL_FILE}: does not match the model (missing {really_missing[:5]}, "
                             f"unexpected {unexpected[:5]})")


def load_training_state(folder: Path) -> dict[str, Any]:
    return torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)


def load_rank_rng(folder: Path, rank: int) -> dict[str, Any] | None:
    path = folder / f"rng_rank{rank}.pt"
    return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None
