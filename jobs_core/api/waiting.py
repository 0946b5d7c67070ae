"""waitingReason for many polls from one look at the fleet's provider limits.

A pending job may wait for its renderer's provider (a pause after a 429, or every slot of
JOBS_RENDERER_LIMITS in use). Finding out reads the pauses and, with limits, the running jobs:
done on every poll of every waiting job, that would cost more than the poll itself, so one look
serves every poll for up to `ttl` seconds. The reason is a hint: a second late is fine.
"""
from __future__ import annotations

import threading
import time

from ..limits import LimitState
from ..models import Job, JobStatus
from ..service import JobService


class WaitingReasons:
    def __init__(self, service: JobService, ttl: float = 1.0) -> None:
        self.service = service
        self.ttl = ttl
        self._lock = threading.Lock()
        self._state = LimitState()
        self._taken_monotonic = float("-inf")

    def of(self, job: Job) -> str | None:
        """Why the pending `job` waits for its provider, in plain words; None otherwise."""
        if job.status is not JobStatus.PENDING:
            return None
        with self._lock:  # one look at a time: concurrent polls wait for it instead of repeating it
            if time.monotonic() - self._taken_monotonic > self.ttl:
                self._state, self._taken_monotonic = self.service.limit_state(), time.monotonic()
            return self._state.reason(job.renderer)
