"""Multi-scale deformable-attention pixel decoder of Mask2Former (docs/released_code.md#pixel-decoder; paper Sec. 4.3,
Fig. 2).

transformers' `Mask2FormerPixelDecoder` with the FPN branch rebuilt as released (conv with bias ->
GroupNorm -> ReLU in both the lateral and the output conv) and our gather-based deformable attention.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import Mask2FormerPixelDecoder

from georeason.config import PixelDecoderConfig
from georeason.model.deformable_attention import DeformableAttention


def _conv_norm_relu(in_channels: int, out_channels: int, kernel_size: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=True),
        nn.GroupNorm(groups, out_channels),
        nn.ReLU(),
    )


class PixelDecoder(nn.Module):
    def __init__(self, config: PixelDecoderConfig, encoder_channels: list[int]):
        super().__init__()
        if config.num_points != 4:
            raise ValueError("transformers' Mask2Former pixel decoder supports num_points=4 only")
        m2f_config = Mask2FormerConfig(
            feature_size=config.conv_dim,
            mask_feature_size=config.mask_dim,
            num_attention_heads=config.heads,
            encoder_layers=config.encoder_layers,
            encoder_feedforward_dim=config.feedforward_dim,
            feature_strides=[4, 8, 16, 32],
            common_stride=4,
            dropout=0.0,
            backbone_config=None,
            use_pretrained_backbone=False,
        )
        with warnings.catch_warnings():  # a non-power-of-two head size only matters to a CUDA kernel we never use
            warnings.simplefilter("ignore", UserWarning)
            decoder = Mask2FormerPixelDecoder(m2f_config, feature_channels=list(encoder_channels))
            # Same parameters, gather-based sampling: several times faster on CPU than grid_sample.
            for layer in decoder.encoder.layers:
                attention = layer.self_attn
                layer.self_attn = DeformableAttention(attention.d_model, attention.n_heads, attention.n_levels,
                                                      attention.n_points)
        groups = config.group_norm_groups
        for projection in decoder.input_projections:
            projection[1] = nn.GroupNorm(groups, config.conv_dim)
        # One FPN level (stride 4) at common_stride 4: rebuild it as released (bias + ReLU).
        decoder.adapter_1 = _conv_norm_relu(encoder_channels[0], config.conv_dim, 1, groups)
        decoder.layer_1 = _conv_norm_relu(config.conv_dim, config.conv_dim, 3, groups)
        decoder.lateral_convolutions = [decoder.adapter_1]
        decoder.output_convolutions = [decoder.layer_1]
        nn.init.normal_(decoder.level_embed)
        self.decoder = decoder

    @property
    def level_embed(self) -> nn.Parameter:
        return self.decoder.level_embed

    def forward(self, encoder_features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """4 encoder maps (strides 4..32) -> (mask features at stride 4, [stride 32, 16, 8] maps)."""
        output = self.decoder(encoder_features, output_attentions=False, output_hidden_states=False,
                              return_dict=True)
        return output.mask_features, list(output.multi_scale_features)
