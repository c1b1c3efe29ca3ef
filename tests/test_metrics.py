"""Tests of georeason.metrics against the released metric values (fixture sets A and B)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from georeason.errors import GeoreasonError
from tests.conftest import fixture_root
from georeason.metrics import MetricAccumulator, compute_metrics, intersection_and_union, sample_iou

FIXTURES = fixture_root()


def _load(name: str):
    base = FIXTURES / name / "metrics"
    if not base.is_dir():
        pytest.fail(f"fixture set {base} not present (tests/fixtures or GEOREASON_FIXTURES)")
    return np.load(base / "masks.npz"), json.loads((base / "metrics.json").read_text())


def _check(result: dict, expected: dict) -> None:
    assert result["n"] == expected["n"]
    assert result["gIoU"] == pytest.approx(expected["gIoU"], abs=1e-6)
    assert result["cIoU"] == pytest.approx(expected["cIoU"], abs=1e-6)
    for threshold, value in expected["P@"].items():
        assert result[f"P@{threshold}"] == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("name", ["official-tiny-A", "official-tiny-B"])
def test_matches_released_metrics(name):
    masks, expected = _load(name)
    pred, gt = masks["pred"], masks["gt"]
    accumulator = MetricAccumulator()
    for i in range(30):
        iou = accumulator.update(pred[i], gt[i])
        reference = expected["all_30"]["per_sample"][i]
        assert intersection_and_union(pred[i], gt[i]) == (reference["intersection_fg"], reference["union_fg"])
        assert iou == pytest.approx(reference["iou_fg"], abs=1e-9), f"sample {i}"
    assert 255 in gt[29]  # the ignore case is really exercised
    _check(accumulator.compute(), expected["all_30"])
    _check(compute_metrics(pred[:29], gt[:29]), expected["first_29_without_ignore_case"])


def test_definitions_on_small_cases():
    empty = np.zeros((4, 4), np.uint8)
    full = np.ones((4, 4), np.uint8)
    assert sample_iou(*intersection_and_union(empty, empty)) == 1.0
    assert sample_iou(*intersection_and_union(full, empty)) == 0.0
    half = full.copy()
    half[:2] = 0
    # IoU exactly 0.5 (minus eps) is a miss at P@0.5 (strict comparison).
    result = compute_metrics([half], [full])
    assert result["gIoU"] == pytest.approx(0.5, abs=1e-6) and result["P@0.5"] == 0.0
    assert result["cIoU"] == pytest.approx(0.5)
    with pytest.raises(GeoreasonError, match="prediction shape \\(4, 4\\) differs from ground-truth shape \\(3, 3\\)"):
        intersection_and_union(full, np.ones((3, 3), np.uint8))


def test_empty_target_accounting_and_categories():
    empty = np.zeros((8, 8), bool)
    blob = empty.copy()
    blob[2:6, 2:6] = True
    acc = MetricAccumulator()
    acc.update(empty, empty, "lake")  # true empty
    acc.update(blob, empty, "lake")  # false positive
    acc.update(empty, blob, "road")  # false empty
    acc.update(blob, blob, "road")  # hit
    result = acc.compute()
    assert (result["empty_targets"], result["true_empty"], result["false_positive_on_empty"],
            result["false_empty"]) == (2, 1, 1, 1)
    assert result["empty_accuracy"] == 0.5
    assert result["categories"]["lake"]["n"] == 2 and result["categories"]["road"]["gIoU"] == pytest.approx(0.5)
    assert result["gIoU"] == pytest.approx(0.5)


def test_merge_and_state_dict_round_trip():
    rng = np.random.default_rng(3)
    pairs = [(rng.random((16, 16)) > 0.5, rng.random((16, 16)) > 0.4) for _ in range(10)]
    whole = MetricAccumulator()
    left, right = MetricAccumulator(), MetricAccumulator()
    for i, (p, g) in enumerate(pairs):
        category = "a" if i % 3 else "b"
        whole.update(p, g, category)
        (left if i < 4 else right).update(p, g, category)
    state = json.loads(json.dumps(right.state_dict()))  # plain numbers only
    merged = left.merge(MetricAccumulator.from_state_dict(state))
    a, b = merged.compute(), whole.compute()
    assert a["gIoU"] == pytest.approx(b["gIoU"], abs=1e-12)
    assert {k: v for k, v in a.items() if k not in ("gIoU", "categories")} == \
        {k: v for k, v in b.items() if k not in ("gIoU", "categories")}
    assert a["categories"]["b"]["n"] == b["categories"]["b"]["n"] == 4
    with pytest.raises(GeoreasonError, match="missing key"):
        MetricAccumulator.from_state_dict({"count": 1})
    with pytest.raises(GeoreasonError, match="cannot merge"):
        MetricAccumulator(thresholds=(0.5,)).merge(MetricAccumulator())


def test_no_samples_gives_none():
    result = MetricAccumulator().compute()
    assert result["n"] == 0 and result["gIoU"] is None and result["empty_accuracy"] is None
