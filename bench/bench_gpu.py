"""GPU section of bench/RESULTS.md (run by bench/gpu_check.sh): component times, fp32/bf16, batch 1 and 8.

Paper preset, random weights, sdpa attention, 1024 px images, mask only, CUDA-synchronised medians of 5
runs after 2 warm-ups; plus one question vs each further question on shared image features.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from _results import publish
from bench_questions import prompts

SECTION = "## GPU (`bench/gpu_check.sh`)"
COMPONENTS = ("encoder", "connector", "llm", "d_projector", "pixel_decoder", "mask_decoder")


def timed(run, repeats: int = 5) -> float:
    for _ in range(2):
        run()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def component_times(model, pixels, prompt) -> dict[str, float]:
    events: dict[str, list] = {name: [] for name in COMPONENTS}
    handles = []
    for name in COMPONENTS:
        module = getattr(model, name)
        handles.append(module.register_forward_pre_hook(
            lambda *_, n=name: events[n].append([torch.cuda.Event(enable_timing=True),
                                                 torch.cuda.Event(enable_timing=True)]) or events[n][-1][0].record()))
        handles.append(module.register_forward_hook(lambda *_, n=name: events[n][-1][1].record()))
    model.segment(pixels, prompt)
    torch.cuda.synchronize()
    for handle in handles:
        handle.remove()
    return {n: sum(a.elapsed_time(b) for a, b in pairs) / 1000 for n, pairs in events.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tests-log", type=Path, help="pytest output of the GPU tests, quoted in the section")
    args = parser.parse_args()
    from georeason.model.factory import build_model

    model, _ = build_model("paper", pretrained_llm=False)
    model = model.cuda().eval()
    size = model.config.image_size
    lines = [f"{torch.cuda.get_device_name(0)}, torch {torch.__version__} (CUDA {torch.version.cuda}), paper preset, "
             "random weights, sdpa, mask only, medians of 5 after 2 warm-ups.", "",
             "| dtype | batch | total s / batch | s / image | encoder | connector | LLM | D-Projector | pixel decoder "
             "| mask decoder | one question s | each further question s | peak GPU GB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            model.to(dtype)
            for batch in (1, 8):
                torch.cuda.reset_peak_memory_stats()
                pixels = torch.randn(batch, 3, size, size, device="cuda", dtype=dtype)
                batches = prompts(torch, model.config, 2)
                prompt = batches[0]
                prompt = type(prompt)(*(t.expand(batch, -1).contiguous().cuda() for t in
                                        (prompt.input_ids, prompt.token_kind, prompt.attention_mask, prompt.labels)))
                total = timed(lambda: model.segment(pixels, prompt))
                parts = component_times(model, pixels, prompt)
                one = further = float("nan")
                if batch == 1:
                    first, second = (p.to("cuda") for p in batches)
                    one = timed(lambda: model.segment(pixels, first))
                    features = model.encode_image(pixels)
                    model.segment_features(features, first)
                    further = timed(lambda: model.segment_features(features, second))
                peak = torch.cuda.max_memory_allocated() / 1e9
                lines.append(f"| {str(dtype).removeprefix('torch.')} | {batch} | {total:.3f} | {total / batch:.3f} | "
                             + " | ".join(f"{parts[n]:.3f}" for n in COMPONENTS)
                             + f" | {one:.3f} | {further:.3f} | {peak:.1f} |")
    if args.tests_log and args.tests_log.exists():
        lines += ["", "GPU tests (`pytest -m gpu tests/test_gpu.py`): "
                  + args.tests_log.read_text().strip().splitlines()[-1]]
    publish(SECTION, lines)


if __name__ == "__main__":
    main()
