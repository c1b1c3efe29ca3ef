"""The SegEarth-R1 model: encoder, connector, LLM, D-Projector, pixel decoder, mask decoder, losses.

`SegEarthModel` (segearth.py) assembles the components of paper Sec. 4; `convert.py` imports checkpoints,
`hub.py` turns hub ids into model folders, `weights.py` reads and writes (sharded) safetensors.
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


def load_pretrained(folder: str | Path, device: str = "cpu", dtype=None, attn_implementation: str = "sdpa",
                    revision: str | None = None) -> tuple[SegEarthModel, PromptBuilder]:
    """A model folder written by save_pretrained or convert, or a hub id (at `revision`; see hub.py)
    -> (model in eval mode, its prompt builder)."""
    from transformers import AutoTokenizer

    from georeason.errors import GeoreasonError
    from georeason.model.hub import resolve_model

    folder = resolve_model(folder, revision)

    model = SegEarthModel.from_pretrained(folder, device=device, dtype=dtype, attn_implementation=attn_implementation)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as error:
        raise GeoreasonError(f"{folder}: cannot load the tokenizer ({error})") from None
    return model, prompt_builder_for(model, tokenizer)
