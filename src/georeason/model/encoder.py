"""Hierarchical image encoders (paper Sec. 4.1, docs/released_code.md#vision-encoder): four feature maps at
strides 4-32.

The Swin is built on transformers' `SwinBackbone` (always partitions windows, so small inputs behave like
the released Swin); the CPU presets' alternative is a pretrained CNN trunk (ImageNet EfficientNet-Lite0 or
geoembed's aerial ResNet-18) with a 1x1 adapter (docs/model.md, "Image encoders"). Frozen backbones: no
gradients and always in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import SwinConfig
from transformers.models.swin.modeling_swin import SwinBackbone

import georeason.model.aerial_resnet as aerial_resnet
import georeason.model.efficientnet_lite as efficientnet_lite
from georeason.config import EncoderConfig
from georeason.errors import GeoreasonError
from georeason.model.feature_cache import FeatureCache


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

    @property
    def backbone_channels(self) -> list[int]:
        return self.config.stage_channels

    def forward_with_backbone(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(maps handed on, the backbone's own maps): the same list for the Swin, which has no adapter."""
        maps = self(pixel_values)
        return maps, maps

    def train(self, mode: bool = True) -> SwinEncoder:
        # A frozen encoder stays in eval mode whatever the parent does (the released code forgot this).
        return super().train(mode and not self.config.frozen)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[B,3,S,S] normalised image -> 4 maps [B,C_i,S/4/2^i,S/4/2^i], i = 0..3."""
        if self.config.frozen:
            with torch.no_grad():
                return list(self.backbone(pixel_values).feature_maps)
        return list(self.backbone(pixel_values).feature_maps)


# config.encoder.backbone -> the module holding that pretrained trunk, its weights loader and its widths.
PRETRAINED_TRUNKS = {
    "efficientnet_lite0": (efficientnet_lite, efficientnet_lite.EfficientNetLite0),
    "geoembed_resnet18": (aerial_resnet, aerial_resnet.AerialResNet18),
}


class PretrainedBackboneEncoder(nn.Module):
    """A pretrained CNN trunk (frozen when config.frozen) and a trainable multi-scale adapter.

    The trunk is the one config.backbone names (PRETRAINED_TRUNKS): EfficientNet-Lite0 (24/40/112/320
    channels) or the aerial ResNet-18 (64/128/256/512), both with maps at strides 4/8/16/32. The adapter is
    one 1x1 convolution per level to config.stage_channels, so the connector, D-Projector and pixel decoder
    see the widths they are built for. With `enable_feature_cache` the frozen trunk's maps are computed
    once per distinct input image (training without augmentation).
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self._trunk_source, trunk = PRETRAINED_TRUNKS[config.backbone]
        self.backbone = trunk()
        self.adapter = nn.ModuleList(nn.Conv2d(c_in, c_out, 1)
                                     for c_in, c_out in zip(self.backbone_channels, config.stage_channels))
        self.feature_cache: FeatureCache | None = None
        if config.frozen:
            self.backbone.requires_grad_(False)

    @property
    def channels(self) -> list[int]:
        return self.config.stage_channels

    @property
    def backbone_channels(self) -> list[int]:
        return list(self._trunk_source.FEATURE_CHANNELS)

    def load_pretrained_backbone(self, path=None) -> None:
        """The released weights into the trunk (the `load_pretrained` of efficientnet_lite or aerial_resnet)."""
        self._trunk_source.load_pretrained(self.backbone, path)

    def enable_feature_cache(self, max_bytes: int) -> FeatureCache:
        """Cache the trunk's maps per input image, up to `max_bytes` (exact only for a frozen trunk)."""
        if not self.config.frozen:
            raise GeoreasonError("a feature cache needs a frozen encoder (config encoder.frozen: true): "
                                 "a trained backbone's features change every step")
        self.feature_cache = FeatureCache(max_bytes)
        return self.feature_cache

    def train(self, mode: bool = True) -> PretrainedBackboneEncoder:
        # A frozen trunk keeps its batch-norm statistics: eval mode whatever the parent does.
        super().train(mode)
        if self.config.frozen:
            self.backbone.eval()
        return self

    def _backbone(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        if self.config.frozen:
            with torch.no_grad():
                return self.backbone(pixel_values)
        return self.backbone(pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[B,3,S,S] normalised image -> 4 maps [B,C_i,S/4/2^i,S/4/2^i], C_i = config.stage_channels[i]."""
        return self.forward_with_backbone(pixel_values)[0]

    def forward_with_backbone(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(the 4 adapted maps forward() gives, the trunk's own 4 maps [B,c_i,S/4/2^i,S/4/2^i], c_i =
        backbone_channels[i])."""
        if self.feature_cache is not None:
            features = self.feature_cache.features(pixel_values, self._backbone)
        else:
            features = self._backbone(pixel_values)
        return [project(level) for project, level in zip(self.adapter, features)], list(features)


def build_encoder(config: EncoderConfig, image_size: int, attn_implementation: str = "sdpa") -> nn.Module:
    """The encoder config.backbone names (random weights; the factory loads pretrained ones)."""
    if config.backbone == "swin":
        return SwinEncoder(config, image_size, attn_implementation)
    if config.backbone in PRETRAINED_TRUNKS:
        return PretrainedBackboneEncoder(config)
    raise GeoreasonError(f"config encoder.backbone: unknown backbone {config.backbone!r}; expected 'swin' or one of "
                         f"{', '.join(map(repr, PRETRAINED_TRUNKS))}")
