"""Shared test fixtures: the released-code fixture sets and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fixture_root() -> Path:
    """The folder of fixture sets: tests/fixtures (copied from the authors' code run, see its README.md), or
    GEOREASON_FIXTURES to test other sets in the same layout."""
    return Path(os.environ.get("GEOREASON_FIXTURES", REPO / "tests" / "fixtures"))


def fixture_sets() -> list[Path]:
    root = fixture_root()
    return sorted(p for p in root.glob("*") if (p / "model" / "model.safetensors").is_file()) if root.is_dir() else []


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A `tiny` preset model folder (random weights, byte-level tokenizer), written once per session."""
    from georeason.model.factory import build_model

    folder = tmp_path_factory.mktemp("tiny-model")
    model, tokenizer = build_model("tiny", seed=0)
    model.save_pretrained(folder, tokenizer=tokenizer)
    return folder
