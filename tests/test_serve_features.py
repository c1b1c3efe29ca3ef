"""The service's feature cache: a follow-up question on the same upload skips the encoder, same mask."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from georeason.serve import ServeSettings, create_app
from georeason.serve.features import FeatureCache
from tests._serve_helpers import png_bytes


@pytest.fixture(scope="module")
def reasoner(tiny_model_dir):
    from georeason.reasoner import GeoReasoner

    return GeoReasoner.from_pretrained(tiny_model_dir, device="cpu", dtype="float32")


def _mask(body: dict) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask_png_base64"]))))


def test_follow_up_question_on_the_same_upload_skips_the_encoder(reasoner):
    calls = []
    hook = reasoner.model.encoder.register_forward_hook(lambda *_: calls.append(1))
    first_image, other_image = png_bytes(64, 48, seed=1), png_bytes(64, 48, seed=2)
    try:
        with TestClient(create_app(reasoner, ServeSettings())) as client:
            def ask(image: bytes, question: str) -> dict:
                response = client.post("/v1/predict", files={"image": ("up.png", image)},
                                       data={"question": question})
                assert response.status_code == 200, response.text
                return response.json()

            first = ask(first_image, "where are the bright pixels?")
            assert len(calls) == 1
            follow_up = ask(first_image, "where is the dark water?")
            assert len(calls) == 1  # the same upload's features came from the cache
            again = ask(first_image, "where are the bright pixels?")
            assert np.array_equal(_mask(again), _mask(first)) and again["answer"] == first["answer"]
            other = ask(other_image, "where are the bright pixels?")
            assert len(calls) == 2  # another image is encoded, never served another image's features
            cache = client.app.state.features
            assert len(cache) == 2 and cache.hits == 2 and cache.misses == 2
    finally:
        hook.remove()
    # Uncached predictions give the same masks: the cache changes the cost, not the result.
    with TestClient(create_app(reasoner, ServeSettings())) as client:
        for body, image, question in ((follow_up, first_image, "where is the dark water?"),
                                      (other, other_image, "where are the bright pixels?")):
            fresh = client.post("/v1/predict", files={"image": ("x.png", image)}, data={"question": question}).json()
            assert np.array_equal(_mask(fresh), _mask(body)) and fresh["answer"] == body["answer"]


class _Sized:
    def __init__(self, size: int) -> None:
        self.size = size

    def nbytes(self) -> int:
        return self.size


def test_feature_cache_is_bounded_in_entries_and_bytes():
    cache = FeatureCache(max_entries=2, max_bytes=100)
    cache.put("a", _Sized(40))
    cache.put("b", _Sized(40))
    assert cache.get("a") is not None  # "a" is now the most recent
    cache.put("c", _Sized(40))  # over 2 entries (and 100 bytes): the least recent, "b", goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2 and cache.nbytes == 80
    cache.put("d", _Sized(90))  # 90 + 40 > 100 bytes: both older ones go
    assert len(cache) == 1 and cache.nbytes == 90 and cache.get("d") is not None
    cache.put("huge", _Sized(101))  # larger than the whole cache: not kept
    assert cache.get("huge") is None and cache.get("d") is not None
    grown = _Sized(50)
    cache.put("e", grown)
    grown.size = 80  # a question added its prefix KV cache: 90 + 80 > 100
    cache.refresh("e")
    assert cache.get("d") is None and cache.nbytes == 80
    with pytest.raises(ValueError, match="feature cache bounds"):
        FeatureCache(max_entries=0)
