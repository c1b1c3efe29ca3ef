"""The model: parameter layout vs the released manifest, checkpoints, gradients, ablations, inference."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from georeason.config import SegEarthConfig, preset
from georeason.errors import GeoreasonError
from georeason.model import SegEarthModel, load_pretrained, prompt_builder_for
from georeason.model.connector import TokenCompressionConnector
from georeason.model.convert import convert_released_state_dict, released_config
from georeason.model.factory import build_model
from georeason.model.mask2former_init import initialise_from_mask2former
from georeason.model.prompt import TokenKind
from georeason.model.segearth import _row_cache
from tests.conftest import fixture_sets

# The released model's parameter names and shapes (tests/fixtures/README.md says where it comes from).
MANIFEST = Path(__file__).resolve().parent / "fixtures" / "official-state-dict-manifest.json"


def tiny(**changes) -> SegEarthConfig:
    config = preset("tiny")
    for path, value in changes.items():
        section, field = path.split("__")
        setattr(getattr(config, section), field, value)
    return config


def fixed_batch(model, tokenizer, batch_size=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    pixels = torch.randn(batch_size, 3, size, size, generator=generator)
    targets = torch.zeros(batch_size, size, size)
    targets[0, 40:120, 60:200] = 1  # the second image has an empty target
    builder = prompt_builder_for(model, tokenizer)
    prompt = builder.batch(["where could a small plane land?", "which area floods first?"][:batch_size],
                           ["on the runway", None][:batch_size])
    return pixels, prompt, targets


def test_paper_preset_matches_released_parameters_both_ways():
    with torch.device("meta"):
        model = SegEarthModel(preset("paper"))
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    released = json.loads(MANIFEST.read_text())
    converted = convert_released_state_dict({k: torch.empty(v, device="meta") for k, v in released.items()},
                                            preset("paper"))
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    # ... and the architecture inferred from the released shapes is the paper preset.
    inferred = released_config({k: tuple(v) for k, v in released.items()},
                               {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
                                "intermediate_size": 8192})
    paper = preset("paper")
    for part in ("encoder", "connector", "d_projector", "pixel_decoder", "mask_decoder"):
        assert getattr(inferred, part) == getattr(paper, part), part
    unused = sum(int(np.prod(v)) for k, v in released.items()
                 if re.match(r"seg_query$|predictor\.(query_feat|query_embed|SEG_query_embed|new_query_embed|SEG_proj|"
                             r"CLASS_proj)", k))
    assert model.num_parameters() == 1_588_495_416 - unused


def test_unmapped_released_key_is_listed():
    with pytest.raises(GeoreasonError, match="no georeason counterpart: model.something_new"):
        convert_released_state_dict({"model.something_new": torch.zeros(1)}, preset("paper"))


@pytest.mark.parametrize("depth, tokens", [(0, 1024), (1, 256), (2, 64), (3, 16)])
def test_connector_depth_gives_table7_token_counts(depth, tokens):
    connector = TokenCompressionConnector(in_channels=8, llm_hidden_size=4, depth=depth, input_side=32)
    output = connector(torch.randn(1, 8, 32, 32))
    assert output.shape == (1, tokens, 4)
    assert connector.num_tokens == tokens


def test_save_load_round_trip_is_bit_identical(tmp_path):
    model, tokenizer = build_model("tiny", seed=3)
    model.eval()
    pixels, prompt, _ = fixed_batch(model, tokenizer)
    before = model.segment(pixels, prompt)["logits"]
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    loaded, builder = load_pretrained(tmp_path)
    after = loaded.segment(pixels, builder.batch(["where could a small plane land?", "which area floods first?"],
                                                 ["on the runway", None]))["logits"]
    assert torch.equal(before, after)
    # The weights get the same permissions as any file written here (the umask's), so other users of a
    # shared machine can read a model they are meant to read, as they can its config.json.
    (tmp_path / "plain").write_text("")
    expected = (tmp_path / "plain").stat().st_mode & 0o777
    assert (tmp_path / "model.safetensors").stat().st_mode & 0o777 == expected
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == expected


def test_corrupted_truncated_and_mismatched_checkpoints_are_refused(tmp_path):
    model, tokenizer = build_model("tiny")
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    weights = tmp_path / "model.safetensors"
    good = weights.read_bytes()

    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(GeoreasonError, match="unreadable or corrupted"):
        SegEarthModel.from_pretrained(tmp_path)
    weights.write_bytes(b"\x00" * 64)
    with pytest.raises(GeoreasonError, match="unreadable or corrupted"):
        SegEarthModel.from_pretrained(tmp_path)

    weights.write_bytes(good)
    state = load_file(str(weights))
    state["connector.fc.bias"] = torch.zeros(3)
    save_file(state, str(weights))
    with pytest.raises(GeoreasonError, match="connector.fc.bias"):
        SegEarthModel.from_pretrained(tmp_path)

    weights.write_bytes(good)
    config = json.loads((tmp_path / "config.json").read_text())
    config["format_version"] = 99
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GeoreasonError, match="format_version 99 is newer"):
        SegEarthModel.from_pretrained(tmp_path)
    config["format_version"] = 1
    config["encoder"]["unknown_knob"] = 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GeoreasonError, match=r"encoder: unknown key\(s\) unknown_knob"):
        SegEarthModel.from_pretrained(tmp_path)
    config["encoder"].pop("unknown_knob")
    config["encoder"]["embed_dim"] = "eight"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(GeoreasonError, match="encoder.embed_dim: expected an integer"):
        SegEarthModel.from_pretrained(tmp_path)


def test_gradients_reach_trainable_parts_not_the_frozen_encoder():
    model, tokenizer = build_model("tiny")
    model.train()
    assert not model.encoder.training  # frozen encoder stays in eval mode
    pixels, prompt, targets = fixed_batch(model, tokenizer)
    model(pixels, prompt, target_masks=targets).loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("encoder."):
            assert not parameter.requires_grad and parameter.grad is None, name
        elif parameter.requires_grad:
            assert parameter.grad is not None, f"no gradient reaches {name}"
    for part in ("connector", "llm", "d_projector", "pixel_decoder", "mask_decoder"):
        grads = [p.grad.abs().sum() for n, p in model.named_parameters() if n.startswith(part) and p.grad is not None]
        assert torch.stack(grads).sum() > 0, part


@pytest.mark.parametrize("changes", [
    {},
    {"mask_decoder__query": "learned"},
    {"d_projector__enabled": False},
    {"connector__depth": 0},
    {"loss__mask_loss": "focal"},
])
def test_one_step_lowers_the_loss_for_every_ablation(changes):
    torch.manual_seed(0)
    model, tokenizer = build_model(tiny(**changes), seed=0)
    model.train()
    pixels, prompt, targets = fixed_batch(model, tokenizer)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        generator = torch.Generator().manual_seed(1)  # the same sampled points each step
        loss = model(pixels, prompt, target_masks=targets, generator=generator).loss
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert losses[-1] < losses[0]


def test_batch_equals_single_and_answers_stop_at_seg():
    model, tokenizer = build_model("tiny", seed=1)
    model.eval()
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256)
    questions = ["where could a small plane land?", "a much longer question about where the lake is"]
    stops = (builder.seg_id, builder.eos_id)
    both = model.segment(pixels, builder.batch(questions, for_generation=True), answer=True, max_new_tokens=6,
                         stop_ids=stops)
    for row in range(2):
        single = model.segment(pixels[row:row + 1], builder.batch(questions[row:row + 1], for_generation=True),
                               answer=True, max_new_tokens=6, stop_ids=stops)
        assert torch.allclose(single["logits"][0], both["logits"][row], atol=1e-4)
        assert single["answer_ids"][0] == both["answer_ids"][row]
    # The mask does not depend on the answer: reusing p alone reproduces it.
    again = model.segment_with_description(pixels, both["description_embedding"])
    assert torch.allclose(again, both["logits"], atol=1e-4)
    assert builder.decode_answer(tokenizer.encode("AB") + [builder.seg_id] + tokenizer.encode("C")) == "AB"


def _answer_log_probability(model, prompt_embeds, answer_ids):
    """Teacher-forced mean log-probability of `answer_ids` after one unpadded prompt [1,L,H]."""
    answer = torch.tensor([answer_ids])
    hidden, _ = model.llm(torch.cat([prompt_embeds, model.llm.embed(answer)], 1),
                          torch.ones(1, prompt_embeds.shape[1] + len(answer_ids), dtype=torch.long))
    logits = model.llm.logits(hidden[0, prompt_embeds.shape[1] - 1:-1]).log_softmax(-1)
    return float(logits.gather(1, answer[0][:, None]).mean())


def test_beam_search_answers():
    model, tokenizer = build_model("tiny", seed=1)
    model.eval()
    with torch.no_grad():  # sharpen the random LLM so that its answers depend on the prompt, as a trained one's do
        for weight in model.llm.causal_lm.parameters():
            if weight.dim() == 2:
                weight.mul_(20)
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    questions = ["where could a small plane land?", "a much longer question about where the lake is"]
    prompt = builder.batch(questions, for_generation=True)
    stops = (builder.seg_id, builder.eos_id)
    greedy = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops)
    beams = model.segment(pixels, prompt, answer=True, max_new_tokens=8, stop_ids=stops, num_beams=4)
    assert torch.equal(beams["logits"], greedy["logits"])  # the mask never depends on the answer
    assert greedy["answer_ids"][0] != greedy["answer_ids"][1]  # the answers do depend on the prompt
    assert beams["answer_ids"] != greedy["answer_ids"]
    with torch.inference_mode():
        output = model(pixels, prompt, use_cache=True)
        # generate() restarting from each right-padded row's cache, one beam, is the cached greedy loop.
        assert model._beam_answers(output, prompt, 8, stops, num_beams=1) == greedy["answer_ids"]
        for row in range(2):
            # ... and with 4 beams it equals beam search recomputing the whole prompt.
            embeds = output.prompt_embeds[row, prompt.attention_mask[row].bool()][None]
            recomputed = model.llm.causal_lm.generate(
                inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long), num_beams=4,
                do_sample=False, max_new_tokens=8, eos_token_id=list(stops), pad_token_id=stops[0])[0].tolist()
            stop = next((i for i, token in enumerate(recomputed) if token in stops), len(recomputed) - 1)
            answer = beams["answer_ids"][row]
            assert answer == recomputed[: stop + 1]
            assert 0 < len(answer) <= 8 and not any(token in stops for token in answer[:-1])
            alone = builder.batch(questions[row:row + 1], for_generation=True)
            single = model.segment(pixels[row:row + 1], alone, answer=True, max_new_tokens=8, stop_ids=stops,
                                   num_beams=4)
            assert single["answer_ids"][0] == answer
            # The row's cache cut from the batch is the cache of that prompt run alone.
            length = int(prompt.attention_mask[row].sum())
            cut = _row_cache(output, row, length)
            own = model(pixels[row:row + 1], alone, use_cache=True).past_key_values
            assert cut.get_seq_length() == own.get_seq_length() == length
            for cut_layer, own_layer in zip(cut.layers, own.layers):
                assert torch.allclose(cut_layer.keys, own_layer.keys, atol=1e-5)
                assert torch.allclose(cut_layer.values, own_layer.values, atol=1e-5)
            # What beam search is for: an answer at least as probable as greedy decoding's.
            assert _answer_log_probability(model, embeds, answer) >= \
                _answer_log_probability(model, embeds, greedy["answer_ids"][row]) - 1e-6
    with pytest.raises(GeoreasonError, match="num_beams: expected at least 1, got 0"):
        model.segment(pixels, prompt, answer=True, num_beams=0)


def test_mask_only_forward_skips_positions_after_the_description():
    model, tokenizer = build_model("tiny", seed=1)
    model.eval()
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    questions = ["where could a small plane land?", "a much longer question about where the lake is"]
    full = builder.batch(questions, ["on the runway", "the lake in the north"])  # answers + template after p
    full.labels.fill_(-100)  # nothing supervised: only the description matters
    lengths = []
    hook = model.llm.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    with torch.no_grad():
        cut = model(pixels, full)  # two LLM calls: the shared opening (then cached), the rest
        whole = model(pixels, full, return_intermediates=True)  # intermediates keep every position, no cache
    hook.remove()
    last_description = max(int(torch.nonzero(row == 2).max()) for row in full.token_kind)
    opening = int((full.token_kind[0] == 1).int().argmax())
    assert lengths == [opening, last_description + 1 - opening, full.input_ids.shape[1]]
    assert last_description + 1 < full.input_ids.shape[1] - 5
    assert torch.allclose(cut.description_embedding, whole.description_embedding, rtol=1e-5, atol=1e-6)
    assert torch.allclose(cut.mask_logits, whole.mask_logits, rtol=1e-5, atol=1e-5)
    # Supervised answer positions are kept: the LM loss needs them.
    supervised = builder.batch(questions, ["on the runway", "the lake in the north"])
    lengths.clear()
    hook = model.llm.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    model(pixels, supervised, target_masks=torch.zeros(2, 256, 256))
    hook.remove()
    last_label = max(int(torch.nonzero(row != -100).max()) for row in supervised.labels)
    assert lengths == [last_label + 1]


def test_inference_reuses_the_prompt_opening_until_the_weights_change():
    model, tokenizer = build_model("tiny", seed=1)
    model.eval()
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    prompt = builder.batch(["where could a small plane land?", "which area floods first?"], for_generation=True)
    stops = (builder.seg_id, builder.eos_id)
    opening = int((prompt.token_kind[0] == 1).int().argmax())
    with torch.no_grad():
        reference = model(pixels, prompt, return_intermediates=True)  # the whole prompt, no cache
    reference_answers = model.segment(pixels, prompt, answer=False)  # warms the opening cache
    lengths = []
    hook = model.llm.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    cached = model.segment(pixels, prompt, answer=True, max_new_tokens=5, stop_ids=stops)
    # The opening came from the cache; then the image prefix (image positions and the text up to the
    # question), the question part, and one position per generated token.
    question = int((prompt.token_kind[0] == 2).int().argmax())
    assert lengths[:2] == [question - opening, prompt.input_ids.shape[1] - question] and set(lengths[2:]) == {1}
    assert torch.allclose(cached["description_embedding"], reference.description_embedding, rtol=1e-5, atol=1e-6)
    assert torch.allclose(cached["logits"], reference_answers["logits"], rtol=1e-5, atol=1e-5)
    # Answers generated from the cached opening are the ones generated from the whole prompt.
    model.llm._prefix = None
    hook.remove()
    uncached_answers = []
    for row in range(2):
        with torch.inference_mode():
            single = builder.batch([["where could a small plane land?", "which area floods first?"][row]],
                                   for_generation=True)
            output = model.forward(pixels[row:row + 1], single, use_cache=True, return_intermediates=True)
            uncached_answers.append(model._greedy_answers(output, single, 5, stops)[0])
    assert cached["answer_ids"] == uncached_answers
    # Changing the weights in place (an optimizer step, load_state_dict) invalidates the cache.
    lengths.clear()
    hook = model.llm.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    with torch.no_grad():
        model.llm.embed.__self__.causal_lm.get_input_embeddings().weight.mul_(1.5)
    changed = model.segment(pixels, prompt)
    hook.remove()
    description_end = int(torch.nonzero(prompt.token_kind == 2)[:, 1].max()) + 1  # mask only: cut after p
    assert lengths == [opening, question - opening, description_end - question]
    with torch.no_grad():
        uncached = model(pixels, prompt, return_intermediates=True).description_embedding
    assert torch.allclose(changed["description_embedding"], uncached, rtol=1e-5, atol=1e-6)


def test_frozen_llm_training_reuses_the_opening_with_the_same_loss_and_gradients():
    config = preset("tiny")
    config = dataclasses.replace(config, llm=dataclasses.replace(config.llm, frozen=True))
    model, tokenizer = build_model(config, seed=1)
    model.train()
    assert model.training and model.pixel_decoder.training
    assert not model.llm.training and not model.connector.training  # frozen parts run as at inference
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    targets = (torch.rand(2, 256, 256, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    prompt = builder.batch(["where could a small plane land?", "which area floods first?"], for_generation=True)
    opening = int((prompt.token_kind[0] == 1).int().argmax())
    results = []
    for keep_every_position in (False, False, True):  # miss, hit, then the uncached reference
        lengths = []
        hook = model.llm.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
        model.zero_grad()
        output = model(pixels, prompt, target_masks=targets, generator=torch.Generator().manual_seed(2),
                       return_intermediates=keep_every_position)
        output.loss.backward()
        hook.remove()
        grads = torch.cat([p.grad.flatten() for p in model.d_projector.parameters()])
        results.append((lengths, output.loss.detach(), grads))
    description_end = int(torch.nonzero(prompt.token_kind == 2)[:, 1].max()) + 1
    assert results[0][0] == [opening, description_end - opening]  # computed once, then cached
    assert results[1][0] == [description_end - opening]  # the opening came from the cache
    assert results[2][0] == [prompt.input_ids.shape[1]]
    assert torch.allclose(results[1][1], results[2][1], rtol=1e-5)
    assert torch.allclose(results[1][2], results[2][2], rtol=1e-4, atol=1e-7)


def test_prompt_errors_name_the_problem():
    model, tokenizer = build_model("tiny")
    builder = prompt_builder_for(model, tokenizer)
    with pytest.raises(GeoreasonError, match="the question is empty"):
        builder.encode("   ")
    with pytest.raises(GeoreasonError, match="over the model's limit of 1024"):
        builder.encode("why " * 400)
    with pytest.raises(GeoreasonError, match="task must be 'reasoning' or 'referring'"):
        builder.encode("where?", task="detection")


def test_a_prompt_short_of_image_positions_is_refused_by_forward_and_by_cached_features():
    model, tokenizer = build_model("tiny")
    model.eval()
    pixels, prompt, _ = fixed_batch(model, tokenizer)
    expected = int((prompt.token_kind[0] == TokenKind.IMAGE).sum())
    token_kind = prompt.token_kind.clone()
    token_kind[1, int((token_kind[1] == TokenKind.IMAGE).nonzero()[0])] = TokenKind.TEXT
    short = dataclasses.replace(prompt, token_kind=token_kind)
    message = re.escape(f"each prompt needs {expected} image positions, got [{expected}, {expected - 1}]")
    with torch.no_grad():
        with pytest.raises(GeoreasonError, match=message):
            model(pixels, short)
        with pytest.raises(GeoreasonError, match=message):
            model.segment_features(model.encode_image(pixels), short)

def test_mask2former_pkl_initialises_encoder_and_decoders(tmp_path):
    from georeason.model.convert import load_released

    root = fixture_sets()[0] / "model"
    state = load_file(str(root / "model.safetensors"))
    detectron2 = {}
    for name, tensor in state.items():
        if re.search(r"SEG_|CLASS_|new_query", name):
            continue  # SegEarth-R1 additions that Mask2Former does not have
        for old, new in (("model.vision_tower.", "backbone."), ("pixel_decoder.", "sem_seg_head.pixel_decoder."),
                         ("predictor.", "sem_seg_head.predictor.")):
            if name.startswith(old):
                detectron2[new + name[len(old):]] = tensor.float().numpy()
    detectron2["sem_seg_head.predictor.class_embed.weight"] = np.zeros((134, 8), np.float32)
    checkpoint = tmp_path / "model_final.pkl"
    checkpoint.write_bytes(pickle.dumps({"model": detectron2, "__author__": "test"}))
    reference = load_released(root)
    model = SegEarthModel(reference.config)
    assert initialise_from_mask2former(model, checkpoint) == []
    for name, tensor in reference.state_dict().items():
        if name.startswith(("encoder.", "pixel_decoder.", "mask_decoder.")):
            assert torch.equal(tensor, model.state_dict()[name]), name


def test_mask2former_pickle_with_code_is_refused(tmp_path):
    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    checkpoint = tmp_path / "evil.pkl"
    checkpoint.write_bytes(pickle.dumps({"model": {"backbone.x": Exploit()}}))
    model, _ = build_model("tiny")
    with pytest.raises(GeoreasonError, match="refusing to load builtins.print"):
        initialise_from_mask2former(model, checkpoint)


def test_mask2former_hf_layout_initialises(tmp_path):
    source, _ = build_model("tiny", seed=5)
    hf_state = {}
    for name, tensor in source.state_dict().items():
        new = (name.replace("encoder.backbone.swin.embeddings.", "model.pixel_level_module.encoder.embeddings.")
               .replace("encoder.backbone.swin.encoder.", "model.pixel_level_module.encoder.encoder.")
               .replace("encoder.backbone.hidden_states_norms.", "model.pixel_level_module.encoder.hidden_states_norms.")
               .replace("pixel_decoder.decoder.", "model.pixel_level_module.decoder.")
               .replace("mask_decoder.decoder.", "model.transformer_module.decoder.")
               .replace("mask_decoder.level_embed.", "model.transformer_module.level_embed.")
               .replace(".attention.q_proj.", ".attention.self.query."))
        if new != name and "_1.0.bias" not in new:
            hf_state[new] = tensor.clone()
    hf_state["class_predictor.weight"] = torch.zeros(134, 32)
    save_file(hf_state, str(tmp_path / "model.safetensors"))
    target, _ = build_model("tiny", seed=6)
    zeroed = initialise_from_mask2former(target, tmp_path)
    assert sorted(zeroed) == ["pixel_decoder.decoder.adapter_1.0.bias", "pixel_decoder.decoder.layer_1.0.bias"]
    for name, tensor in source.state_dict().items():
        if name.startswith(("encoder.", "pixel_decoder.", "mask_decoder.decoder.")) and name not in zeroed:
            assert torch.equal(tensor, target.state_dict()[name]), name


def test_frozen_encoder_stored_once_across_checkpoints(tmp_path):
    model, tokenizer = build_model("tiny", seed=2)
    shared = tmp_path / "encoder.safetensors"
    for step in (1, 2):
        model.save_pretrained(tmp_path / f"step-{step}", tokenizer=tokenizer, shared_encoder=shared)
    assert shared.is_file()
    assert not any(k.startswith("encoder.") for k in load_file(str(tmp_path / "step-1" / "model.safetensors")))
    loaded = SegEarthModel.from_pretrained(tmp_path / "step-2")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    shared.unlink()
    with pytest.raises(GeoreasonError, match="encoder.safetensors: missing weights file"):
        SegEarthModel.from_pretrained(tmp_path / "step-1")


def test_tied_embeddings_round_trip(tmp_path):
    config = preset("tiny")
    config.llm.hf_config["tie_word_embeddings"] = True
    model, tokenizer = build_model(config, seed=4)
    assert model.llm.causal_lm.lm_head.weight is model.llm.causal_lm.model.embed_tokens.weight
    model.save_pretrained(tmp_path, tokenizer=tokenizer)
    loaded = SegEarthModel.from_pretrained(tmp_path)
    assert loaded.llm.causal_lm.lm_head.weight is loaded.llm.causal_lm.model.embed_tokens.weight
    assert torch.equal(loaded.llm.causal_lm.lm_head.weight, model.llm.causal_lm.lm_head.weight)


def test_frozen_llm_gets_no_gradient_but_decoders_do():
    config = preset("tiny")
    config.llm.frozen = True
    model, tokenizer = build_model(config)
    model.train()
    pixels, prompt, targets = fixed_batch(model, tokenizer)
    model(pixels, prompt, target_masks=targets).loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith(("llm.", "connector.", "encoder.")):
            assert parameter.grad is None, name
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("mask_decoder.decoder."))


def test_learned_query_baseline_reuses_the_description_embedding():
    model, tokenizer = build_model(tiny(mask_decoder__query="learned"), seed=7)
    model.eval()
    builder = prompt_builder_for(model, tokenizer)
    pixels = torch.randn(2, 3, 256, 256)
    full = model.segment(pixels, builder.batch(["where is the runway?", "where is the lake?"], for_generation=True))
    again = model.segment_with_description(pixels, full["description_embedding"])
    assert torch.allclose(again, full["logits"], atol=1e-4)


def test_fresh_decoders_use_mask2formers_init_and_added_layers_keep_released_init():
    """SegEarth-R1's own layers start N(0, 0.02); decoders not loaded from a checkpoint start as Mask2Former
    does. With N(0, 0.02) in the mask-embedding MLP the smol model never left the predict-nothing plateau."""
    torch.manual_seed(0)
    model = SegEarthModel(preset("smol"))
    std = model.d_projector.text_projector.weight.std().item()
    assert 0.018 < std < 0.022
    connector_convs = [m for m in model.connector.modules() if isinstance(m, torch.nn.Conv2d)]
    assert connector_convs and all(0.018 < conv.weight.std().item() < 0.022 for conv in connector_convs)
    # PyTorch's default Linear init: uniform within 1/sqrt(fan_in), std 1/sqrt(3 fan_in).
    for layer in model.mask_decoder.decoder.mask_predictor.mask_embedder.modules():
        if isinstance(layer, torch.nn.Linear):
            fan_in = layer.weight.shape[1]
            assert layer.weight.abs().max() <= fan_in**-0.5 + 1e-6
            assert layer.weight.std().item() == pytest.approx((3 * fan_in) ** -0.5, rel=0.05)
    # Xavier-uniform on the decoder's attention matrices: std sqrt(2 / (fan_in + fan_out)).
    out_proj = model.mask_decoder.decoder.layers[0].cross_attn.out_proj.weight
    assert out_proj.std().item() == pytest.approx((2 / sum(out_proj.shape)) ** 0.5, rel=0.05)
    assert model.mask_decoder.level_embed.weight.std().item() == pytest.approx(1.0, rel=0.2)
    # The initial mask logits are not vanishingly small (they were ~30x smaller with N(0, 0.02)).
    mask_features = torch.randn(1, model.config.pixel_decoder.mask_dim, 8, 8)
    query = torch.nn.functional.layer_norm(torch.randn(1, 1, model.config.mask_decoder.hidden_dim),
                                           (model.config.mask_decoder.hidden_dim,))
    with torch.no_grad():
        logits = torch.einsum("bqc,bchw->bqhw", model.mask_decoder.decoder.mask_predictor.mask_embedder(query),
                              mask_features)
    assert logits.std() > 0.3
