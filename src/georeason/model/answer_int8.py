"""Weight-int8 answers on the CPU: the LLM's decoding steps run a dynamically quantised copy of the LLM.

Each greedy answer step reads every LLM weight once, so on a CPU it is bound by memory bandwidth; int8
weights (per output channel, torch.ao dynamic quantisation of nn.Linear, activations quantised per step)
read a quarter of float32's bytes. The mask and the prompt's KV cache still come from the float model,
so masks are unchanged; only the answer tokens may differ (bench/RESULTS.md, "Answer tokens, int8").
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from georeason.errors import GeoreasonError


def int8_decoding_copy(llm: nn.Module) -> nn.Module:
    """A copy of the LanguageModel `llm` whose nn.Linear layers hold int8 weights (per output channel).

    CPU and float32 only (the quantised kernels are fbgemm/oneDNN CPU kernels); raises GeoreasonError
    otherwise. The copy costs about a quarter of the float LLM's memory in addition to it.
    """
    parameter = next(llm.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise GeoreasonError(f"int8 answers: need a float32 model on the CPU, got {parameter.dtype} on "
                             f"{parameter.device.type}")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    duplicate = copy.deepcopy(llm)
    with warnings.catch_warnings():
        # torch.ao's eager quantisation warns that it will move to torchao; it is what this torch ships.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=UserWarning)
        quantize_dynamic(duplicate, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)
    duplicate.eval()
    return duplicate
