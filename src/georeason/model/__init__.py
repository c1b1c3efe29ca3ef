"""The SegEarth-R1 model: encoder, connector, LLM, D-Projector, pixel decoder, mask decoder, losses.

`SegEarthModel` (segearth.py) assembles the components of paper Sec. 4; `convert.py` imports checkpoints,
`hub.py` turns hub ids into model folders, `weights.py` reads and writes (sharded) safetensors.
"""

from pathlib import Path

from georeason.model.prompt import PromptBatch, PromptBuilder, TokenKind, load_tokenizer, prompt_builder_for_config
from georeason.model.segearth import SegEarthModel, SegEarthOutput, SegmentOutput

__all__ = ["PromptBatch", "PromptBuilder", "SegEarthModel", "SegEarthOutput", "SegmentOutput", "TokenKind",
           "load_pretrained", "load_tokenizer", "prompt_builder_for"]


def prompt_builder_for(model: SegEarthModel, tokenizer) -> PromptBuilder:
    """The PromptBuilder of a model (see prompt_builder_for_config)."""
    return prompt_builder_for_config(tokenizer, model.config)


def load_pretrained(folder: str | Path, device: str = "cpu", dtype=None, attn_implementation: str = "sdpa",
                    revision: str | None = None) -> tuple[SegEarthModel, PromptBuilder]:
    """A model folder written by save_pretrained or convert, or a hub id (at `revision`; see hub.py)
    -> (model in eval mode, its prompt builder)."""
    from georeason.model.hub import resolve_model

    folder = resolve_model(folder, revision)

    model = SegEarthModel.from_pretrained(folder, device=device, dtype=dtype, attn_implementation=attn_implementation)
    return model, prompt_builder_for(model, load_tokenizer(folder))
