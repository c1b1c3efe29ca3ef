"""ResNet-18 trunk pretrained without labels on aerial photographs (geoembed's "v3" tile encoder; He et al.,
2016, CIFAR form): an optional stand-in for the paper's Swin image encoder (Sec. 4.1).

The backbone of the `smol-aerial` preset (docs/model.md, "Image encoders"; it learns less than Lite0 in the
demo's recipe): the weights ship in the PyPI package geoembed 1.1.2 (MIT) as a NumPy archive and load here by
their own key names, never unpickled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from georeason.errors import GeoreasonError
from georeason.model.weights import check_sha256, packaged_file

WEIGHTS_PACKAGE = "geoembed"
# geoembed declares netcl (an OpenCL runtime) as a dependency; reading its weights file needs none of it.
WEIGHTS_PIP = "--no-deps geoembed==1.1.2"
WEIGHTS_FILE = "weights/v3.npz"
WEIGHTS_SHA256 = "fbd6dd8e3a0fec98966314e611496f3c1e706b6d2d7dcd62e0e4fc1eb31489a0"
WEIGHTS_LICENCE = "MIT"
WEIGHTS_PROVENANCE = (
    "ResNet-18 trained without labels on aerial orthophoto tiles (web-map zoom 20, about 38 m across, resized "
    "to 128 px) as geoembed's v3 tile encoder, from "
    "the PyPI package geoembed 1.1.2 (https://github.com/GodOfLores/geoembed; file v3.npz, SHA-256 "
    f"{WEIGHTS_SHA256[:16]}...), licensed MIT by its package metadata")

FEATURE_CHANNELS = [64, 128, 256, 512]
# The trunk was trained on 128 px tiles; fed an image pooled 4x, its stride 1/2/4/8 stages give the
# stride 4/8/16/32 maps the pixel decoder expects.
INPUT_POOL = 4
BN_EPS = 1e-5  # PyTorch's default, with which the weights were trained


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    conv = nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels, eps=BN_EPS))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a skip (a strided 1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.short = (_conv_bn(in_channels, out_channels, 1, stride)
                      if stride != 1 or in_channels != out_channels else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.short(x))


class AerialResNet18(nn.Module):
    """The trunk (stem and four stages of two blocks; no embedding head).

    Module names follow the released archive (`stem.0`, `layer1.0.conv1`, `layer2.0.short.0`, ...) under its
    `bb.` prefix, so its arrays load without renaming.
    """

    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(3, 64, 3, 1)
        widths = [64, *FEATURE_CHANNELS]
        for stage in range(4):
            stride = 1 if stage == 0 else 2
            blocks = [BasicBlock(widths[stage], widths[stage + 1], stride),
                      BasicBlock(widths[stage + 1], widths[stage + 1], 1)]
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[B,3,H,W] normalised with config.AERIAL_PIXEL_MEAN/STD, H and W multiples of 32 -> 4 maps
        [B,C_i,H/s,W/s] for strides s = 4, 8, 16, 32 and C_i = 64, 128, 256, 512 (float, like the input).

        The image is average-pooled 4x first: the trunk's own stages are at strides 1, 2, 4 and 8.
        """
        x = F.relu(self.stem(F.avg_pool2d(pixel_values, INPUT_POOL)))
        features = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            features.append(x)
        return features


def weights_path() -> Path:
    """The aerial ResNet-18 archive inside the installed geoembed package."""
    return packaged_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, "geoembed",
                         "config encoder.backbone 'geoembed_resnet18' (preset smol-aerial) needs its pretrained "
                         f"weights from the PyPI package geoembed: pip install {WEIGHTS_PIP}")


def load_pretrained(trunk: AerialResNet18, path: Path | None = None) -> None:
    """Fill `trunk` with the released weights (checked by SHA-256; the archive is read with allow_pickle=False).

    Raises GeoreasonError if the file differs from the released one or lacks a trunk array.
    """
    path = weights_path() if path is None else Path(path)
    check_sha256(path, WEIGHTS_SHA256, "geoembed's released v3 weights",
                 f"; expected the file of geoembed 1.1.2: pip install {WEIGHTS_PIP}")
    state = trunk.state_dict()
    # The archive has no batch counters (they only matter when training the statistics) and an embedding
    # head (fc) that is not part of the trunk.
    wanted = [name for name in state if not name.endswith("num_batches_tracked")]
    with np.load(path, allow_pickle=False) as archive:
        missing = sorted(name for name in wanted if f"bb.{name}" not in archive.files)
        if missing:
            raise GeoreasonError(f"{path}: missing array(s) {', '.join('bb.' + name for name in missing[:5])}")
        state.update({name: torch.from_numpy(archive[f"bb.{name}"].copy()) for name in wanted})
    trunk.load_state_dict(state, strict=True)
