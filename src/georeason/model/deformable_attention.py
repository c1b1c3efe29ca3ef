"""Multi-scale deformable attention (Deformable DETR, used by the pixel decoder, docs/released_code.md#pixel-decoder)
for CPUs.

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
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    out_dtype = value.dtype
    locations = sampling_locations.float()
    weights = attention_weights.float()

    # Each level gets a one-pixel zero border, so the four bilinear corners of any (clamped) sample
    # are valid rows and grid_sample's zero padding comes for free.
    padded = [F.pad(level, (0, 0, 0, 0, 1, 1, 1, 1)).flatten(1, 2)  # [B,h,w,H,D] -> [B,(h+2)(w+2),H,D]
              for level in _split_levels(value.float(), spatial_shapes)]
    table = torch.cat(padded, 1)  # [B,Np,H,D]
    rows_per_batch = table.shape[1]
    index_dtype = torch.int32 if batch * rows_per_batch * heads < 2**31 else torch.int64
    # Row of table[b, n, h] in the flattened [B*Np*H, D] table is (b * Np + n) * H + h.
    device = value.device
    batch_head = (torch.arange(batch, device=device).view(batch, 1, 1, 1) * rows_per_batch * heads
                  + torch.arange(heads, device=device).view(1, 1, heads, 1))

    # All levels at once: per-level sizes broadcast over [B,Q,H,L,P] (elementwise work dominates here).
    heights = torch.tensor([h for h, _ in spatial_shapes], device=device, dtype=torch.float32).view(levels, 1)
    widths = torch.tensor([w for _, w in spatial_shapes], device=device, dtype=torch.float32).view(levels, 1)
    padded_sizes = [(h + 2) * (w + 2) for h, w in spatial_shapes]
    starts = torch.tensor([sum(padded_sizes[:i]) for i in range(levels)], device=device).view(levels, 1)
    strides = (widths + 2).long()
    # grid_sample's own unnormalisation (align_corners=False), kept in the same order of operations.
    grid = 2 * locations - 1
    x = (((grid[..., 0] + 1) * widths - 1) / 2).clamp(min=-1.0).minimum(widths)
    y = (((grid[..., 1] + 1) * heights - 1) / 2).clamp(min=-1.0).minimum(heights)
    # Beyond the border both corners of a side read the zero border, so clamping changes no value.
    x0, y0 = x.floor().minimum(widths - 1), y.floor().minimum(heights - 1)
    fx, fy = x - x0, y - y0
    top_left = ((starts + (y0.long() + 1) * strides + (x0.long() + 1)) * heads + batch_head[..., None])
    top_left = top_left.to(index_dtype)  # [B,Q,H,L,P]
    below = (strides * heads).to(index_dtype)
    indices = torch.stack([top_left, top_left + heads, top_left + below, top_left + below + heads], -1)
    left, right = (1 - fx) * weights, fx * weights
    corner_weights = torch.stack([left * (1 - fy), right * (1 - fy), left * fy, right * fy], -1)

    bag = levels * points * 4
    rows, flat_table, flat_weights = indices.view(-1, bag), table.reshape(-1, head_dim), corner_weights.view(-1, bag)
    # Training on the CPU only; inference (and torch.compile of it) keeps the plain embedding_bag.
    if flat_table.device.type == "cpu" and torch.is_grad_enabled() and (
            flat_table.requires_grad or flat_weights.requires_grad):
        output = WeightedRowSum.apply(flat_table, rows, flat_weights)
    else:
        output = F.embedding_bag(rows, flat_table, per_sample_weights=flat_weights, mode="sum")
    return output.view(batch, queries, heads * head_dim).to(out_dtype)


class WeightedRowSum(torch.autograd.Function):
    """table [T,D], rows [R,K] (int32/int64 row numbers of table), weights [R,K] -> out [R,D] with
    out[r] = sum_k weights[r,k] * table[rows[r,k]]: F.embedding_bag(mode="sum") with a faster CPU backward.

    embedding_bag's own CPU backward builds the table's gradient densely; in a CPU training step of the
    smol-pretrained preset it was a quarter of the whole step (docs/performance.md, "Training on the CPU"). Here the
    table's gradient is the same weighted sum read the other way round: for each table row, the output rows
    that read it, gathered by one embedding_bag over the (r, k) pairs sorted by table row (a stable sort,
    so the sums are reproducible). The weights' gradient, dot(grad[r], table[rows[r,k]]), is computed in
    chunks of rows so that the gathered table rows stay a few MB.
    """

    CHUNK_VALUES = 2**22  # table values gathered at once for the weights' gradient (16 MB in float32)

    @staticmethod
    def forward(ctx, table: torch.Tensor, rows: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table, rows, weights)
        return F.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, rows, weights = ctx.saved_tensors
        grad = grad.contiguous()
        grad_table = grad_weights = None
        count, bag = rows.shape
        if ctx.needs_input_grad[0]:
            flat = rows.reshape(-1)
            by_table_row = torch.sort(flat, stable=True).indices  # [R*K] positions of (r, k) pairs
            readers = torch.bincount(flat.long(), minlength=table.shape[0])  # pairs that read each table row
            offsets = torch.cumsum(readers, 0) - readers
            grad_table = F.embedding_bag(torch.div(by_table_row, bag, rounding_mode="floor"), grad, offsets,
                                         per_sample_weights=weights.reshape(-1)[by_table_row], mode="sum")
        if ctx.needs_input_grad[2]:
            grad_weights = torch.empty_like(weights)
            chunk = max(1, WeightedRowSum.CHUNK_VALUES // (bag * table.shape[1]))
            for first in range(0, count, chunk):
                read = F.embedding(rows[first : first + chunk], table)  # [c,K,D]
                grad_weights[first : first + chunk] = torch.bmm(read, grad[first : first + chunk, :, None])[..., 0]
        return grad_table, None, grad_weights


def _split_levels(value: torch.Tensor, spatial_shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """[B,N,H,D] -> per level [B,h,w,H,D]."""
    sizes = [h * w for h, w in spatial_shapes]
    return [part.unflatten(1, shape) for part, shape in zip(value.split(sizes, 1), spatial_shapes)]


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
