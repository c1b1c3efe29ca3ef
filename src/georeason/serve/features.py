"""A small per-model cache of recent uploads' image features, so a follow-up question skips the encoder.

Keyed by the upload's SHA-256 and what the features depend on besides the bytes (bands, model, input
size, dtype, device); bounded in entries and in bytes; least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

DEFAULT_ENTRIES = 4
DEFAULT_BYTES = 1 << 30  # the paper preset's features are about 0.2 GB per image in float32


class FeatureCache:
    """LRU of ImageFeatures bounded by `max_entries` and `max_bytes` (ImageFeatures.nbytes); thread-safe.

    An entry larger than `max_bytes` is not kept. Raises ValueError for bounds below 1.
    """

    def __init__(self, max_entries: int = DEFAULT_ENTRIES, max_bytes: int = DEFAULT_BYTES) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"feature cache bounds: expected at least 1 entry and 1 byte, got {max_entries}, "
                             f"{max_bytes}")
        self.max_entries, self.max_bytes = int(max_entries), int(max_bytes)
        self._entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._entries.values())

    def get(self, key: str) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[0]

    def put(self, key: str, features: Any) -> None:
        """Keep `features` under `key` (sized now; a later question's prefix cache is counted on refresh)."""
        size = int(features.nbytes())
        with self._lock:
            self._entries.pop(key, None)
            if size > self.max_bytes:
                return
            self._entries[key] = (features, size)
            self._evict()

    def refresh(self, key: str) -> None:
        """Re-measure an entry after it grew (the first question adds the prompt prefix's KV cache)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries[key] = (entry[0], int(entry[0].nbytes()))
                if self._entries[key][1] > self.max_bytes:
                    del self._entries[key]
                self._evict()

    def _evict(self) -> None:
        while self._entries and (len(self._entries) > self.max_entries
                                 or sum(size for _, size in self._entries.values()) > self.max_bytes):
            self._entries.popitem(last=False)


def upload_key(path: str | Path, bands: Sequence[int] | None, reasoner: Any) -> str:
    """SHA-256 of the file's bytes plus the preprocessing and model settings the features depend on."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    settings = f"|bands={list(bands) if bands else None}|model={reasoner.name}|size={reasoner.image_size}" \
               f"|dtype={reasoner.dtype}|device={reasoner.device}"
    digest.update(settings.encode("utf-8"))
    return digest.hexdigest()


def predict_cached(reasoner: Any, path: str | Path, question: Any, answer: bool, bands: Sequence[int] | None,
                   cache: FeatureCache):
    """reasoner.predict(path, question) reusing the upload's features when the cache has them (same mask)."""
    from georeason.reasoner import load_input

    question = reasoner.processor.question(question)  # checked and tokenised once, before the image is read
    item = load_input(str(path), bands, reasoner.max_pixels)
    key = upload_key(path, bands, reasoner)
    features = cache.get(key)
    if features is None:
        features = reasoner.encode(item)
        cache.put(key, features)
    prediction = reasoner.predict_questions(item, [question], answer, features=features)[0]
    cache.refresh(key)
    return prediction
