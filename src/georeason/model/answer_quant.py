"""Weight-only int8 or int4 answers on the CPU: the LLM's decoding steps run a copy of the LLM with
quantised weights.

Each greedy answer step reads every LLM weight once, so on a CPU it is bound by memory bandwidth; int8
weights (symmetric, one scale per output channel) read a quarter of float32's bytes, int4 weights (groups
of `group_size` input features with a bfloat16 step and offset each) about a sixth. Activations are not
quantised, only rounded to bfloat16 for the product (the dtype torch's weight-int8 and weight-int4 CPU
kernels are fast in: in float32 the int8 one is slower than a float32 matmul on AVX2 CPUs and the int4
one runs its scalar loop, bench/RESULTS.md); int8 activations, as in dynamic quantisation, flipped most
greedy answers of SmolLM2, whose hidden states have a few very large dimensions. The mask and the
prompt's KV cache still come from the float model, so masks are unchanged; only answer tokens may differ
(bench/RESULTS.md, "Answer tokens, int8" and "Answer tokens, int4").

Both kernels are torch's own (aten._weight_int8pack_mm, aten._weight_int4pack_mm_for_cpu); torchao's CPU
weight-only int4 (Int4WeightOnlyConfig, "opaque" packing) calls the same int4 kernel, so it would add a
dependency and no speed.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from georeason.config import ANSWER_WEIGHTS
from georeason.errors import GeoreasonError
INT4_GROUP_SIZES = (32, 64, 128, 256)  # what aten._weight_int4pack_mm_for_cpu accepts
INT4_GROUP_SIZE = 32  # the finest steps, and as fast as 128 on an AVX2 CPU (bench/RESULTS.md, "Answer tokens, int4")


def _round_up_to_bfloat16(value: torch.Tensor) -> torch.Tensor:
    """bfloat16 values >= value (float32, positive): bfloat16 keeps 8 significant bits, so rounding to
    nearest after enlarging by 2^-7 never lands below (at most about 1.2 % above)."""
    return (value * (1 + 2.0**-7)).to(torch.bfloat16)


class Int8WeightLinear(nn.Module):
    """nn.Linear with its weight held as int8: y = bf16(x) (q * scale)^T + bias.

    q int8 [out, in] = round(W / scale), scale bfloat16 [out] >= max |W[row]| / 127 (per output channel,
    symmetric, no zero point): each weight is within scale/2 of W. x float32 [..., in] -> y float32 [..., out],
    the product in bfloat16 by torch's weight-int8 CPU kernel (aten._weight_int8pack_mm), which reads q as is.
    """

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        # Rounded up to bfloat16 (the kernel's scale dtype), so that |W / scale| <= 127 and nothing is clipped.
        scale = _round_up_to_bfloat16(weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.bfloat16).tiny) / 127.0)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight_int8", torch.round(weight / scale.float()[:, None]).clamp(-127, 127)
                             .to(torch.int8))
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).contiguous()
        out = torch.ops.aten._weight_int8pack_mm(rows.to(torch.bfloat16), self.weight_int8, self.scale).float()
        if self.bias is not None:
            out = out + self.bias
        return out.view(*x.shape[:-1], self.out_features)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight the layer computes with, float32 [out, in] (for tests and error bounds)."""
        return self.weight_int8.float() * self.scale.float()[:, None]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int4WeightLinear(nn.Module):
    """nn.Linear with its weight held as 4-bit integers in groups: y = bf16(x) Ŵ^T + bias.

    Group-wise asymmetric: each output row's input features are cut into groups of `group_size` (32, 64,
    128 or 256) consecutive ones, each with its own step s and offset z (bfloat16), and
    Ŵ[n, k] = (q[n, k] - 8) * s[g, n] + z[g, n] with g = k // group_size and q in 0..15 (min-max: q = 0
    is about the group's smallest weight, 15 its largest). Every weight is within s/2 of W, and
    s = (max - min) / 15 of its group, enlarged only by the bfloat16 rounding of s (at most about 1.2 %)
    and, where z's bfloat16 rounding would leave the group's extremes uncovered, by at most
    |z| 2^-9 / 7.5 (tests/test_answer_quant.py checks both).

    Held as: weight_int4 uint8 [out', in / 2], two q per byte in the layout of torch's CPU int4 kernel
    (aten._convert_weight_to_int4pack_for_cpu); scale_and_zero bfloat16 [in / group_size, out', 2] (s, z);
    bias float32 [out] or None; out' is out_features rounded up to a multiple of 16 (the kernel's need; the
    added rows are zero and their outputs dropped). x float32 [..., in] -> y float32 [..., out]: x is rounded
    to bfloat16 and aten._weight_int4pack_mm_for_cpu computes x Ŵ^T with float32 sums and a bfloat16
    result. The kernel also needs in_features % group_size == 0 (`supports`).
    """

    def __init__(self, linear: nn.Linear, group_size: int = INT4_GROUP_SIZE):
        super().__init__()
        if not Int4WeightLinear.supports(linear, group_size):
            raise GeoreasonError(f"int4 weights: need in_features % group_size == 0 with group_size in "
                                 f"{INT4_GROUP_SIZES}; got in_features {linear.in_features}, group_size {group_size}")
        out_features, in_features = linear.out_features, linear.in_features
        padded = -(-out_features // 16) * 16
        weight = linear.weight.detach().float()
        weight = torch.cat([weight, weight.new_zeros(padded - out_features, in_features)])
        weight = weight.reshape(padded, in_features // group_size, group_size)
        low, high = weight.amin(-1), weight.amax(-1)  # [out, groups]
        step = (high - low) / 15
        zero = (low + 8 * step).to(torch.bfloat16).float()  # q = 0 -> low, q = 15 -> high before rounding
        # A rounded z shifts the grid; widen the step so that [low, high] stays within half a step of it.
        step = torch.maximum(step, torch.maximum((zero - low) / 8.5, (high - zero) / 7.5))
        step = _round_up_to_bfloat16(step.clamp(min=torch.finfo(torch.bfloat16).tiny)).float()
        q = (torch.round((weight - zero[..., None]) / step[..., None]) + 8).clamp(0, 15)
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(
            q.reshape(padded, in_features).to(torch.int32).contiguous(), 1))  # innerKTiles: unused on CPU
        self.register_buffer("scale_and_zero", torch.stack([step, zero], dim=-1).transpose(0, 1)
                             .to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().float().clone())

    @staticmethod
    def supports(linear: nn.Linear, group_size: int = INT4_GROUP_SIZE) -> bool:
        """Whether torch's CPU int4 kernel takes this layer's input size with this group size."""
        return group_size in INT4_GROUP_SIZES and linear.in_features % group_size == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.weight_int4, self.group_size,
                                                         self.scale_and_zero)[:, :self.out_features].float()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)

    def dequantized_weight(self) -> torch.Tensor:
        """The weight the layer computes with, float32 [out, in] (for tests and error bounds), read back
        from the packed bytes: the kernel applied to the identity matrix in float32 (its exact scalar path;
        the packed layout differs between CPU kinds, so it is not decoded here)."""
        eye = torch.eye(self.in_features, dtype=torch.float32)
        transposed = torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight_int4, self.group_size,
                                                                self.scale_and_zero.float())
        return transposed[:, :self.out_features].T.contiguous()

    def group_ranges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(step s, offset z), float32 [out, in / group_size] each."""
        pairs = self.scale_and_zero.float().transpose(0, 1)[:self.out_features]
        return pairs[..., 0], pairs[..., 1]

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}, "
                f"bias={self.bias is not None}")


def decoding_copy(llm: nn.Module, weights: str = "int8", group_size: int = INT4_GROUP_SIZE) -> nn.Module:
    """A copy of the LanguageModel `llm` whose nn.Linear layers (LM head included) hold quantised weights.

    weights "int8": Int8WeightLinear everywhere. "int4": Int4WeightLinear with `group_size`, except layers
    whose in_features is not a multiple of group_size, which get Int8WeightLinear (none in the presets'
    LLMs at group size 32 or 64; SmolLM2's 576 is not a multiple of 128).
    CPU and float32 only (the kernels are CPU kernels for float activations); raises GeoreasonError
    otherwise. The copy costs about a quarter (int8) or a sixth (int4, group size 32) of the float LLM's
    linear weights in addition to it (its embedding table and norms stay float32).
    """
    if weights not in ANSWER_WEIGHTS:
        raise GeoreasonError(f"answer weights: expected one of {', '.join(ANSWER_WEIGHTS)}, got {weights!r}")
    if weights == "int4" and group_size not in INT4_GROUP_SIZES:
        raise GeoreasonError(f"int4 answers: group_size must be one of {INT4_GROUP_SIZES}, got {group_size}")
    parameter = next(llm.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise GeoreasonError(f"{weights} answers: need a float32 model on the CPU, got {parameter.dtype} on "
                             f"{parameter.device.type}")
    # Copy everything but the linear weights (replaced right after), so the float weights are not duplicated.
    linears = {name: module for name, module in llm.named_modules() if isinstance(module, nn.Linear)}
    # A weight tied to a non-linear module (the embedding table of a tied LM head) is copied as usual.
    elsewhere = {id(p) for m in llm.modules() if not isinstance(m, nn.Linear) for p in m.parameters(recurse=False)}
    memo = {id(m.weight): None for m in linears.values() if id(m.weight) not in elsewhere}
    duplicate = copy.deepcopy(llm, memo)
    for name, module in linears.items():
        parent_name, _, attribute = name.rpartition(".")
        parent = duplicate.get_submodule(parent_name) if parent_name else duplicate
        int4 = weights == "int4" and Int4WeightLinear.supports(module, group_size)
        setattr(parent, attribute, Int4WeightLinear(module, group_size) if int4 else Int8WeightLinear(module))
    duplicate.eval()
    return duplicate
