"""Segmentation metrics of the released evaluation: per-sample IoU, gIoU, cIoU and P@t, streamed.

Implements the evaluation protocol of docs/released_code.md#evaluation-protocol (the released `compute_metric` /
`intersectionAndUnionGPU`), plus empty-target
accounting and per-category breakdowns ("ours"). Constant memory: only sums and counts are kept.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Sequence

import numpy as np

from georeason.errors import GeoreasonError

IGNORE_INDEX = 255
IOU_EPS = 1e-5  # per-sample IoU = I / (U + 1e-5), as released
CIOU_EPS = 1e-10  # cIoU = sum I / (sum U + 1e-10), as released
DEFAULT_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def intersection_and_union(pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = IGNORE_INDEX) -> tuple[int, int]:
    """Foreground intersection and union of one sample.

    pred: any non-zero value is foreground. gt: `ignore_index` (255) marks pixels excluded from both
    I and U (the released code sets pred to the ignore value there); any other non-zero value is
    foreground. A bool gt has no ignore pixels.
    """
    intersection, pred_area, gt_area = foreground_areas(pred, gt, ignore_index)
    return intersection, pred_area + gt_area - intersection


def foreground_areas(pred: np.ndarray, gt: np.ndarray, ignore_index: int | None = IGNORE_INDEX) -> tuple[int, int, int]:
    """(intersection, predicted area, target area) in pixels, ignore pixels excluded."""
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape:
        raise GeoreasonError(f"metrics: prediction shape {pred.shape} differs from ground-truth shape {gt.shape}")
    pred_fg = pred.astype(bool)
    if gt.dtype == np.bool_ or ignore_index is None:
        gt_fg = gt.astype(bool)
    else:
        keep = gt != ignore_index
        gt_fg = (gt != 0) & keep
        pred_fg &= keep
    intersection = int(np.count_nonzero(pred_fg & gt_fg))
    return intersection, int(np.count_nonzero(pred_fg)), int(np.count_nonzero(gt_fg))


def sample_iou(intersection: int, union: int) -> float:
    """Released per-sample IoU: I / (U + 1e-5), and 1.0 when U == 0 (both masks empty)."""
    return 1.0 if union == 0 else intersection / (union + IOU_EPS)


class MetricAccumulator:
    """Streaming gIoU / cIoU / P@t with empty-target accounting and per-category sub-accumulators.

    update() one sample at a time; merge() accumulators from other processes (or rebuild them from
    state_dict(), which holds plain numbers only); compute() returns the metrics dict.
    """

    def __init__(self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, ignore_index: int | None = IGNORE_INDEX):
        self.thresholds = tuple(float(t) for t in thresholds)
        self.ignore_index = ignore_index
        self.count = 0
        self.sum_intersection = 0
        self.sum_union = 0
        self.sum_iou = 0.0
        self.hits = [0] * len(self.thresholds)
        # Empty-target accounting (gt has no foreground pixel).
        self.empty_gt = 0
        self.true_empty = 0  # gt empty, pred empty
        self.false_positive = 0  # gt empty, pred non-empty
        self.false_empty = 0  # gt non-empty, pred empty
        self.categories: dict[str, MetricAccumulator] = {}

    def update(self, pred: np.ndarray, gt: np.ndarray, category: str | None = None) -> float:
        """Add one sample and return its IoU in [0, 1] (I / (U + 1e-5); 1 when both are empty).

        pred: [H,W] any dtype, non-zero = target. gt: [H,W] of the same shape; bool, or integers where
        `ignore_index` (255) excludes a pixel and other non-zero values are target. Raises
        GeoreasonError when the shapes differ.
        """
        intersection, pred_area, gt_area = foreground_areas(pred, gt, self.ignore_index)
        union = pred_area + gt_area - intersection
        iou = self._add(intersection, union, pred_area == 0, gt_area == 0)
        if category is not None:
            sub = self.categories.setdefault(str(category), MetricAccumulator(self.thresholds, self.ignore_index))
            sub._add(intersection, union, pred_area == 0, gt_area == 0)
        return iou

    def _add(self, intersection: int, union: int, pred_empty: bool, gt_empty: bool) -> float:
        iou = sample_iou(intersection, union)
        self.count += 1
        self.sum_intersection += intersection
        self.sum_union += union
        self.sum_iou += iou
        for k, threshold in enumerate(self.thresholds):
            self.hits[k] += int(iou > threshold)  # strict, as released
        if gt_empty:
            self.empty_gt += 1
            self.true_empty += int(pred_empty)
            self.false_positive += int(not pred_empty)
        elif pred_empty:
            self.false_empty += 1
        return iou

    def merge(self, other: MetricAccumulator) -> MetricAccumulator:
        """Add `other`'s counts into this accumulator (in place); returns self."""
        if other.thresholds != self.thresholds or other.ignore_index != self.ignore_index:
            raise GeoreasonError(
                f"metrics: cannot merge accumulators with thresholds/ignore_index {other.thresholds}/"
                f"{other.ignore_index} into {self.thresholds}/{self.ignore_index}"
            )
        for name in _COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.hits = [a + b for a, b in zip(self.hits, other.hits)]
        for category, sub in other.categories.items():
            self.categories.setdefault(category, MetricAccumulator(self.thresholds, self.ignore_index)).merge(sub)
        return self

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers (JSON-serialisable), e.g. to merge across processes."""
        state: dict[str, Any] = {"thresholds": list(self.thresholds), "ignore_index": self.ignore_index,
                                 "hits": list(self.hits)}
        state.update({name: getattr(self, name) for name in _COUNTERS})
        state["categories"] = {name: sub.state_dict() for name, sub in self.categories.items()}
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MetricAccumulator:
        expected = {"thresholds", "ignore_index", "hits", "categories", *_COUNTERS}
        missing = sorted(expected - set(state))
        if missing:
            raise GeoreasonError(f"metrics state: missing key(s) {', '.join(missing)}")
        accumulator = cls(state["thresholds"], state["ignore_index"])
        if len(state["hits"]) != len(accumulator.thresholds):
            raise GeoreasonError("metrics state: 'hits' must have one count per threshold")
        accumulator.hits = [int(h) for h in state["hits"]]
        for name in _COUNTERS:
            value = state[name]
            setattr(accumulator, name, float(value) if name == "sum_iou" else int(value))
        accumulator.categories = {name: cls.from_state_dict(sub) for name, sub in state["categories"].items()}
        return accumulator

    def compute(self) -> dict[str, Any]:
        """Metrics as a dict: "n"; "gIoU" (mean per-sample IoU), "cIoU" (sum I / sum U) and "P@t" (share of
        samples with IoU > t), all in [0, 1] and None when no sample was seen; the pixel sums; the
        empty-target counts ("empty_targets", "true_empty", "false_positive_on_empty", "false_empty",
        "empty_accuracy"); and "categories" (the same per category) when categories were given."""
        n = self.count
        result: dict[str, Any] = {
            "n": n,
            "gIoU": self.sum_iou / n if n else None,
            "cIoU": self.sum_intersection / (self.sum_union + CIOU_EPS) if n else None,
        }
        for threshold, hits in zip(self.thresholds, self.hits):
            result[f"P@{threshold:g}"] = hits / n if n else None
        result.update({
            "sum_intersection": self.sum_intersection,
            "sum_union": self.sum_union,
            "empty_targets": self.empty_gt,
            "true_empty": self.true_empty,
            "false_positive_on_empty": self.false_positive,
            "false_empty": self.false_empty,
            "empty_accuracy": self.true_empty / self.empty_gt if self.empty_gt else None,
        })
        if self.categories:
            result["categories"] = {name: self.categories[name].compute() for name in sorted(self.categories)}
        return result


_COUNTERS = ("count", "sum_intersection", "sum_union", "sum_iou", "empty_gt", "true_empty", "false_positive",
             "false_empty")


def compute_metrics(
    preds: Iterable[np.ndarray], gts: Iterable[np.ndarray], categories: Iterable[str | None] | None = None
) -> dict[str, Any]:
    """One-shot metrics over paired predictions and ground truths, each [H,W] (see MetricAccumulator.update
    for the values and compute for the dict); the released protocol (docs/released_code.md#evaluation-protocol).
    Raises GeoreasonError for a prediction whose shape differs from its ground truth."""
    accumulator = MetricAccumulator()
    categories = categories if categories is not None else itertools.repeat(None)
    for pred, gt, category in zip(preds, gts, categories):
        accumulator.update(pred, gt, category)
    return accumulator.compute()
