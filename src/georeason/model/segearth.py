"""SegEarth-R1 assembled (paper Sec. 4, Fig. 2): encoder -> connector -> LLM -> D-Projector -> decoders.

The Swin encoder runs once per image; its stride-32 map feeds the connector and the D-Projector, all
four maps feed the pixel decoder. The description embedding p (mean of the LLM's last hidden state
over the description) becomes the single query of the masked-attention decoder.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from georeason.config import SegEarthConfig
from georeason.errors import GeoreasonError
from georeason.model.connector import TokenCompressionConnector
from georeason.model.card import Provenance, model_card
from georeason.model.dprojector import DescriptionProjector
from georeason.model.encoder import build_encoder
from georeason.model.feature_cache import DescriptionCache
from georeason.model.features import ImageFeatures, copy_cache, expand_rows, question_start
from georeason.model.llm import LanguageModel
from georeason.model.losses import mask_losses, match_queries
from georeason.model.mask_decoder import MaskDecoder
from georeason.model.pixel_decoder import PixelDecoder
from georeason.model.prompt import IGNORE_INDEX, PromptBatch, TokenKind, select_rows
from georeason.model.weights import WEIGHTS_NAME, load_into, save_tensors, weight_sources

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"


@dataclass
class SegEarthOutput:
    mask_logits: torch.Tensor  # [B,h,w] final prediction at stride 4 (256x256 for a 1024 input)
    all_mask_logits: list[torch.Tensor]  # the 10 deep-supervision predictions, last == mask_logits
    description_embedding: torch.Tensor  # p, [B,H_llm]
    query: torch.Tensor  # mask-decoder query, [B,1,C]
    loss: torch.Tensor | None = None
    losses: dict[str, Any] = field(default_factory=dict)
    lm_logits: torch.Tensor | None = None
    past_key_values: Any = None
    next_token_logits: torch.Tensor | None = None  # [B,V] at each row's last real position
    prompt_embeds: torch.Tensor | None = None  # [B,L,H] the LLM input, visual tokens spliced in (with use_cache)
    intermediates: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class SegmentOutput:
    """What SegEarthModel.segment returns (paper Sec. 4; docs/released_code.md#inference)."""

    logits: torch.Tensor  # float32 [B,S,S] mask logits at the model input size S; > 0 (sigmoid > 0.5) = target
    description_embedding: torch.Tensor  # p, [B,H_llm] in the model's dtype
    answer_ids: list[list[int]] | None = None  # generated answer token ids per row (answer=True), else None

    def __getitem__(self, key: str) -> Any:
        """Mapping-style access (out["logits"]), as transformers' ModelOutput allows."""
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


class SegEarthModel(nn.Module):
    """SegEarth-R1 (paper Sec. 4, Fig. 2): Swin encoder -> connector (Eq. 4) -> LLM -> description
    embedding p -> D-Projector -> Mask2Former pixel and mask decoders queried by p.

    Inputs: pixel_values float [B,3,S,S] (S = config.image_size, a multiple of 32), normalised with the
    config's pixel_mean/pixel_std (SegEarthProcessor); a PromptBatch of B prompts whose image positions
    match config.num_visual_tokens. forward() gives mask logits at stride 4 and, with targets, the losses
    of Sec. 4.3 (docs/released_code.md#losses); segment() gives mask logits [B,S,S] and answers for
    inference. Weights load with from_pretrained (float32, bfloat16 or float16) from a folder written by
    save_pretrained or `georeason convert` (docs/released_code.md#checkpoint-layout). Raises
    GeoreasonError for an invalid config, a prompt that does not fit the image, or weights that do not
    match the config (naming every missing, unexpected or wrong-shape tensor).
    """

    # "dynamic": answer steps grow transformers' DynamicCache (torch.cat per step); "static": they write into
    # a StaticCache preallocated for the answer (llm.preallocated). Measured no faster on a 2-core AVX2 CPU,
    # and its masked attention over the unwritten room flipped one int4 SmolLM2 answer (bench/RESULTS.md,
    # "Answer KV cache"), so dynamic stays the default.
    answer_cache = "dynamic"

    def __init__(self, config: SegEarthConfig, attn_implementation: str = "sdpa", llm=None):
        super().__init__()
        config.validate()
        if config.mask_decoder.hidden_dim != config.pixel_decoder.conv_dim:
            raise GeoreasonError("config mask_decoder.hidden_dim must equal pixel_decoder.conv_dim")
        self.config = config
        stride32_channels = config.encoder.stage_channels[-1]
        hidden = config.llm_hidden_size
        self.encoder = build_encoder(config.encoder, config.image_size, attn_implementation)
        connector_channels = (self.encoder.backbone_channels[-1] if config.connector.source == "backbone"
                              else stride32_channels)
        self.connector = TokenCompressionConnector(connector_channels, hidden, config.connector.depth,
                                                   config.image_size // 32)
        self.llm = LanguageModel(config.llm, attn_implementation, pretrained=llm)
        self.d_projector = DescriptionProjector(config.d_projector, hidden, stride32_channels,
                                                config.mask_decoder.hidden_dim)
        self.pixel_decoder = PixelDecoder(config.pixel_decoder, config.encoder.stage_channels)
        self.mask_decoder = MaskDecoder(config.mask_decoder, config.pixel_decoder.mask_dim)
        self.description_cache: DescriptionCache | None = None
        self._init_new_weights()
        if config.llm.frozen:
            self.llm.requires_grad_(False)
            self.connector.requires_grad_(False)

    def train(self, mode: bool = True) -> SegEarthModel:
        super().train(mode)
        if self.config.llm.frozen:
            # A frozen LLM and connector run as at inference (no dropout), like the frozen encoder.
            self.llm.eval()
            self.connector.eval()
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute LLM activations in the backward pass (the paper's recipe); training only."""
        if self.config.llm.gradient_checkpointing:
            self.llm.causal_lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})

    # -- initialisation ---------------------------------------------------------------------------
    def _init_new_weights(self) -> None:
        """Fresh weights before any checkpoint is loaded (docs/released_code.md#initialisation and Mask2Former's own
        scheme).

        The layers SegEarth-R1 adds (connector, D-Projector) get N(0, 0.02) and norms 1/0, as released.
        The pixel and mask decoders are released pretrained (Mask2Former); when they start from scratch
        they get Mask2Former's from-scratch initialisation, not N(0, 0.02): with N(0, 0.02) in the
        three-layer mask-embedding MLP and the stride-4 projection the initial mask logits are ~30x
        smaller, and on the synthetic benchmark the model then never leaves the predict-nothing plateau
        (bench/RESULTS.md, "Learning diagnosis").
        """
        for module in (self.connector, self.d_projector):
            for layer in module.modules():
                if isinstance(layer, (nn.Linear, nn.Conv2d)):
                    nn.init.normal_(layer.weight, std=0.02)
                    if layer.bias is not None:
                        nn.init.zeros_(layer.bias)
                elif isinstance(layer, (nn.LayerNorm, nn.GroupNorm)):
                    nn.init.ones_(layer.weight)
                    nn.init.zeros_(layer.bias)
        _init_mask2former_from_scratch(self.pixel_decoder, self.mask_decoder)

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, pixel_values: torch.Tensor, prompt: PromptBatch, target_masks: torch.Tensor | None = None,
                point_coords: torch.Tensor | None = None, use_cache: bool = False,
                return_lm_logits: bool = False, return_intermediates: bool = False,
                generator: torch.Generator | None = None) -> SegEarthOutput:
        """pixel_values [B,3,S,S] normalised; prompt from PromptBuilder; target_masks [B,S,S] 0/1."""
        features, connector_input = self._encode(pixel_values)
        stride32 = features[3]
        mask_only = not (use_cache or return_lm_logits or return_intermediates)
        if mask_only:
            prompt = cut_after_last_needed_position(prompt)
        if self.description_cache is not None and mask_only:
            description_embedding = self._cached_description(pixel_values, connector_input, prompt)
            hidden = cache = visual_tokens = embeds = None
        else:
            description_embedding, hidden, cache, visual_tokens, embeds = self._describe(
                connector_input, prompt, use_cache, return_intermediates)
        projected = self.d_projector(description_embedding, stride32)
        mask_features, multi_scale = self.pixel_decoder(features)
        decoded = self.mask_decoder(projected["query"], mask_features, multi_scale)

        all_logits = _answering_query_logits(decoded)

        output = SegEarthOutput(mask_logits=all_logits[-1], all_mask_logits=all_logits,
                                description_embedding=description_embedding, query=projected["query"])
        if use_cache:
            last = prompt.attention_mask.sum(1) - 1
            output.past_key_values = cache
            output.prompt_embeds = embeds
            output.next_token_logits = self.llm.logits(hidden[torch.arange(hidden.shape[0]), last])
        if return_lm_logits:
            output.lm_logits = self.llm.logits(hidden)
        if return_intermediates:
            output.intermediates = {
                "encoder_features": features, "image_tokens": visual_tokens, "inputs_embeds": embeds,
                "last_hidden_state": hidden, "mask_features": mask_features, "multi_scale": multi_scale,
                **{k: v for k, v in projected.items() if k != "query"},
            }
        if target_masks is not None:
            self._add_losses(output, decoded, hidden, prompt, target_masks, point_coords, generator)
        return output

    @torch.no_grad()
    def description_embedding(self, pixel_values: torch.Tensor, prompt: PromptBatch) -> torch.Tensor:
        """p [B,H_llm] of normalised pixel_values [B,3,S,S] and `prompt`, as forward computes it before the
        D-Projector (unstandardised), through the description cache when one is enabled; no gradients."""
        _, connector_input = self._encode(pixel_values)
        prompt = cut_after_last_needed_position(prompt)
        if self.description_cache is not None:
            return self._cached_description(pixel_values, connector_input, prompt)
        return self._describe(connector_input, prompt, False, False)[0]

    def _cached_description(self, pixel_values: torch.Tensor, connector_input: torch.Tensor,
                            prompt: PromptBatch) -> torch.Tensor:
        # Everything up to p is frozen (enable_description_cache checked it): p of a (image, prompt) pair
        # seen before comes from the cache, the LLM runs on the other rows only.
        return self.description_cache.descriptions(
            pixel_values, prompt,
            lambda rows: self._describe(connector_input[rows], select_rows(prompt, rows), False, False)[0])

    def _encode(self, pixel_values: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(the encoder's 4 maps, the stride-32 map the connector reads: config.connector.source)."""
        if self.config.connector.source == "backbone":
            features, backbone = self.encoder.forward_with_backbone(pixel_values)
            return features, backbone[3]
        features = self.encoder(pixel_values)
        return features, features[3]

    def _describe(self, connector_input: torch.Tensor, prompt: PromptBatch, use_cache: bool,
                  return_intermediates: bool):
        """Connector -> LLM -> p: (p [B,H_llm], last hidden state [B,L,H_llm], KV cache or None,
        visual tokens [B,N,H_llm], LLM input embeddings [B,L,H_llm])."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.config.llm.frozen):
            visual_tokens = self.connector(connector_input)
            embeds = self._prompt_embeddings(prompt, visual_tokens)
            # Without gradients (inference, or a frozen LLM in training) the constant opening's KV cache
            # is computed once and reused: exact, and it skips a third of the LLM's positions.
            opening = shared_opening_length(prompt) if not torch.is_grad_enabled() and not self.llm.training \
                and not return_intermediates else 0
            hidden, cache = self._llm_after_opening(embeds, prompt, opening, use_cache)
        description = (prompt.token_kind == TokenKind.DESCRIPTION).to(hidden.dtype)[..., None]
        description_embedding = (hidden * description).sum(1) / description.sum(1).clamp(min=1)
        return description_embedding, hidden, cache, visual_tokens, embeds

    @property
    def description_is_frozen(self) -> bool:
        """True when nothing before p learns: the LLM (with its connector) and the encoder's backbone are
        frozen and the connector reads the backbone (a Swin, or config connector.source "backbone")."""
        config = self.config
        return config.llm.frozen and config.encoder.frozen and (config.encoder.backbone == "swin"
                                                                 or config.connector.source == "backbone")

    def enable_description_cache(self, max_bytes: int) -> DescriptionCache:
        """Cache p per (image, prompt) in training, up to `max_bytes` (docs/train.md, "Cached description
        embeddings"); a hit equals recomputation up to the float rounding of the batch it was first computed
        in. Raises GeoreasonError unless description_is_frozen (otherwise p changes as training goes on)."""
        if not self.description_is_frozen:
            raise GeoreasonError("a description-embedding cache needs everything before p frozen: config "
                                 "llm.frozen and encoder.frozen true, and connector.source 'backbone' for a "
                                 "backbone with an adapter")
        self.description_cache = DescriptionCache(max_bytes)
        return self.description_cache

    def _prompt_embeddings(self, prompt: PromptBatch, visual_tokens: torch.Tensor) -> torch.Tensor:
        """The LLM input embeddings [B,L,H] of `prompt`, with visual_tokens [B,N,H] (the connector's output,
        cast to the embeddings' dtype) in each row's N image positions, in order.
        Raises GeoreasonError when a prompt row does not have exactly N image positions."""
        embeds = self.llm.embed(prompt.input_ids)
        image_positions = prompt.token_kind == TokenKind.IMAGE
        expected = visual_tokens.shape[1]
        counts = image_positions.sum(1)
        if not torch.all(counts == expected):
            raise GeoreasonError(f"each prompt needs {expected} image positions, got {counts.tolist()}")
        return embeds.masked_scatter(image_positions[..., None], visual_tokens.to(embeds.dtype))

    def _llm_after_opening(self, embeds: torch.Tensor, prompt: PromptBatch, opening: int,
                           use_cache: bool) -> tuple[torch.Tensor, Any]:
        """The LLM over the prompt embeddings [B,L,H]: (last hidden state [B,L,H], KV cache or None).

        With `opening` > 0 (the prompts share their first `opening` text positions) those positions'
        KV cache and hidden states come from llm.prefix_state, computed once, and only the rest is run.
        """
        if not opening:
            return self.llm(embeds, prompt.attention_mask, use_cache=use_cache)
        cache, opening_hidden = self.llm.prefix_state(prompt.input_ids[0, :opening])
        batch = embeds.shape[0]
        cache.batch_repeat_interleave(batch)
        hidden, cache = self.llm(embeds[:, opening:], prompt.attention_mask, cache=cache, use_cache=use_cache)
        return torch.cat([opening_hidden.expand(batch, -1, -1), hidden], 1), cache

    def _add_losses(self, output: SegEarthOutput, decoded, hidden: torch.Tensor | None, prompt: PromptBatch,
                    target_masks: torch.Tensor, point_coords: torch.Tensor | None,
                    generator: torch.Generator | None) -> None:
        config = self.config.loss
        mask_terms, dice_terms = [], []
        if decoded.query_scores is None:
            for logits in output.all_mask_logits:
                mask, dice = mask_losses(logits, target_masks, config, point_coords, generator)
                mask_terms.append(mask)
                dice_terms.append(dice)
            score_loss = output.mask_logits.new_zeros(())
        else:
            score_terms = []
            for logits, scores in zip(decoded.mask_logits, decoded.query_scores):
                matched = match_queries(logits, scores, target_masks, config)
                has_target = [i for i, q in enumerate(matched) if q is not None]
                if has_target:
                    index = torch.tensor(has_target, device=logits.device)
                    queries = torch.tensor([matched[i] for i in has_target], device=logits.device)
                    coords = None if point_coords is None else point_coords[index]
                    mask, dice = mask_losses(logits[index, queries], target_masks[index], config, coords, generator)
                else:
                    mask = dice = logits.sum() * 0.0
                mask_terms.append(mask)
                dice_terms.append(dice)
                score_target = torch.zeros_like(scores)
                for i in has_target:
                    score_target[i, matched[i]] = 1.0
                weight = torch.where(score_target > 0, 1.0, config.no_object_weight)
                score_terms.append(F.binary_cross_entropy_with_logits(scores, score_target, weight=weight))
            score_loss = config.score_weight * torch.stack(score_terms).sum()

        mask_loss = config.mask_weight * torch.stack(mask_terms).sum()
        dice_loss = config.dice_weight * torch.stack(dice_terms).sum()
        losses: dict[str, Any] = {"mask": mask_loss, "dice": dice_loss, "score": score_loss,
                                  "mask_per_layer": [t.detach() for t in mask_terms],
                                  "dice_per_layer": [t.detach() for t in dice_terms]}
        lm_loss = output.mask_logits.new_zeros(())
        targets = prompt.labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        if supervised.any():
            if hidden is None:
                raise GeoreasonError("prompts with answers need the LLM's hidden states: a description-"
                                     "embedding cache (frozen LLM) trains on prompts without answers")
            # Logits only where a next token is supervised: the vocabulary projection dominates memory.
            predicting = self.llm.logits(hidden[:, :-1][supervised])
            lm_loss = F.cross_entropy(predicting.float(), targets[supervised])
        losses["lm"] = lm_loss
        output.losses = losses
        output.loss = config.lm_weight * lm_loss + mask_loss + dice_loss + score_loss

    # -- inference ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def segment(self, pixel_values: torch.Tensor, prompt: PromptBatch, answer: bool = False,
                max_new_tokens: int | None = None, stop_ids: tuple[int, ...] = (),
                num_beams: int = 1) -> SegmentOutput:
        """Mask logits at the model input size [B,S,S] and, when asked, the answer token ids.

        pixel_values: float [B,3,S,S], normalised with the config's pixel_mean/pixel_std (SegEarthProcessor).
        prompt: a PromptBatch of B generation prompts (SegEarthProcessor / PromptBuilder, for_generation=True).
        The image part (encode_image) and the question part (segment_features) in one call. The mask is
        computed from the prompt alone, before any answer token. Answers continue from the mask forward's
        KV cache: greedily (num_beams=1), or by transformers' beam search; generation stops at any of
        `stop_ids` or after `max_new_tokens` (default config.prompt.max_answer_tokens).
        Raises GeoreasonError for num_beams < 1 or a prompt whose image positions do not fit the image.
        """
        if num_beams < 1:
            raise GeoreasonError(f"num_beams: expected at least 1, got {num_beams}")
        return self.segment_features(self.encode_image(pixel_values), prompt, answer, max_new_tokens, stop_ids,
                                     num_beams)

    @torch.inference_mode()
    def encode_image(self, pixel_values: torch.Tensor, visual_tokens: bool = True) -> ImageFeatures:
        """The question-independent part for images [B,3,S,S] (normalised, model dtype): encoder maps,
        connector tokens (unless visual_tokens=False) and pixel-decoder features, computed once and
        shared by every question asked with segment_features or mask_from_description."""
        features, connector_input = self._encode(pixel_values)
        tokens = self.connector(connector_input) if visual_tokens else None
        mask_features, multi_scale = self.pixel_decoder(features)
        return ImageFeatures(list(features), tokens, mask_features, list(multi_scale))

    @torch.inference_mode()
    def segment_features(self, features: ImageFeatures, prompt: PromptBatch, answer: bool = False,
                         max_new_tokens: int | None = None, stop_ids: tuple[int, ...] = (),
                         num_beams: int = 1) -> SegmentOutput:
        """segment() for images already encoded: the question part only (LLM, D-Projector, mask decoder).

        `features` holds one image for every prompt row, or one image per row. Returns what segment()
        returns, a SegmentOutput: logits [N,S,S] float32, description_embedding [N,H_llm], and answer_ids
        (lists of token ids) when answer=True. Raises GeoreasonError for num_beams < 1, features without
        visual tokens, a batch mismatch or a prompt without the model's number of image positions.
        """
        if num_beams < 1:
            raise GeoreasonError(f"num_beams: expected at least 1, got {num_beams}")
        output = self._question_forward(features, prompt, use_cache=answer)
        result = SegmentOutput(self._upsample(output.mask_logits), output.description_embedding)
        if answer:
            limit = max_new_tokens or self.config.prompt.max_answer_tokens
            result.answer_ids = (self._greedy_answers(output, prompt, limit, stop_ids) if num_beams == 1
                                 else self._beam_answers(output, prompt, limit, stop_ids, num_beams))
        return result

    def _question_forward(self, features: ImageFeatures, prompt: PromptBatch, use_cache: bool) -> SegEarthOutput:
        """The question part of forward() at inference, from features; the image prefix's KV cache is
        computed on the first question and reused (model.features.ImageFeatures.prefixes)."""
        if features.visual_tokens is None:
            raise GeoreasonError("features: computed without visual tokens (encode_image(visual_tokens=False)); "
                                 "a question needs them")
        rows = prompt.input_ids.shape[0]
        features.rows_for(rows)
        if not use_cache:
            prompt = cut_after_last_needed_position(prompt)
        embeds = self._prompt_embeddings(prompt, expand_rows(features.visual_tokens, rows))
        start = question_start(prompt)
        if start:
            opening = int((prompt.token_kind[0] == TokenKind.IMAGE).int().argmax())
            cache = copy_cache(self._image_prefix(features, prompt.input_ids[0, :start],
                                                  embeds[:features.batch_size, :start], opening), rows)
            hidden, cache = self.llm(embeds[:, start:], prompt.attention_mask, cache=cache, use_cache=use_cache)
        else:
            hidden, cache = self._llm_after_opening(embeds, prompt, shared_opening_length(prompt), use_cache)
        # `hidden` covers the positions from `start` on; the description lies after the prefix.
        description = (prompt.token_kind[:, start:] == TokenKind.DESCRIPTION).to(hidden.dtype)[..., None]
        description_embedding = (hidden * description).sum(1) / description.sum(1).clamp(min=1)
        stride32 = expand_rows(features.encoder[3], rows)
        projected = self.d_projector(description_embedding, stride32)
        decoded = self.mask_decoder(projected["query"], expand_rows(features.mask_features, rows),
                                    [expand_rows(level, rows) for level in features.multi_scale])
        all_logits = _answering_query_logits(decoded)
        output = SegEarthOutput(mask_logits=all_logits[-1], all_mask_logits=all_logits,
                                description_embedding=description_embedding, query=projected["query"])
        if use_cache:
            last = prompt.attention_mask.sum(1) - 1 - start
            output.past_key_values = cache
            output.prompt_embeds = embeds
            output.next_token_logits = self.llm.logits(hidden[torch.arange(rows), last])
        return output

    def _image_prefix(self, features: ImageFeatures, prefix_ids: torch.Tensor, prefix_embeds: torch.Tensor,
                      opening: int):
        """KV cache [B rows] of the prompt before the question, computed once per image and prompt template.

        The constant opening (the `opening` positions before the image) comes from the LLM's own cache.
        """
        key = (tuple(prefix_ids.tolist()), prefix_embeds.dtype, prefix_embeds.device)
        stored = features.prefixes.get(key)
        if stored is None:
            rows = prefix_embeds.shape[0]
            ones = torch.ones(prefix_embeds.shape[:2], dtype=torch.long, device=prefix_embeds.device)
            if opening:
                cache, _ = self.llm.prefix_state(prefix_ids[:opening])
                cache.batch_repeat_interleave(rows)
                _, cache = self.llm(prefix_embeds[:, opening:], ones, cache=cache, use_cache=True)
            else:
                _, cache = self.llm(prefix_embeds, ones, use_cache=True)
            stored = features.prefixes[key] = cache
        return stored

    @torch.inference_mode()
    def segment_with_description(self, pixel_values: torch.Tensor,
                                 description_embedding: torch.Tensor) -> torch.Tensor:
        """Mask logits [B,S,S] for images given a description embedding p computed elsewhere.

        Tiled inference computes p once per question on the whole scene and reuses it per tile.
        """
        features = self.encode_image(pixel_values, visual_tokens=False)
        return self.mask_from_description(features, description_embedding)

    @torch.inference_mode()
    def mask_from_description(self, features: ImageFeatures, description_embedding: torch.Tensor) -> torch.Tensor:
        """Mask logits [N,S,S] float32 for encoded images and description embeddings p [N,H_llm] (or [1,H_llm]
        for all images): the D-Projector and mask decoder only."""
        rows = max(features.batch_size, description_embedding.shape[0])
        features.rows_for(rows)
        description_embedding = expand_rows(description_embedding, rows)
        projected = self.d_projector(description_embedding.to(features.encoder[3].dtype),
                                     expand_rows(features.encoder[3], rows))
        decoded = self.mask_decoder(projected["query"], expand_rows(features.mask_features, rows),
                                    [expand_rows(level, rows) for level in features.multi_scale])
        return self._upsample(_answering_query_logits(decoded)[-1])

    def _upsample(self, logits: torch.Tensor) -> torch.Tensor:
        size = self.config.image_size
        return F.interpolate(logits[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]

    def compile_image_part(self, mode: str | None = None) -> None:
        """torch.compile (inductor) the encoder and the pixel decoder, the image part of every mask.

        Compilation happens on the first image of each input size (minutes on a CPU; it needs a C++
        compiler there). Masks equal eager ones within float rounding (tests/test_compile.py documents
        the tolerance); raises GeoreasonError when torch.compile is unavailable.
        """
        if not hasattr(torch, "compile"):
            raise GeoreasonError("compile: this torch has no torch.compile")
        # An encoder with an adapter computes both its outputs in forward_with_backbone, which forward() and
        # a connector reading the backbone both call; the Swin's forward_with_backbone calls forward.
        name = "forward" if self.config.encoder.backbone == "swin" else "forward_with_backbone"
        setattr(self.encoder, name, torch.compile(getattr(self.encoder, name), mode=mode, dynamic=False))
        self.pixel_decoder.forward = torch.compile(self.pixel_decoder.forward, mode=mode, dynamic=False)

    def quantise_answers(self, weights: str | None = "int8", group_size: int | None = None) -> None:
        """Greedy answer steps run a copy of the LLM with "int8" or "int4" weights (model.answer_quant; CPU,
        float32); None goes back to the float LLM. group_size: int4's group (32, 64, 128 or 256; default
        answer_quant.INT4_GROUP_SIZE).

        The mask, p and the prompt's KV cache still come from this model's float LLM: masks are
        unchanged, answers may differ in a few tokens (bench/RESULTS.md). Beam search stays float.
        """
        if weights is None:
            self.__dict__.pop("_answer_llm", None)
            self.__dict__.pop("_answer_weights", None)
            return
        from georeason.model.answer_quant import INT4_GROUP_SIZE, decoding_copy

        # Kept outside the module tree: not saved, not moved by .to(), no parameters for training.
        self.__dict__["_answer_llm"] = decoding_copy(self.llm, weights, group_size or INT4_GROUP_SIZE)
        self.__dict__["_answer_weights"] = weights

    def enable_int8_answers(self, enabled: bool = True) -> None:
        """quantise_answers("int8"), or None when not enabled."""
        self.quantise_answers("int8" if enabled else None)

    @property
    def answer_weights(self) -> str | None:
        """"int8" or "int4" while greedy answers run a quantised copy of the LLM, else None."""
        return self.__dict__.get("_answer_weights")

    def _greedy_answers(self, output: SegEarthOutput, prompt: PromptBatch, max_new_tokens: int,
                        stop_ids: tuple[int, ...]) -> list[list[int]]:
        decoder = self.__dict__.get("_answer_llm")
        decoder = self.llm if decoder is None else decoder
        cache, mask = output.past_key_values, prompt.attention_mask
        if self.answer_cache == "static":
            cache = self.llm.preallocated(cache, max_new_tokens)
        lengths = mask.sum(1)
        next_logits = output.next_token_logits
        batch = next_logits.shape[0]
        answers: list[list[int]] = [[] for _ in range(batch)]
        finished = torch.zeros(batch, dtype=torch.bool, device=mask.device)
        stops = torch.tensor(list(stop_ids), device=mask.device)
        for step in range(max_new_tokens):
            token = next_logits.argmax(-1)
            for row in range(batch):
                if not finished[row]:
                    answers[row].append(int(token[row]))
            finished |= torch.isin(token, stops)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
            positions = (lengths + step)[:, None]
            hidden, cache = decoder(decoder.embed(token[:, None]), mask, cache=cache, use_cache=True,
                                    position_ids=positions)
            next_logits = decoder.logits(hidden[:, -1])
        return answers

    def _beam_answers(self, output: SegEarthOutput, prompt: PromptBatch, max_new_tokens: int,
                      stop_ids: tuple[int, ...], num_beams: int) -> list[list[int]]:
        # One image at a time: beams multiply the rows, and generate() wants left padding where our
        # prompts are right-padded. Each row continues from its part of the mask forward's KV cache.
        answers = []
        for row, length in enumerate(prompt.attention_mask.sum(1).tolist()):
            tokens = self.llm.beam_search(output.prompt_embeds[row:row + 1, :length],
                                          _row_cache(output, row, length), num_beams, max_new_tokens, stop_ids,
                                          preallocate=self.answer_cache == "static")
            stop = next((i for i, token in enumerate(tokens) if token in stop_ids), None)
            answers.append(tokens if stop is None else tokens[: stop + 1])
        return answers

    # -- parameters -------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def num_parameters(self, trainable_only: bool = False) -> int:
        seen: set[int] = set()
        total = 0
        for p in self.parameters():
            if id(p) in seen or (trainable_only and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    # -- checkpoints ------------------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path, tokenizer=None, shared_encoder: str | Path | None = None,
                        provenance: Provenance | None = None) -> None:
        """Write config.json + model.safetensors (+ tokenizer files) atomically into `folder`, and the
        model card README.md (source, licence, metrics, use and limits; `provenance` says where from).

        `shared_encoder` stores a frozen encoder once, in that file (written if absent), and leaves it
        out of model.safetensors: checkpoints of one training run then share a single copy.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.config.save(folder / CONFIG_NAME)
        state, seen = {}, set()
        for name, tensor in self.state_dict().items():
            if tensor.data_ptr() in seen:  # tied weights are stored once and re-tied on load
                continue
            seen.add(tensor.data_ptr())
            state[name] = tensor.contiguous()
        metadata = {"format": "pt", "georeason_preset": self.config.preset}
        if shared_encoder is not None:
            if not self.config.encoder.frozen:
                raise GeoreasonError("shared_encoder needs a frozen encoder: a trained one differs per checkpoint")
            shared_encoder = Path(shared_encoder).resolve()
            # Only the frozen backbone is shared: an adapter after it (encoder.adapter) is trained.
            encoder_state = {k: state.pop(k) for k in list(state) if k.startswith("encoder.backbone.")}
            if not shared_encoder.exists():
                save_tensors(encoder_state, shared_encoder, {"format": "pt"})
            metadata["encoder_weights"] = os.path.relpath(shared_encoder, folder.resolve())
        save_tensors(state, folder / WEIGHTS_NAME, metadata)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(folder))
        (folder / CARD_NAME).write_text(model_card(self.config, provenance), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, attn_implementation: str = "sdpa") -> SegEarthModel:
        """A model folder written by save_pretrained or `georeason convert` -> the model in eval mode.

        The model is built without weights (meta device) and filled tensor by tensor in `dtype` (float32
        when None), so memory peaks near the model's size in that dtype. Raises GeoreasonError for a
        missing folder, config or weights file and for any missing, unexpected or wrong-shape tensor.
        """
        from accelerate import init_empty_weights

        folder = Path(folder)
        if not folder.is_dir():
            raise GeoreasonError(f"{folder}: not a model folder (expected a directory with {CONFIG_NAME} "
                                 f"and {WEIGHTS_NAME})")
        config = SegEarthConfig.load(folder / CONFIG_NAME)
        sources = weight_sources(folder)
        # Buffers stay real: the non-persistent ones (index tables, rotary frequencies) are computed here.
        with init_empty_weights(include_buffers=False):
            model = cls(config, attn_implementation=attn_implementation)
        model.llm.causal_lm.tie_weights()  # meta construction gives every parameter its own placeholder
        load_into(model, sources, dtype, f"{folder} (the weights do not match the model in config.json)")
        model.eval()
        if dtype is not None:
            model.to(dtype)  # the buffers, as a model loaded in float32 and then cast has them
        return model.to(device)


def _init_mask2former_from_scratch(pixel_decoder: PixelDecoder, mask_decoder: MaskDecoder) -> None:
    """Mask2Former's initialisation as in its reference (detectron2) code; transformers' port differs only
    in drawing convs from N(0, 0.02).

    Convs: kaiming-uniform with a=1 ("c2_xavier_fill"), zero bias. Transformer layers of both decoders:
    xavier-uniform on every matrix. Deformable attention: zero offsets weight with offsets biased onto a
    ring of points per head, uniform attention weights (Deformable DETR). Mask-embedding MLP (and the
    PSALM baseline's score head): PyTorch's default Linear init. Embeddings: N(0, 1). Norms 1/0.
    """
    for module in (pixel_decoder, mask_decoder):
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_uniform_(layer.weight, a=1)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.Linear):
                layer.reset_parameters()
            elif isinstance(layer, (nn.LayerNorm, nn.GroupNorm)):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)
            elif isinstance(layer, nn.Embedding):
                nn.init.normal_(layer.weight, std=1.0)
    nn.init.normal_(pixel_decoder.level_embed, std=1.0)
    transformer_layers = list(pixel_decoder.decoder.encoder.layers) + list(mask_decoder.decoder.layers)
    for layer in transformer_layers:
        for parameter in layer.parameters():
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
    for layer in mask_decoder.decoder.layers:
        nn.init.zeros_(layer.cross_attn.in_proj_bias)
    for layer in pixel_decoder.modules():
        if hasattr(layer, "sampling_offsets") and hasattr(layer, "n_heads"):
            heads, levels, points = layer.n_heads, layer.n_levels, layer.n_points
            nn.init.zeros_(layer.sampling_offsets.weight)
            angles = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
            ring = torch.stack([angles.cos(), angles.sin()], -1)
            ring = ring / ring.abs().max(-1, keepdim=True)[0]
            ring = ring.view(heads, 1, 1, 2).repeat(1, levels, points, 1)
            ring = ring * torch.arange(1, points + 1, dtype=torch.float32).view(1, 1, points, 1)
            with torch.no_grad():
                layer.sampling_offsets.bias.copy_(ring.flatten())
            nn.init.zeros_(layer.attention_weights.weight)
            nn.init.zeros_(layer.attention_weights.bias)
            nn.init.xavier_uniform_(layer.value_proj.weight)
            nn.init.zeros_(layer.value_proj.bias)
            nn.init.xavier_uniform_(layer.output_proj.weight)
            nn.init.zeros_(layer.output_proj.bias)


def shared_opening_length(prompt: PromptBatch) -> int:
    """Length of the opening text every row shares before its first image position (0 if none)."""
    image = prompt.token_kind == TokenKind.IMAGE
    if not bool(image.any(1).all()):
        return 0
    first_image = image.int().argmax(1)
    length = int(first_image[0])
    if length == 0 or not bool((first_image == length).all()):
        return 0
    opening = prompt.input_ids[:, :length]
    if not bool((opening == opening[:1]).all()) or not bool(prompt.attention_mask[:, :length].all()):
        return 0
    return length


def cut_after_last_needed_position(prompt: PromptBatch) -> PromptBatch:
    """Drop the positions after the last description or supervised one in every row.

    Under causal attention later positions cannot change the description embedding, so the mask-only
    path skips them (the released code runs the whole prompt, answer included).
    """
    needed = (prompt.token_kind == TokenKind.DESCRIPTION) | (prompt.labels != IGNORE_INDEX)
    if not bool(needed.any()):
        return prompt
    positions = torch.arange(needed.shape[1], device=needed.device)
    length = int((positions * needed).max()) + 1
    if length == needed.shape[1]:
        return prompt
    return PromptBatch(prompt.input_ids[:, :length], prompt.token_kind[:, :length],
                       prompt.attention_mask[:, :length], prompt.labels[:, :length])


def _row_cache(output: SegEarthOutput, row: int, length: int):
    """The KV cache of one prompt of the batch, its right padding cut off (the batch's own cache when B = 1)."""
    cache = output.past_key_values
    if output.prompt_embeds.shape[0] > 1:
        cache = copy.deepcopy(cache)
        cache.batch_select_indices(torch.tensor([row], device=output.prompt_embeds.device))
    padding = cache.get_seq_length() - length
    if padding:
        cache.crop(-padding)
    return cache


def _answering_query_logits(decoded) -> list[torch.Tensor]:
    """Per decoder layer, the [B,h,w] logits of the query that answers: the description query, or in
    the PSALM baseline the learned query with the best final score."""
    if decoded.query_scores is None:
        return [logits[:, 0] for logits in decoded.mask_logits]
    best = decoded.query_scores[-1].argmax(-1)
    rows = torch.arange(best.shape[0], device=best.device)
    return [logits[rows, best] for logits in decoded.mask_logits]
