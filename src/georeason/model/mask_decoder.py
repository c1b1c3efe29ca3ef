"""Masked-attention mask decoder queried by the description embedding (paper Sec. 4.3;
docs/released_code.md#mask-decoder).

transformers' `Mask2FormerMaskedAttentionDecoder` (9 layers, a prediction before the first layer and
after each: 10 in all), fed one query per image. `query="learned"` is the PSALM baseline of Table 5:
learned mask queries, each scored against the description, matched bipartitely in training.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerMaskedAttentionDecoder,
    Mask2FormerSinePositionEmbedding,
)

from georeason.config import MaskDecoderConfig

NUM_LEVELS = 3  # stride 32, 16, 8, visited round robin


@dataclass
class MaskDecoderOutput:
    mask_logits: list[torch.Tensor]  # 10 tensors [B,Q,h4,w4]; the last is the final prediction
    query_scores: list[torch.Tensor] | None = None  # PSALM baseline only: 10 tensors [B,Q]


class MaskDecoder(nn.Module):
    def __init__(self, config: MaskDecoderConfig, mask_dim: int):
        super().__init__()
        self.config = config
        m2f_config = Mask2FormerConfig(
            hidden_dim=config.hidden_dim,
            num_attention_heads=config.heads,
            dim_feedforward=config.feedforward_dim,
            decoder_layers=config.layers + 1,  # transformers builds decoder_layers - 1 layers
            mask_feature_size=mask_dim,
            pre_norm=False,
            dropout=0.0,
            activation_function="relu",
            backbone_config=None,
            use_pretrained_backbone=False,
        )
        self.decoder = Mask2FormerMaskedAttentionDecoder(m2f_config)
        self.level_embed = nn.Embedding(NUM_LEVELS, config.hidden_dim)
        self.position_embedding = Mask2FormerSinePositionEmbedding(config.hidden_dim // 2, normalize=True)
        if config.query == "learned":
            num_queries = config.num_learned_queries
            self.query_features = nn.Embedding(num_queries, config.hidden_dim)
            self.query_positions = nn.Embedding(num_queries, config.hidden_dim)
            self.score_head = nn.Sequential(nn.Linear(config.hidden_dim, config.hidden_dim), nn.ReLU(),
                                            nn.Linear(config.hidden_dim, config.hidden_dim))

    def forward(self, query: torch.Tensor, mask_features: torch.Tensor,
                multi_scale_features: list[torch.Tensor]) -> MaskDecoderOutput:
        """query [B,1,C] (from the description), mask features [B,C,h4,w4], 3 maps (strides 32, 16, 8)."""
        batch = query.shape[0]
        memory, positions, sizes = [], [], []
        for level, features in enumerate(multi_scale_features[:NUM_LEVELS]):
            sizes.append(features.shape[-2:])
            position = self.position_embedding(features.shape, features.device, features.dtype)
            positions.append(position.flatten(2).permute(2, 0, 1))
            level_features = features.flatten(2) + self.level_embed.weight[level][None, :, None]
            memory.append(level_features.permute(2, 0, 1))

        if self.config.query == "description":
            queries = query.transpose(0, 1)  # [1,B,C]
            query_positions = torch.zeros_like(queries)  # the released query has no positional part
        else:
            queries = self.query_features.weight[:, None].expand(-1, batch, -1)
            query_positions = self.query_positions.weight[:, None].expand(-1, batch, -1)

        output = self.decoder(
            inputs_embeds=queries,
            multi_stage_positional_embeddings=positions,
            pixel_embeddings=mask_features,
            encoder_hidden_states=memory,
            query_position_embeddings=query_positions,
            feature_size_list=sizes,
            output_attentions=False,
            output_hidden_states=False,
            return_dict=True,
        )
        mask_logits = list(output.masks_queries_logits)
        if self.config.query == "description":
            return MaskDecoderOutput(mask_logits=mask_logits)
        # Each learned query is scored by its agreement with the description (PSALM's assignment).
        scale = self.config.hidden_dim**-0.5
        scores = [
            torch.einsum("qbc,bc->bq", self.score_head(hidden), query[:, 0]) * scale
            for hidden in output.intermediate_hidden_states
        ]
        return MaskDecoderOutput(mask_logits=mask_logits, query_scores=scores)
