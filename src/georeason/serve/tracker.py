"""Asynchronous jobs of `georeason serve`: their state, progress and cancellation, kept by id for a while.

Web demo and REST service (docs/serve.md, "Jobs"); not in the paper. The inference thread reports
progress through `checkpoint`, which raises JobCancelled once a client has asked to cancel the job.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

QUEUED, RUNNING, CANCELLING, DONE, FAILED, CANCELLED = "queued", "running", "cancelling", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class JobCancelled(Exception):
    """Raised on the inference thread at the next checkpoint after a client cancelled the job."""


@dataclass
class TrackedJob:
    """One job's state. Written by the inference thread (progress) and the event loop (cancel, outcome)."""

    id: str
    question: str
    tiled: bool
    created: float = field(default_factory=time.monotonic)
    status: str = QUEUED
    stage: str = "waiting in the queue"
    progress: float = 0.0  # 0..1
    tiles_done: int | None = None
    tiles_total: int | None = None
    error_status: int | None = None
    error_detail: str | None = None
    result: Any = None  # the PredictResponse once done
    finished: float | None = None
    future: Future | None = None
    on_cancel_queued: Callable[[], None] | None = None  # cleanup when the job is cancelled before it starts
    cancel_requested: threading.Event = field(default_factory=threading.Event)


class JobTracker:
    """Jobs by id. Finished jobs are kept `ttl_seconds`, at most `max_finished` of them (oldest go first)."""

    def __init__(self, max_finished: int = 64, ttl_seconds: float = 900.0) -> None:
        self.max_finished = max_finished
        self.ttl_seconds = ttl_seconds
        self._jobs: OrderedDict[str, TrackedJob] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, job: TrackedJob) -> None:
        self.prune()
        with self._lock:
            self._jobs[job.id] = job

    def get(self, job_id: str) -> TrackedJob | None:
        self.prune()
        with self._lock:
            return self._jobs.get(job_id)

    def checkpoint(self, job: TrackedJob, stage: str, progress: float, tiles: tuple[int, int] | None = None) -> None:
        """Record progress from the inference thread; raises JobCancelled if the job was cancelled."""
        with self._lock:
            if job.cancel_requested.is_set():
                raise JobCancelled(f"job {job.id} was cancelled")
            if job.status == QUEUED:
                job.status = RUNNING
            job.stage = stage
            job.progress = min(1.0, max(job.progress, progress))
            if tiles is not None:
                job.tiles_done, job.tiles_total = tiles

    def finish(self, job: TrackedJob, status: str, result: Any = None, error: tuple[int, str] | None = None) -> None:
        with self._lock:
            job.status = status
            job.result = result
            job.finished = time.monotonic()
            if status == DONE:
                job.stage, job.progress = "done", 1.0
            elif status == CANCELLED:
                job.stage = "cancelled"
            if error is not None:
                job.error_status, job.error_detail = error
                job.stage = "failed"

    def cancel(self, job: TrackedJob) -> str:
        """Cancel a job: a queued one is dropped at once, a running one stops at its next checkpoint.

        Returns the job's status afterwards: cancelled, cancelling, or its finished status unchanged.
        """
        with self._lock:
            if job.status in FINISHED:
                return job.status
            job.cancel_requested.set()
            dropped = job.future is not None and job.future.cancel()
            if not dropped:
                job.status = CANCELLING
                job.stage = "cancelling: stops after the current step"
                return job.status
        if job.on_cancel_queued is not None:
            job.on_cancel_queued()
        self.finish(job, CANCELLED)
        return CANCELLED

    def prune(self) -> None:
        """Forget finished jobs older than the TTL, and the oldest finished beyond max_finished."""
        now = time.monotonic()
        with self._lock:
            finished = [j for j in self._jobs.values() if j.finished is not None]
            finished.sort(key=lambda j: j.finished or 0.0)
            excess = len(finished) - self.max_finished
            for index, job in enumerate(finished):
                if index < excess or now - (job.finished or now) >= self.ttl_seconds:
                    del self._jobs[job.id]
