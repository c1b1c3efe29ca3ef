"""Streaming conversion (georeason.model.convert) and loading in the target dtype (georeason.model.weights).

The streaming, sharded conversion must write the very tensors the in-memory path writes (`load_released`
+ `save_pretrained`), bit for bit, and a folder loaded in bfloat16 must equal the float32 model cast,
with no tensor ever read in float32.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from georeason.errors import GeoreasonError
from georeason.model.convert import convert_released_folder, expand_released_prompt, load_released
from georeason.model.segearth import SegEarthModel
from georeason.model.weights import INDEX_NAME, read_tensor, weight_sources
from tests.conftest import fixture_sets

SETS = fixture_sets()


def fixture_inputs(root, model):
    inputs = root / "inputs"
    vocab = model.config.llm.hf_config["vocab_size"]
    prompt = expand_released_prompt(
        np.load(inputs / "input_ids.npy").tolist(), np.load(inputs / "labels.npy").tolist(),
        np.load(inputs / "refer_token_ids.npy").tolist(), np.load(inputs / "answer_token_ids.npy").tolist(),
        model.config.num_visual_tokens, pad_id=vocab - 2)
    return torch.from_numpy(np.load(inputs / "image_normalized.npz")["image"])[None], prompt


@pytest.mark.parametrize("root", SETS, ids=[p.name for p in SETS])
def test_streaming_sharded_conversion_equals_the_in_memory_conversion(root, tmp_path):
    reference = load_released(root / "model")
    reference.save_pretrained(tmp_path / "in-memory")
    convert_released_folder(root / "model", tmp_path / "sharded", max_shard_bytes=1 << 20)

    index = json.loads((tmp_path / "sharded" / INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    for shard in shards:  # at most the limit (plus the header), unless one tensor alone is larger
        names = [n for n, s in index["weight_map"].items() if s == shard]
        assert (tmp_path / "sharded" / shard).stat().st_size <= (1 << 20) + 20_000 or len(names) == 1, shard
    state = reference.state_dict()
    assert set(index["weight_map"]) == set(state)
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in state.values())
    sources = weight_sources(tmp_path / "sharded")
    for name, tensor in state.items():
        stored = read_tensor(sources[name], name)
        assert stored.dtype == torch.float32 and torch.equal(stored, tensor), name
    assert (tmp_path / "sharded" / "config.json").read_text() == (tmp_path / "in-memory" / "config.json").read_text()

    loaded = SegEarthModel.from_pretrained(tmp_path / "sharded")
    image, prompt = fixture_inputs(root, reference)
    with torch.inference_mode():
        assert torch.equal(loaded.segment(image, prompt)["logits"], reference.segment(image, prompt)["logits"])


def test_bfloat16_loading_reads_every_tensor_in_bfloat16(tmp_path, monkeypatch):
    import georeason.model.weights as weights

    root = SETS[0]
    convert_released_folder(root / "model", tmp_path / "model", max_shard_bytes=1 << 21)
    requested = []

    def recording(path, name, dtype=None):
        requested.append(dtype)
        return read_tensor(path, name, dtype)

    monkeypatch.setattr(weights, "read_tensor", recording)
    half = SegEarthModel.from_pretrained(tmp_path / "model", dtype=torch.bfloat16)
    assert requested and set(requested) == {torch.bfloat16}
    full = SegEarthModel.from_pretrained(tmp_path / "model").to(torch.bfloat16)
    for (name, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    for (name, a), (_, b) in zip(full.named_buffers(), half.named_buffers()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    image, prompt = fixture_inputs(root, half)
    with torch.inference_mode():
        assert torch.equal(half.segment(image.bfloat16(), prompt)["logits"],
                           full.segment(image.bfloat16(), prompt)["logits"])


def test_large_tensors_are_read_in_blocks_that_equal_the_whole(tmp_path, monkeypatch):
    import georeason.model.weights as weights
    from safetensors.torch import save_file

    tensor = torch.randn(1000, 37)
    save_file({"x": tensor, "s": torch.tensor(3.0)}, str(tmp_path / "t.safetensors"))
    monkeypatch.setattr(weights, "CHUNK_BYTES", 37 * 4 * 7)  # 7 rows per block: 143 blocks, the last short
    assert torch.equal(read_tensor(tmp_path / "t.safetensors", "x"), tensor)
    assert torch.equal(read_tensor(tmp_path / "t.safetensors", "x", torch.bfloat16), tensor.bfloat16())
    assert read_tensor(tmp_path / "t.safetensors", "s").item() == 3.0


def test_conversion_refuses_foreign_tensors_before_writing(tmp_path):
    from safetensors.torch import load_file, save_file

    root = SETS[0]
    bad = tmp_path / "released"
    bad.mkdir()
    (bad / "config.json").write_bytes((root / "model" / "config.json").read_bytes())
    state = load_file(str(root / "model" / "model.safetensors"))
    state["model.vision_tower.extra_adapter.weight"] = torch.zeros(2)
    state["pixel_decoder.mask_features.bias"] = torch.zeros(3)  # wrong shape
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(GeoreasonError, match=r"released.*: 1 released tensor\(s\) have no georeason counterpart: "
                                             r"model.vision_tower.extra_adapter.weight"):
        convert_released_folder(bad, tmp_path / "out")
    del state["model.vision_tower.extra_adapter.weight"]
    save_file(state, str(bad / "model.safetensors"))
    with pytest.raises(GeoreasonError, match=r"the released tensors do not make the SegEarth-R1 model their "
                                             r"shapes describe: wrong shape: "
                                             r"pixel_decoder.decoder.mask_projection.bias \(3,\)"):
        convert_released_folder(bad, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [bad]


def test_sharded_folder_with_a_missing_shard_fails_naming_it(tmp_path):
    convert_released_folder(SETS[0] / "model", tmp_path / "model", max_shard_bytes=1 << 21)
    shard = sorted((tmp_path / "model").glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(GeoreasonError, match=f"{shard}: missing weights shard listed in {INDEX_NAME}"):
        SegEarthModel.from_pretrained(tmp_path / "model")
    (tmp_path / "model" / INDEX_NAME).write_text("[]")
    with pytest.raises(GeoreasonError, match=f"{INDEX_NAME}: not a safetensors index"):
        SegEarthModel.from_pretrained(tmp_path / "model")


def test_every_saved_model_has_a_card(tmp_path):
    from georeason.model.card import model_card
    from georeason.model.factory import build_model

    model, tokenizer = build_model("tiny", seed=1)
    model.save_pretrained(tmp_path / "trained", tokenizer=tokenizer)
    card = (tmp_path / "trained" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: georeason\n") and "preset `tiny`" in card
    assert "The paper reports no figures for these weights" in card and "train_recipe.json" in card
    converted = tmp_path / "converted"
    convert_released_folder(SETS[0] / "model", converted)
    card = (converted / "README.md").read_text()
    assert f"Weights from {SETS[0] / 'model'}." in card and "Phi's fused per-head `query_key_value`" in card
    assert "Not stated by the source; check the terms of the source weights" in card
    from georeason.model.card import Provenance

    rrsis = model_card(model.config, Provenance(source="earth-insights/SegEarth-R1-RRSIS-D", how="x", revision="c"))
    assert "Table 3 (referring segmentation, RRSIS-D)" in rrsis and "| P@0.5 | 78.62 | 76.96 |" in rrsis
    assert "| cIoU | 78.92 | 78.01 |" in rrsis and "| gIoU | 67.56 | 66.40 |" in rrsis
    assert "base_model: earth-insights/SegEarth-R1-RRSIS-D" in rrsis
