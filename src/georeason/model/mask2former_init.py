"""Initialisation of the encoder, pixel decoder and mask decoder from a Mask2Former checkpoint (SPEC 3).

Reads detectron2 `.pkl` files through a restricted unpickler (numpy arrays and plain containers
only) or Hugging Face `Mask2FormerForUniversalSegmentation` safetensors; the class head is dropped.
"""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from georeason.errors import GeoreasonError
from georeason.model.convert import COMPILED_RULES

# Conv biases the released SegEarth-R1 FPN has and Mask2Former's (GroupNorm-ed, bias-free) convs lack.
ZERO_INIT_IF_ABSENT = ("pixel_decoder.decoder.adapter_1.0.bias", "pixel_decoder.decoder.layer_1.0.bias")
# Mask2Former tensors SegEarth-R1 does not use (class head, learned query tables).
DROPPED = re.compile(r"^(sem_seg_head\.predictor\.(class_embed|query_feat|query_embed|static_query)\b|criterion\.)"
                     r"|^(class_predictor|model\.transformer_module\.(queries_embedder|queries_features))\b")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Allows what a detectron2 checkpoint needs to rebuild numpy arrays, and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays and plain containers "
                                     "are allowed in a Mask2Former .pkl")


def read_detectron2_pkl(path: Path) -> dict[str, torch.Tensor]:
    try:
        payload = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise GeoreasonError(f"{path}: not a loadable detectron2 checkpoint ({error})") from None
    weights = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(weights, dict):
        raise GeoreasonError(f"{path}: expected a dict with a 'model' entry of named arrays")
    return {k: torch.from_numpy(np.asarray(v).copy()) for k, v in weights.items() if isinstance(v, np.ndarray)}


# detectron2 prefixes -> the released SegEarth-R1 names, which COMPILED_RULES then map to ours.
_DETECTRON2_PREFIXES = (("backbone.", "model.vision_tower."), ("sem_seg_head.pixel_decoder.", "pixel_decoder."),
                        ("sem_seg_head.predictor.", "predictor."))

_HF_RENAMES = [
    (r"^model\.pixel_level_module\.encoder\.embeddings\.", "encoder.backbone.swin.embeddings."),
    (r"^model\.pixel_level_module\.encoder\.encoder\.", "encoder.backbone.swin.encoder."),
    (r"^model\.pixel_level_module\.encoder\.hidden_states_norms\.", "encoder.backbone.hidden_states_norms."),
    (r"^model\.pixel_level_module\.decoder\.", "pixel_decoder.decoder."),
    (r"^model\.transformer_module\.decoder\.", "mask_decoder.decoder."),
    (r"^model\.transformer_module\.level_embed\.", "mask_decoder.level_embed."),
    # transformers 4 Swin attention names -> transformers 5
    (r"\.attention\.self\.query\.", ".attention.q_proj."), (r"\.attention\.self\.key\.", ".attention.k_proj."),
    (r"\.attention\.self\.value\.", ".attention.v_proj."), (r"\.attention\.output\.dense\.", ".attention.o_proj."),
    (r"\.attention\.self\.relative_position_bias_table$", ".attention.relative_position_bias.relative_position_bias_table"),
]


def mask2former_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A Mask2Former checkpoint (.pkl or HF safetensors folder/file) -> georeason names (partial model)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise GeoreasonError(f"{path}: no such Mask2Former checkpoint")
    converted: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    if path.suffix == ".pkl":
        for name, tensor in read_detectron2_pkl(path).items():
            if DROPPED.match(name) or name.endswith("relative_position_index"):
                continue
            released = next((new + name[len(old):] for old, new in _DETECTRON2_PREFIXES if name.startswith(old)), None)
            rule = next(((p.match(released), action) for p, action in COMPILED_RULES
                         if released and p.match(released)), None)
            if rule is None:
                unmapped.append(name)
                continue
            match, action = rule
            converted.update(action(match, tensor, None))
    else:
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as error:
            raise GeoreasonError(f"{path}: unreadable safetensors file ({error})") from None
        for name, tensor in state.items():
            if DROPPED.match(name) or name.endswith("relative_position_index"):
                continue
            new = name
            for pattern, replacement in _HF_RENAMES:
                new = re.sub(pattern, replacement, new)
            if new == name:
                unmapped.append(name)
                continue
            converted[new] = tensor
    if unmapped:
        raise GeoreasonError(f"{path}: {len(unmapped)} tensor(s) have no georeason counterpart: "
                             + ", ".join(sorted(unmapped)[:40]))
    return converted


def initialise_from_mask2former(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Copy encoder, pixel-decoder and mask-decoder weights; every gap is an error except the FPN biases.

    Returns the names that were zero-initialised because Mask2Former has no such tensor.
    """
    state = mask2former_state(path)
    ours = model.state_dict()
    parts = ("encoder.", "pixel_decoder.", "mask_decoder.decoder.", "mask_decoder.level_embed.")
    wanted = {k for k in ours if k.startswith(parts)}
    missing = sorted(wanted - set(state) - set(ZERO_INIT_IF_ABSENT))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(state) & wanted if tuple(state[k].shape) != tuple(ours[k].shape))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)}: {', '.join(missing[:30])}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:30])}")
    if wrong:
        problems.append("wrong shape: " + ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(ours[k].shape)}"
                                                    for k in wrong[:20]))
    if problems:
        raise GeoreasonError(f"{path}: does not fit the model: " + "; ".join(problems))
    zeroed = [k for k in ZERO_INIT_IF_ABSENT if k not in state]
    with torch.no_grad():
        for name in wanted:
            if name in state:
                ours[name].copy_(state[name].to(ours[name].dtype))
            else:
                ours[name].zero_()
    return zeroed
