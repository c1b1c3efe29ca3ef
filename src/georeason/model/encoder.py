"""Hierarchical Swin encoder (paper Sec. 4.1, docs/released_code.md#vision-encoder): four LayerNorm-ed stages at
strides 4-32.

Built on transformers' `SwinBackbone` (always partitions windows, so small inputs behave like the
released Swin). Frozen by default: no gradients and always in eval mode, so DropPath stays off.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SwinConfig
from transformers.models.swin.modeling_swin import SwinBackbone

from georeason.config import EncoderConfig


class SwinEncoder(nn.Module):
    def __init__(self, config: EncoderConfig, image_size: int, attn_implementation: str = "sdpa"):
        super().__init__()
        self.config = config
        swin_config = SwinConfig(
            image_size=image_size,
            patch_size=config.patch_size,
            num_channels=3,
            embed_dim=config.embed_dim,
            depths=list(config.depths),
            num_heads=list(config.num_heads),
            window_size=config.window_size,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=True,
            hidden_act="gelu",
            use_absolute_embeddings=False,
            drop_path_rate=0.0 if config.frozen else config.drop_path_rate,
            out_features=["stage1", "stage2", "stage3", "stage4"],
        )
        swin_config._attn_implementation = attn_implementation
        self.backbone = SwinBackbone(swin_config)
        # SwinModel's final LayerNorm only feeds its pooled output, which the backbone never uses.
        self.backbone.swin.layernorm = nn.Identity()
        if config.frozen:
            self.requires_grad_(False)

    @property
    def channels(self) -> list[int]:
        return self.config.stage_channels

    def train(self, mode: bool = True) -> SwinEncoder:
        # A frozen encoder stays in eval mode whatever the parent does (the released code forgot this).
        return super().train(mode and not self.config.frozen)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[B,3,S,S] normalised image -> 4 maps [B,C_i,S/4/2^i,S/4/2^i], i = 0..3."""
        if self.config.frozen:
            with torch.no_grad():
                return list(self.backbone(pixel_values).feature_maps)
        return list(self.backbone(pixel_values).feature_maps)
