"""Deterministic data order for training: one global sample stream, sharded by rank and micro-step.

Supports the recipe of docs/released_code.md#training-recipe (global batch 16 through per-device batch x processes x
accumulation): the
stream depends only on the seed, so 1 process with accumulation 2 sees exactly what 2 processes see.
"""

from __future__ import annotations

import sys
from typing import Any, Iterator, Sequence

import numpy as np

from georeason.errors import GeoreasonError


class SampleStream:
    """Position p of an endless stream -> (dataset, index), epoch by epoch.

    One epoch is `sum(len(datasets))` positions. With one dataset it is a seeded permutation; with several,
    dataset k gets round(weight_k / total_weight * epoch_length) positions (its own permutations,
    repeated when it is short) and the epoch is shuffled jointly.
    """

    def __init__(self, lengths: Sequence[int], weights: Sequence[float], seed: int):
        self.lengths = [int(n) for n in lengths]
        self.weights = [float(w) for w in weights]
        self.seed = int(seed)
        self.epoch_length = sum(self.lengths)
        self._cache: tuple[int, np.ndarray, np.ndarray] | None = None

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(dataset number, index in that dataset) for every position of `epoch`."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1], self._cache[2]
        rng = np.random.default_rng([self.seed, epoch, 7919])
        if len(self.lengths) == 1:
            sources = np.zeros(self.epoch_length, dtype=np.int64)
            indices = rng.permutation(self.lengths[0])
        else:
            total = sum(self.weights)
            counts = [int(round(w / total * self.epoch_length)) for w in self.weights]
            counts[-1] = self.epoch_length - sum(counts[:-1])
            parts_source, parts_index = [], []
            for k, (count, length) in enumerate(zip(counts, self.lengths)):
                repeats = -(-count // length) if count > 0 else 0
                order = np.concatenate([rng.permutation(length) for _ in range(repeats)])[:count] if repeats else \
                    np.zeros(0, dtype=np.int64)
                parts_source.append(np.full(count, k, dtype=np.int64))
                parts_index.append(order)
            shuffle = rng.permutation(self.epoch_length)
            sources = np.concatenate(parts_source)[shuffle]
            indices = np.concatenate(parts_index)[shuffle]
        self._cache = (epoch, sources, indices)
        return sources, indices

    def locate(self, position: int) -> tuple[int, int, int]:
        """(epoch, dataset number, index) of a stream position."""
        epoch, offset = divmod(int(position), self.epoch_length)
        sources, indices = self.epoch_order(epoch)
        return epoch, int(sources[offset]), int(indices[offset])


def rank_positions(start_step: int, max_steps: int, global_batch: int, per_device: int, world_size: int,
                   rank: int) -> Iterator[int]:
    """Stream positions read by `rank`, micro-batch after micro-batch, from `start_step` on.

    Optimizer step s covers positions [s*G, (s+1)*G); micro-step k of rank r takes the slice
    (k*world + r)*per_device of it, so a micro-batch holds the same samples whatever the world size.
    """
    accumulation = global_batch // (per_device * world_size)
    for step in range(start_step, max_steps):
        for micro in range(accumulation):
            first = step * global_batch + (micro * world_size + rank) * per_device
            yield from range(first, first + per_device)


class StreamDataset:
    """Map-style dataset over stream positions (torch DataLoader friendly, picklable for workers).

    The question/answer of a training sample is drawn from a generator seeded by the stream position (the
    dataset's own per-visit draw is reset through set_epoch), so it does not depend on worker or rank.

    A sample whose files cannot be read (GeoreasonError from the dataset) is replaced by the next readable
    one of the same dataset (index + 1, + 2, ... up to STAND_IN_TRIES), so batches keep their size and the
    replacement is the same in every process and after a resume; the returned sample lists what it replaced
    under "unreadable" (dataset number, index, id, error), for UnreadableTally. When none of those can be
    read, the sample is {"error": message, ...}: returned, not raised, so that the message reaches the
    training loop whole from a DataLoader worker (which would wrap a raised error in its traceback).
    """

    STAND_IN_TRIES = 16

    def __init__(self, datasets: Sequence[Any], stream: SampleStream, text_blind_question: str | None = None):
        self.datasets = list(datasets)
        self.stream = stream
        self.text_blind_question = text_blind_question

    def __len__(self) -> int:  # positions are unbounded; the sampler decides which are read
        return 2**62

    def __getitem__(self, position: int) -> dict[str, Any]:
        epoch, source, index = self.stream.locate(position)
        dataset = self.datasets[source]
        dataset.set_epoch(int(position))  # seeds the question choice by position (and clears visit counts)
        sample, unreadable = self._read(dataset, source, index)
        if sample is None:
            others = f"; the {len(unreadable) - 1} samples after it in the same dataset are unreadable too" \
                if len(unreadable) > 1 else ""
            sample = {"error": f"{unreadable[0]['error']}{others} (check the data: georeason data check)"}
        elif self.text_blind_question is not None:
            sample["question"] = self.text_blind_question
        sample["position"] = int(position)
        sample["epoch"] = epoch
        sample["unreadable"] = unreadable
        return sample

    def _read(self, dataset: Any, source: int, index: int) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """(the first readable sample from `index` on, or None, and the unreadable ones before it)."""
        unreadable: list[dict[str, Any]] = []
        for step in range(min(self.STAND_IN_TRIES, len(dataset))):
            candidate = (index + step) % len(dataset)
            try:
                return dataset[candidate], unreadable
            except GeoreasonError as error:
                unreadable.append(_entry(dataset, source, candidate, error))
        return None, unreadable


def _entry(dataset: Any, source: int, index: int, error: Exception) -> dict[str, Any]:
    sample_id = dataset.sample_id(index) if hasattr(dataset, "sample_id") else f"item {index}"
    return {"dataset": source, "index": index, "id": sample_id, "error": str(error)}


class UnreadableTally:
    """The distinct unreadable training samples met by a run (replaced by stand-ins, see StreamDataset),
    each said once on stderr; `over_limit` once more than `max_fraction` of one epoch's
    `epoch_length` samples are unreadable. Kept in checkpoints: on --resume, the earlier ones that read
    now count as mended, the others still count.
    """

    def __init__(self, max_fraction: float, epoch_length: int):
        self.limit = max_fraction * epoch_length
        self.epoch_length = epoch_length
        self.samples: dict[tuple[int, int], dict[str, Any]] = {}  # unreadable when last tried
        self.mended: dict[tuple[int, int], dict[str, Any]] = {}  # unreadable before a resume, readable since

    def add(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            key = (entry["dataset"], entry["index"])
            if key not in self.samples:
                self.samples[key] = entry
                self.mended.pop(key, None)
                print(f"warning: training sample {entry['id']} skipped, a readable neighbour stands in: "
                      f"{entry['error']}", file=sys.stderr)

    def restore(self, entries: list[dict[str, Any]], datasets: Sequence[Any]) -> None:
        """Take over a checkpoint's list (state()), reading each sample again to see whether it was mended."""
        for entry in entries:
            key = (entry["dataset"], entry["index"])
            if entry.get("mended"):
                self.mended[key] = {k: v for k, v in entry.items() if k != "mended"}
                continue
            try:
                datasets[key[0]][key[1]]
                self.mended[key] = entry
            except GeoreasonError as error:
                self.samples[key] = _entry(datasets[key[0]], key[0], key[1], error)

    def state(self) -> list[dict[str, Any]]:
        return list(self.samples.values()) + [{**entry, "mended": True} for entry in self.mended.values()]

    @property
    def over_limit(self) -> bool:
        return len(self.samples) > self.limit

    def error(self, lead: str) -> GeoreasonError:
        """The stop message: `lead`, then the count against the limit and the first few samples."""
        shown = "; ".join(f"{e['id']}: {e['error']}" for e in list(self.samples.values())[:5])
        more = f" (and {len(self.samples) - 5} more)" if len(self.samples) > 5 else ""
        count = len(self.samples)
        fraction = self.limit / self.epoch_length
        return GeoreasonError(
            f"{lead}: {count} unreadable training sample{'s' if count != 1 else ''}, more than "
            f"max_unreadable_fraction={fraction:g} of the {self.epoch_length} in an epoch allows: {shown}{more}. "
            "Mend or remove them (georeason data check lists them all), then train again with --resume")

    def summary(self) -> list[dict[str, Any]]:
        """What train_summary.json lists: id and error of each, "mended": true for those read again since."""
        return [{"id": e["id"], "error": e["error"], **({"mended": True} if e.get("mended") else {})}
                for e in self.state()]


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack model tensors; keep the text and identity fields as lists. A batch holding a sample that could
    not be read (StreamDataset) is {"error": its message}."""
    import torch

    failed = [s["error"] for s in samples if "error" in s]
    if failed:
        return {"error": failed[0]}
    return {
        "pixel_values": torch.stack([s["pixel_values"] for s in samples]),
        "target": torch.stack([s["target"] for s in samples]),
        "question": [s["question"] for s in samples],
        "answer": [s["answer"] for s in samples],
        "task": [s["task"] for s in samples],
        "id": [s["id"] for s in samples],
        "position": [s["position"] for s in samples],
        "epoch": [s["epoch"] for s in samples],
        "unreadable": [entry for s in samples for entry in s.get("unreadable", [])],
    }
