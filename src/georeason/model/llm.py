"""The language model of SegEarth-R1 (paper Sec. 4.2): any transformers causal LM with hidden states.

Builds the LM from its config (or loads local pretrained weights, including GGUF files), splices the
visual tokens into the embedded prompt, and returns the final-norm hidden states and, on demand, logits.
"""

from __future__ import annotations

import copy
import inspect

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedModel, StaticCache

from georeason.config import LLMConfig


def hf_config_from_dict(values: dict) -> object:
    values = dict(values)
    model_type = values.pop("model_type")
    return AutoConfig.for_model(model_type, **values)


class LanguageModel(nn.Module):
    def __init__(self, config: LLMConfig, attn_implementation: str = "sdpa",
                 pretrained: PreTrainedModel | None = None):
        super().__init__()
        self.config = config
        if pretrained is None:
            hf_config = hf_config_from_dict(config.hf_config)
            pretrained = AutoModelForCausalLM.from_config(hf_config, attn_implementation=attn_implementation)
        self.causal_lm = pretrained
        self._fix_lm_head()
        # transformers 5.24 renamed `past_key_values` to `cache`, in and out (the old name warns on every call).
        parameters = inspect.signature(self.backbone.forward).parameters
        self._cache_keyword = "cache" if "cache" in parameters else "past_key_values"

    def _fix_lm_head(self) -> None:
        # transformers 5 builds Phi's lm_head with a bias; the released model has none
        # (docs/released_code.md#language-model).
        head = self.causal_lm.get_output_embeddings()
        # The config flag too: a model built on the meta device (loading) is tied only afterwards.
        tied = head.weight is self.causal_lm.get_input_embeddings().weight or \
            bool(getattr(self.causal_lm.config, "tie_word_embeddings", False))
        if head.bias is not None and not self.config.lm_head_bias and not tied:
            new_head = nn.Linear(head.in_features, head.out_features, bias=False)
            new_head.weight = head.weight
            self.causal_lm.set_output_embeddings(new_head)

    @property
    def hidden_size(self) -> int:
        return self.causal_lm.config.hidden_size

    @property
    def backbone(self) -> nn.Module:
        return getattr(self.causal_lm, self.causal_lm.base_model_prefix)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.causal_lm.get_input_embeddings()(input_ids)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, cache=None,
                use_cache: bool = False, position_ids: torch.Tensor | None = None):
        """-> (last hidden state after the final norm [B,L,H], KV cache or None)."""
        keyword = self._cache_keyword
        output = self.backbone(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
                               use_cache=use_cache, return_dict=True, **({keyword: cache} if cache is not None else {}))
        return output.last_hidden_state, output.get(keyword) if use_cache else None

    def prefix_state(self, prefix_ids: torch.Tensor):
        """(KV cache, last hidden state [1,n,H]) of a constant prompt opening, kept while the weights stay.

        Every prompt opens with the same system text before the image, so a forward without gradients
        computes it once and starts each batch from a copy of its cache. The key holds what the result
        depends on: the ids, the weights (their in-place version counters), dtype and autocast, and
        inference mode (whose tensors cannot enter a later autograd-recorded computation).
        """
        device = prefix_ids.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        weights_version = sum(p._version for p in self.causal_lm.parameters())
        key = (tuple(prefix_ids.tolist()), weights_version, self.causal_lm.dtype, autocast, device,
               torch.is_inference_mode_enabled())
        stored = getattr(self, "_prefix", None)  # one attribute, read once: safe under serving threads
        if stored is None or stored[0] != key:
            hidden, cache = self(self.embed(prefix_ids[None]), torch.ones_like(prefix_ids)[None],
                                 use_cache=True)
            stored = self._prefix = (key, cache, hidden)
        _, cache, hidden = stored
        return copy.deepcopy(cache), hidden

    def preallocated(self, cache, extra: int) -> StaticCache:
        """A copy of a dynamic KV cache (B rows, n positions) in transformers' StaticCache, with room for
        `extra` more positions.

        Each decoding step then writes its keys and values in place; a dynamic cache grows by
        concatenation, which copies the whole cache at every step. Attention reads the n + extra positions
        with the unwritten ones masked out, which can round differently from the dynamic cache (tokens equal
        in the tests; one int4 SmolLM2 answer differed in bench/RESULTS.md, "Answer KV cache").
        """
        static = StaticCache(config=self.causal_lm.config, max_cache_len=cache.get_seq_length() + extra)
        for index, layer in enumerate(cache.layers):
            static.update(layer.keys, layer.values, index)
        return static

    def beam_search(self, prompt_embeds: torch.Tensor, cache, num_beams: int, max_new_tokens: int,
                    stop_ids: tuple[int, ...], preallocate: bool = True) -> list[int]:
        """Token ids of the best beam continuing one prompt [1,L,H], given the (dynamic) KV cache of its L
        positions.

        transformers' `generate` restarts from a cache and computes only the positions after it. It needs
        one position to compute the first logits, so the cache gives up the prompt's last position; each
        beam then gets its own copy, preallocated for the answer unless `preallocate` is False. With
        inputs_embeds, only the new tokens come back.
        """
        cache.crop(-1)
        cache.batch_repeat_interleave(num_beams)
        if preallocate:
            cache = self.preallocated(cache, max_new_tokens + 1)
        ones = torch.ones(prompt_embeds.shape[:2], dtype=torch.long, device=prompt_embeds.device)
        generated = self.causal_lm.generate(
            inputs_embeds=prompt_embeds, attention_mask=ones, num_beams=num_beams, do_sample=False,
            max_new_tokens=max_new_tokens, eos_token_id=list(stop_ids) or None,
            pad_token_id=stop_ids[0] if stop_ids else None, **{self._cache_keyword: cache})
        return generated[0].tolist()

    def logits(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.causal_lm.get_output_embeddings()(hidden_states)

    def resize_vocab(self, size: int) -> None:
        """Grow the embeddings to the tokenizer (adds [PAD], [SEG]); new rows start at the mean row."""
        old = self.causal_lm.get_input_embeddings().weight.shape[0]
        self.causal_lm.resize_token_embeddings(size, mean_resizing=True)
        self._fix_lm_head()
        self.config.hf_config["vocab_size"] = size
        if size < old:
            raise ValueError(f"vocab shrank from {old} to {size}")
