"""The gather-based deformable attention equals transformers' grid_sample version, values and gradients."""

import pytest
import torch
from transformers.models.mask2former import modeling_mask2former as m2f

from georeason.model.deformable_attention import DeformableAttention, WeightedRowSum, multi_scale_deformable_attention

SHAPES = [(6, 7), (3, 4), (2, 2)]


def _inputs(seed: int, spread: float):
    g = torch.Generator().manual_seed(seed)
    values = sum(h * w for h, w in SHAPES)
    value = torch.randn(2, values, 4, 8, generator=g, dtype=torch.float64)
    # Locations reach outside [0, 1] so the zero-padding corners are exercised too.
    locations = 0.5 + spread * torch.randn(2, 11, 4, len(SHAPES), 4, 2, generator=g, dtype=torch.float64)
    weights = torch.rand(2, 11, 4, len(SHAPES), 4, generator=g, dtype=torch.float64)
    return value, locations, weights


@pytest.mark.parametrize("spread", [0.2, 0.8])
def test_matches_grid_sample_values_and_gradients(spread):
    ours_inputs = [t.clone().requires_grad_(True) for t in _inputs(0, spread)]
    ref_inputs = [t.clone().requires_grad_(True) for t in _inputs(0, spread)]
    ours = multi_scale_deformable_attention(ours_inputs[0].float(), SHAPES, ours_inputs[1].float(),
                                            ours_inputs[2].float())
    reference = m2f.multi_scale_deformable_attention(ref_inputs[0].float(), SHAPES, ref_inputs[1].float(),
                                                     ref_inputs[2].float())
    assert ours.shape == reference.shape == (2, 11, 32)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)
    grad = torch.randn_like(ours)
    ours.backward(grad)
    reference.backward(grad)
    for mine, theirs in zip(ours_inputs, ref_inputs):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-5)


def test_bf16_inputs_sample_in_float32():
    value, locations, weights = _inputs(1, 0.3)
    exact = multi_scale_deformable_attention(value.float(), SHAPES, locations.float(), weights.float())
    half = multi_scale_deformable_attention(value.bfloat16(), SHAPES, locations.bfloat16(), weights.bfloat16())
    assert half.dtype == torch.bfloat16
    # Only the bf16 rounding of the inputs and of the output remains.
    assert (half.float() - exact).abs().max() < 0.05 * exact.abs().max()


def test_module_is_a_drop_in_replacement():
    torch.manual_seed(0)
    reference = m2f.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention(32, 4, len(SHAPES), 4)
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.3)
    ours = DeformableAttention(32, 4, len(SHAPES), 4)
    ours.load_state_dict(reference.state_dict())
    values = sum(h * w for h, w in SHAPES)
    hidden = torch.randn(2, values, 32)
    position = torch.randn(2, values, 32)
    reference_points = torch.rand(2, values, len(SHAPES), 2)
    kwargs = dict(encoder_hidden_states=hidden, position_embeddings=position, reference_points=reference_points,
                  spatial_shapes_list=SHAPES)
    torch.testing.assert_close(ours(hidden, **kwargs)[0], reference(hidden, **kwargs)[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="reference points"):
        ours(hidden, **{**kwargs, "reference_points": torch.rand(2, values, len(SHAPES), 4)})


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_weighted_row_sum_gradients(index_dtype, monkeypatch):
    # Small chunks, so the weights' gradient is assembled from several pieces (one ragged).
    monkeypatch.setattr(WeightedRowSum, "CHUNK_VALUES", 5 * 6 * 3)
    g = torch.Generator().manual_seed(3)
    table = torch.randn(9, 3, generator=g, dtype=torch.float64, requires_grad=True)
    rows = torch.randint(0, 7, (13, 6), generator=g).to(index_dtype)  # table rows 7 and 8 are never read
    weights = torch.rand(13, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, w: WeightedRowSum.apply(t, rows, w), (table, weights))
    output = WeightedRowSum.apply(table, rows, weights)
    reference = torch.nn.functional.embedding_bag(rows, table, per_sample_weights=weights, mode="sum")
    torch.testing.assert_close(output, reference, rtol=0, atol=0)
    grad = torch.randn_like(output)
    mine = torch.autograd.grad(output, (table, weights), grad)
    theirs = torch.autograd.grad(reference, (table, weights), grad)
    for a, b in zip(mine, theirs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert mine[0][7:].abs().max() == 0  # rows nobody read get no gradient
