"""Tests of georeason train: recipe parsing and errors, LR schedule, one step, gradients, data order.

The multi-process and SIGKILL-resume equivalence tests are in test_train_equivalence.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from georeason.errors import GeoreasonError
from georeason.training.loop import lr_factor
from georeason.training.outputs import check_output_dir
from georeason.training.recipe import TrainRecipe, load_recipe
from georeason.training.sampling import SampleStream, rank_positions


def write(path, values) -> str:
    path.write_text(json.dumps(values))
    return str(path)


# -- recipe ---------------------------------------------------------------------------------------
def test_recipe_defaults_are_the_paper_recipe(tmp_path):
    recipe = load_recipe(write(tmp_path / "r.json", {"data": "somewhere"}))
    assert (recipe.lr, recipe.betas, recipe.weight_decay, recipe.warmup_ratio) == (1e-4, [0.9, 0.999], 0.0, 0.03)
    assert recipe.global_batch_size == 16 and recipe.max_grad_norm is None and recipe.gradient_checkpointing
    assert recipe.data[0].path == "somewhere" and recipe.data[0].weight == 1.0
    assert load_recipe("paper-rrsisd", ["data=x"]).max_steps == 7610
    assert load_recipe("paper-refsegrs", ["data=x"]).max_steps == 5400
    assert load_recipe(write(tmp_path / "e.json", {"recipe": "paper-earthreason", "data": "x"})).max_steps == 2220


def test_recipe_yaml_mix_and_overrides(tmp_path):
    (tmp_path / "r.yaml").write_text("data:\n  - {path: a, weight: 3}\n  - b\nlora: {r: 4}\nmax_steps: 10\n")
    recipe = load_recipe(tmp_path / "r.yaml", ["max_steps=20", "lora.alpha=8", "model_config.connector.depth=0",
                                                "output_dir=runs/x"])
    assert [(d.path, d.weight) for d in recipe.data] == [("a", 3.0), ("b", 1.0)]
    assert recipe.max_steps == 20 and recipe.lora.r == 4 and recipe.lora.alpha == 8
    assert recipe.model_config == {"connector.depth": 0} and recipe.output_dir == "runs/x"


@pytest.mark.parametrize("values, message", [
    ({"data": "x", "learning_rate": 1}, r"unknown key\(s\) learning_rate"),
    ({"data": "x", "max_steps": "ten"}, r"key max_steps: expected an integer, got 'ten'"),
    ({"data": "x", "lora": {"rank": 4}}, r"key lora: unknown key\(s\) rank"),
    ({"data": "x", "text_blind": 1}, r"key text_blind: expected true or false"),
    ({"data": "x", "mixed_precision": "fp8"}, r"mixed_precision: expected one of"),
    ({}, r"recipe data: give at least one dataset path"),
    ({"data": "x", "output_dir": " "}, r"recipe output_dir: expected a folder path, got an empty string"),
])
def test_recipe_errors_name_the_key(tmp_path, values, message):
    with pytest.raises(GeoreasonError, match=message):
        load_recipe(write(tmp_path / "r.json", values))


def test_override_errors(tmp_path):
    path = write(tmp_path / "r.json", {"data": "x"})
    with pytest.raises(GeoreasonError, match=r"unknown key\(s\) max_step;"):
        load_recipe(path, ["max_step=3"])
    with pytest.raises(GeoreasonError, match="expected KEY=VALUE"):
        load_recipe(path, ["max_steps"])
    with pytest.raises(GeoreasonError, match="no such config file"):
        load_recipe(tmp_path / "missing.yaml")


def test_gradient_accumulation_from_world_size():
    recipe = TrainRecipe(data=[], global_batch_size=16, per_device_batch_size=2)
    assert [recipe.gradient_accumulation(w) for w in (1, 2, 4, 8)] == [8, 4, 2, 1]
    with pytest.raises(GeoreasonError, match=r"global_batch_size 16 is not divisible by per_device_batch_size 2 x 3"):
        recipe.gradient_accumulation(3)


def _earlier_run(folder, *names):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.json").write_text(json.dumps(TrainRecipe(data=[], output_dir=str(folder)).to_dict()))
    for name in names:
        (folder / name).mkdir() if "." not in name else (folder / name).write_text("{}\n")


def _tree(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.input_kind("runs", "train output_dir holding other files or an earlier run",
                        "other files never count or get touched; an earlier run needs --resume or --overwrite; "
                        "names a run writes but no recipe.json are refused in every mode")
def test_output_dir_checks_decide_without_touching_anything(tmp_path):
    unrelated = tmp_path / "project"
    unrelated.mkdir()
    (unrelated / "notes.txt").write_text("precious")
    assert check_output_dir(unrelated, resume=False, overwrite=False) is False  # other files are fine

    earlier = tmp_path / "earlier"
    _earlier_run(earlier, "metrics.jsonl", "checkpoints", "final")
    before = _tree(earlier)
    with pytest.raises(GeoreasonError, match=r"already exists; pass --resume to continue it or --overwrite to "
                                             r"replace it \(it holds the outputs of a training run: checkpoints, "
                                             r"final, metrics.jsonl, recipe.json; other files"):
        check_output_dir(earlier, resume=False, overwrite=False)
    assert check_output_dir(earlier, resume=False, overwrite=True) is False
    assert check_output_dir(earlier, resume=True, overwrite=False) is False
    assert _tree(earlier) == before  # checking deletes nothing

    foreign = tmp_path / "foreign"
    (foreign / "final").mkdir(parents=True)
    for resume, overwrite in ((False, False), (False, True), (True, False)):
        with pytest.raises(GeoreasonError, match=r"holds final/ but no recipe.json of a georeason training run"):
            check_output_dir(foreign, resume=resume, overwrite=overwrite)

    leftover = tmp_path / "leftover"
    _earlier_run(leftover)  # a start that failed before its first step
    assert check_output_dir(leftover, resume=False, overwrite=False) is True

    with pytest.raises(GeoreasonError, match="--resume and --overwrite exclude each other"):
        check_output_dir(earlier, resume=True, overwrite=True)
    with pytest.raises(GeoreasonError, match=r"--resume: output_dir .*missing does not exist"):
        check_output_dir(tmp_path / "missing", resume=True, overwrite=False)
    with pytest.raises(GeoreasonError, match=r"notes.txt is a file, expected a folder"):
        check_output_dir(unrelated / "notes.txt" / "run", resume=False, overwrite=False)


# -- schedule -------------------------------------------------------------------------------------
def test_lr_schedule_warmup_then_cosine():
    warmup, total = 3, 13  # ceil(0.03 * 100) = 3 for the recipe below
    assert TrainRecipe(max_steps=100).warmup_steps() == 3
    assert [lr_factor(s, warmup, total) for s in range(4)] == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])
    assert lr_factor(8, warmup, total) == pytest.approx(0.5)  # half way through the decay
    assert lr_factor(13, warmup, total) == pytest.approx(0.0)
    assert lr_factor(5, warmup, total) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    # Through torch's LambdaLR as the loop uses it: the lr applied at optimizer step k is 1e-4 * factor(k).
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total))
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([1e-4 * lr_factor(s, warmup, total) for s in range(total)])


# -- data order -----------------------------------------------------------------------------------
def test_data_order_is_the_same_for_any_world_size():
    one = list(rank_positions(2, 5, global_batch=8, per_device=2, world_size=1, rank=0))
    ranks = [list(rank_positions(2, 5, 8, 2, 2, r)) for r in range(2)]
    assert sorted(one) == sorted(ranks[0] + ranks[1]) == list(range(16, 40))
    # Micro-batch k of the 1-process run (accumulation 4) = micro-batch k//2 of rank k%2 (accumulation 2).
    micro_one = [one[i:i + 2] for i in range(0, len(one), 2)]
    micro_two = [[ranks[r][i:i + 2] for r in range(2)] for i in range(0, len(ranks[0]), 2)]
    assert micro_one == [batch for pair in micro_two for batch in pair]


def test_sample_stream_epochs_and_mixing():
    stream = SampleStream([5], [1.0], seed=3)
    first = [stream.locate(p)[2] for p in range(5)]
    assert sorted(first) == list(range(5))
    assert [stream.locate(p)[0] for p in (4, 5, 10)] == [0, 1, 2]
    assert SampleStream([5], [1.0], seed=3).epoch_order(1)[1].tolist() == stream.epoch_order(1)[1].tolist()
    mixed = SampleStream([10, 30], [3.0, 1.0], seed=0)
    sources, indices = mixed.epoch_order(0)
    assert np.bincount(sources).tolist() == [30, 10]  # weights 3:1 over an epoch of 40
    assert set(indices[sources == 0].tolist()) == set(range(10))


# -- one step, gradients --------------------------------------------------------------------------
def tiny_batch(model, prompts, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    pixels = torch.randn(2, 3, size, size, generator=g)
    targets = torch.zeros(2, size, size)
    targets[0, 20:90, 30:120] = 1
    targets[1, 100:200, 50:80] = 1
    prompt = prompts.batch(["Where could a plane land?", "Which pool is the largest?"],
                           ["The runway on the left.", "The pool at the top."])
    points = torch.rand(2, 512, 2, generator=g)
    return pixels, prompt, targets, points


def test_one_step_lowers_the_loss_and_gradients_reach_every_trainable_part():
    from georeason.model import prompt_builder_for
    from georeason.model.factory import build_model

    model, tokenizer = build_model("tiny", seed=0)
    prompts = prompt_builder_for(model, tokenizer)
    model.train()
    assert not model.encoder.training  # the frozen encoder stays in eval mode
    pixels, prompt, targets, points = tiny_batch(model, prompts)
    loss = model(pixels, prompt, target_masks=targets, point_coords=points).loss
    loss.backward()
    for name, parameter in model.named_parameters():
        if name.startswith("encoder."):
            assert not parameter.requires_grad and parameter.grad is None, name
    parts, without = {}, []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            has = parameter.grad is not None and bool(parameter.grad.abs().sum() > 0)
            parts.setdefault(name.split(".")[0], []).append(has)
            if not has:
                without.append(name)
    assert set(parts) == {"connector", "llm", "d_projector", "pixel_decoder", "mask_decoder"}
    assert all(any(flags) for flags in parts.values())
    # Structural zeros only: with one query, decoder self-attention is softmax over a single key (q/k have
    # no effect); the level embedding acts through deformable sampling offsets/weights that start at zero.
    structural = [n for n in without if ".self_attn.q_proj." in n or ".self_attn.k_proj." in n
                  or n == "pixel_decoder.decoder.level_embed"]
    assert without == structural and len(structural) == 1 + 4 * model.config.mask_decoder.layers
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    optimizer.step()
    with torch.no_grad():
        after = model(pixels, prompt, target_masks=targets, point_coords=points).loss
    assert float(after) < float(loss.detach()) - 1e-3


def test_smol_preset_trains_its_encoder():
    from georeason.config import preset

    assert preset("smol").encoder.frozen is False
    assert preset("paper").encoder.frozen is True


def test_stream_dataset_question_choice_depends_only_on_position(tmp_path):
    from PIL import Image

    from georeason.data import open_dataset
    from georeason.training.sampling import StreamDataset, collate_samples
    from georeason.data.transforms import SampleTransform

    lines = []
    for k in range(3):
        Image.fromarray(np.full((40, 60, 3), 40 * k, np.uint8)).save(tmp_path / f"i{k}.png")
        lines.append(json.dumps({"image": f"i{k}.png", "mask": None, "answers": [],
                                 "questions": [f"q{k}-{j}" for j in range(6)]}))
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")

    def stream(blind=None):
        dataset = open_dataset(tmp_path, "train", mode="train", transforms=SampleTransform(64), seed=0)
        return StreamDataset([dataset], SampleStream([len(dataset)], [1.0], seed=0), blind)

    first, second = stream(), stream()
    forward = [first[p]["question"] for p in range(9)]
    backward = [second[p]["question"] for p in reversed(range(9))][::-1]  # other visiting order
    assert forward == backward
    assert len(set(forward)) > 3  # questions vary between visits of the same image
    batch = collate_samples([stream("Segment it.")[p] for p in (0, 1)])
    assert batch["question"] == ["Segment it.", "Segment it."] and batch["position"] == [0, 1]
    assert tuple(batch["pixel_values"].shape) == (2, 3, 64, 64) and batch["answer"][0].startswith("There is no")
