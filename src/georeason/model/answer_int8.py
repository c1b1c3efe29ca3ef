"""Weight-only int8 answers on the CPU: the LLM's decoding steps run a copy of the LLM with int8 weights.

Each greedy answer step reads every LLM weight once, so on a CPU it is bound by memory bandwidth; int8
weights (symmetric, one scale per output channel) read a quarter of float32's bytes. Activations are not
quantised, only rounded to bfloat16 for the product (the dtype torch's weight-int8 CPU kernel is fast in:
in float32 it is slower than a float32 matmul on AVX2 CPUs, bench/RESULTS.md); int8 activations, as in
dynamic quantisation, flipped most greedy answers of SmolLM2, whose hidden states have a few very large
dimensions. The mask and the prompt's KV cache still come from the float model, so masks
are unchanged; only answer tokens may differ (bench/RESULTS.md, "Answer tokens, int8").
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from georeason.errors import GeoreasonError


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
        bound = weight.abs().amax(dim=1).clamp(min=torch.finfo(torch.bfloat16).tiny) / 127.0
        scale = (bound * (1 + 2.0**-7)).to(torch.bfloat16)
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


def int8_decoding_copy(llm: nn.Module) -> nn.Module:
    """A copy of the LanguageModel `llm` whose nn.Linear layers (LM head included) are Int8WeightLinear.

    CPU and float32 only (the kernel is a CPU kernel for float activations); raises GeoreasonError
    otherwise. The copy costs about a quarter of the float LLM's linear weights in addition to it (its
    embedding table and norms stay float32).
    """
    parameter = next(llm.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise GeoreasonError(f"int8 answers: need a float32 model on the CPU, got {parameter.dtype} on "
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
        setattr(parent, attribute, Int8WeightLinear(module))
    duplicate.eval()
    return duplicate
