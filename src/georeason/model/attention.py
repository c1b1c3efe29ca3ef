"""An eager attention function that scales queries before the product, as the released code does.

transformers computes (q k^T) * scale; the released Swin computes (q * scale) k^T. They agree only
when head_dim is a power of two (docs/released_code.md#attention-arithmetic), so bit-level fidelity checks register
and use this one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

FIDELITY_ATTENTION = "georeason_scaled_query_eager"


def scaled_query_eager_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 attention_mask: torch.Tensor | None, scaling: float | None = None,
                                 dropout: float = 0.0, **kwargs):
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if key.shape[1] != query.shape[1]:  # grouped-query attention: repeat key/value heads
        repeat = query.shape[1] // key.shape[1]
        key = key.repeat_interleave(repeat, dim=1)
        value = value.repeat_interleave(repeat, dim=1)
    weights = torch.matmul(query * scaling, key.transpose(2, 3))
    if attention_mask is not None:
        weights = weights + attention_mask[:, :, :, : key.shape[-2]]
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


AttentionInterface.register(FIDELITY_ATTENTION, scaled_query_eager_attention)
# It needs the same additive float mask as transformers' eager attention (not sdpa's is_causal shortcut).
AttentionMaskInterface.register(FIDELITY_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])
