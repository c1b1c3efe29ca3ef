"""The SegEarth-R1 model: encoder, connector, LLM, D-Projector, pixel decoder, mask decoder, losses.

`SegEarthModel` (segearth.py) assembles the components of paper Sec. 4; `convert.py` imports checkpoints.
"""

from pathlib import Path

from georeason.model.prompt import PromptBatch, PromptBuilder, TokenKind
from georeason.model.segearth import SegEarthModel, SegEarthOutput

__all__ = ["PromptBatch", "PromptBuilder", "SegEarthModel", "SegEarthOutput", "TokenKind", "load_pretrained",
           "prompt_builder_for"]


def prompt_builder_for(model: SegEarthModel, tokenizer) -> PromptBuilder:
    config = model.config
    max_length = int(config.llm.hf_config.get("max_position_embeddings", 2048))
    return PromptBuilder(tokenizer, config.prompt, config.num_visual_tokens, max_length)


def load_pretrained(folder: str | Path, device: str = "cpu", dtype=None,
                    attn_implementation: str = "sdpa") -> tuple[SegEarthModel, PromptBuilder]:
    """A model folder written by save_pretrained -> (model in eval mode, its prompt builder)."""
    from transformers import AutoTokenizer

    from georeason.errors import GeoreasonError

    model = SegEarthModel.from_pretrained(folder, device=device, dtype=dtype, attn_implementation=attn_implementation)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise GeoreasonError(f"{folder}: cannot load the tokenizer ({error})") from None
    return model, prompt_builder_for(model, tokenizer)
