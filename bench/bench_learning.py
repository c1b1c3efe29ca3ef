"""Does the smol model learn geospatial pixel reasoning? Train on the synthetic benchmark, score the test split.

Writes the "## Learning (synthetic benchmark)" section of bench/RESULTS.md. Runs `georeason synth` data,
`georeason train` (the --presets, real SmolLM2 weights) and georeason.evaluate (the code of `georeason eval`),
against predict-empty, predict-everything and a text-blind twin of the first preset; `--ablation` adds the
Table 5 rows.

Run: `python bench/bench_learning.py` (about 2 x --minutes of training plus evaluation on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
from _results import RESULTS, replace_section, section_lines  # noqa: E402 - the one RESULTS.md writer (bench/ is on sys.path)
SECTION = "## Learning (synthetic benchmark)"

ABLATIONS = {  # Table 5 rows: name -> model_config overrides of the smol preset
    "SegEarth-R1 (description query, D-Projector, connector d=2)": {},
    "learned queries (PSALM-style mask decoder)": {"mask_decoder.query": "learned"},
    "no D-Projector": {"d_projector.enabled": False},
    "connector depth 0 (no token compression)": {"connector.depth": 0},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/georeason-bench-learning"))
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--test-images", type=int, default=100)
    parser.add_argument("--max-size", type=int, default=384, help="largest synthetic scene side (px)")
    parser.add_argument("--image-size", type=int, default=256, help="model input side (the smol preset uses 512)")
    parser.add_argument("--presets", default="smol-pretrained,smol",
                        help="comma-separated presets to train at equal wall time; the first also gets a text-blind "
                        "twin (default smol-pretrained,smol)")
    parser.add_argument("--steps", default="600",
                        help="optimizer steps (cosine schedule length): one number for every model, or one per "
                             "preset, comma-separated, so each schedule fits the time budget (the text-blind "
                             "twin takes the first preset's)")
    parser.add_argument("--minutes", type=float, default=30.0, help="wall-clock training budget per model")
    parser.add_argument("--batch", type=int, default=4, help="global batch (one micro-batch of 4, or accumulation)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--llm", choices=("frozen", "lora", "full"), default="frozen",
                        help="frozen SmolLM2 (the D-Projector and decoders learn to read it), LoRA on its attention, "
                        "or the whole LLM trained")
    parser.add_argument("--lora", type=int, default=8, help="LoRA rank with --llm lora")
    parser.add_argument("--parallel", action="store_true",
                        help="train the models at the same time (1 thread each): the presets and the text-blind "
                        "twin, or the ablation rows")
    parser.add_argument("--ablation", action="store_true", help="run the Table 5 rows instead (shorter budget)")
    parser.add_argument("--ablation-minutes", type=float, default=8.0)
    parser.add_argument("--ablation-steps", type=int, default=40)
    parser.add_argument("--eval-batch", type=int, default=4)
    parser.add_argument("--no-results", action="store_true", help="do not touch bench/RESULTS.md")
    parser.add_argument("--eval-only", action="store_true", help="score the models already trained in --workdir")
    parser.add_argument("--no-diagnostic", action="store_true",
                        help="skip the rows at a threshold chosen on train images (not the released protocol)")
    return parser.parse_args()


def make_data(args: argparse.Namespace) -> Path:
    data = args.workdir / "synth"
    if (data / "synth_meta.json").is_file():
        counts = json.loads((data / "synth_meta.json").read_text())["counts"]
        if counts["train"]["samples"] == args.train_images and counts["test"]["samples"] == args.test_images:
            return data
    command = [sys.executable, "-m", "georeason.cli", "synth", str(data), "--num-train", str(args.train_images),
               "--num-val", "0", "--num-test", str(args.test_images), "--min-size", "256",
               "--max-size", str(args.max_size), "--seed", "0", "--workers", "2"]
    subprocess.run(command, check=True)
    return data


def recipe(args: argparse.Namespace, data: Path, name: str, steps: int, minutes: float, model: str = "smol",
           **changes) -> Path:
    values = {
        "model": model, "data": str(data), "output_dir": str(args.workdir / "runs" / name), "max_steps": steps,
        "max_minutes": minutes, "global_batch_size": args.batch, "per_device_batch_size": min(4, args.batch),
        "lr": args.lr,
        "warmup_ratio": 0.05, "gradient_checkpointing": False, "mixed_precision": "no", "save_every": 25,
        "keep_last": 1, "log_every": 5, "seed": 0,
        "lora": {"r": args.lora, "alpha": 2 * args.lora} if args.llm == "lora" else None,
    }
    model_config = {"image_size": args.image_size, **({"llm.frozen": True} if args.llm == "frozen" else {})}
    values["model_config"] = {**model_config, **changes.pop("model_config", {})}
    values.update(changes)
    path = args.workdir / f"recipe-{name}.json"
    path.write_text(json.dumps(values, indent=1) + "\n")
    return path


def start_training(recipe_path: Path, threads: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false")
    log = open(recipe_path.with_suffix(".log"), "w")
    return subprocess.Popen([sys.executable, "-m", "georeason.cli", "train", str(recipe_path), "--overwrite",
                             "--no-progress"], env=env, stdout=log, stderr=subprocess.STDOUT)


def train_all(jobs: list[Path], parallel: bool) -> None:
    if parallel:
        processes = [start_training(job, 1) for job in jobs]
        codes = [p.wait() for p in processes]
    else:
        codes = [start_training(job, 2).wait() for job in jobs]
    for job, code in zip(jobs, codes):
        if code != 0:
            raise SystemExit(f"training {job} failed (exit {code}); see {job.with_suffix('.log')}")


def summary(output_dir: Path) -> dict:
    return json.loads((output_dir / "train_summary.json").read_text())


def evaluate_row(name: str, data: Path, args: argparse.Namespace, model_dir: Path | None = None,
                 baseline: str | None = None) -> dict:
    import torch

    from georeason.evaluate import evaluate

    torch.set_num_threads(2)
    report = evaluate(model_dir, data, "test", batch_size=args.eval_batch, baseline=baseline,
                      image_size=None if model_dir else args.image_size)
    tag = "-".join("".join(c if c.isalnum() else " " for c in name.lower()).split())
    (args.workdir / f"report-{tag}.json").write_text(json.dumps(report, indent=1))
    flags = report["flags"]
    row = {"name": name, "all": report["metrics"], "empty_accuracy": report["empty_target_accuracy"],
           **subset_metrics(flags), "model_fingerprint": report["model"]["fingerprint"],
           "eval_seconds": report["elapsed_s"]}
    if model_dir is not None:
        run = summary(model_dir.parent)
        row["train"] = f"{run['steps_done']}/{run['max_steps']} steps, {run['train_seconds'] / 60:.1f} min" + \
            (" (time limit)" if run["stopped_by_max_minutes"] else "")
        lines = [json.loads(x) for x in (model_dir.parent / "metrics.jsonl").read_text().splitlines()]
        row["loss"] = f"{lines[0]['loss']:.2f} -> {lines[-1]['loss']:.2f}"
    print(f"{name}: gIoU {pct(row['all']['gIoU'])} cIoU {pct(row['all']['cIoU'])}", flush=True)
    return row


def diagnostic_row(name: str, data: Path, args: argparse.Namespace, model_dir: Path) -> dict:
    """Not the released protocol: the probability threshold chosen on the first 24 *train* images
    (best gIoU among 0.1..0.5), then applied to the test split. Shows whether the masks localise the
    target before their probabilities cross 0.5."""
    from georeason.evaluate import evaluate, model_predictor, trained_question
    from georeason.model import SegEarthModel
    from georeason.processor import SegEarthProcessor

    model = SegEarthModel.from_pretrained(model_dir)
    processor = SegEarthProcessor.from_pretrained(model_dir, config=model.config)
    predict = model_predictor(model, processor, False, trained_question(model_dir))
    cache: dict = {}

    def cached(batch):
        key = tuple(batch["id"])
        if key not in cache:
            cache[key] = predict(batch)
        return cache[key]

    scores = {t: evaluate(model_dir, data, "train", batch_size=args.eval_batch, threshold=t, predictor=cached,
                          limit=24)["metrics"]["gIoU"] for t in (0.1, 0.2, 0.3, 0.4, 0.5)}
    best = max(scores, key=lambda t: (scores[t], t))
    report = evaluate(model_dir, data, "test", batch_size=args.eval_batch, threshold=best, predictor=predict)
    flags = report["flags"]
    row = {"name": f"{name}, p > {best:g} (diagnostic)", "all": report["metrics"],
           "empty_accuracy": report["empty_target_accuracy"], **subset_metrics(flags),
           "train": "threshold chosen on 24 train images: " + ", ".join(f"{t:g}: {100 * g:.1f}" for t, g in scores.items())}
    print(f"{row['name']}: gIoU {pct(row['all']['gIoU'])} cIoU {pct(row['all']['cIoU'])}", flush=True)
    return row


def description(preset_name: str) -> str:
    """What a preset's image encoder is, for the table's model column."""
    from georeason.config import preset

    backbone = preset(preset_name).encoder.backbone
    return {"swin": "small Swin trained from scratch",
            "efficientnet_lite0": "frozen ImageNet EfficientNet-Lite0 + trained 1x1 adapter",
            "geoembed_resnet18": "frozen aerial ResNet-18 (geoembed) + trained 1x1 adapter"}.get(backbone, backbone)


def subset_metrics(flags: dict) -> dict:
    """The table's subsets from a report's per-flag metrics: seen categories, held-out phrasings and categories."""
    return {"seen": flags.get("heldout_category", {}).get("false"),
            "phrasing": flags.get("heldout_phrasing", {}).get("true"),
            "category": flags.get("heldout_category", {}).get("true")}


def pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def table(rows: list[dict]) -> list[str]:
    lines = ["| model | training | gIoU | cIoU | P@0.5 | seen categories gIoU / cIoU (n) | "
             "held-out phrasing gIoU / cIoU (n) | held-out category gIoU / cIoU (n) | empty-target acc. |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        sub = []
        for key in ("seen", "phrasing", "category"):
            m = row[key]
            sub.append("-" if m is None else f"{pct(m['gIoU'])} / {pct(m['cIoU'])} ({m['n']})")
        m = row["all"]
        lines.append(f"| {row['name']} | {row.get('train', '-')} | {pct(m['gIoU'])} | {pct(m['cIoU'])} | "
                     f"{pct(m['P@0.5'])} | {sub[0]} | {sub[1]} | {sub[2]} | {pct(row['empty_accuracy'])} |")
    return lines


def write_section(lines: list[str]) -> None:
    """Put `lines` (a "### " subsection, heading first) into this script's section of bench/RESULTS.md: in
    place of the subsection with the same heading, or first; earlier runs' subsections are kept."""
    body = section_lines(SECTION) or []
    preamble: list[str] = []
    subsections: list[list[str]] = []
    for line in body:
        if line.startswith("### "):
            subsections.append([line])
        elif subsections:
            subsections[-1].append(line)
        else:
            preamble.append(line)
    new = [*lines, ""]
    headings = [part[0] for part in subsections]
    if lines[0] in headings:  # a rerun: in place
        subsections[headings.index(lines[0])] = new
    else:
        subsections.insert(0, new)
    text = preamble + [line for part in subsections for line in part]
    replace_section(SECTION, "\n".join(text).strip().splitlines())


def environment_line(args: argparse.Namespace) -> str:
    load = os.getloadavg()[0]
    return (f"`python bench/bench_learning.py {' '.join(sys.argv[1:])}` on {os.cpu_count()} cores "
            f"(1-min load average {load:.1f} at the end: other jobs shared the machine), {time.strftime('%Y-%m-%d')}.")


def preset_steps(text: str, count: int) -> list[int]:
    """--steps "600" or "1200,500" -> one step count per preset."""
    values = [int(part) for part in text.split(",") if part.strip()]
    if len(values) == 1:
        return values * count
    if len(values) != count:
        raise SystemExit(f"--steps: give one number or one per preset ({count}), got {text!r}")
    return values


def main() -> None:
    args = parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = make_data(args)
    meta = json.loads((data / "synth_meta.json").read_text())["counts"]
    if args.ablation:
        jobs = {name: recipe(args, data, f"ablation-{k}", args.ablation_steps, args.ablation_minutes,
                             model_config=overrides) for k, (name, overrides) in enumerate(ABLATIONS.items())}
        train_all(list(jobs.values()), parallel=args.parallel)
        rows = [evaluate_row(name, data, args, args.workdir / "runs" / f"ablation-{k}" / "final")
                for k, name in enumerate(jobs)]
        lines = [f"### Ablation (paper Table 5 rows, shorter budget, {time.strftime('%Y-%m-%d')})", "",
                 f"Each row: smol preset, {args.ablation_steps} steps or {args.ablation_minutes:g} minutes, whichever "
                 f"comes first, global batch {args.batch}, lr {args.lr:g}; test split of the same benchmark.", ""]
        lines += table(rows)
    else:
        presets = [name.strip() for name in args.presets.split(",") if name.strip()]
        steps = dict(zip(presets, preset_steps(args.steps, len(presets))))
        runs = {f"{name} ({description(name)})": (name, recipe(args, data, name, steps[name], args.minutes, model=name))
                for name in presets}
        blind = f"{presets[0]} text-blind (constant question)"
        runs[blind] = (f"{presets[0]}-text-blind", recipe(args, data, f"{presets[0]}-text-blind", steps[presets[0]],
                                                          args.minutes, model=presets[0], text_blind=True))
        if not args.eval_only:
            train_all([job for _, job in runs.values()], args.parallel)
        rows = [evaluate_row(name, data, args, args.workdir / "runs" / run / "final") for name, (run, _) in runs.items()]
        rows += [evaluate_row("predict empty", data, args, baseline="empty"),
                 evaluate_row("predict everything", data, args, baseline="everything")]
        if not args.no_diagnostic:
            rows += [diagnostic_row(name, data, args, args.workdir / "runs" / run / "final")
                     for name, (run, _) in runs.items()]
        trained_parts = {"frozen": "LLM and connector frozen, everything else trainable",
                         "lora": f"LoRA r={args.lora} on the LLM attention, everything else trainable",
                         "full": "everything trainable"}[args.llm]
        lines = [f"### {' vs '.join(presets)} at equal wall time, {args.minutes:g} minutes "
                 f"({time.strftime('%Y-%m-%d %H:%M')})", "", environment_line(args), "",
                 f"Data: `georeason synth` seed 0, {meta['train']['samples']} train images "
                 f"({meta['train']['empty']} empty targets, held-out categories absent), "
                 f"{meta['test']['samples']} test images ({meta['test']['heldout_phrasing']} with held-out "
                 f"phrasings, {meta['test']['heldout_category']} of held-out categories, {meta['test']['empty']} "
                 f"empty), sides 256-{args.max_size} px.",
                 f"Training: presets {', '.join(presets)} (SmolLM2-135M from the GGUF; "
                 f"{args.image_size} px input; {trained_parts}), AdamW lr {args.lr:g}, 5% warmup + cosine over "
                 f"{', '.join(f'{count} steps ({name})' for name, count in steps.items())}, global batch {args.batch} ({min(4, args.batch)} per micro-batch), fp32, "
                 f"budget {args.minutes:g} min per model"
                 + (f" (all {len(runs)} models trained at the same time, 1 thread each, so they shared the "
                    "same load)" if args.parallel else "") + ".",
                 f"Scores: released protocol (padded {args.image_size} x {args.image_size}, probability > 0.5), "
                 "question 0 of each test image, percent." + ("" if args.no_diagnostic else
                 " Rows marked (diagnostic) are not the released protocol: their probability threshold is the best "
                 "of 0.1..0.5 on the first 24 train images."), ""]
        lines += table(rows)
        for row in rows:
            if "loss" in row:
                lines.append(f"- {row['name']}: training loss {row['loss']} (first -> last logged step); "
                             f"evaluation {row['eval_seconds']:.0f} s.")
        lines.append(f"- Reproduce a row: `georeason eval --model {args.workdir}/runs/{presets[0]}/final --data {data} "
                     "--split test` (the bench calls the same georeason.evaluate.evaluate).")
        lines.append(f"- Total bench time {(time.time() - started) / 60:.0f} min.")
    print("\n".join(lines))
    if not args.no_results:
        write_section(lines)
        print(f"wrote the '{SECTION}' section of {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
