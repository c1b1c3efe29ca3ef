"""Fidelity to the released SegEarth-R1 code on the fixture checkpoints (tests/fixtures/README.md).

Each set runs twice. In float64 our forward pass is compared at the tightest tolerances: what is left is the
released run's own float32 rounding, so this checks the implementation whatever the CPU. In float32 (how the
model runs) the same tolerances hold up to the decoder's masked attention; there the attention mask is the
sign of the previous layer's logits, so a logit within rounding of zero flips a pixel in or out of every
query's attention and the last layers differ by up to a few 1e-4 relative on some CPUs (set A on AMD EPYC:
1.2e-4 after layer 8, 1e-5 in float64), which the float32 tolerance for the mask logits allows.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from georeason.model.attention import FIDELITY_ATTENTION
from georeason.model.convert import expand_released_prompt, load_released
from tests.conftest import fixture_root, fixture_sets

SETS = fixture_sets()


def test_fixture_sets_present():
    if not SETS:
        pytest.fail(f"no fixture sets under {fixture_root()} (tests/fixtures, or GEOREASON_FIXTURES)")


def max_relative_error(actual: torch.Tensor, reference: np.ndarray) -> float:
    actual = actual.detach().double().numpy()
    return float(np.abs(actual - reference).max() / (np.abs(reference).max() + 1e-12))


RUNS = [(root, dtype) for root in SETS for dtype in (torch.float64, torch.float32)]
# Relative tolerance on the decoder's mask logits and mask losses, by compute dtype (see the module docstring).
MASK_TOLERANCE = {torch.float64: 1e-4, torch.float32: 5e-4}


@pytest.fixture(scope="module", params=RUNS, ids=[f"{root.name}-{str(dtype)[6:]}" for root, dtype in RUNS])
def fixture_run(request):
    root, dtype = request.param
    model = load_released(root / "model", attn_implementation=FIDELITY_ATTENTION).to(dtype)
    inputs, expected = root / "inputs", root / "expected"
    vocab = model.config.llm.hf_config["vocab_size"]
    prompt = expand_released_prompt(
        np.load(inputs / "input_ids.npy").tolist(), np.load(inputs / "labels.npy").tolist(),
        np.load(inputs / "refer_token_ids.npy").tolist(), np.load(inputs / "answer_token_ids.npy").tolist(),
        model.config.num_visual_tokens, pad_id=vocab - 2)
    image = torch.from_numpy(np.load(inputs / "image_normalized.npz")["image"])[None].to(dtype)
    target = torch.from_numpy(np.array(Image.open(inputs / "gt_mask_1024.png")) > 0).to(dtype)[None]
    # The full-resolution loss variant: every pixel centre of the 1024 grid (fixtures/README "Loss").
    centres = (torch.arange(1024, dtype=torch.float32) + 0.5) / 1024
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    coords = torch.stack([xs.flatten(), ys.flatten()], -1)[None]  # the losses run in float32 whatever the model
    with torch.no_grad():
        output = model(image, prompt, target_masks=target, point_coords=coords, return_lm_logits=True,
                       return_intermediates=True)
    return dtype, expected, prompt, output


def test_expanded_prompt_matches_released(fixture_run):
    _, expected, prompt, _ = fixture_run
    assert np.array_equal(prompt.labels[0].numpy(), np.load(expected / "expanded_labels.npy")[0])
    refer = (prompt.token_kind[0] == 2).long().numpy()
    assert np.array_equal(refer, np.load(expected / "expanded_refer_indices.npy")[0])


@pytest.mark.parametrize("name, reference_file, tolerance", [
    ("description_embedding", "description_pooled_p.npy", 1e-5),
    ("skip", "origin_seg_embedding.npy", 1e-5),
    ("d_projector_out", "d_projector_out.npy", 1e-5),
    ("query", "seg_query.npy", 1e-5),
    ("image_tokens", "image_tokens.npy", 1e-5),
    ("last_hidden_state", "last_hidden_state.npy", 1e-5),
    ("lm_logits", "lm_logits.npy", 1e-5),
    ("mask_logits", "mask_logits_final_256.npy", MASK_TOLERANCE),
    ("all_mask_logits", "mask_logits_all_layers_256.npy", MASK_TOLERANCE),
])
def test_outputs_match_released(fixture_run, name, reference_file, tolerance):
    dtype, expected, _, output = fixture_run
    tolerance = tolerance[dtype] if isinstance(tolerance, dict) else tolerance
    reference = np.load(expected / reference_file)
    values = {
        "description_embedding": output.description_embedding,
        "query": output.query,
        "lm_logits": output.lm_logits,
        "mask_logits": output.mask_logits[:, None],
        "all_mask_logits": torch.stack(output.all_mask_logits)[:, :, None],
    }.get(name, output.intermediates.get(name))
    assert values.shape == reference.shape
    assert max_relative_error(values, reference) < tolerance


def test_binary_mask_matches_released(fixture_run):
    _, expected, _, output = fixture_run
    ours = F.interpolate(output.mask_logits[:, None], size=(1024, 1024), mode="bilinear", align_corners=False)[0, 0]
    released = np.load(expected / "pred_mask_1024.npz")["mask"].astype(bool)
    reference_logits = torch.from_numpy(np.load(expected / "mask_logits_final_256.npy"))
    reference_up = F.interpolate(reference_logits, size=(1024, 1024), mode="bilinear", align_corners=False)[0, 0]
    assert np.array_equal((reference_up > 0).numpy(), released)  # our upsampling = the released one
    differing = (ours > 0).numpy() != released
    # Pixels may only differ where the released logit itself sits on the threshold (fixtures/README).
    assert np.all(np.abs(reference_up.numpy()[differing]) < 2e-3)
    assert differing.sum() < 100


def test_losses_match_released(fixture_run):
    dtype, expected, _, output = fixture_run
    mask_rtol = MASK_TOLERANCE[dtype]
    reference = json.loads((expected / "losses.json").read_text())["full_resolution"]
    losses = output.losses
    assert float(losses["lm"]) == pytest.approx(reference["loss_llm_ce"], rel=1e-5)
    assert float(losses["mask"]) == pytest.approx(reference["loss_mask_bce_weighted_sum"], rel=mask_rtol)
    assert float(losses["dice"]) == pytest.approx(reference["loss_dice_weighted_sum"], rel=mask_rtol)
    assert float(output.loss) == pytest.approx(reference["loss_total"], rel=mask_rtol)
    per_layer = reference["per_layer_unweighted"]
    released_mask = [per_layer[f"loss_mask_{i}"] for i in range(9)] + [per_layer["loss_mask"]]
    released_dice = [per_layer[f"loss_dice_{i}"] for i in range(9)] + [per_layer["loss_dice"]]
    np.testing.assert_allclose([float(v) for v in losses["mask_per_layer"]], released_mask, rtol=mask_rtol)
    np.testing.assert_allclose([float(v) for v in losses["dice_per_layer"]], released_dice, rtol=mask_rtol)
