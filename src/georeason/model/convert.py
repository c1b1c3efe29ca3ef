"""Import of the authors' released SegEarth-R1 checkpoints (name maps: docs/released_code.md#checkpoint-layout and
#transformers-5-equivalents).

Maps the transformers-4.36 Phi layout (fused, per-head interleaved query_key_value), the detectron2
Swin / pixel-decoder / predictor names and the D-Projector onto this package's modules. Every key is
either mapped or on the documented list of unused released parameters; anything else is an error.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import torch

from georeason.config import (
    ConnectorConfig,
    DProjectorConfig,
    EncoderConfig,
    LLMConfig,
    MaskDecoderConfig,
    PixelDecoderConfig,
    SegEarthConfig,
)
from georeason.errors import GeoreasonError
from georeason.model.weights import check_tensor_shapes, load_state_into

# Parameters the released model carries but never uses (docs/released_code.md#mask-decoder), and non-persistent index
# buffers.
UNUSED_RELEASED = (
    re.compile(r"^seg_query$"),
    re.compile(r"^predictor\.(query_feat|query_embed|SEG_query_embed|new_query_embed)\.weight$"),
    re.compile(r"^predictor\.(SEG_proj|CLASS_proj)\..*"),
    re.compile(r"^model\.vision_tower\..*\.relative_position_index$"),
)

NUM_DEFORMABLE_LEVELS, NUM_DEFORMABLE_POINTS = 3, 4


def _count(keys: list[str], pattern: str) -> int:
    found = {int(m.group(1)) for k in keys if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def released_config(shapes: dict[str, tuple[int, ...]], llm_json: dict, image_size: int = 1024) -> SegEarthConfig:
    """Infer the full config from the released config.json (LLM part) and the tensor shapes."""
    keys = list(shapes)
    try:
        embed_dim = shapes["model.vision_tower.patch_embed.proj.weight"][0]
        depths = [_count(keys, rf"model\.vision_tower\.layers\.{i}\.blocks\.(\d+)\.") for i in range(4)]
        heads = [shapes[f"model.vision_tower.layers.{i}.blocks.0.attn.relative_position_bias_table"][1]
                 for i in range(4)]
        table = shapes["model.vision_tower.layers.0.blocks.0.attn.relative_position_bias_table"][0]
        window = (int(round(table**0.5)) + 1) // 2
        conv_dim = shapes["pixel_decoder.mask_features.weight"][1]
        mask_dim = shapes["pixel_decoder.mask_features.weight"][0]
        offsets = shapes["pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight"][0]
        decoder_heads = offsets // (NUM_DEFORMABLE_LEVELS * NUM_DEFORMABLE_POINTS * 2)
        connector_depth = len([k for k in keys if re.match(r"model\.mm_projector\.proj\d+\.weight$", k)])
        d_dim = shapes["text_projector.weight"][0]
        d_inner = shapes["d_layers.layers.0.0.to_q.weight"][0]
        ff_inner = shapes["d_layers.layers.0.1.1.weight"][0]
    except KeyError as missing:
        raise GeoreasonError(f"released checkpoint lacks tensor {missing}; is this a SegEarth-R1 checkpoint?") from None
    try:
        hf = {
            "model_type": "phi",
            "vocab_size": shapes["model.embed_tokens.weight"][0],
            "hidden_size": llm_json["hidden_size"],
            "num_hidden_layers": llm_json["num_hidden_layers"],
            "num_attention_heads": llm_json["num_attention_heads"],
            "num_key_value_heads": llm_json["num_attention_heads"],
            "intermediate_size": llm_json["intermediate_size"],
            "hidden_act": llm_json.get("hidden_act", "gelu_new"),
            "partial_rotary_factor": llm_json.get("partial_rotary_factor", 0.5),
            "rope_theta": llm_json.get("rope_theta", 10000.0),
            "layer_norm_eps": llm_json.get("layer_norm_eps", 1e-5),
            "max_position_embeddings": llm_json.get("max_position_embeddings", 2048),
            "tie_word_embeddings": False,
            "qk_layernorm": llm_json.get("qk_layernorm", False),
            "bos_token_id": llm_json.get("bos_token_id"),
            "eos_token_id": llm_json.get("eos_token_id"),
        }
    except (KeyError, TypeError) as missing:
        raise GeoreasonError(f"released config.json lacks {missing} (the Phi settings of a SegEarth-R1 "
                             "checkpoint)") from None
    return SegEarthConfig(
        preset="released",
        image_size=image_size,
        encoder=EncoderConfig(embed_dim=embed_dim, depths=depths, num_heads=heads, window_size=window),
        connector=ConnectorConfig(depth=connector_depth),
        llm=LLMConfig(hf_config=hf, source="released SegEarth-R1 checkpoint"),
        d_projector=DProjectorConfig(dim=d_dim, heads=d_inner // 64, head_dim=64,
                                     depth=_count(keys, r"d_layers\.layers\.(\d+)\."), ff_mult=ff_inner // d_dim),
        pixel_decoder=PixelDecoderConfig(
            conv_dim=conv_dim, mask_dim=mask_dim, heads=decoder_heads,
            encoder_layers=_count(keys, r"pixel_decoder\.transformer\.encoder\.layers\.(\d+)\."),
            feedforward_dim=shapes["pixel_decoder.transformer.encoder.layers.0.linear1.weight"][0],
        ),
        mask_decoder=MaskDecoderConfig(
            hidden_dim=shapes["predictor.decoder_norm.weight"][0], heads=decoder_heads,
            feedforward_dim=shapes["predictor.transformer_ffn_layers.0.linear1.weight"][0],
            layers=_count(keys, r"predictor\.transformer_ffn_layers\.(\d+)\."),
        ),
    )


# -- name maps --------------------------------------------------------------------------------------

def _split_rows(tensor: torch.Tensor, parts: int = 3) -> list[torch.Tensor]:
    return [t.contiguous() for t in tensor.chunk(parts, dim=0)]


def _split_phi_qkv(tensor: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """transformers-4.36 Phi fuses q, k, v per head: rows are [head][q|k|v][head_dim]
    (docs/released_code.md#checkpoint-layout)."""
    head_dim = tensor.shape[0] // (3 * heads)
    grouped = tensor.reshape(heads, 3, head_dim, *tensor.shape[1:])
    return [grouped[:, i].reshape(heads * head_dim, *tensor.shape[1:]).contiguous() for i in range(3)]


Rule = tuple[re.Pattern, Callable[..., dict[str, torch.Tensor]]]


def _rename(template: str) -> Callable[..., dict[str, torch.Tensor]]:
    return lambda match, tensor, config: {match.expand(template): tensor}


def _swin_qkv(match, tensor, config):
    base = match.expand(r"encoder.backbone.swin.encoder.layers.\1.blocks.\2.attention.")
    return {f"{base}{name}_proj.{match.group(3)}": part
            for name, part in zip("qkv", _split_rows(tensor))}


def _phi_qkv(match, tensor, config):
    heads = config.llm.hf_config["num_attention_heads"]
    base = match.expand(r"llm.causal_lm.model.layers.\1.self_attn.")
    return {f"{base}{name}_proj.{match.group(2)}": part
            for name, part in zip("qkv", _split_phi_qkv(tensor, heads))}


def _decoder_self_qkv(match, tensor, config):
    base = match.expand(r"mask_decoder.decoder.layers.\1.self_attn.")
    return {f"{base}{name}_proj.{match.group(2)}": part for name, part in zip("qkv", _split_rows(tensor))}


SWIN = r"model\.vision_tower\."
PIXDEC = r"pixel_decoder\."
RULES: list[tuple[str, Callable]] = [
    # Swin encoder
    (SWIN + r"patch_embed\.proj\.(weight|bias)$",
     _rename(r"encoder.backbone.swin.embeddings.patch_embeddings.projection.\1")),
    (SWIN + r"patch_embed\.norm\.(weight|bias)$", _rename(r"encoder.backbone.swin.embeddings.norm.\1")),
    (SWIN + r"layers\.(\d+)\.blocks\.(\d+)\.norm1\.(weight|bias)$",
     _rename(r"encoder.backbone.swin.encoder.layers.\1.blocks.\2.layernorm_before.\3")),
    (SWIN + r"layers\.(\d+)\.blocks\.(\d+)\.norm2\.(weight|bias)$",
     _rename(r"encoder.backbone.swin.encoder.layers.\1.blocks.\2.layernorm_after.\3")),
    (SWIN + r"layers\.(\d+)\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", _swin_qkv),
    (SWIN + r"layers\.(\d+)\.blocks\.(\d+)\.attn\.proj\.(weight|bias)$",
     _rename(r"encoder.backbone.swin.encoder.layers.\1.blocks.\2.attention.o_proj.\3")),
    (SWIN + r"layers\.(\d+)\.blocks\.(\d+)\.attn\.relative_position_bias_table$",
     _rename(r"encoder.backbone.swin.encoder.layers.\1.blocks.\2.attention.relative_position_bias."
             r"relative_position_bias_table")),
    (SWIN + r"layers\.(\d+)\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$",
     _rename(r"encoder.backbone.swin.encoder.layers.\1.blocks.\2.mlp.\3.\4")),
    (SWIN + r"layers\.(\d+)\.downsample\.(norm|reduction)\.(weight|bias)$",
     _rename(r"encoder.backbone.swin.encoder.layers.\1.downsample.\2.\3")),
    (SWIN + r"norm(\d)\.(weight|bias)$",
     lambda m, t, c: {f"encoder.backbone.hidden_states_norms.stage{int(m.group(1)) + 1}.{m.group(2)}": t}),
    # connector
    (r"model\.mm_projector\.(.+)$", _rename(r"connector.\1")),
    # LLM (Phi)
    (r"model\.embed_tokens\.weight$", _rename(r"llm.causal_lm.model.embed_tokens.weight")),
    (r"model\.layers\.(\d+)\.self_attn\.query_key_value\.(weight|bias)$", _phi_qkv),
    (r"model\.layers\.(\d+)\.(self_attn\.dense|mlp\.fc1|mlp\.fc2|input_layernorm)\.(weight|bias)$",
     _rename(r"llm.causal_lm.model.layers.\1.\2.\3")),
    (r"model\.final_layernorm\.(weight|bias)$", _rename(r"llm.causal_lm.model.final_layernorm.\1")),
    (r"lm_head\.weight$", _rename(r"llm.causal_lm.lm_head.weight")),
    # D-Projector
    (r"(text_projector|origin_SEG_token_projector|local_project|SEG_token_projector|d_layers)\.(.+)$",
     _rename(r"d_projector.\1.\2")),
    # pixel decoder
    (PIXDEC + r"input_proj\.(\d+)\.(\d)\.(weight|bias)$",
     _rename(r"pixel_decoder.decoder.input_projections.\1.\2.\3")),
    (PIXDEC + r"transformer\.level_embed$", _rename(r"pixel_decoder.decoder.level_embed")),
    (PIXDEC + r"transformer\.encoder\.layers\.(\d+)\.self_attn\.(.+)$",
     _rename(r"pixel_decoder.decoder.encoder.layers.\1.self_attn.\2")),
    (PIXDEC + r"transformer\.encoder\.layers\.(\d+)\.norm1\.(weight|bias)$",
     _rename(r"pixel_decoder.decoder.encoder.layers.\1.self_attn_layer_norm.\2")),
    (PIXDEC + r"transformer\.encoder\.layers\.(\d+)\.norm2\.(weight|bias)$",
     _rename(r"pixel_decoder.decoder.encoder.layers.\1.final_layer_norm.\2")),
    (PIXDEC + r"transformer\.encoder\.layers\.(\d+)\.linear(\d)\.(weight|bias)$",
     _rename(r"pixel_decoder.decoder.encoder.layers.\1.fc\2.\3")),
    (PIXDEC + r"mask_features\.(weight|bias)$", _rename(r"pixel_decoder.decoder.mask_projection.\1")),
    (PIXDEC + r"(adapter_1|layer_1)\.(\d)\.(weight|bias)$", _rename(r"pixel_decoder.decoder.\1.\2.\3")),
    # mask decoder
    (r"predictor\.transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.+)$",
     _rename(r"mask_decoder.decoder.layers.\1.cross_attn.\2")),
    (r"predictor\.transformer_cross_attention_layers\.(\d+)\.norm\.(weight|bias)$",
     _rename(r"mask_decoder.decoder.layers.\1.cross_attn_layer_norm.\2")),
    (r"predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$", _decoder_self_qkv),
    (r"predictor\.transformer_self_attention_layers\.(\d+)\.self_attn\.out_proj\.(weight|bias)$",
     _rename(r"mask_decoder.decoder.layers.\1.self_attn.out_proj.\2")),
    (r"predictor\.transformer_self_attention_layers\.(\d+)\.norm\.(weight|bias)$",
     _rename(r"mask_decoder.decoder.layers.\1.self_attn_layer_norm.\2")),
    (r"predictor\.transformer_ffn_layers\.(\d+)\.linear(\d)\.(weight|bias)$",
     _rename(r"mask_decoder.decoder.layers.\1.fc\2.\3")),
    (r"predictor\.transformer_ffn_layers\.(\d+)\.norm\.(weight|bias)$",
     _rename(r"mask_decoder.decoder.layers.\1.final_layer_norm.\2")),
    (r"predictor\.decoder_norm\.(weight|bias)$", _rename(r"mask_decoder.decoder.layernorm.\1")),
    (r"predictor\.mask_embed\.layers\.(\d)\.(weight|bias)$",
     _rename(r"mask_decoder.decoder.mask_predictor.mask_embedder.\1.0.\2")),
    (r"predictor\.level_embed\.weight$", _rename(r"mask_decoder.level_embed.weight")),
]
COMPILED_RULES = [(re.compile(pattern), action) for pattern, action in RULES]


def convert_released_state_dict(state: dict[str, torch.Tensor], config: SegEarthConfig) -> dict[str, torch.Tensor]:
    """Released names -> georeason names; raises listing every key that no rule maps."""
    converted: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for name, tensor in state.items():
        if any(p.match(name) for p in UNUSED_RELEASED):
            continue
        for pattern, action in COMPILED_RULES:
            match = pattern.match(name)
            if match:
                converted.update(action(match, tensor, config))
                break
        else:
            unmapped.append(name)
    if unmapped:
        raise GeoreasonError(f"{len(unmapped)} released tensor(s) have no georeason counterpart: "
                             + ", ".join(sorted(unmapped)[:50]))
    return converted


# -- reading released folders -----------------------------------------------------------------------

def read_released_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors, a sharded safetensors index, or pytorch_model.bin (weights-only unpickling)."""
    from safetensors.torch import load_file

    single = folder / "model.safetensors"
    index = folder / "model.safetensors.index.json"
    binary = folder / "pytorch_model.bin"
    try:
        if single.is_file():
            return load_file(str(single))
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            state: dict[str, torch.Tensor] = {}
            for shard in shards:
                state.update(load_file(str(folder / shard)))
            return state
        if binary.is_file():
            # weights_only=True is torch's restricted unpickler: tensors and plain containers only.
            return torch.load(binary, map_location="cpu", weights_only=True)
    except GeoreasonError:
        raise
    except Exception as error:
        raise GeoreasonError(f"{folder}: cannot read the released weights ({error})") from None
    raise GeoreasonError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def load_released(folder: str | Path, attn_implementation: str = "sdpa", image_size: int = 1024):
    """Build a SegEarthModel from a released checkpoint folder (config.json + weights)."""
    from georeason.model.segearth import SegEarthModel

    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise GeoreasonError(f"{config_path}: missing; a released checkpoint folder has config.json")
    llm_json = json.loads(config_path.read_text())
    state = read_released_weights(folder)
    config = released_config({k: tuple(v.shape) for k, v in state.items()}, llm_json, image_size)
    model = SegEarthModel(config, attn_implementation=attn_implementation)
    load_state_into(model, convert_released_state_dict(state, config), str(folder))
    return model.float().eval()


# -- streaming conversion of released folders --------------------------------------------------------

MAX_SHARD_BYTES = 1 << 30  # converted shards of at most 1 GiB: the most conversion holds in memory


class ReleasedWeights:
    """The tensors of a released folder, read one at a time: model.safetensors, its sharded index, or
    pytorch_model.bin (torch's weights-only unpickler, memory-mapped)."""

    def __init__(self, folder: Path) -> None:
        from georeason.model.weights import INDEX_NAME, WEIGHTS_NAME, read_header

        self.folder = folder
        self.sources: dict[str, Path] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._binary: dict[str, torch.Tensor] | None = None
        if (folder / WEIGHTS_NAME).is_file():
            files = [folder / WEIGHTS_NAME]
        elif (folder / INDEX_NAME).is_file():
            try:
                weight_map = json.loads((folder / INDEX_NAME).read_text())["weight_map"]
                files = [folder / shard for shard in dict.fromkeys(weight_map.values())]
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise GeoreasonError(f"{folder / INDEX_NAME}: not a safetensors index ({error})") from None
        elif (folder / "pytorch_model.bin").is_file():
            try:
                self._binary = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True,
                                          mmap=True)
            except Exception as error:
                raise GeoreasonError(f"{folder / 'pytorch_model.bin'}: cannot read the released weights "
                                     f"({error})") from None
            self.shapes = {k: tuple(v.shape) for k, v in self._binary.items()}
            return
        else:
            raise GeoreasonError(f"{folder}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")
        for path in files:
            for name, (shape, _) in read_header(path)[0].items():
                self.sources[name], self.shapes[name] = path, shape

    def get(self, name: str) -> torch.Tensor:
        from georeason.model.weights import read_tensor

        if self._binary is not None:
            return self._binary[name]
        return read_tensor(self.sources[name], name)


def plan_released_conversion(weights: ReleasedWeights, config: SegEarthConfig):
    """-> ({released name: [our names]}, {our name: (shape, dtype)}) for the tensors conversion writes,
    checked against the model of `config` before any tensor data is read."""
    from georeason.model.segearth import SegEarthModel

    with torch.device("meta"):
        model = SegEarthModel(config)
    expected, stored, seen = {}, [], set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        expected[name] = tensor
        if id(tensor) not in seen:  # tied tensors are written once, as save_pretrained does
            seen.add(id(tensor))
            stored.append(name)
    produced: dict[str, list[str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in weights.shapes.items():
        outputs = convert_released_state_dict({name: torch.empty(shape, device="meta")}, config)
        produced[name] = [out for out in outputs if out in stored]
        shapes.update({out: tuple(t.shape) for out, t in outputs.items()})
    check_tensor_shapes({k: tuple(v.shape) for k, v in expected.items()}, shapes,
                        "the released tensors do not make the SegEarth-R1 model their shapes describe")
    return produced, {name: (tuple(expected[name].shape), expected[name].dtype) for name in stored}


def convert_released_folder(released: str | Path, out: str | Path, provenance=None,
                            max_shard_bytes: int = MAX_SHARD_BYTES, label: str | None = None) -> tuple[int, str]:
    """Convert a released checkpoint folder into a georeason model folder, streaming.

    Released tensors are read one at a time and written into shards of at most `max_shard_bytes`
    (one model.safetensors when everything fits, else model-0000i-of-0000n.safetensors with
    model.safetensors.index.json), float32 as `load_released` + `save_pretrained` write them: the same
    tensors bit for bit. `out` appears only when complete (config, weights, tokenizer, README.md card).
    Returns (parameters, a note on the tokenizer). Raises GeoreasonError for anything that is not
    SegEarth-R1, before any tensor data is read.
    """
    from georeason.model.card import Provenance, model_card
    from georeason.model.weights import folder_in_place, plan_shards, save_tensors, shard_names, write_index

    released, out = Path(released), Path(out)
    label = label or str(released)
    config_path = released / "config.json"
    if not config_path.is_file():
        raise GeoreasonError(f"{config_path}: missing; a released checkpoint folder has config.json")
    try:
        llm_json = json.loads(config_path.read_text())
    except ValueError as error:
        raise GeoreasonError(f"{config_path}: not valid JSON ({error})") from None
    try:
        weights = ReleasedWeights(released)
        config = released_config(weights.shapes, llm_json)
        produced, layout = plan_released_conversion(weights, config)
    except GeoreasonError as error:
        raise GeoreasonError(f"{label}: {error}") from None
    order = [name for outputs in produced.values() for name in outputs]
    shards = plan_shards([(n, math.prod(layout[n][0]) * layout[n][1].itemsize) for n in order], max_shard_bytes)
    files = shard_names(len(shards))
    shard_of = {name: index for index, names in enumerate(shards) for name in names}
    metadata = {"format": "pt", "georeason_preset": config.preset}
    needed = sum(math.prod(shape) * dtype.itemsize for shape, dtype in layout.values())
    check_free_space(out.parent, needed, label)
    provenance = provenance or Provenance(source=str(released), how=conversion_note())
    with folder_in_place(out) as folder:
        pending: list[dict[str, torch.Tensor]] = [{} for _ in shards]
        for name, outputs in produced.items():
            if not outputs:
                continue  # unused by the released model (UNUSED_RELEASED): never read
            converted = convert_released_state_dict({name: weights.get(name)}, config)
            for out_name in outputs:
                index = shard_of[out_name]
                pending[index][out_name] = converted[out_name].to(layout[out_name][1]).contiguous()
                if len(pending[index]) == len(shards[index]):
                    save_tensors(pending[index], folder / files[index], metadata)
                    pending[index] = {}
        if len(files) > 1:
            write_index(folder, {name: files[shard_of[name]] for name in order}, needed, {"format": "pt"})
        config.save(folder / "config.json")
        tokenizer, note = released_tokenizer(released)
        tokenizer.save_pretrained(str(folder))
        (folder / "README.md").write_text(model_card(config, provenance), encoding="utf-8")
    return sum(math.prod(shape) for shape, _ in layout.values()), note


def check_free_space(folder: Path, needed: int, label: str) -> None:
    """Refuse to start a conversion that cannot fit (the folder's disk, plus 5 % and 64 MiB to spare)."""
    import shutil

    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    free = shutil.disk_usage(existing).free
    if free < needed * 1.05 + (64 << 20):
        raise GeoreasonError(f"{label}: converting needs {needed / 1e9:.1f} GB in {folder}, which has "
                             f"{free / 1e9:.1f} GB free; free space or convert elsewhere (GEOREASON_CACHE for hub "
                             "models)")


def released_tokenizer(folder: Path):
    """(tokenizer, note): the released folder's own, or a byte-level stand-in when it ships none."""
    from transformers import AutoTokenizer

    from georeason.model.factory import byte_level_tokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder)), "released tokenizer"
    except (OSError, ValueError):
        return byte_level_tokenizer(), ("no tokenizer in the released folder: a byte-level stand-in was written; "
                                        "copy the real one in")


def conversion_note() -> str:
    from georeason import __version__

    return (f"Converted by georeason {__version__} (`georeason convert`, docs/model.md) from the authors' released "
            "layout (transformers-4.36 `llava_phi`): Phi's fused per-head `query_key_value` and the Swin and "
            "decoder `qkv` / `in_proj` matrices split into separate q, k, v; detectron2 Swin, pixel-decoder and "
            "predictor names mapped; parameters the released model never uses (the 100 Mask2Former query tables, "
            "`seg_query`, `SEG_proj`, `CLASS_proj`, Swin index buffers) dropped. Values are unchanged, stored in "
            "float32 (bfloat16 checkpoints upcast exactly).")


# -- released prompt format -------------------------------------------------------------------------

# The released code marks placeholders with negative ids; they exist only at this import boundary.
RELEASED_IMAGE, RELEASED_SEG, RELEASED_REFER, RELEASED_ANSWER = -200, -201, -204, -205


def expand_released_prompt(input_ids: list[int], labels: list[int], refer_ids: list[int], answer_ids: list[int],
                           num_visual_tokens: int, pad_id: int):
    """Released (input_ids, labels) with placeholders -> our expanded PromptBatch of one sample.

    <image> becomes the visual positions, <refer> the description tokens, <answer> the supervised
    answer tokens, and <seg> is dropped (use_seg_query=False in the released model).
    """
    from georeason.model.prompt import IGNORE_INDEX, PromptBatch, TokenKind

    ids: list[int] = []
    kinds: list[int] = []
    targets: list[int] = []
    for token, label in zip(input_ids, labels):
        if token == RELEASED_IMAGE:
            span, kind, span_labels = [pad_id] * num_visual_tokens, TokenKind.IMAGE, [IGNORE_INDEX] * num_visual_tokens
        elif token == RELEASED_REFER:
            span, kind, span_labels = list(refer_ids), TokenKind.DESCRIPTION, [IGNORE_INDEX] * len(refer_ids)
        elif token == RELEASED_ANSWER:
            span, kind, span_labels = list(answer_ids), TokenKind.ANSWER, list(answer_ids)
        elif token == RELEASED_SEG:
            continue
        else:
            span, kind, span_labels = [int(token)], TokenKind.TEXT, [int(label)]
        ids += span
        kinds += [int(kind)] * len(span)
        targets += span_labels
    row = lambda values: torch.tensor([values], dtype=torch.long)  # noqa: E731
    return PromptBatch(row(ids), row(kinds), torch.ones(1, len(ids), dtype=torch.long), row(targets))
