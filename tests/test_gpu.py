"""On a CUDA GPU: image features shared between questions stay exact, bf16 agrees with fp32 (bench/gpu_check.sh)."""

from __future__ import annotations

import pytest
import torch

from georeason.model import prompt_builder_for
from georeason.model.factory import build_model

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA GPU (torch.cuda.is_available() is False); bench/gpu_check.sh runs "
                                        "these on a GPU machine")]

QUESTIONS = ["where could a small plane land?", "which roads are blocked by the flood?"]


def _model(dtype):
    model, tokenizer = build_model("tiny", seed=3)
    model = model.to("cuda", dtype).eval()
    return model, prompt_builder_for(model, tokenizer)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_shared_features_equal_one_question_at_a_time_on_the_gpu(dtype):
    model, builder = _model(dtype)
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)).to("cuda", dtype)
    stops = (builder.seg_id, builder.eos_id)
    features = model.encode_image(pixels)
    for question in QUESTIONS:
        prompt = builder.batch([question], for_generation=True).to("cuda")
        shared = model.segment_features(features, prompt, answer=True, max_new_tokens=4, stop_ids=stops)
        alone = model.segment(pixels, prompt, answer=True, max_new_tokens=4, stop_ids=stops)
        # cuDNN/cuBLAS may pick kernels per call; with the same shapes they are deterministic in practice,
        # so the masks agree to the last bit or within float rounding.
        assert torch.allclose(shared["logits"], alone["logits"], atol=1e-5 if dtype == torch.float32 else 1e-2)
        assert shared["answer_ids"] == alone["answer_ids"]


def test_bf16_masks_agree_with_fp32_on_the_gpu():
    model, builder = _model(torch.float32)
    pixels = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(2)).to("cuda")
    prompt = builder.batch(QUESTIONS[:1], for_generation=True).to("cuda")
    full = model.segment(pixels, prompt)["logits"]
    model.to(torch.bfloat16)
    half = model.segment(pixels.bfloat16(), prompt)["logits"]
    assert ((full > 0) == (half > 0)).float().mean() > 0.98
