"""Training checkpoints: atomic folders with everything an exact resume needs, and their validation.

Supports the training recipe of docs/released_code.md#training-recipe (long runs, interrupted and resumed). Model
weights in
safetensors; optimizer/scheduler/RNG states through torch.save, read back with weights_only=True.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from georeason.config import SegEarthConfig
from georeason.errors import GeoreasonError
from georeason.training.outputs import CHECKPOINT_DIR, commit_folder, remove_folder, writing
from georeason.training.recipe import NOT_TRAJECTORY

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


def temporary_folder(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f".tmp-step-{step:08d}"


def write_rank_rng(folder: Path, rank: int) -> None:
    """Each process writes its own RNG state into the temporary folder (before the main one commits)."""
    with writing(folder):
        torch.save(rng_state(), folder / f"rng_rank{rank}.pt")


def write_checkpoint(folder: Path, final: Path, model_state: dict[str, torch.Tensor], optimizer_state: dict,
                     scheduler_state: dict, info: dict[str, Any], keep_last: int, replace_others: bool = False) -> Path:
    """Main process: fill the temporary `folder`, fsync, rename it to `final`, prune to `keep_last`.

    `replace_others`: the first checkpoint of an --overwrite run; the earlier run's checkpoints go once
    this one is in place. A failed write (full disk, no permission) removes `folder` and raises
    GeoreasonError naming it; the checkpoints already there stay as they were.
    """
    from georeason.model.weights import save_safetensors

    try:
        with writing(folder):
            contiguous = {name: tensor.detach().contiguous().cpu() for name, tensor in model_state.items()}
            save_safetensors(contiguous, folder / MODEL_FILE, {"format": "pt"})
            torch.save({"optimizer": optimizer_state, "scheduler": scheduler_state}, folder / STATE_FILE)
            (folder / INFO_FILE).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            commit_folder(folder, final)  # a checkpoint of the same step from an earlier attempt is replaced
    except BaseException:
        with contextlib.suppress(OSError):
            remove_folder(folder)
        raise
    kept = list_checkpoints(final.parent.parent)
    if replace_others:
        for _, old in kept:
            if old != final:
                remove_folder(old)
        kept = [(step, path) for step, path in kept if path == final]
    for _, old in kept[:-keep_last]:
        remove_folder(old)
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


class DamagedCheckpoint(GeoreasonError):
    """A checkpoint file that cannot be read back (truncated, overwritten, missing)."""


@dataclass
class ResumePoint:
    """A checkpoint read back whole, before anything of it is applied to the model or optimizer."""

    step: int
    folder: Path
    info: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    training_state: dict[str, Any]
    rng: dict[str, Any] | None  # this process's RNG states; None when the run had fewer processes


def read_info(folder: Path) -> dict[str, Any]:
    path = folder / INFO_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:  # ValueError: JSONDecodeError and UnicodeDecodeError
        raise DamagedCheckpoint(f"{path}: unreadable checkpoint description ({error})") from None
    if not isinstance(info, dict):
        raise DamagedCheckpoint(f"{path}: unreadable checkpoint description (not a JSON object)")
    missing = sorted({"step", "recipe", "recipe_fingerprint", "model_config"} - set(info))
    if missing or not isinstance(info["recipe"], dict):
        raise DamagedCheckpoint(f"{path}: incomplete checkpoint description (missing or not an object: "
                                f"{', '.join(missing) or 'recipe'})")
    return info


def _read(path: Path, reader) -> Any:
    try:
        return reader(path)
    except FileNotFoundError:
        raise DamagedCheckpoint(f"{path}: missing") from None
    except Exception as error:  # safetensors and torch raise their own types for truncated or corrupt files
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DamagedCheckpoint(f"{path}: damaged, cannot be read ({detail[:200]})") from None


def _torch_load(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def read_checkpoint(folder: Path, step: int, rank: int) -> ResumePoint:
    """Read every file of a checkpoint (all processes' RNG states too, so every process judges it the
    same); raises DamagedCheckpoint naming the first file that cannot be read."""
    from safetensors.torch import load_file

    info = read_info(folder)
    model_state = _read(folder / MODEL_FILE, lambda path: load_file(str(path)))
    training_state = _read(folder / STATE_FILE, _torch_load)
    if not isinstance(training_state, dict) or not {"optimizer", "scheduler"} <= set(training_state):
        raise DamagedCheckpoint(f"{folder / STATE_FILE}: damaged (no optimizer and scheduler state in it)")
    states = {int(p.stem.removeprefix("rng_rank")): _read(p, _torch_load) for p in sorted(folder.glob("rng_rank*.pt"))
              if p.stem.removeprefix("rng_rank").isdigit()}
    return ResumePoint(step, folder, info, model_state, training_state, states.get(rank))


def check_compatible(folder: Path, info: dict[str, Any], recipe: dict[str, Any], recipe_fingerprint: str,
                     model_config: dict) -> None:
    """Refuse a checkpoint written by a different recipe or model configuration."""
    if info.get("recipe_fingerprint") != recipe_fingerprint:
        theirs = info.get("recipe", {})
        changed = sorted(k for k in (set(theirs) | set(recipe)) - set(NOT_TRAJECTORY) if theirs.get(k) != recipe.get(k))
        detail = f" (different: {', '.join(changed)})" if changed else ""
        raise GeoreasonError(
            f"{folder}: this checkpoint was written by a different training config{detail}; resume with the "
            "same config, or start a new run with --overwrite or another output_dir")
    if _normalised(info.get("model_config")) != _normalised(model_config):
        raise GeoreasonError(f"{folder}: this checkpoint was written for a different model configuration; "
                             "resume with the same model, or start a new run with --overwrite")


def _normalised(model_config: Any) -> Any:
    """A model config dict with every field present: a checkpoint written before a field was added (at its
    default) still matches."""
    try:
        return SegEarthConfig.from_dict(model_config).to_dict()
    except (GeoreasonError, TypeError, AttributeError):
        return model_config


def load_model_weights(module: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Load a checkpoint's model state (read by read_checkpoint) into `module`."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    # Tied tensors were saved once; every missing name must be a tied alias of a loaded one.
    loaded_ptrs = {t.data_ptr() for n, t in module.state_dict().items() if n in state}
    really_missing = [n for n in missing if module.state_dict()[n].data_ptr() not in loaded_ptrs]
    if really_missing or unexpected:
        raise GeoreasonError(f"{folder / MODEL_FILE}: does not match the model (missing {really_missing[:5]}, "
                             f"unexpected {unexpected[:5]})")
