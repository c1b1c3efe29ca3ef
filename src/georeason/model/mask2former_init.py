"""Initialisation of the encoder, pixel decoder and mask decoder from a Mask2Former checkpoint
(docs/released_code.md#initialisation).

Reads detectron2 `.pkl` files through a restricted unpickler (georeason.data.safe_pickle: numpy arrays
and plain containers only) or Hugging Face `Mask2FormerForUniversalSegmentation` safetensors; the class
head is dropped.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from georeason.data.safe_pickle import load_numpy_pickle
from georeason.errors import GeoreasonError
from georeason.model.convert import COMPILED_RULES
from georeason.model.weights import check_tensor_shapes

# Conv biases the released SegEarth-R1 FPN has and Mask2Former's (GroupNorm-ed, bias-free) convs lack.
ZERO_INIT_IF_ABSENT = ("pixel_decoder.decoder.adapter_1.0.bias", "pixel_decoder.decoder.layer_1.0.bias")
# Mask2Former tensors SegEarth-R1 does not use (class head, learned query tables).
DROPPED = re.compile(r"^(sem_seg_head\.predictor\.(class_embed|query_feat|query_embed|static_query)\b|criterion\.)"
                     r"|^(class_predictor|model\.transformer_module\.(queries_embedder|queries_features))\b")


def read_detectron2_pkl(path: Path) -> dict[str, torch.Tensor]:
    """The named arrays of a detectron2 `.pkl` ({"model": {name: array}}) as tensors.

    Read by the numpy-only unpickler (any pickle protocol, Python 2 or 3, numpy 1 or 2); an entry that
    is not a numeric array (object or text dtype, a list...) is an error naming the file and the entry.
    """
    payload = load_numpy_pickle(path)
    weights = payload.get("model", payload) if isinstance(payload, dict) else None
    if not isinstance(weights, dict):
        raise GeoreasonError(f"{path}: expected a dict with a 'model' entry of named arrays")
    tensors = {}
    for name, value in weights.items():
        where = f"{path}: model entry {name!r}"
        if not isinstance(name, str):
            raise GeoreasonError(f"{where}: expected a text name, got {type(name).__name__}")
        if isinstance(value, np.generic):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray):
            raise GeoreasonError(f"{where}: expected a numpy array, got {type(value).__name__}")
        if value.dtype.hasobject or value.dtype.kind not in "biufc":
            kind = "Python objects (dtype object)" if value.dtype.hasobject else f"dtype {value.dtype}"
            raise GeoreasonError(f"{where}: an array of {kind}; a checkpoint holds numeric arrays only")
        # Native byte order and a copy of our own (the unpickled array may be read-only or big-endian).
        native = np.array(value, dtype=value.dtype.newbyteorder("="), order="C")
        try:
            tensors[name] = torch.from_numpy(native)
        except TypeError:  # a numeric dtype torch has no tensor type for
            raise GeoreasonError(f"{where}: dtype {value.dtype} has no torch equivalent") from None
    return tensors


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
    # Every wanted tensor must come from the checkpoint (bar the FPN biases Mask2Former lacks), and every
    # checkpoint tensor must have a place in the model.
    expected = {k: tuple(ours[k].shape) for k in ours
                if (k in wanted and (k in state or k not in ZERO_INIT_IF_ABSENT)) or k in state}
    check_tensor_shapes(expected, {k: tuple(v.shape) for k, v in state.items()}, f"{path}: does not fit the model")
    zeroed = [k for k in ZERO_INIT_IF_ABSENT if k not in state]
    with torch.no_grad():
        for name in wanted:
            if name in state:
                ours[name].copy_(state[name].to(ours[name].dtype))
            else:
                ours[name].zero_()
    return zeroed
