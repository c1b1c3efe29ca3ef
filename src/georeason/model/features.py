"""Image features computed once per image and shared by every question about it (paper Sec. 4, Fig. 2).

The Swin maps, the connector's visual tokens and the pixel decoder's outputs depend on the image only;
so does the LLM's KV cache of the prompt up to the question (opening text, image tokens, the text before
the question), which the first question fills and the next ones reuse.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch

from georeason.errors import GeoreasonError
from georeason.model.prompt import PromptBatch, TokenKind


@dataclass
class ImageFeatures:
    """The question-independent part of SegEarth-R1's forward for B images (model.encode_image).

    encoder: the four Swin maps [B,C_i,S/s,S/s] at strides s = 4, 8, 16, 32 (model dtype).
    visual_tokens: the connector's tokens [B,T,H_llm] spliced into the prompt (None when only masks from a
    given description embedding are wanted, as in tiled mode).
    mask_features [B,C,S/4,S/4] and multi_scale (three maps): the pixel decoder's outputs.
    prefixes: KV caches of the prompt before the question, keyed by its token ids; filled by
    model.segment_features on the first question and reused by the next ones (read-only after that).
    """

    encoder: list[torch.Tensor]
    visual_tokens: torch.Tensor | None
    mask_features: torch.Tensor
    multi_scale: list[torch.Tensor]
    prefixes: dict[tuple, Any] = field(default_factory=dict, repr=False)

    @property
    def batch_size(self) -> int:
        return int(self.mask_features.shape[0])

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor held, the prefix KV caches included."""
        held = [*self.encoder, self.mask_features, *self.multi_scale]
        if self.visual_tokens is not None:
            held.append(self.visual_tokens)
        for cache in list(self.prefixes.values()):
            for layer in cache.layers:
                held += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if t is not None]
        return held

    def nbytes(self) -> int:
        """Bytes of tensor storage held (grows by the prefix KV cache after the first question)."""
        return sum(t.numel() * t.element_size() for t in self.tensors())

    def rows_for(self, rows: int) -> None:
        """Check that these features can serve a prompt batch of `rows` rows (B == rows, or B == 1)."""
        if self.batch_size not in (1, rows):
            raise GeoreasonError(f"features of {self.batch_size} images cannot serve {rows} prompts "
                                 "(expected one image for all prompts, or one image per prompt)")


def expand_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    """[1,...] -> [rows,...] without copying (a view); a tensor that already has `rows` rows unchanged."""
    return tensor if tensor.shape[0] == rows else tensor.expand(rows, *tensor.shape[1:])


def question_start(prompt: PromptBatch) -> int:
    """Length of the prompt part every row shares before its question (the image prefix), or 0.

    The prefix is everything before the first description position: the opening text, the image
    positions and the text between. It qualifies when every row has it at the same length with the same
    ids, unpadded, and it holds every image position; otherwise 0 (the question part then runs the whole
    prompt).
    """
    description = prompt.token_kind == TokenKind.DESCRIPTION
    if not bool(description.any(1).all()):
        return 0
    first = description.int().argmax(1)
    length = int(first[0])
    if length == 0 or not bool((first == length).all()):
        return 0
    head = prompt.input_ids[:, :length]
    if not bool((head == head[:1]).all()) or not bool(prompt.attention_mask[:, :length].all()):
        return 0
    image = prompt.token_kind == TokenKind.IMAGE
    if bool(image[:, length:].any()) or not bool(image[:, :length].any()):
        return 0
    return length


def copy_cache(cache, rows: int):
    """A private copy of a KV cache for `rows` prompt rows (a cache of one row is repeated)."""
    cache = copy.deepcopy(cache)
    if rows > 1 and cache.layers and cache.layers[0].keys.shape[0] == 1:
        cache.batch_repeat_interleave(rows)
    return cache
