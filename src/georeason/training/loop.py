"""The training loop: model + data + AdamW/cosine under accelerate, checkpoints, logs, final model.

Implements the training recipe of docs/released_code.md#training-recipe (paper Table 8): AdamW, warmup then cosine
decay, global batch
through per-device batch x processes x accumulation, gradient checkpointing, frozen encoder in eval mode.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from georeason.errors import GeoreasonError
from georeason.training import checkpoint as ckpt
from georeason.training import outputs
from georeason.training.recipe import TrainRecipe, apply_model_overrides
from georeason.training.sampling import (SampleStream, StreamDataset, UnreadableTally, collate_samples,
                                         rank_positions)


def lr_factor(step: int, warmup_steps: int, max_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warmup, then cosine to 0.

    Same shape as transformers' get_cosine_schedule_with_warmup, used by the released scripts.
    """
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    progress = float(step - warmup_steps) / float(max(1, max_steps - warmup_steps))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def build_model_for_recipe(recipe: TrainRecipe):
    """(model, tokenizer) from a preset name (+ model_config overrides) or a model folder."""
    from georeason.config import PRESETS, preset

    model_dir = Path(recipe.model)
    if recipe.model not in PRESETS and model_dir.is_dir():
        if recipe.model_config:
            raise GeoreasonError("recipe model_config: overrides only apply to a preset, not to a model folder")
        from transformers import AutoTokenizer

        from georeason.model.segearth import SegEarthModel

        model = SegEarthModel.from_pretrained(model_dir)
        return model, AutoTokenizer.from_pretrained(str(model_dir))
    if recipe.model not in PRESETS:
        raise GeoreasonError(f"recipe model: {recipe.model!r} is neither a preset ({', '.join(PRESETS)}) "
                             "nor a model folder")
    from georeason.model.factory import build_model

    config = apply_model_overrides(preset(recipe.model), recipe.model_config)
    return build_model(config, seed=recipe.seed, llm_path=recipe.llm_path or None)


def enable_feature_cache(model, recipe: TrainRecipe):
    """Compute a frozen pretrained backbone's features once per training image (up to feature_cache_mb).

    Exact: training applies no augmentation, so an image's normalised pixels, and hence its features
    under the frozen eval-mode backbone, are the same every epoch; the cache is keyed by those pixels.
    Returns the cache, or None when the encoder has none (Swin) or is trained, or the budget is 0.
    """
    encoder = model.encoder
    if recipe.feature_cache_mb <= 0 or not hasattr(encoder, "enable_feature_cache") or not encoder.config.frozen:
        return None
    return encoder.enable_feature_cache(int(recipe.feature_cache_mb * 2**20))


def enable_description_cache(model, recipe: TrainRecipe):
    """Compute p once per (training image, prompt) when nothing before it learns (up to feature_cache_mb).

    With the LLM, its connector and the image backbone frozen (model.description_is_frozen) and no
    augmentation, a pair's p is the same every epoch; the LLM then runs only on pairs not seen before.
    Returns the cache, or None when p can change or the budget is 0.
    """
    if recipe.feature_cache_mb <= 0 or recipe.lora is not None or not model.description_is_frozen:
        return None
    return model.enable_description_cache(int(recipe.feature_cache_mb * 2**20))


def fill_description_statistics(model, data: StreamDataset, processor, recipe: TrainRecipe, device) -> int:
    """Fix the description standardiser's statistics (config d_projector.standardise_samples = N) from
    stream positions [0, N) before step 0; returns the number of rows computed (0 when there is nothing to do).

    Every process computes the same N rows, so the statistics are the same for any number of processes,
    batch size or accumulation, and equal to those of a single process reading the stream in order. With
    the description cache on, these rows' p are kept and the first steps reuse them.
    """
    norm = model.d_projector.description_norm
    if norm is None or not norm.rows_missing:
        return 0
    start = int(norm.count)  # a model folder trained before, with its statistics part-filled
    positions = list(range(start, start + norm.rows_missing))
    for first in range(0, len(positions), recipe.per_device_batch_size):
        batch = collate_samples([data[p] for p in positions[first : first + recipe.per_device_batch_size]])
        if "error" in batch:
            raise GeoreasonError(batch["error"])
        prompt = processor.prompt(batch["question"], batch["answer"], batch["task"],
                                  for_generation=model.config.llm.frozen).to(device)
        norm.observe(model.description_embedding(batch["pixel_values"].to(device), prompt))
    return len(positions)


def apply_lora(model, lora) -> Any:
    """LoRA adapters on the LLM's attention projections; base LLM weights frozen except embeddings/head."""
    try:
        from peft import LoraConfig
        from peft.tuners.lora import LoraModel
    except ImportError:
        raise GeoreasonError("recipe lora: needs peft (pip install 'georeason[lora]')") from None
    causal_lm = model.llm.causal_lm
    for parameter in causal_lm.parameters():
        parameter.requires_grad_(False)
    config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        target_modules=list(lora.target_modules))
    try:
        wrapper = LoraModel(causal_lm, config, "default")
    except ValueError as error:
        raise GeoreasonError(f"recipe lora.target_modules: {error}") from None
    causal_lm.get_input_embeddings().weight.requires_grad_(True)
    causal_lm.get_output_embeddings().weight.requires_grad_(True)
    return wrapper


def open_training_data(recipe: TrainRecipe, transform):
    """The recipe's datasets as one weighted stream; `transform` is the model's processor.sample_transform()."""
    from georeason.data import open_dataset

    datasets = []
    for source in recipe.data:
        if not Path(source.path).exists():
            raise GeoreasonError(f"recipe data: {source.path}: no such dataset")
        datasets.append(open_dataset(source.path, recipe.split, mode="train", transforms=transform, seed=recipe.seed))
    stream = SampleStream([len(d) for d in datasets], [s.weight for s in recipe.data], recipe.seed)
    blind = recipe.blind_question if recipe.text_blind else None
    return StreamDataset(datasets, stream, blind)


class Logger:
    """metrics.jsonl always; TensorBoard when installed (said once when it is not)."""

    def __init__(self, output_dir: Path, enabled: bool, start_step: int):
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.path = output_dir / outputs.METRICS_FILE
        if self.path.exists():  # a resume: drop lines past the resumed step (they will be written again)
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
            steps = [(line, _logged_step(line)) for line in lines]
            outputs.write_lines(self.path, [line for line, step in steps if step is not None and step <= start_step])
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("note: tensorboard is not installed; logging to metrics.jsonl only "
                  "(pip install 'georeason[tensorboard]')", file=sys.stderr)
            return
        # purge_step: TensorBoard hides the earlier run's events past the resumed step.
        with outputs.writing(output_dir / outputs.TENSORBOARD_DIR):
            self.writer = SummaryWriter(str(output_dir / outputs.TENSORBOARD_DIR),
                                        purge_step=start_step + 1 if start_step else None)

    def log(self, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with outputs.writing(self.path), open(self.path, "a", encoding="utf-8") as stream:
            stream.write(json.dumps(values) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(key, value, values["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _logged_step(line: str) -> int | None:
    """The step of a metrics.jsonl line; None for a line cut short by a killed run (or not ours)."""
    try:
        values = json.loads(line)
    except ValueError:
        return None
    step = values.get("step") if isinstance(values, dict) else None
    return step if isinstance(step, int) else None


def resolve_mixed_precision(choice: str) -> str:
    """The accelerate precision for a recipe's `mixed_precision`; `auto` picks bf16 where it is native.

    bf16 autocast is faster on GPUs with bf16 and on CPUs whose oneDNN computes bf16 natively (AVX-512
    BF16 or AMX: 1.1-1.3x per demo training step here, bench/bench_train_step.py); on other CPUs it is
    emulated and slower than fp32, so `auto` stays at fp32 ("no") there.
    """
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def choose_resume_point(output_dir: Path, recipe_dict: dict, fingerprint: str, model_config: dict, rank: int,
                        is_main: bool) -> ckpt.ResumePoint | None:
    """The newest intact checkpoint in output_dir, read whole; None when there is none yet.

    A damaged checkpoint (a file truncated or overwritten after it was written) is named and skipped
    for the next older one; with none intact, GeoreasonError names every damaged file. A checkpoint
    of another recipe or model is refused (check_compatible), never skipped.
    """
    root = ckpt.checkpoint_root(output_dir)
    damaged: list[str] = []
    for step, folder in reversed(ckpt.list_checkpoints(output_dir)):
        try:
            point = ckpt.read_checkpoint(folder, step, rank)
        except ckpt.DamagedCheckpoint as problem:
            damaged.append(str(problem))
            continue
        ckpt.check_compatible(folder, point.info, recipe_dict, fingerprint, model_config)
        if is_main:
            for problem in damaged:
                print(f"warning: --resume: skipping a damaged checkpoint: {problem}", file=sys.stderr)
            fallback = " instead, the newest intact checkpoint" if damaged else ""
            print(f"resuming from {folder} (step {step}){fallback}", file=sys.stderr)
        return point
    if damaged:
        raise GeoreasonError(f"--resume: no intact checkpoint in {root}: " + "; ".join(damaged) +
                             ". Move the damaged step folders away to start from step 0, or start afresh "
                             "with --overwrite")
    if is_main:
        print(f"--resume: no checkpoint in {root} yet; starting from step 0", file=sys.stderr)
    return None


def write_final(model, tokenizer, recipe_dict: dict, final: Path) -> None:
    """save_pretrained into a hidden folder next to final/, then rename it into place: final/ is
    either absent, the earlier one or complete, whenever the run is killed."""
    temporary = outputs.temporary_folder(final)
    try:
        with outputs.writing(final):
            model.save_pretrained(temporary, tokenizer=tokenizer)
            # Read by georeason eval: a text-blind model is scored with the constant question it learned.
            (temporary / "train_recipe.json").write_text(json.dumps(recipe_dict, indent=1) + "\n", encoding="utf-8")
            outputs.commit_folder(temporary, final)
    except BaseException:
        with contextlib.suppress(OSError):
            outputs.remove_folder(temporary)
        raise


def train(recipe: TrainRecipe, resume: bool = False, overwrite: bool = False, progress: bool = True) -> Path:
    """Run (or resume) training; returns output_dir/final.

    Nothing is written before the output folder, the model, the data and (with `resume`) the checkpoint
    have been checked; see georeason.training.outputs for what a run writes and replaces. Raises
    GeoreasonError for bad recipes, data, checkpoints and unwritable or full output folders.
    """
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    mixed = resolve_mixed_precision(recipe.mixed_precision)
    # cpu=True without a GPU: accelerate only sets up gloo multi-process CPU training when told so.
    cpu = not torch.cuda.is_available()
    # Accelerate keeps one process-wide state and refuses a second Accelerator with another precision.
    # Runs in one process (a notebook, the demo then a bf16 run) are sequential: start each afresh,
    # keeping the process group (PartialState) of a distributed launch.
    AcceleratorState._reset_state(reset_partial_state=False)
    accumulation = recipe.gradient_accumulation(PartialState(cpu=cpu).num_processes)
    # find_unused_parameters: ablations (learned queries, no D-Projector) leave some parameters unused.
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed, gradient_accumulation_steps=accumulation,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    rank, world = accelerator.process_index, accelerator.num_processes
    is_main = accelerator.is_main_process
    out = Path(recipe.output_dir)
    replace_leftovers = outputs.check_output_dir(out, resume, overwrite)
    keeps_earlier_run = resume or outputs.holds_trained_outputs(out)

    model, tokenizer = build_model_for_recipe(recipe)
    from georeason.processor import SegEarthProcessor

    processor = SegEarthProcessor(tokenizer, model.config)
    lora_wrapper = apply_lora(model, recipe.lora) if recipe.lora is not None else None
    if recipe.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    model_config = model.config.to_dict()
    recipe_dict = recipe.to_dict()
    fingerprint = recipe.trajectory_fingerprint()
    data = open_training_data(recipe, processor.sample_transform())
    enable_feature_cache(model, recipe)
    enable_description_cache(model, recipe)

    # Resume: the newest intact checkpoint, refused if it is from a different config.
    point = choose_resume_point(out, recipe_dict, fingerprint, model_config, rank, is_main) if resume else None
    start_step = point.step if point is not None else 0
    if point is not None:
        ckpt.load_model_weights(model, point.model_state, point.folder)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=recipe.lr, betas=tuple(recipe.betas),
                                  weight_decay=recipe.weight_decay)
    warmup = recipe.warmup_steps()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup, recipe.max_steps))
    # The scheduler is stepped by hand once per optimizer step (accelerate's wrapper would step it once
    # per process); the DataLoader is ours, already sharded by rank.
    model, optimizer = accelerator.prepare(model, optimizer)
    earlier_unreadable = point.info.get("unreadable_samples", []) if point is not None else []
    if point is not None:
        optimizer.load_state_dict(point.training_state["optimizer"])
        scheduler.load_state_dict(point.training_state["scheduler"])
        if point.rng is not None:
            ckpt.set_rng_state(point.rng)
        point = None  # the checkpoint's tensors are not needed any more
        started = time.perf_counter()
    else:
        # Part of training: its time counts against max_minutes and is in train_seconds.
        started = time.perf_counter()
        fill_description_statistics(accelerator.unwrap_model(model), data, processor, recipe, accelerator.device)
        torch.manual_seed(recipe.seed + rank)

    positions = list(rank_positions(start_step, recipe.max_steps, recipe.global_batch_size,
                                    recipe.per_device_batch_size, world, rank))
    loader = torch.utils.data.DataLoader(data, batch_size=recipe.per_device_batch_size, sampler=positions,
                                         collate_fn=collate_samples, num_workers=recipe.num_workers)

    # Everything is checked: from here on the run writes.
    created = None
    if is_main:
        removed = outputs.clean_interrupted_writes(out)
        if removed:
            print(f"removed {len(removed)} temporary file(s) left by an interrupted run: "
                  + ", ".join(str(path) for path in removed), file=sys.stderr)
        if replace_leftovers:
            print(f"note: {out} holds only the {outputs.RECIPE_FILE} of an earlier start that never trained; "
                  "replacing it", file=sys.stderr)
        created = outputs.start_writing(out, replace=overwrite or replace_leftovers)
        outputs.write_json(out / outputs.RECIPE_FILE, recipe_dict)
    accelerator.wait_for_everyone()

    # A fresh run that fails before completing a step leaves nothing, so the same command can run again.
    fresh = is_main and not keeps_earlier_run
    with outputs.removed_if_untrained(out, created) if fresh else contextlib.nullcontext():
        return _run_steps(recipe, accelerator, model, optimizer, scheduler, lora_wrapper, tokenizer, processor, loader,
                          data, trainable, recipe_dict, fingerprint, model_config, mixed, accumulation, start_step,
                          overwrite, progress, started, earlier_unreadable)


def _run_steps(recipe: TrainRecipe, accelerator, model, optimizer, scheduler, lora_wrapper, tokenizer, processor,
               loader, data, trainable, recipe_dict: dict, fingerprint: str, model_config: dict, mixed: str,
               accumulation: int, start_step: int, overwrite: bool, progress: bool, started: float,
               earlier_unreadable: list[dict[str, Any]]) -> Path:
    """The optimizer steps from `start_step` with logs and checkpoints, then final/ and train_summary.json;
    max_minutes and train_seconds count from `started` (time.perf_counter); `earlier_unreadable`: the
    unreadable samples listed by the checkpoint resumed from."""
    out = Path(recipe.output_dir)
    world = accelerator.num_processes
    batches = iter(loader)
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.train()  # the frozen encoder keeps itself in eval mode
    logger = Logger(out, accelerator.is_main_process, start_step)
    bar = None
    if progress and accelerator.is_main_process:
        from tqdm import tqdm

        bar = tqdm(total=recipe.max_steps, initial=start_step, desc="train", dynamic_ncols=True)
    device = accelerator.device
    replace_checkpoints = overwrite  # the earlier run's checkpoints go once this run's first one is written

    loop_started = started
    stopped_by_time = False
    # Each process says the unreadable samples it meets (they differ between processes).
    unreadable = UnreadableTally(recipe.max_unreadable_fraction, data.stream.epoch_length)
    unreadable.restore(earlier_unreadable, data.datasets)
    if unreadable.over_limit:  # resumed without mending: refuse before training on stand-ins again
        raise unreadable.error(f"--resume: the checkpoint of step {start_step} lists unreadable training samples "
                               "that still cannot be read")
    last_checkpoint = start_step if start_step else None
    too_many_unreadable = False
    done = start_step
    for step in range(start_step, recipe.max_steps):
        step_started = time.perf_counter()
        totals: dict[str, float] = {}
        for micro in range(accumulation):
            batch = next(batches)
            if "error" in batch:  # 16 unreadable samples in a row: no stand-in
                kept = f"; --resume continues from step {last_checkpoint}" if last_checkpoint else ""
                raise GeoreasonError(f"training stopped in step {step + 1}{kept}: {batch['error']}")
            unreadable.add(batch["unreadable"])
            # A frozen LLM cannot learn from the answer, and under causal attention the answer positions
            # cannot change the description embedding: they are left out (about a quarter of its time).
            prompt = processor.prompt(batch["question"], batch["answer"], batch["task"],
                                      for_generation=unwrapped.config.llm.frozen).to(device)
            # Point sampling of the mask loss: seeded by the micro-batch's first stream position, so the
            # same samples get the same points in any world size and after a resume.
            generator = torch.Generator(device="cpu").manual_seed(recipe.seed * 1_000_003 + batch["position"][0])
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    output = model(batch["pixel_values"].to(device), prompt, target_masks=batch["target"].to(device),
                                   generator=generator)
                accelerator.backward(output.loss)
                if accelerator.sync_gradients and recipe.max_grad_norm is not None:
                    accelerator.clip_grad_norm_(trainable, recipe.max_grad_norm)
                for key in ("lm", "mask", "dice", "score"):
                    totals[key] = totals.get(key, 0.0) + float(output.losses[key].detach()) / accumulation
                totals["loss"] = totals.get("loss", 0.0) + float(output.loss.detach()) / accumulation
        if not accelerator.sync_gradients:
            raise GeoreasonError("internal: gradient accumulation out of step with the data")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        seconds = time.perf_counter() - step_started
        record = {"step": done, "lr": scheduler.get_last_lr()[0], "samples_per_s": recipe.global_batch_size / seconds,
                  "epoch": batch["epoch"][-1], **totals}
        if done % recipe.log_every == 0 or done == recipe.max_steps or done == start_step + 1:
            logger.log(record)
        if bar is not None:
            bar.set_postfix(loss=f"{totals['loss']:.3f}", lr=f"{record['lr']:.2e}",
                            img_s=f"{record['samples_per_s']:.2f}")
            bar.update(1)
        over_time = recipe.max_minutes is not None and time.perf_counter() - loop_started > 60 * recipe.max_minutes
        stops = [over_time, unreadable.over_limit]
        if world > 1:  # every process must agree to stop at the same step (unreadable samples: counted per process)
            flags = torch.tensor(stops, dtype=torch.float32, device=device)
            stops = [bool(v) for v in accelerator.reduce(flags, "max")]
        stopped_by_time, too_many_unreadable = stops
        if done % recipe.save_every == 0 or done == recipe.max_steps or stopped_by_time or too_many_unreadable:
            save_checkpoint(accelerator, model, optimizer, scheduler, recipe, recipe_dict, fingerprint,
                            model_config, done, world, data.stream.epoch_length, unreadable.state(),
                            replace_checkpoints)
            replace_checkpoints = False
            last_checkpoint = done
        if stopped_by_time or too_many_unreadable:  # the latter: mend the data, then --resume
            break
    if bar is not None:
        bar.close()
    logger.close()
    final = out / outputs.FINAL_DIR
    finished = (done == recipe.max_steps or stopped_by_time) and not too_many_unreadable
    if finished and accelerator.is_main_process:
        if lora_wrapper is not None:
            lora_wrapper.merge_and_unload()
            for parameter in unwrapped.parameters():
                parameter.requires_grad_(True)
        write_final(unwrapped, tokenizer, recipe_dict, final)
    skipped = unreadable.summary()
    if world > 1:
        from accelerate.utils import gather_object

        skipped = list({e["id"]: e for e in gather_object(skipped)}.values())
    if accelerator.is_main_process:
        summary = {"steps_done": done, "max_steps": recipe.max_steps, "stopped_by_max_minutes": stopped_by_time,
                   "stopped_by_unreadable_samples": too_many_unreadable,
                   "train_seconds": time.perf_counter() - loop_started, "processes": world,
                   "gradient_accumulation": accumulation, "mixed_precision": mixed}
        cache = getattr(unwrapped.encoder, "feature_cache", None)
        if cache is not None:
            summary["feature_cache"] = {"hits": cache.hits, "misses": cache.misses, "images": len(cache),
                                        "megabytes": round(cache.bytes / 2**20, 1)}
        norm = unwrapped.d_projector.description_norm
        if norm is not None:
            summary["description_statistics_rows"] = int(norm.count)
        cache = unwrapped.description_cache
        if cache is not None:
            summary["description_cache"] = {"hits": cache.hits, "misses": cache.misses, "pairs": len(cache),
                                            "megabytes": round(cache.bytes / 2**20, 1)}
        if skipped:
            summary["unreadable_samples"] = skipped
            if not too_many_unreadable:
                print(f"{len(skipped)} unreadable training sample(s) skipped (listed in {out / outputs.SUMMARY_FILE})",
                      file=sys.stderr)
        outputs.write_json(out / outputs.SUMMARY_FILE, summary)
        if stopped_by_time:
            print(f"stopped by max_minutes={recipe.max_minutes} after step {done} of {recipe.max_steps}",
                  file=sys.stderr)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if too_many_unreadable:
        raise unreadable.error(f"training stopped after step {done} (checkpoint written)")
    return final


def save_checkpoint(accelerator, model, optimizer, scheduler, recipe: TrainRecipe, recipe_dict: dict,
                    fingerprint: str, model_config: dict, step: int, world: int, stream_length: int,
                    unreadable: list[dict[str, Any]], replace_others: bool = False) -> None:
    """Atomic checkpoint: every rank writes its RNG state into the temporary folder, then the main
    process writes weights/optimizer/info and renames the folder into place. `unreadable`: this
    process's UnreadableTally.state(), merged over processes into checkpoint.json."""
    folder = ckpt.temporary_folder(recipe.output_dir, step)
    if accelerator.is_main_process:
        with outputs.writing(folder):
            outputs.remove_folder(folder)
            folder.mkdir(parents=True)
    accelerator.wait_for_everyone()
    ckpt.write_rank_rng(folder, accelerator.process_index)
    # get_state_dict gathers a full state dict under FSDP/DeepSpeed (a collective: every rank calls it).
    # Their sharded optimizer states are not gathered here: exact resume is for single-process and DDP runs.
    model_state = accelerator.get_state_dict(model)
    if world > 1:
        from accelerate.utils import gather_object

        unreadable = list({(e["dataset"], e["index"]): e for e in gather_object(unreadable)}.values())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        consumed = step * recipe.global_batch_size
        epoch, offset = divmod(consumed, stream_length)
        info = {"step": step, "world_size": world, "recipe": recipe_dict, "recipe_fingerprint": fingerprint,
                "model_config": model_config,
                "sampler": {"consumed_samples": consumed, "epoch": epoch, "offset_in_epoch": offset,
                            "seed": recipe.seed}, "unreadable_samples": unreadable}
        state = ckpt.unique_tensors(model_state)
        ckpt.write_checkpoint(folder, ckpt.step_folder(recipe.output_dir, step), state, optimizer.state_dict(),
                              scheduler.state_dict(), info, recipe.keep_last, replace_others)
    accelerator.wait_for_everyone()
