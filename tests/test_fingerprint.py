"""One model fingerprint: the predict summary, GeoReasoner.fingerprint() and the evaluation report agree."""

from __future__ import annotations

import hashlib

from georeason.evaluate import _fingerprint
from georeason.model.weights import model_fingerprint
from georeason.reasoner import GeoReasoner


def test_predict_and_evaluate_record_the_same_digests(tiny_model_dir):
    weights = hashlib.sha256((tiny_model_dir / "model.safetensors").read_bytes()).hexdigest()
    config = hashlib.sha256((tiny_model_dir / "config.json").read_bytes()).hexdigest()
    assert model_fingerprint(tiny_model_dir) == {"model_sha256": weights, "config_sha256": config}
    reasoner = GeoReasoner.from_pretrained(tiny_model_dir)
    assert reasoner.fingerprint()["model_sha256"] == weights and reasoner.fingerprint()["config_sha256"] == config
    assert _fingerprint(tiny_model_dir) == {"fingerprint": weights, "config_sha256": config}
    assert _fingerprint(None) == {"fingerprint": None, "config_sha256": None}  # a constant baseline has none
