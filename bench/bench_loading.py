"""Peak memory of `georeason convert` and of loading a converted folder, for the paper-size model.

Writes a checkpoint in the authors' released layout (transformers-4.36 `llava_phi`, float32, sharded at
5 GB as transformers 4.36 saves it) with random weights, every tensor named and shaped as in
tests/fixtures/official-state-dict-manifest.json (1.59 B parameters, 6.4 GB), then measures, each
step in a fresh process (peak resident memory = getrusage ru_maxrss, GiB):
  convert          `georeason convert RELEASED OUT`
  load DTYPE       SegEarthModel.from_pretrained(OUT, dtype), then one image as in bench/bench_model.py
                   (1024x1024 random pixels, the 190-position reasoning prompt, mask only); in bf16 only
                   on CPUs with bf16 instructions (without them a bf16 convolution takes minutes)
With --before-src, the same steps also run on another checkout's src/ (the code before streaming).
Deletes the multi-GB files at the end. Replaces the "## Conversion and loading memory" section of
bench/RESULTS.md.

Run: python bench/bench_loading.py [--before-src /path/to/old/src] [--work DIR] [--no-results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# A child measuring another checkout gets its src/ first (GEOREASON_BENCH_SRC); everything else runs this one.
sys.path.insert(0, os.environ.get("GEOREASON_BENCH_SRC") or str(ROOT / "src"))

from _results import publish  # noqa: E402

SECTION = "## Conversion and loading memory (`bench/bench_loading.py`)"
MANIFEST = ROOT / "tests" / "fixtures" / "official-state-dict-manifest.json"
CONFIG_TEMPLATE = ROOT / "tests" / "fixtures" / "official-tiny-A" / "model" / "config.json"
RELEASED_SHARD_BYTES = 5 * 10**9  # transformers 4.36's save_pretrained default max_shard_size, "5GB"
TARGETS = {"convert": 2.5, "load float32": 7.0, "load bfloat16": 4.0}
# The earlier measurement, before streaming conversion and meta-device loading (same model and layout).
BEFORE = {"convert": "14.6", "load float32": "12.2-12.7", "load bfloat16": "12.2-12.7"}


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# -- children -----------------------------------------------------------------------------------------

def write_released(folder: Path) -> dict:
    """The released layout with random weights: config.json (phi-1.5) and float32 shards with an index."""
    import torch
    from safetensors.torch import save_file

    shapes = json.loads(MANIFEST.read_text())
    config = json.loads(CONFIG_TEMPLATE.read_text())
    config.update(hidden_size=2048, num_hidden_layers=24, num_attention_heads=32, intermediate_size=8192,
                  vocab_size=shapes["model.embed_tokens.weight"][0], mm_input_embeds=1024, mm_hidden_size=1024,
                  projector_outdim=2048, bos_token_id=50256, eos_token_id=50256)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    generator = torch.Generator().manual_seed(0)
    shards, current, filled = [], [], 0
    for name, shape in shapes.items():
        nbytes = math.prod(shape) * (8 if name.endswith("relative_position_index") else 4)
        if current and filled + nbytes > RELEASED_SHARD_BYTES:
            shards.append(current)
            current, filled = [], 0
        current.append(name)
        filled += nbytes
    shards.append(current)
    weight_map = {}
    for index, names in enumerate(shards, 1):
        file = f"model-{index:05d}-of-{len(shards):05d}.safetensors"
        state = {}
        for name in names:
            shape = shapes[name]
            if name.endswith("relative_position_index"):
                state[name] = torch.zeros(shape, dtype=torch.int64)
            elif "norm" in name and name.endswith("weight"):
                state[name] = torch.ones(shape)
            else:
                state[name] = torch.randn(shape, generator=generator) * 0.02
            weight_map[name] = file
        save_file(state, str(folder / file), metadata={"format": "pt"})
        del state
    total = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return {"files": len(shards), "bytes": total, "parameters": sum(math.prod(s) for s in shapes.values())}


def convert(released: Path, out: Path) -> dict:
    import torch  # noqa: F401  (imported first so that the baseline below includes them)
    import transformers  # noqa: F401

    from georeason.cli import main

    imports = peak_gib()
    started = time.perf_counter()
    if main(["convert", str(released), str(out)]) != 0:
        raise SystemExit("convert failed")
    files = sorted(p.name for p in out.iterdir())
    return {"imports_gib": imports, "peak_gib": peak_gib(), "seconds": time.perf_counter() - started,
            "weight_files": len([f for f in files if f.endswith(".safetensors")])}


def load(folder: Path, dtype_name: str, image: bool) -> dict:
    import torch

    from georeason.model.prompt import PromptBatch, TokenKind
    from georeason.model.segearth import SegEarthModel

    torch.set_num_threads(2)
    dtype = getattr(torch, dtype_name)
    imports = peak_gib()
    started = time.perf_counter()
    model = SegEarthModel.from_pretrained(folder, dtype=dtype)
    load_seconds, load_peak = time.perf_counter() - started, peak_gib()
    result = {"imports_gib": imports, "peak_gib": load_peak, "seconds": load_seconds,
              "parameters": model.num_parameters()}
    if not image:
        return result
    # The component bench's image and prompt (bench/bench_model.py).
    config = model.config
    kinds = [TokenKind.TEXT] * 58 + [TokenKind.IMAGE] * config.num_visual_tokens + [TokenKind.TEXT] * 12 + \
        [TokenKind.DESCRIPTION] * 26 + [TokenKind.TEXT] * 30
    length = len(kinds)
    prompt = PromptBatch(torch.randint(0, 1000, (1, length), generator=torch.Generator().manual_seed(0)),
                         torch.tensor([kinds]), torch.ones(1, length, dtype=torch.long),
                         torch.full((1, length), -100))
    size = config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dtype)
    times = []
    with torch.inference_mode():
        for _ in range(2):  # the first is warm-up
            start = time.perf_counter()
            model.segment(pixels, prompt)
            times.append(time.perf_counter() - start)
    return {**result, "peak_with_image_gib": peak_gib(), "image_seconds": times[-1],
            "load_average": os.getloadavg()[0]}


# -- parent -------------------------------------------------------------------------------------------

def child(step: list[str], src: Path | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GEOREASON_BENCH_SRC"}
    if src is not None:
        env["GEOREASON_BENCH_SRC"] = str(src)
    out = subprocess.run([sys.executable, __file__, "--child", *step], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"step {step} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(*step[:1], *step[3:4], json.dumps(result), flush=True)
    return result


def cpu_has_bf16() -> bool:
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def _cpu_name() -> str:
    line = next((x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name")), "")
    return line.partition(":")[2].strip() or platform.machine()


def _capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/georeason-bench-loading"))
    parser.add_argument("--before-src", type=Path, help="src/ of a checkout before this change, measured too")
    parser.add_argument("--keep", action="store_true", help="keep the multi-GB checkpoints")
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        step, *rest = args.child
        result = {"write": lambda: write_released(Path(rest[0])),
                  "convert": lambda: convert(Path(rest[0]), Path(rest[1])),
                  "load": lambda: load(Path(rest[0]), rest[1], rest[2] == "image")}[step]()
        print(json.dumps(result))
        return

    released, work = args.work / "released", args.work
    if work.exists():
        shutil.rmtree(work)
    rows = []
    try:
        written = child(["write", str(released)])
        for label, src in [("after", None), ("before", args.before_src)]:
            if label == "before" and src is None:
                continue
            if label == "before" and available_gib() < 18:
                print(f"skipping the before rows: {available_gib():.1f} GiB available (needs 18)", flush=True)
                continue
            out = work / f"converted-{label}"
            rows.append((label, "convert", child(["convert", str(released), str(out)], src)))
            for dtype in ("float32", "bfloat16"):
                image = "image" if dtype == "float32" or cpu_has_bf16() else "no-image"
                rows.append((label, f"load {dtype}", child(["load", str(out), dtype, image], src)))
            shutil.rmtree(out)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"Paper-size model in the authors' released layout with random weights: {written['parameters']:,} parameters, "
        f"{written['bytes'] / 1e9:.2f} GB float32 in {written['files']} shards (transformers 4.36 shards at 5 GB), "
        "written by the bench from tests/fixtures/official-state-dict-manifest.json. Each step in a fresh process; "
        "peak = getrusage ru_maxrss in GiB (2^30 bytes), including the "
        f"{min(r['imports_gib'] for _, _, r in rows):.1f}-{max(r['imports_gib'] for _, _, r in rows):.1f} GiB "
        "of Python, torch and transformers after imports. `load` is "
        "`SegEarthModel.from_pretrained` (what `GeoReasoner.from_pretrained` and every command use); "
        "\"with one image\" then runs the component bench's 1024 px image and 190-position prompt, mask only "
        f"(2 threads; load average {rows[1][2].get('load_average', float('nan')):.1f} during it). "
        + ("\"before\" is the code in --before-src, measured in the same run. " if args.before_src else "")
        + f"{date.today().isoformat()}, {_cpu_name()}, {os.cpu_count()} cores, torch CPU capability "
        f"{_capability()}" + ("" if cpu_has_bf16() else ": no bf16 instructions, so no bf16 image was run") + ".",
        "",
        "| step | code | peak RSS GiB | target | seconds | peak with one image GiB | s per image |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, step, r in rows:
        image = (f"{r['peak_with_image_gib']:.2f}", f"{r['image_seconds']:.1f}") if "image_seconds" in r else ("-", "-")
        lines.append(f"| {step} | {label} | {r['peak_gib']:.2f} | {TARGETS[step]:.1f} | {r['seconds']:.0f} | "
                     f"{image[0]} | {image[1]} |")
    if not any(label == "before" for label, _, _ in rows):
        for step, value in BEFORE.items():
            lines.append(f"| {step} | before (earlier measurement, not re-run) | {value} | {TARGETS[step]:.1f} | - | "
                         "- | - |")
    publish(SECTION, lines, write=not args.no_results)


if __name__ == "__main__":
    main()
