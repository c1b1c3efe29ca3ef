"""Multi-scale deformable attention (Deformable DETR, used by the pixel decoder of SPEC 1.5) for CPUs.

The same arithmetic as transformers' grid_sample version (bilinear sampling, zero padding,
align_corners=False), written as one weighted gather: every output row is a weighted sum of
L x P x 4 value rows (levels x points x bilinear corners), which `F.embedding_bag(mode="sum")`
computes without materialising the [B*H, D, Q, L*P] sample tensor the grid_sample path builds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,
)


def multi_scale_deformable_attention(value: torch.Tensor, spatial_shapes: list[tuple[int, int]],
                                     sampling_locations: torch.Tensor,
                                     attention_weights: torch.Tensor) -> torch.Tensor:
    """value [B,N,H,D]; sampling_locations [B,Q,H,L,P,2] as (x, y) in [0, 1]; attention_weights
    [B,Q,H,L,P] -> [B,Q,H*D]. Runs in float32 whatever the input dtype (bf16 sampling weights are too
    coarse: a 1/256 step in a weight moves the sample by a visible fraction of a pixel)."""
    batch, num_values, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    out_dtype = value.dtype
    locations = sampling_locations.float()
    weights = attention_weights.float()

    indices, corner_weights = [], []
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        # grid_sample's own unnormalisation (align_corners=False), kept in the same order of operations.
        grid = 2 * locations[:, :, :, level] - 1  # [B,Q,H,P,2]
        x = ((grid[..., 0] + 1) * width - 1) / 2
        y = ((grid[..., 1] + 1) * height - 1) / 2
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        level_weight = weights[:, :, :, level]
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                          (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            cx, cy = x0 + dx, y0 + dy
            inside = (cx >= 0) & (cx <= width - 1) & (cy >= 0) & (cy <= height - 1)
            flat = start + cy.clamp(0, height - 1).long() * width + cx.clamp(0, width - 1).long()
            indices.append(flat)
            corner_weights.append(w * level_weight * inside)
        start += height * width

    # Row of value[b, n, h] in the flattened [B*N*H, D] table.
    batch_offset = torch.arange(batch, device=value.device).view(batch, 1, 1, 1) * num_values
    head_offset = torch.arange(heads, device=value.device).view(1, 1, heads, 1)
    rows = (torch.stack(indices, -1).flatten(3) + batch_offset) * heads + head_offset  # [B,Q,H,L*P*4]
    bag_weights = torch.stack(corner_weights, -1).flatten(3)
    table = value.float().reshape(batch * num_values * heads, head_dim)
    output = F.embedding_bag(rows.view(-1, rows.shape[-1]), table, per_sample_weights=bag_weights.reshape(
        -1, rows.shape[-1]), mode="sum")
    return output.view(batch, queries, heads * head_dim).to(out_dtype)


class DeformableAttention(Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention):
    """transformers' module (same parameters and names) with the gather-based sampling above."""

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                encoder_hidden_states: torch.Tensor | None = None, encoder_attention_mask=None,
                position_embeddings: torch.Tensor | None = None, reference_points: torch.Tensor | None = None,
                spatial_shapes_list: list[tuple[int, int]] | None = None, level_start_index=None,
                output_attentions: bool = False):
        if position_embeddings is not None:
            hidden_states = hidden_states + position_embeddings
        if reference_points is None or reference_points.shape[-1] != 2:
            raise ValueError("the pixel decoder's deformable attention takes (x, y) reference points [B,Q,L,2]")
        batch, queries, _ = hidden_states.shape
        values = encoder_hidden_states.shape[1]
        if sum(h * w for h, w in spatial_shapes_list) != values:
            raise ValueError(f"spatial shapes {spatial_shapes_list} do not cover the {values} values")
        value = self.value_proj(encoder_hidden_states)
        if attention_mask is not None:
            value = value.masked_fill(attention_mask[..., None], 0.0)
        value = value.view(batch, values, self.n_heads, self.d_model // self.n_heads)
        offsets = self.sampling_offsets(hidden_states).view(batch, queries, self.n_heads, self.n_levels,
                                                            self.n_points, 2)
        weights = self.attention_weights(hidden_states).view(batch, queries, self.n_heads,
                                                             self.n_levels * self.n_points)
        weights = weights.softmax(-1).view(batch, queries, self.n_heads, self.n_levels, self.n_points)
        # Offsets are in pixels of each level: normalise by (width, height).
        normaliser = torch.tensor([[w, h] for h, w in spatial_shapes_list], device=offsets.device)
        locations = reference_points[:, :, None, :, None, :] + offsets / normaliser[None, None, None, :, None, :]
        output = multi_scale_deformable_attention(value, spatial_shapes_list, locations, weights)
        return self.output_proj(output), weights
