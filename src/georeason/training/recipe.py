"""The training recipe: one typed dataclass, loaded from JSON/YAML with `--set key=value` overrides.

Defaults are the paper's recipe (Table 8; docs/released_code.md#training-recipe): AdamW 1e-4, betas (0.9, 0.999), no
weight decay,
3% warmup then cosine decay, global batch 16, gradient checkpointing, no clipping.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from georeason.config import dataclass_from_dict
from georeason.errors import GeoreasonError

# Paper step counts (docs/released_code.md#training-recipe): named recipes set `max_steps` (and the dataset split they
# were run on).
PAPER_STEPS = {"earthreason": 2220, "rrsisd": 7610, "refsegrs": 5400}
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")


@dataclass
class DataSource:
    """One dataset of the training mix; samples are drawn in proportion to `weight`."""

    path: str = ""
    weight: float = 1.0


@dataclass
class LoraRecipe:
    """LoRA adapters on the LLM (through peft); embeddings and lm_head stay fully trainable ([SEG])."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


# Recipe fields that change where or how often a run saves, or how it copes, but not the weights it trains:
# a run may be resumed with other values.
NOT_TRAJECTORY = ("output_dir", "save_every", "keep_last", "log_every", "num_workers", "max_minutes",
                  "feature_cache_mb", "max_unreadable_fraction")


@dataclass
class TrainRecipe:
    """Everything a training run depends on. Saved as output_dir/recipe.json and in every checkpoint."""

    model: str = "smol"  # a preset name (georeason.config.PRESETS) or a model folder (save_pretrained)
    llm_path: str = ""  # local LLM weights for presets that need them (a folder or a .gguf file)
    model_config: dict[str, Any] = field(default_factory=dict)  # dotted preset overrides, e.g. connector.depth
    data: list[DataSource] = field(default_factory=list)  # a path string is accepted too
    split: str = "train"
    output_dir: str = "runs/train"
    max_steps: int = PAPER_STEPS["earthreason"]
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    global_batch_size: int = 16
    per_device_batch_size: int = 2
    mixed_precision: str = "auto"  # auto: bf16 where the GPU or CPU computes it natively, else fp32 ("no")
    gradient_checkpointing: bool = True
    max_grad_norm: float | None = None
    lora: LoraRecipe | None = None
    save_every: int = 500
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0
    max_minutes: float | None = None  # wall-clock budget: stop (checkpoint + final) when exceeded
    text_blind: bool = False  # baseline: every question replaced by `blind_question`
    blind_question: str = "Segment the target in this image."
    # Memory for the features of a frozen pretrained image backbone, computed once per training image
    # (georeason.training.loop.enable_feature_cache); 0 recomputes them every step.
    feature_cache_mb: float = 1024.0
    # A training sample whose image or label cannot be read is replaced by the next readable one and listed
    # in train_summary.json; the run stops once more than this fraction of one epoch's samples were
    # unreadable (0: stop at the first one).
    max_unreadable_fraction: float = 0.01

    def validate(self) -> None:
        if not self.data:
            raise GeoreasonError("recipe data: give at least one dataset path (data: PATH or a list of "
                                 "{path, weight})")
        for i, source in enumerate(self.data):
            if not source.path:
                raise GeoreasonError(f"recipe data[{i}].path: expected a dataset path")
            if source.weight <= 0:
                raise GeoreasonError(f"recipe data[{i}].weight: expected a positive number, got {source.weight}")
        if not self.output_dir.strip():
            raise GeoreasonError("recipe output_dir: expected a folder path, got an empty string")
        positive = {"max_steps": self.max_steps, "global_batch_size": self.global_batch_size,
                    "per_device_batch_size": self.per_device_batch_size, "save_every": self.save_every,
                    "keep_last": self.keep_last, "log_every": self.log_every}
        for name, value in positive.items():
            if value < 1:
                raise GeoreasonError(f"recipe {name}: expected a positive integer, got {value}")
        if self.lr <= 0:
            raise GeoreasonError(f"recipe lr: expected a positive number, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise GeoreasonError(f"recipe betas: expected two numbers in [0, 1), got {self.betas}")
        if not 0 <= self.warmup_ratio < 1:
            raise GeoreasonError(f"recipe warmup_ratio: expected a number in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in MIXED_PRECISION:
            raise GeoreasonError(f"recipe mixed_precision: expected one of {', '.join(MIXED_PRECISION)}, "
                                 f"got {self.mixed_precision!r}")
        if self.num_workers < 0:
            raise GeoreasonError(f"recipe num_workers: expected >= 0, got {self.num_workers}")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise GeoreasonError(f"recipe max_grad_norm: expected a positive number or null, got {self.max_grad_norm}")
        if self.feature_cache_mb < 0:
            raise GeoreasonError(f"recipe feature_cache_mb: expected a number >= 0, got {self.feature_cache_mb}")
        if not 0 <= self.max_unreadable_fraction < 1:
            raise GeoreasonError("recipe max_unreadable_fraction: expected a number in [0, 1), got "
                                 f"{self.max_unreadable_fraction}")
        if self.text_blind and not self.blind_question.strip():
            raise GeoreasonError("recipe blind_question: expected a non-empty question")

    def gradient_accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step so that per_device x processes x accumulation = global."""
        per_step = self.per_device_batch_size * world_size
        if self.global_batch_size % per_step:
            raise GeoreasonError(
                f"recipe global_batch_size {self.global_batch_size} is not divisible by per_device_batch_size "
                f"{self.per_device_batch_size} x {world_size} process(es) = {per_step}")
        return self.global_batch_size // per_step

    def warmup_steps(self) -> int:
        import math

        return math.ceil(self.max_steps * self.warmup_ratio)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def trajectory_fingerprint(self) -> str:
        """sha256 of the fields that decide the training trajectory (not where or how often it saves)."""
        values = self.to_dict()
        for name in NOT_TRAJECTORY:
            values.pop(name)
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


# -- loading ---------------------------------------------------------------------------------------
def named_recipe(name: str) -> dict[str, Any]:
    """The paper recipe for one dataset (`paper-earthreason`, `paper-rrsisd`, `paper-refsegrs`)."""
    dataset = name.removeprefix("paper-")
    if not name.startswith("paper-") or dataset not in PAPER_STEPS:
        raise GeoreasonError(f"unknown named recipe {name!r}; choose from "
                             f"{', '.join('paper-' + k for k in PAPER_STEPS)} or give a config file")
    return {"model": "paper", "max_steps": PAPER_STEPS[dataset], "mixed_precision": "auto"}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A JSON or YAML (.yaml/.yml) file holding one object."""
    path = Path(path)
    if not path.is_file():
        raise GeoreasonError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as error:  # json.JSONDecodeError or yaml.YAMLError
        raise GeoreasonError(f"{path}: cannot parse the config ({error})") from None
    if not isinstance(values, dict):
        raise GeoreasonError(f"{path}: expected an object (key: value pairs) at the top level")
    return values


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key.sub=value` -> (["key", "sub"], value); the value is JSON when it parses, else a string."""
    if "=" not in text:
        raise GeoreasonError(f"--set {text!r}: expected KEY=VALUE")
    key, raw = text.split("=", 1)
    if not key:
        raise GeoreasonError(f"--set {text!r}: empty key")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.split("."), value


def apply_override(values: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set values[k1][k2]... = value; `model_config.a.b=v` stores the dotted key 'a.b' in model_config."""
    if keys[0] == "model_config" and len(keys) > 1:
        values.setdefault("model_config", {})[".".join(keys[1:])] = value
        return
    node = values
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


def load_recipe(config: str | Path | None, overrides: list[str] = ()) -> TrainRecipe:
    """Recipe from a file (or a named recipe `paper-<dataset>`) plus `key=value` overrides."""
    values: dict[str, Any] = {}
    source = "recipe"
    if config is not None:
        text = str(config)
        if text.startswith("paper-") and not Path(text).exists():
            values = named_recipe(text)
        else:
            values = read_config_file(config)
            source = str(config)
        if "recipe" in values:  # a file may start from a named recipe and change some fields
            values = {**named_recipe(str(values.pop("recipe"))), **values}
    for override in overrides:
        apply_override(values, *parse_override(override))
    if isinstance(values.get("data"), str):
        values["data"] = [{"path": values["data"], "weight": 1.0}]
    if isinstance(values.get("data"), list):
        values["data"] = [{"path": d, "weight": 1.0} if isinstance(d, str) else d for d in values["data"]]
    recipe = dataclass_from_dict(TrainRecipe, values, source)
    recipe.validate()
    return recipe


def recipe_from_dict(values: dict[str, Any], source: str = "recipe") -> TrainRecipe:
    recipe = dataclass_from_dict(TrainRecipe, values, source)
    recipe.validate()
    return recipe


def apply_model_overrides(config, overrides: dict[str, Any]):
    """Apply dotted overrides (`connector.depth: 0`) to a SegEarthConfig through its strict loader."""
    from georeason.config import SegEarthConfig

    values = config.to_dict()
    for dotted, value in overrides.items():
        node = values
        keys = dotted.split(".")
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                raise GeoreasonError(f"recipe model_config: unknown key {dotted!r} (no section {key!r})")
            node = node[key]
        if keys[-1] not in node:
            raise GeoreasonError(f"recipe model_config: unknown key {dotted!r}")
        node[keys[-1]] = value
    return SegEarthConfig.from_dict(values, source="recipe model_config")
