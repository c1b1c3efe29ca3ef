"""How steady is the demo's score? The demo's recipe over several seeds, each scored on its own test split and
on one common test set, optionally with checkpoint averaging or gradient clipping.

Writes the "## Demo across seeds" section of bench/RESULTS.md. Each seed generates the demo's synthetic set
(georeason.demo: 1,600 train + 100 test scenes) and trains georeason.demo.demo_recipe on it; every model is
then scored on its own 100 test scenes and on --common-scenes scenes of one other seed, so that differences
between seeds on the common set are differences between trained models, not between test sets.

Run: `python bench/bench_demo_seeds.py --workdir /tmp/demo-seeds --seeds 0,1,2 [--arm clip --max-grad-norm 1]`
(about 10 min of training per seed on 2 cores, plus ~3 min of evaluation). Arms share the data folders;
`--table-only` rebuilds the table from the results.json files already in --workdir.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

from _results import publish  # noqa: E402 - the one RESULTS.md writer (bench/ is on sys.path)

SECTION = "## Demo across seeds"
AVERAGED = (4, 8)  # tail averages: the last 4 and 8 checkpoints, saved every 25 steps


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/georeason-demo-seeds"))
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated demo seeds")
    parser.add_argument("--arm", default="demo", help="name of this variant of the recipe (a folder of --workdir)")
    parser.add_argument("--max-grad-norm", type=float, default=None, help="clip the gradient's global L2 norm")
    parser.add_argument("--average", action="store_true",
                        help="also score the mean weights of the last 4 and 8 checkpoints (saved every 25 steps)")
    parser.add_argument("--common-seed", type=int, default=100, help="seed of the common test set")
    parser.add_argument("--common-scenes", type=int, default=400)
    parser.add_argument("--demo-args", default="", help="other `georeason demo` options, e.g. \"--steps 600\"")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from --workdir")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating RESULTS.md")
    return parser.parse_args()


def demo_args(seed: int, extra: str) -> argparse.Namespace:
    """The demo's settings (georeason demo's parser and defaults) for `seed` and the options in `extra`."""
    from georeason.demo import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--seed", str(seed), *extra.split()])


def synthetic_set(folder: Path, train: int, test: int, seed: int) -> Path:
    from georeason.data.synth import generate_benchmark
    from georeason.demo import SCENE_MAX_SIDE, SCENE_MIN_SIDE

    if not (folder / "synth_meta.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        generate_benchmark(folder, train, 0, test, seed=seed, min_size=SCENE_MIN_SIDE, max_size=SCENE_MAX_SIDE)
    return folder


def averaged_model(run: Path, steps: list[int], out: Path) -> Path:
    """A copy of run/final whose weights are the mean of the checkpoints at `steps` (trained tensors only)."""
    import torch
    from safetensors.torch import load_file, save_file

    from georeason.training.checkpoint import MODEL_FILE, step_folder

    final = load_file(run / "final" / MODEL_FILE)
    states = [load_file(step_folder(run, step) / MODEL_FILE) for step in steps]
    averaged = dict(final)
    for name, tensor in final.items():
        if tensor.is_floating_point() and any(not torch.equal(states[0][name], s[name]) for s in states[1:]):
            averaged[name] = torch.stack([s[name].double() for s in states]).mean(0).to(tensor.dtype)
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(run / "final", out)
    save_file(averaged, out / MODEL_FILE, metadata={"format": "pt"})
    return out


def run_seed(args: argparse.Namespace, seed: int, common: Path) -> None:
    from georeason.demo import demo_recipe
    from georeason.evaluate import evaluate
    from georeason.training.checkpoint import list_checkpoints
    from georeason.training.loop import train

    settings = demo_args(seed, args.demo_args)
    data = synthetic_set(args.workdir / "data" / f"seed{seed}", settings.train_scenes, settings.test_scenes, seed)
    root = args.workdir / args.arm / f"seed{seed}"
    root.mkdir(parents=True, exist_ok=True)
    (root.parent / "arm.json").write_text(json.dumps({"command": shlex.join(["python"] + sys.argv),
                                                      "max_grad_norm": args.max_grad_norm}) + "\n")
    run = root / "run"
    recipe = demo_recipe(data, run, settings, "fp32")
    recipe = dataclasses.replace(recipe, max_grad_norm=args.max_grad_norm,
                                 **({"save_every": 25, "keep_last": max(AVERAGED)} if args.average else {}))
    started = time.perf_counter()
    train(recipe, overwrite=True, progress=False)
    minutes = (time.perf_counter() - started) / 60
    models = {"final": run / "final"}
    if args.average:
        steps = [step for step, _ in list_checkpoints(run)]
        for count in AVERAGED:
            models[f"avg{count}"] = averaged_model(run, steps[-count:], root / f"avg{count}")
    results: dict[str, dict[str, float]] = {"train_minutes": {"value": minutes}}
    for name, folder in models.items():
        for test_name, test_data in (("own", data), ("common", common)):
            metrics = evaluate(folder, test_data, split="test", batch_size=4)["metrics"]
            results[f"{name}/{test_name}"] = {"gIoU": metrics["gIoU"], "cIoU": metrics["cIoU"]}
            print(f"{args.arm} seed {seed} {name} on {test_name}: gIoU {100 * metrics['gIoU']:.1f}", flush=True)
    (root / "results.json").write_text(json.dumps(results, indent=1) + "\n")


def table(args: argparse.Namespace) -> list[str]:
    lines = ["The demo's recipe (georeason.demo.demo_recipe; by default smol-pretrained, 400 steps of 4 at lr 5e-4 "
             "(1e-3 until 2026-12-02), fp32, 1,600 training scenes; each arm's command below) trained once per seed "
             "on 2 cores; each model "
             "scored on its own test scenes (100 by default) and on "
             f"{args.common_scenes} common test scenes (`georeason synth` seed {args.common_seed}), question 0, "
             "gIoU / cIoU in percent. avgN: the mean weights of the last N checkpoints (every 25 steps).", "",
             "| arm | seed | model | own test scenes | common test scenes |", "|---|---|---|---|---|"]
    summary = []
    for arm in sorted(p for p in args.workdir.iterdir() if p.is_dir() and p.name != "data"):
        common_scores = []
        for seed_dir in sorted(arm.glob("seed*/results.json")):
            results = json.loads(seed_dir.read_text())
            seed = seed_dir.parent.name.removeprefix("seed")
            for model in sorted({key.split("/")[0] for key in results if "/" in key}, key=lambda m: (m != "final", m)):
                own, common = results[f"{model}/own"], results[f"{model}/common"]
                lines.append(f"| {arm.name} | {seed} | {model} | {100 * own['gIoU']:.1f} / {100 * own['cIoU']:.1f} | "
                             f"{100 * common['gIoU']:.1f} / {100 * common['cIoU']:.1f} |")
                if model == "final":
                    common_scores.append(100 * common["gIoU"])
        if common_scores:
            mean = sum(common_scores) / len(common_scores)
            settings = json.loads((arm / "arm.json").read_text()) if (arm / "arm.json").is_file() else {}
            clip = settings.get("max_grad_norm")
            summary.append(f"- {arm.name} ({'gradient norm clipped at ' + str(clip) if clip else 'no clipping'}; "
                           f"`{settings.get('command', 'command not recorded')}`): common-set gIoU of the final "
                           f"models, mean {mean:.1f}, range {min(common_scores):.1f}-{max(common_scores):.1f} over "
                           f"{len(common_scores)} seeds")
    return lines + [""] + summary


def main() -> int:
    args = parse_args()
    if not args.table_only:
        common = synthetic_set(args.workdir / "data" / "common", 0, args.common_scenes, args.common_seed)
        for seed in (int(s) for s in args.seeds.split(",")):
            run_seed(args, seed, common)
    publish(SECTION, table(args), write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
