"""Several questions about one image: the Python API, `georeason predict` and tiled mode share features."""

from __future__ import annotations

import numpy as np
import pytest

from georeason.errors import GeoreasonError
from georeason.reasoner import GeoReasoner

QUESTIONS = ["where could a small plane land?", "which roads are blocked?", "where is standing water?"]


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    return GeoReasoner.from_pretrained(tiny_model_dir)


def _image(seed: int = 0) -> np.ndarray:
    rows, cols = np.mgrid[0:300, 0:340]
    noise = np.random.default_rng(seed).integers(0, 60, (300, 340, 3))
    waves = np.stack([np.sin(rows / 9.0) * 90, np.cos(cols / 13.0) * 90, np.sin((rows + cols) / 21.0) * 90], -1)
    return np.clip(128 + waves + noise, 1, 255).astype(np.uint8)


def _count_encoder_calls(reasoner):
    calls = []
    return calls, reasoner.model.encoder.register_forward_hook(lambda *_: calls.append(1))


def test_predict_with_a_list_of_questions_encodes_once_and_equals_one_at_a_time(reasoner):
    image = _image()
    calls, hook = _count_encoder_calls(reasoner)
    try:
        many = reasoner.predict(image, QUESTIONS)
        assert len(calls) == 1
    finally:
        hook.remove()
    assert [p.question for p in many] == QUESTIONS
    for prediction, question in zip(many, QUESTIONS):
        alone = reasoner.predict(image, question)
        assert np.array_equal(prediction.probability, alone.probability)
        assert prediction.answer == alone.answer
        assert prediction.seconds["features"] >= 0 and prediction.seconds["total"] > 0
    assert not np.array_equal(many[0].probability, many[1].probability)
    with pytest.raises(GeoreasonError, match="questions: expected a non-empty list"):
        reasoner.predict(image, [])
    with pytest.raises(GeoreasonError, match="question: the question is empty"):
        reasoner.predict(image, ["where?", "  "])
