"""Description projector, D-Projector (paper Sec. 4.3 and Fig. 4; docs/released_code.md#d-projector for the released
layout).

The pooled description embedding p attends (Perceiver-style, one block by default) to the projected
stride-32 visual features; a skip connection concatenates a projection of p, and a linear layer maps
the pair to the mask-decoder query. With the D-Projector switched off (Table 5) p is mapped linearly.
"""

from __future__ import annotations

import torch
from torch import nn

from georeason.config import DProjectorConfig


class PerceiverCrossAttention(nn.Module):
    """Latents attend to [visual tokens; latents]; no biases (names as released: to_q, to_kv, to_out)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, visual_tokens: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        batch, num_latents, _ = latents.shape
        visual_tokens = self.norm_media(visual_tokens)
        latents = self.norm_latents(latents)
        keys, values = self.to_kv(torch.cat([visual_tokens, latents], dim=1)).chunk(2, dim=-1)

        def split_heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, x.shape[1], self.heads, self.head_dim).transpose(1, 2)

        # Scale q before the product, as the released code does (bitwise-relevant for fidelity).
        queries = split_heads(self.to_q(latents)) * self.head_dim**-0.5
        attention = (queries @ split_heads(keys).transpose(-1, -2)).softmax(dim=-1)
        out = (attention @ split_heads(values)).transpose(1, 2).reshape(batch, num_latents, -1)
        return self.to_out(out)


class PerceiverStack(nn.Module):
    """`depth` blocks of (cross-attention + residual, LN-Linear-GELU-Linear FFN + residual), final LN."""

    def __init__(self, dim: int, heads: int, head_dim: int, depth: int, ff_mult: int):
        super().__init__()
        inner = dim * ff_mult
        self.layers = nn.ModuleList(
            nn.ModuleList([
                PerceiverCrossAttention(dim, heads, head_dim),
                nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                              nn.Linear(inner, dim, bias=False)),
            ])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, visual_tokens: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        for attention, feedforward in self.layers:
            latents = attention(visual_tokens, latents) + latents
            latents = feedforward(latents) + latents
        return self.norm(latents)


class DescriptionStandardiser(nn.Module):
    """p [B,H] -> (p - mean) / (std + 1e-3) per dimension, with statistics fixed by the first training rows.

    A small LLM's last hidden state has a few dimensions hundreds of times larger than the rest, which
    swamp what distinguishes one question from another once p is projected (docs/model.md, "Image
    encoders"). In training mode the first `samples` rows of p update an exact pooled mean and
    variance (batches merged as in Chan et al., 1979); after that they are fixed, saved with the weights as
    buffers and used unchanged at inference. Until two rows are seen the map is the identity. `georeason
    train` fills them before step 0 from the first `samples` positions of its sample stream (`observe`), so
    they do not depend on the number of processes, the batch size or the accumulation.
    """

    EPS = 1e-3
    # Kept in float32 whatever the model's dtype: bfloat16 would round the mean of a dimension of size
    # ~300 by about 1, which moves that standardised dimension by far more than its spread.
    full_precision_buffers = ("mean", "var")

    def __init__(self, size: int, samples: int):
        super().__init__()
        self.samples = samples
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))

    def _apply(self, fn, recurse=True):
        kept = {name: getattr(self, name) for name in self.full_precision_buffers}
        super()._apply(fn, recurse)
        for name, value in kept.items():  # follow the device move, keep the float32 values
            setattr(self, name, value.to(device=getattr(self, name).device, dtype=torch.float32))
        return self

    @property
    def rows_missing(self) -> int:
        """How many more rows the statistics take before they are fixed."""
        return max(0, self.samples - int(self.count))

    @torch.no_grad()
    def observe(self, p: torch.Tensor) -> None:
        """Merge the rows of p [B,H] into the statistics, up to `samples` rows in all; later rows are ignored."""
        seen = int(self.count)
        rows = p[: self.samples - seen].float()
        new = rows.shape[0]
        if new == 0:
            return
        batch_mean, batch_var = rows.mean(0), rows.var(0, unbiased=False)
        total = seen + new
        delta = batch_mean - self.mean.float()
        squares = self.var.float() * seen + batch_var * new + delta.square() * (seen * new / total)
        self.mean.copy_(self.mean.float() + delta * (new / total))
        self.var.copy_(squares / total)
        self.count.fill_(total)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if self.training and self.rows_missing:
            self.observe(p.detach())
        if int(self.count) < 2:  # no spread yet: one row would give std 0 and a factor of 1000
            return p
        standardised = (p.float() - self.mean.float()) / (self.var.float().sqrt() + self.EPS)
        return standardised.to(p.dtype)


class DescriptionProjector(nn.Module):
    """p [B,H_llm] + stride-32 features [B,C5,h,w] -> mask-decoder query [B,1,hidden]."""

    def __init__(self, config: DProjectorConfig, llm_hidden_size: int, stride32_channels: int, query_dim: int):
        super().__init__()
        self.enabled = config.enabled
        self.description_norm = (DescriptionStandardiser(llm_hidden_size, config.standardise_samples)
                                 if config.standardise_samples > 0 else None)
        if not config.enabled:
            self.query_projector = nn.Linear(llm_hidden_size, query_dim)
            return
        # Names follow the released checkpoint (docs/released_code.md#checkpoint-layout) so conversion is a
        # rename-free copy.
        self.text_projector = nn.Linear(llm_hidden_size, config.dim)  # p -> initial latent z0
        self.origin_SEG_token_projector = nn.Linear(llm_hidden_size, config.dim)  # p -> skip branch a
        self.local_project = nn.Linear(stride32_channels, config.dim)  # visual tokens V
        self.d_layers = PerceiverStack(config.dim, config.heads, config.head_dim, config.depth, config.ff_mult)
        self.SEG_token_projector = nn.Linear(2 * config.dim, query_dim)

    def forward(self, description_embedding: torch.Tensor, stride32_features: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.description_norm is not None:
            description_embedding = self.description_norm(description_embedding)
        p = description_embedding[:, None, :]
        if not self.enabled:
            return {"query": self.query_projector(p)}
        visual_tokens = self.local_project(stride32_features.flatten(2).transpose(1, 2))
        # Only the pooled latent matters: the released code also projects each description token, but
        # only latent 0 is used as key/value and returned, so the others cannot change the output.
        latent = self.d_layers(visual_tokens, self.text_projector(p))
        skip = self.origin_SEG_token_projector(p)
        query = self.SEG_token_projector(torch.cat([skip, latent], dim=-1))
        return {"query": query, "d_projector_out": latent, "skip": skip}
