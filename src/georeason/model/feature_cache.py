"""Bounded in-memory caches for training (docs/train.md): a frozen backbone's features per image, and
the description embedding p per (image, prompt) when everything before p is frozen (paper Sec. 4.2).

Keyed by the exact bytes of each normalised input image (and the prompt's tokens), so a hit returns what
the frozen, eval-mode modules compute for that very input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

from georeason.model.prompt import PromptBatch, TokenKind


class BoundedCache:
    """Entries keyed by digests, up to `max_bytes` in all (what does not fit is recomputed each time), with
    hit and miss counts. Raises ValueError for a negative `max_bytes`."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes: expected >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: dict[bytes, object] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _keep(self, key: bytes, value: torch.Tensor | list[torch.Tensor]) -> None:
        """Store `value` under `key` if it is new and fits the budget."""
        tensors = value if isinstance(value, list) else [value]
        size = sum(t.numel() * t.element_size() for t in tensors)
        if key not in self._entries and self.bytes + size <= self.max_bytes:
            self._entries[key] = value
            self.bytes += size


class FeatureCache(BoundedCache):
    """Per-image feature maps of a frozen backbone, up to `max_bytes` in all (later images are recomputed).

    `features(pixel_values, compute)`: [B,3,H,W] -> the list of maps `compute` returns ([B,C_i,h_i,w_i]),
    taking cached rows from memory and calling `compute` on the other rows only. Raises ValueError for a
    negative `max_bytes`.
    """

    @staticmethod
    def key(image: torch.Tensor) -> bytes:
        """A digest of one image's dtype, shape and values: equal keys mean bitwise-equal inputs."""
        data = image.detach().contiguous().cpu()
        digest = hashlib.blake2b(data.view(torch.uint8).numpy().tobytes(), digest_size=20)
        digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
        return digest.digest()

    def features(self, pixel_values: torch.Tensor,
                 compute: Callable[[torch.Tensor], list[torch.Tensor]]) -> list[torch.Tensor]:
        keys = [self.key(image) for image in pixel_values]
        missing = [i for i, key in enumerate(keys) if key not in self._entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, list[torch.Tensor]] = {}
        if missing:
            computed = compute(pixel_values[missing])
            for row, index in enumerate(missing):
                # clone: a row of the batch would keep the whole batch's storage alive.
                fresh[index] = [level[row].detach().clone() for level in computed]
                self._keep(keys[index], fresh[index])
        rows = [fresh[i] if i in fresh else self._entries[key] for i, key in enumerate(keys)]
        return [torch.stack([row[level] for row in rows]) for level in range(len(rows[0]))]


class DescriptionCache(BoundedCache):
    """p [H_llm] per (image, prompt up to its last description token), up to `max_bytes` in all.

    `descriptions(pixel_values, prompt, compute)`: images [B,3,H,W] and their B prompts -> p [B,H_llm],
    taking cached rows from memory and calling `compute(rows)` (p [len(rows),H_llm] for those row indices)
    for the others. Positions after a row's description cannot change p under causal attention, so they
    are not part of the key. Raises ValueError for a negative `max_bytes`.
    """

    @staticmethod
    def key(image: torch.Tensor, input_ids: torch.Tensor, token_kind: torch.Tensor) -> bytes:
        """A digest of one image (FeatureCache.key) and one prompt row's ids and kinds up to its description's end."""
        description = (token_kind == TokenKind.DESCRIPTION).nonzero()
        end = int(description[-1]) + 1 if len(description) else int(token_kind.shape[0])
        digest = hashlib.blake2b(FeatureCache.key(image), digest_size=20)
        digest.update(input_ids[:end].cpu().numpy().tobytes())
        digest.update(token_kind[:end].cpu().numpy().tobytes())
        return digest.digest()

    def descriptions(self, pixel_values: torch.Tensor, prompt: PromptBatch,
                     compute: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        keys = [self.key(image, ids, kinds) for image, ids, kinds in
                zip(pixel_values, prompt.input_ids, prompt.token_kind)]
        missing = [i for i, key in enumerate(keys) if key not in self._entries]
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            computed = compute(missing).detach()
            for row, index in enumerate(missing):
                fresh[index] = computed[row].clone()
                self._keep(keys[index], fresh[index])
        return torch.stack([fresh[i] if i in fresh else self._entries[key] for i, key in enumerate(keys)])
