"""Token-compression connector (paper Sec. 4.2.1, Eq. 4; docs/released_code.md#connector; Table 7 for the depth d).

d blocks of (3x3 stride-2 conv -> LayerNorm over the whole [C,H,W] map), then a 1x1 conv to the LLM
width, flattened to tokens. d=0 is the no-compression ablation: a linear projection of every token.
"""

from __future__ import annotations

import torch
from torch import nn


class TokenCompressionConnector(nn.Module):
    def __init__(self, in_channels: int, llm_hidden_size: int, depth: int, input_side: int):
        super().__init__()
        self.depth = depth
        channels, side = in_channels, input_side
        # Names follow the released layout (proj1, norm1, proj2, norm2, fc) so checkpoints map 1:1.
        for block in range(1, depth + 1):
            side //= 2
            setattr(self, f"proj{block}", nn.Conv2d(channels, llm_hidden_size, 3, stride=2, padding=1))
            setattr(self, f"norm{block}", nn.LayerNorm([llm_hidden_size, side, side]))
            channels = llm_hidden_size
        self.fc = nn.Conv2d(channels, llm_hidden_size, 1)
        self.num_tokens = side * side

    def forward(self, stride32_features: torch.Tensor) -> torch.Tensor:
        """[B,C,h,w] -> [B, (h/2^d)*(w/2^d), H_llm]."""
        x = stride32_features
        for block in range(1, self.depth + 1):
            x = getattr(self, f"norm{block}")(getattr(self, f"proj{block}")(x))
        return self.fc(x).flatten(2).transpose(1, 2)
