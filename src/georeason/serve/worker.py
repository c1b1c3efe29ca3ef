"""The bounded inference queue: one worker thread runs jobs in order; a full queue refuses new work.

Web demo and REST service (docs/serve.md); not in the paper. The model is not thread-safe and one CPU
inference already uses every core, so jobs run one at a time and at most `capacity` wait.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

_STOP = object()


class QueueFull(Exception):
    """The queue already holds `capacity` waiting jobs; retry after `retry_after` seconds."""

    def __init__(self, capacity: int, retry_after: int) -> None:
        super().__init__(f"the inference queue is full ({capacity} requests waiting); retry in {retry_after} s")
        self.capacity = capacity
        self.retry_after = retry_after


@dataclass(frozen=True)
class WorkerStats:
    """A snapshot of the queue for /v1/health."""

    waiting: int
    capacity: int
    busy: bool
    completed: int
    failed: int
    refused: int
    mean_job_seconds: float | None


class InferenceWorker:
    """Runs submitted callables on one daemon thread; `submit` never blocks and never queues unboundedly."""

    def __init__(self, capacity: int, name: str = "georeason-inference") -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity)
        self._lock = threading.Lock()
        self._busy = False
        self._completed = 0
        self._failed = 0
        self._refused = 0
        self._mean_seconds: float | None = None  # exponential moving average of job durations
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        """Queue `fn(*args, **kwargs)`; its result or exception arrives in the returned Future.

        Raises QueueFull (with a Retry-After estimate) when `capacity` jobs are already waiting.
        """
        future: Future = Future()
        try:
            self._queue.put_nowait((future, fn, args, kwargs))
        except queue.Full:
            with self._lock:
                self._refused += 1
            raise QueueFull(self.capacity, self.retry_after()) from None
        return future

    def refuse_if_full(self) -> None:
        """Raise QueueFull (and count it) when `submit` would refuse right now, before any work is done."""
        if self._queue.full():
            with self._lock:
                self._refused += 1
            raise QueueFull(self.capacity, self.retry_after())

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the jobs ahead times the mean job time, 1..600."""
        mean = self._mean_seconds if self._mean_seconds is not None else 1.0
        ahead = self._queue.qsize() + (1 if self._busy else 0)
        return int(min(600, max(1, math.ceil(mean * max(1, ahead)))))

    def stats(self) -> WorkerStats:
        with self._lock:
            return WorkerStats(self._queue.qsize(), self.capacity, self._busy, self._completed, self._failed,
                               self._refused, self._mean_seconds)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the queued jobs, then stop the thread (waits at most `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    return
        self._thread.join(max(0.0, deadline - time.monotonic()))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            future, fn, args, kwargs = item
            if not future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._busy = True
            started = time.perf_counter()
            error: BaseException | None = None
            result: Any = None
            try:
                result = fn(*args, **kwargs)
            except BaseException as caught:  # noqa: BLE001 - delivered to the waiting request
                error = caught
            elapsed = time.perf_counter() - started
            # Counters first, then the future: whoever waits on it sees up-to-date stats.
            with self._lock:
                self._busy = False
                self._completed += error is None
                self._failed += error is not None
                self._mean_seconds = elapsed if self._mean_seconds is None else 0.8 * self._mean_seconds + 0.2 * elapsed
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
