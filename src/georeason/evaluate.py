"""The `georeason eval` command and the evaluation functions the bench calls: metrics, answers, report.

Implements the evaluation protocol of docs/released_code.md#evaluation-protocol (released gIoU, cIoU, P@0.5..0.9 at
the padded model input,
optionally at the original size), plus per-category, empty-target and per-flag breakdowns and answer scores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import string
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from georeason.errors import GeoreasonError
from georeason.filenames import printable_tree, unique_names
from georeason.textfiles import read_json_file

CLI_DESCRIPTION = """Score a model folder on a dataset split with the released protocol
(docs/released_code.md#evaluation-protocol).

Metrics: gIoU, cIoU and P@0.5..0.9 at the padded model-input resolution (as released; --at-original-size
maps predictions back to each image's own size), per category, on empty targets, and per flag the dataset
records (the synthetic benchmark: held-out category, held-out phrasing). Distributed when launched with
several processes (each sample scored exactly once, counts merged exactly)."""

CLI_EPILOG = """examples:
  georeason eval --model runs/smol/final --data synth_data --split test --report report.json
  georeason eval --model runs/smol/final --data synth_data --split val --answers --save-overlays overlays/
  torchrun --nproc_per_node 2 -m georeason.cli eval --model runs/smol/final --data synth_data --split test"""

TRAIN_RECIPE_NAME = "train_recipe.json"  # written into a trained model folder by georeason train
FLAG_FILE = "synth_meta.json"  # per-sample flags of the synthetic benchmark


# -- text answers -----------------------------------------------------------------------------------
def normalize_answer(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed (SQuAD-style, without article removal)."""
    text = text.lower().translate(str.maketrans({c: " " for c in string.punctuation}))
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    """Bag-of-tokens F1 between two normalised texts."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common: dict[str, int] = {}
    for token in predicted:
        common[token] = common.get(token, 0) + 1
    overlap = 0
    for token in expected:
        if common.get(token, 0) > 0:
            overlap += 1
            common[token] -= 1
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def answer_scores(prediction: str, references: list[str]) -> tuple[float, float]:
    """(exact match, token F1), each the max over the references."""
    exact = max(float(normalize_answer(prediction) == normalize_answer(r)) for r in references)
    return exact, max(token_f1(prediction, r) for r in references)


# -- accumulated results -----------------------------------------------------------------------------
@dataclass
class EvalState:
    """Everything evaluation accumulates; plain counts, mergeable across processes."""

    overall: Any  # MetricAccumulator
    flags: dict[str, dict[str, Any]] = field(default_factory=dict)  # flag -> "true"/"false" -> accumulator
    answers: dict[str, float] = field(default_factory=lambda: {"n": 0, "exact": 0.0, "f1": 0.0, "skipped": 0})
    samples: list[dict[str, Any]] = field(default_factory=list)  # per-sample IoU rows

    def state_dict(self) -> dict[str, Any]:
        return {"overall": self.overall.state_dict(),
                "flags": {f: {v: a.state_dict() for v, a in d.items()} for f, d in self.flags.items()},
                "answers": dict(self.answers), "samples": list(self.samples)}

    @classmethod
    def merged(cls, states: list[dict[str, Any]]) -> EvalState:
        from georeason.metrics import MetricAccumulator

        result = cls(MetricAccumulator())
        for state in states:
            result.overall.merge(MetricAccumulator.from_state_dict(state["overall"]))
            for flag, values in state["flags"].items():
                for value, sub in values.items():
                    result.flags.setdefault(flag, {}).setdefault(value, MetricAccumulator()).merge(
                        MetricAccumulator.from_state_dict(sub))
            for key, value in state["answers"].items():
                result.answers[key] += value
            result.samples += state["samples"]
        result.samples.sort(key=lambda row: row["index"])
        return result


def dataset_flags(dataset, root: str | Path, split: str) -> list[dict[str, bool]]:
    """Per-item boolean flags: the synthetic benchmark's synth_meta.json, or a JSONL record's meta."""
    root = Path(root)
    meta_path = (root if root.is_dir() else root.parent) / FLAG_FILE
    by_id: dict[str, dict[str, Any]] = {}
    if meta_path.is_file():
        meta = read_json_file(meta_path)
        by_id = meta.get("samples", {}).get(split, {}) if isinstance(meta, dict) else {}
    flags = []
    for record_index, _ in getattr(dataset, "_items", [(i, -1) for i in range(len(dataset))]):
        record = dataset.records[record_index]
        values = dict(by_id.get(record.id, {}))
        values.update(record.extra.get("meta", {}) if isinstance(record.extra, dict) else {})
        flags.append({k: v for k, v in values.items() if isinstance(v, bool) and k != "empty"})
    return flags


def dataset_fingerprint(dataset, root: str | Path) -> str:
    """sha256 of the split's file list (paths relative to the dataset root, with sizes)."""
    root = Path(root)
    base = root if root.is_dir() else root.parent
    digest = hashlib.sha256()
    for record in sorted(dataset.records, key=lambda r: r.id):
        for path in (record.image_path, record.mask_source):
            if isinstance(path, (str, Path)) and Path(path).is_file():
                path = Path(path)
                try:
                    name = str(path.relative_to(base))
                except ValueError:
                    name = str(path)
                # surrogateescape: a file name that is not UTF-8 enters the digest as its own bytes
                digest.update(f"{record.id}\t{name}\t{path.stat().st_size}\n".encode("utf-8", "surrogateescape"))
        digest.update(f"{record.id}\t{record.questions!r}\t{record.answers!r}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


# -- predictors -----------------------------------------------------------------------------------
Predictor = Callable[[dict[str, Any]], tuple[np.ndarray, list[str] | None]]


def model_predictor(model, processor, answers: bool, question: str | None = None, dtype=None,
                    num_beams: int = 1, share_features: bool = False) -> Predictor:
    """Batch (pixel_values from processor.sample_transform()) -> (logits [B,S,S] float32 numpy, answers or
    None): processor.prompt -> model.segment -> processor.decode_answer (the cleaning predict and serve use).

    The protocol scores at the padded model input, so the logits are not restored to the original size here.
    share_features (the all-questions mode): rows run one at a time, and consecutive rows with the same
    pixels (the questions of one image) reuse its features (model.encode_image once per image); each
    row's result equals a batch-size-1 model.segment.
    """
    import torch

    device = next(model.parameters()).device
    last: dict[str, Any] = {}  # the previous image's pixel digest and features

    def features_for(pixels):
        digest = hashlib.sha256(pixels.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        if last.get("digest") != digest:
            last.clear()
            last["features"] = model.encode_image(pixels)
            last["digest"] = digest
        return last["features"]

    def predict(batch: dict[str, Any]) -> tuple[np.ndarray, list[str] | None]:
        questions = [question] * len(batch["question"]) if question else batch["question"]
        pixels = batch["pixel_values"].to(device)
        if dtype is not None:
            pixels = pixels.to(dtype)
        with torch.inference_mode():
            if share_features:
                outs = [model.segment_features(
                    features_for(pixels[row:row + 1]),
                    processor.prompt(questions[row:row + 1], tasks=batch["task"][row:row + 1],
                                     for_generation=True).to(device),
                    answer=answers, stop_ids=processor.stop_ids, num_beams=num_beams)
                    for row in range(len(questions))]
                logits = torch.cat([o.logits for o in outs])
                answer_ids = [ids for o in outs for ids in (o.answer_ids or [])]
            else:
                prompt = processor.prompt(questions, tasks=batch["task"], for_generation=True).to(device)
                out = model.segment(pixels, prompt, answer=answers, stop_ids=processor.stop_ids,
                                    num_beams=num_beams)
                logits, answer_ids = out.logits, out.answer_ids
        texts = [processor.decode_answer(ids) for ids in answer_ids] if answers else None
        return logits.float().cpu().numpy(), texts

    return predict


def constant_predictor(kind: str) -> Predictor:
    """Baselines: "empty" predicts nothing; "everything" predicts the whole image (not its padding)."""
    if kind not in ("empty", "everything"):
        raise GeoreasonError(f"constant predictor: expected 'empty' or 'everything', got {kind!r}")

    def predict(batch: dict[str, Any]) -> tuple[np.ndarray, None]:
        size = batch["pixel_values"].shape[-1]
        logits = np.full((len(batch["id"]), size, size), -1.0, dtype=np.float32)
        if kind == "everything":
            for row, g in enumerate(batch["geometry"]):
                logits[row, g.top:g.top + g.resized_height, g.left:g.left + g.resized_width] = 1.0
        return logits, None

    return predict


def _fingerprint(model_dir) -> dict[str, str | None]:
    from georeason.model.weights import model_fingerprint

    digests = model_fingerprint(model_dir) if model_dir is not None else {}
    return {"fingerprint": digests.get("model_sha256"), "config_sha256": digests.get("config_sha256")}


def _state():
    """accelerate's process state; on a machine without a GPU, multi-process CPU (gloo) when launched so."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


# -- the evaluation ---------------------------------------------------------------------------------
class _ErrorsAsData:
    """`dataset` whose read errors (GeoreasonError) are returned as samples {"error": message}: a DataLoader
    worker would wrap a raised one in its own traceback; the evaluation loop raises it whole."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        try:
            return self.dataset[index]
        except GeoreasonError as error:
            return {"error": str(error)}


def _collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    failed = [s["error"] for s in samples if "error" in s]
    if failed:
        return {"error": failed[0]}
    batch = {key: [s[key] for s in samples] for key in samples[0] if key not in ("pixel_values", "target")}
    batch["pixel_values"] = torch.stack([s["pixel_values"] for s in samples])
    batch["target"] = torch.stack([s["target"] for s in samples])
    return batch


def open_eval_dataset(data: str | Path, split: str, image_size: int, all_questions: bool = False,
                      question_index: int = 0, transform=None):
    """The split as an eval dataset whose samples carry the model input (`transform`: the model's
    processor.sample_transform(); default the released preprocessing at `image_size`) -> (dataset, layout)."""
    from georeason.data import available_splits, detect_layout, open_dataset
    from georeason.data.transforms import SampleTransform

    if not Path(data).exists():
        raise GeoreasonError(f"--data {data}: no such dataset folder or file")
    layout = detect_layout(data)
    splits = available_splits(data, layout)
    if split not in splits:
        raise GeoreasonError(f"--split {split!r}: not in dataset {data} (available splits: {', '.join(splits)})")
    return open_dataset(data, split, layout=layout, mode="eval", transforms=transform or SampleTransform(image_size),
                        all_questions=all_questions, question_index=question_index), layout


def run_evaluation(dataset, predictor: Predictor, flags: list[dict[str, bool]], batch_size: int = 1,
                   at_original_size: bool = False, answers: bool = False, save_masks: Path | None = None,
                   save_overlays: Path | None = None, rank: int = 0, world_size: int = 1,
                   num_workers: int = 0, progress: bool = False, threshold: float = 0.5,
                   limit: int | None = None) -> EvalState:
    """Score this rank's share (items rank, rank + world, ...: every item exactly once overall).

    `threshold` is on the probability; 0.5 (logit > 0) is the released protocol.
    """
    import math

    import torch

    from georeason.data.transforms import restore_mask_to_original
    from georeason.metrics import MetricAccumulator

    count = len(dataset) if limit is None else min(limit, len(dataset))  # limit: the first items only
    indices = list(range(rank, count, world_size))
    share = _ErrorsAsData(torch.utils.data.Subset(dataset, indices))
    loader = torch.utils.data.DataLoader(share, batch_size=batch_size, collate_fn=_collate, num_workers=num_workers)
    state = EvalState(MetricAccumulator())
    names: list[str] = []
    replaceable: set[Path] = set()
    if save_masks is not None or save_overlays is not None:
        names = plan_output_names(dataset, count)
        replaceable = existing_outputs(names, save_masks, save_overlays)
    if progress:
        from tqdm import tqdm

        loader = tqdm(loader, desc="eval", total=len(loader), dynamic_ncols=True)
    if not 0 < threshold < 1:
        raise GeoreasonError(f"--threshold: expected a probability strictly between 0 and 1, got {threshold}")
    cut = math.log(threshold / (1 - threshold))  # 0.0 for 0.5
    position = 0
    for batch in loader:
        if "error" in batch:
            raise GeoreasonError(batch["error"])
        logits, texts = predictor(batch)
        for row in range(len(batch["id"])):
            index = indices[position]
            position += 1
            if at_original_size:
                pred = restore_mask_to_original(logits[row], batch["geometry"][row], cut)
                gt = np.asarray(batch["mask"][row], dtype=bool)
            else:
                pred = logits[row] > cut
                gt = batch["target"][row].numpy() > 0.5
            category = batch["category"][row]
            iou = state.overall.update(pred, gt, category)
            for name, value in flags[index].items():
                sub = state.flags.setdefault(name, {}).setdefault(str(value).lower(), MetricAccumulator())
                sub.update(pred, gt)
            row_info = {"index": index, "id": batch["id"][row], "iou": iou, "category": category}
            if answers:
                references = batch["answers"][row] or ([_empty_answer()] if batch["task"][row] == "reasoning" else [])
                if texts is None or not references:
                    state.answers["skipped"] += 1
                else:
                    exact, f1 = answer_scores(texts[row], references)
                    state.answers["n"] += 1
                    state.answers["exact"] += exact
                    state.answers["f1"] += f1
                    row_info["answer"] = texts[row]
            state.samples.append(row_info)
            if save_masks is not None or save_overlays is not None:
                _write_outputs(batch, row, logits[row], save_masks, save_overlays, texts, cut, names[index],
                               replaceable)
    return state


def _empty_answer() -> str:
    from georeason.config import EMPTY_TARGET_ANSWER

    return EMPTY_TARGET_ANSWER


def _safe_name(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", sample_id)


def plan_output_names(dataset, count: int) -> list[str]:
    """The file name (without .png) of each of the first `count` items' mask and overlay, planned once for
    the whole run and unique (ids "a/b" and "a_b" would both be "a_b"; the second becomes "a_b-2")."""
    ids = [dataset.sample_id(i) if hasattr(dataset, "sample_id") else f"item{i:06d}" for i in range(count)]
    return unique_names([_safe_name(str(sample_id)) for sample_id in ids])


def existing_outputs(names: list[str], save_masks: Path | None, save_overlays: Path | None) -> set[Path]:
    """The planned mask and overlay files that exist before the run: the only ones it may replace."""
    folders = [Path(folder) for folder in (save_masks, save_overlays) if folder is not None]
    return {folder / f"{name}.png" for folder in folders for name in names if (folder / f"{name}.png").exists()}


def _write_outputs(batch, row, logits, save_masks, save_overlays, texts, cut: float, name: str,
                   replaceable: set[Path]) -> None:
    """The item's mask PNG and overlay, atomically; a file is replaced only if it existed before the run."""
    from georeason.data.transforms import restore_mask_to_original
    from georeason.geo import write_mask_png

    mask = restore_mask_to_original(logits, batch["geometry"][row], cut)
    if save_masks is not None:
        path = Path(save_masks) / f"{name}.png"
        write_mask_png(path, mask, overwrite=path in replaceable)
    if save_overlays is not None:
        from georeason.render import overlay_png

        path = Path(save_overlays) / f"{name}.png"
        caption = [f"Q: {batch['question'][row]}"] + ([f"A: {texts[row]}"] if texts else [])
        overlay_png(path, batch["image"][row], mask, caption, overwrite=path in replaceable)


def gather_states(state: EvalState) -> EvalState:
    """Merge every process's counts (exact: integer sums, float sums of IoU)."""
    partial = _state()
    if partial.num_processes == 1:
        return EvalState.merged([state.state_dict()])
    from accelerate.utils import gather_object

    return EvalState.merged(gather_object([state.state_dict()]))


def build_report(state: EvalState, meta: dict[str, Any]) -> dict[str, Any]:
    overall = state.overall.compute()
    categories = overall.pop("categories", {})
    report = dict(meta)
    report["metrics"] = overall
    report["empty_target_accuracy"] = overall["empty_accuracy"]
    report["categories"] = categories
    report["flags"] = {name: {value: acc.compute() for value, acc in sorted(values.items())}
                       for name, values in sorted(state.flags.items())}
    if state.answers["n"] or state.answers["skipped"]:
        n = state.answers["n"]
        report["answers"] = {"n": n, "skipped": state.answers["skipped"],
                             "exact_match": state.answers["exact"] / n if n else None,
                             "token_f1": state.answers["f1"] / n if n else None}
    report["samples"] = state.samples
    return report


def format_table(report: dict[str, Any]) -> str:
    def pct(value) -> str:
        return "   -" if value is None else f"{100 * value:6.2f}"

    keys = ["gIoU", "cIoU", "P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9"]
    lines = [f"{'subset':<34} {'n':>5} " + " ".join(f"{k:>6}" for k in keys)]

    def row(name: str, metrics: dict[str, Any]) -> None:
        lines.append(f"{name[:34]:<34} {metrics['n']:>5} " + " ".join(pct(metrics.get(k)) for k in keys))

    row("all", report["metrics"])
    for flag, values in report["flags"].items():
        for value, metrics in values.items():
            row(f"{flag}={value}", metrics)
    for category, metrics in report["categories"].items():
        row(f"category: {category}", metrics)
    m = report["metrics"]
    if m["empty_targets"]:
        lines.append(f"empty targets: {m['true_empty']}/{m['empty_targets']} predicted empty "
                     f"(accuracy {pct(m['empty_accuracy']).strip()}%)")
    if "answers" in report:
        a = report["answers"]
        lines.append(f"answers: n={a['n']} exact match {pct(a['exact_match']).strip()}% "
                     f"token F1 {pct(a['token_f1']).strip()}%" + (f" ({a['skipped']} skipped)" if a["skipped"] else ""))
    return "\n".join(lines)


def trained_question(model_dir: str | Path) -> str | None:
    """The constant question a text-blind model was trained with (from its train_recipe.json), else None."""
    path = Path(model_dir) / TRAIN_RECIPE_NAME
    if not path.is_file():
        return None
    recipe = read_json_file(path)
    if not isinstance(recipe, dict):
        raise GeoreasonError(f"{path}: expected a JSON object (the training recipe)")
    return recipe.get("blind_question") if recipe.get("text_blind") else None


def evaluate(model_dir: str | Path | None, data: str | Path, split: str = "val", batch_size: int = 1,
             all_questions: bool = False, answers: bool = False, at_original_size: bool = False,
             save_masks: Path | None = None, save_overlays: Path | None = None, device: str = "cpu",
             dtype=None, baseline: str | None = None, image_size: int | None = None, question_index: int = 0,
             num_workers: int = 0, progress: bool = False, threshold: float = 0.5,
             predictor: Predictor | None = None, limit: int | None = None, num_beams: int = 1,
             revision: str | None = None) -> dict[str, Any]:
    """Evaluate a model folder or hub id (at `revision`), or a constant `baseline` ("empty"/"everything",
    at `image_size`); -> report.

    Runs this process's share and merges all processes' counts; every process gets the full report.
    """
    started = time.perf_counter()
    partial = _state()
    question, processor = None, None
    if baseline is None:
        from georeason.model import SegEarthModel
        from georeason.model.hub import resolve_model
        from georeason.processor import SegEarthProcessor

        model_dir = resolve_model(model_dir, revision) if model_dir is not None else None
        if model_dir is None or not Path(model_dir).is_dir():
            raise GeoreasonError(f"--model {model_dir}: not a model folder (expected config.json and "
                                 "model.safetensors, as written by georeason train or init)")
        model = SegEarthModel.from_pretrained(model_dir, device=device, dtype=dtype)
        processor = SegEarthProcessor.from_pretrained(model_dir, config=model.config)
        image_size = model.config.image_size
        question = trained_question(model_dir)
    elif image_size is None:
        raise GeoreasonError("a constant baseline needs image_size")
    dataset, layout = open_eval_dataset(data, split, image_size, all_questions, question_index,
                                        None if processor is None else processor.sample_transform())
    for folder in (save_masks, save_overlays):
        if folder is not None and partial.is_main_process:
            try:
                Path(folder).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise GeoreasonError(f"{folder}: cannot create the output folder ({error.strerror})") from None
    partial.wait_for_everyone()
    if predictor is None:
        predictor = constant_predictor(baseline) if baseline else model_predictor(model, processor, answers, question,
                                                                                   dtype, num_beams, all_questions)
    flags = dataset_flags(dataset, data, split)
    state = run_evaluation(dataset, predictor, flags, batch_size, at_original_size, answers and baseline is None,
                           save_masks, save_overlays, partial.process_index, partial.num_processes, num_workers,
                           progress and partial.is_main_process, threshold, limit)
    state = gather_states(state)
    meta = {
        "model": {"path": str(model_dir) if model_dir else None, "baseline": baseline,
                  # The weights' SHA-256, as the predict summary's model.model_sha256; config.json's beside it.
                  **_fingerprint(model_dir if baseline is None else None),
                  "constant_question": question, "answer_num_beams": num_beams if answers else None},
        "data": {"path": str(data), "layout": layout, "split": split,
                 "items": len(dataset) if limit is None else min(limit, len(dataset)),
                 "fingerprint": dataset_fingerprint(dataset, data), "all_questions": all_questions,
                 "question_index": question_index},
        "protocol": {"questions": "every question of each image (image features shared between them)"
                     if all_questions else f"question {question_index} of each image"
                     + (" (the released protocol)" if question_index == 0 else ""),
                     "resolution": "original" if at_original_size else f"padded {image_size}x{image_size}",
                     "threshold": threshold,
                     "iou": "I/(U+1e-5), 1 when U=0", "ciou": "sum I/(sum U+1e-10)", "precision": "IoU > t"},
        "processes": partial.num_processes,
        "elapsed_s": time.perf_counter() - started,
    }
    return build_report(state, meta)


# -- command line ---------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="model folder (save_pretrained / georeason train output) or "
                        "hub id, e.g. earth-insights/SegEarth-R1-EarthReason")
    parser.add_argument("--revision", help="with a hub id: branch, tag or commit hash (default main)")
    parser.add_argument("--data", required=True, help="dataset folder (EarthReason, RRSIS-D, RefSegRS) or JSONL")
    parser.add_argument("--split", default="val", help="split to score (default val)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (default 1)")
    parser.add_argument("--all-questions", action="store_true", help="score every question of each image "
                        "(default: question 0 only, comparable with the released numbers)")
    parser.add_argument("--question-index", type=int, default=0, help="which question to score (default 0)")
    parser.add_argument("--answers", action="store_true", help="also generate text answers; report exact "
                        "match and token F1 against the reference answers")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N",
                        help="with --answers: beam search over N beams (default 1: greedy)")
    parser.add_argument("--save-masks", type=Path, metavar="DIR", help="write predicted masks (PNG, original size)")
    parser.add_argument("--save-overlays", type=Path, metavar="DIR", help="write overlay PNGs")
    parser.add_argument("--report", type=Path, metavar="FILE", help="write the JSON report here")
    parser.add_argument("--at-original-size", action="store_true",
                        help="score at each image's original size instead of the padded model input")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="probability threshold of the predicted mask (default 0.5 = logit > 0, as released)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--bf16", action="store_true", help="run the model in bfloat16")
    parser.add_argument("--num-workers", type=int, default=0, help="data loading workers (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing report or output folder")


def check_outputs(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise GeoreasonError(f"--batch-size: expected a positive integer, got {args.batch_size}")
    if args.num_beams < 1:
        raise GeoreasonError(f"--num-beams: expected a positive integer, got {args.num_beams}")
    for option, folder in (("--save-masks", args.save_masks), ("--save-overlays", args.save_overlays)):
        if folder is not None and folder.exists() and any(folder.iterdir()) and not args.overwrite:
            raise GeoreasonError(f"{option} {folder}: the folder exists and is not empty; pass --overwrite "
                                 "or choose another folder")
    if args.report is not None and args.report.exists() and not args.overwrite:
        raise GeoreasonError(f"--report {args.report}: the file exists; pass --overwrite or choose another file")
    if args.report is not None and args.report.is_dir():
        raise GeoreasonError(f"--report {args.report}: is a folder; give the path of the JSON file to write")
    for option, folder in (("--save-masks", args.save_masks), ("--save-overlays", args.save_overlays)):
        if folder is not None and folder.exists() and not folder.is_dir():
            raise GeoreasonError(f"{option} {folder}: exists and is not a folder")
    if args.save_masks is not None and args.save_overlays is not None \
            and args.save_masks.absolute() == args.save_overlays.absolute():
        raise GeoreasonError("--save-masks and --save-overlays: give two different folders (masks and overlays "
                             "of an item have the same file name)")


def run(args: argparse.Namespace) -> int:
    import torch

    check_outputs(args)
    report_existed = args.report is not None and args.report.exists()  # --overwrite replaces only this file
    try:
        if args.device.startswith("cuda") and _state().num_processes > 1:
            args.device = str(_state().device)
        report = evaluate(args.model, args.data, args.split, args.batch_size, args.all_questions, args.answers,
                          args.at_original_size, args.save_masks, args.save_overlays, args.device,
                          torch.bfloat16 if args.bf16 else None, question_index=args.question_index,
                          num_workers=args.num_workers, progress=sys.stderr.isatty(), threshold=args.threshold,
                          num_beams=args.num_beams, revision=args.revision)
        if _state().is_main_process:
            print(format_table(report))
            print(f"{report['data']['items']} items in {report['elapsed_s']:.1f} s")
            if args.report is not None:
                from georeason.geo.atomic import atomic_output

                try:
                    args.report.parent.mkdir(parents=True, exist_ok=True)
                except OSError as error:
                    raise GeoreasonError(f"--report {args.report}: cannot create its folder ({error.strerror})") \
                        from None
                with atomic_output(args.report, overwrite=report_existed) as temporary:
                    temporary.write_text(json.dumps(printable_tree(report), indent=1) + "\n", encoding="utf-8")
                print(f"report: {args.report}")
        return 0
    finally:
        # Under torchrun, exiting with gloo's threads still running can abort the process (SIGABRT,
        # "terminate called without an active exception") after the work is done.
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
