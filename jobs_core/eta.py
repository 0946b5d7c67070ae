"""How long a render usually takes and how long this one has left, learned from the store's own
history: the run times (startedAt to finishedAt of the last attempt) of recently completed jobs
with the same renderer and render type.

The render page shows `Typical` as "usually 35-50 s" next to `eta_seconds`. The API answers
many polls a second, so it keeps one `RunHistory`: one listing of completed jobs serves every
poll's `etaSeconds` for REFRESH_SECONDS.
"""
from __future__ import annotations

import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from .errors import JobsError
from .models import Job, JobStatus, utcnow
from .service import JobService
from .store.base import WorkerInfo

log = logging.getLogger("jobs_core.eta")
T = TypeVar("T")

#: completed jobs read to learn from (newest first); older history says less about today's provider
HISTORY_JOBS = 200
#: fewer finished runs than this and an estimate would be a guess
MIN_SAMPLES = 3
#: how long one listing of completed jobs serves the API's estimates: listing HISTORY_JOBS jobs
#: costs milliseconds (6 ms on a file store of 2,000 finished jobs, where a whole poll costs under
#: 1 ms), while run times drift over minutes (a provider slowing down), not seconds; the render
#: page caches its `typical_run` for as long
REFRESH_SECONDS = 30.0
#: after a store fault, how soon to try the history again (no estimate meanwhile): soon enough to
#: recover quickly, rarely enough that a failing store is not asked on every poll
RETRY_SECONDS = 5.0
#: how long one reading of the live workers serves: a worker says it is alive every third of a
#: lease (10 s by default) and counts as live for a whole lease, so a view a few seconds old
#: counts the same workers as a fresh one, without a read of every worker's entry on every poll
WORKERS_SECONDS = 5.0
#: faults of reading the history that are the store's, not ours: its own errors and the OS's
READ_FAULTS = (JobsError, OSError)


@dataclass(frozen=True)
class Typical:
    """The usual run time of one renderer and render type: the middle 60 % of recent runs."""

    low: float
    median: float
    high: float
    samples: int


def run_seconds(job: Job) -> float | None:
    """How long the job's last attempt ran, for a completed job; None otherwise."""
    if job.status is not JobStatus.COMPLETED or job.started_at is None or job.finished_at is None:
        return None
    return max(0.0, (job.finished_at - job.started_at).total_seconds())


def typical_of(times: Iterable[float]) -> Typical | None:
    """The usual run time among `times` (seconds); None with fewer than MIN_SAMPLES of them."""
    ordered = sorted(times)
    if len(ordered) < MIN_SAMPLES:
        return None
    low, high = ordered[int(0.2 * (len(ordered) - 1))], ordered[round(0.8 * (len(ordered) - 1))]
    return Typical(low=low, median=statistics.median(ordered), high=high, samples=len(ordered))


def typicals(jobs: Iterable[Job]) -> dict[tuple[str, str], Typical]:
    """{(renderer, renderType): usual run time} of every pair with enough completed `jobs`."""
    times: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        if (seconds := run_seconds(job)) is not None:
            times.setdefault((job.renderer, job.render_type), []).append(seconds)
    found = {key: typical_of(runs) for key, runs in times.items()}
    return {key: typical for key, typical in found.items() if typical is not None}


def typical_run(service: JobService, renderer: str, render_type: str) -> Typical | None:
    """The usual run time of `renderer` drawing `render_type`, from the newest completed jobs of
    every project; None with fewer than MIN_SAMPLES of them."""
    page = service.list(status=JobStatus.COMPLETED, limit=HISTORY_JOBS)
    return typicals(page.jobs).get((renderer, render_type))


def eta_seconds(service: JobService, job: Job, now: datetime | None = None,
                typical: Typical | None = None, position: int | None = None) -> float | None:
    """Seconds until `job` is likely done: None when it is final or there is too little history.

    Running: the usual run time less what this attempt has run (0 once past it: "any moment").
    Pending: the usual run time for each job ahead of it in the queue and itself, shared among
    the live workers that can run its renderer. `typical` and `position`, when the caller has
    them, save the store reads.
    """
    if job.status.is_final:
        return None
    typical = typical or typical_run(service, job.renderer, job.render_type)
    if typical is None:
        return None
    now = now or utcnow()
    if job.status is JobStatus.PROCESSING:
        return seconds_left(job, typical, now)
    position = position or service.queue_position(job) or 1
    workers = sum(1 for worker in service.live_workers(now) if job.renderer in worker.renderers)
    return seconds_left(job, typical, now, position, workers)


def seconds_left(job: Job, typical: Typical, now: datetime, position: int = 1, workers: int = 1) -> float | None:
    """`eta_seconds` from what the caller read: the job's queue `position` (pending jobs) and the
    number of live `workers` that can run its renderer. None for a final job."""
    if job.status.is_final:
        return None
    if job.status is JobStatus.PROCESSING:
        started = job.started_at or now
        return max(0.0, typical.median - (now - started).total_seconds())
    return typical.median * max(position, 1) / max(workers, 1)


class RunHistory:
    """What the API's estimates read from the store, shared by its many polls: the usual run
    times of every renderer and render type, from one listing of completed jobs at most every
    `refresh_seconds` (REFRESH_SECONDS), and the live workers, at most every `workers_seconds`.

    Thread-safe: one read at a time, and polls that find it due wait for it rather than repeat
    it (as QueuePositions does). A store fault is no estimate, never an error: the estimate is a
    hint, and the poll that asked must still answer; the store is asked again after
    `retry_seconds`. `clock` (monotonic seconds, for the intervals) and `now` (the time a running
    job's attempt is measured to) are for tests.
    """

    def __init__(self, service: JobService, refresh_seconds: float = REFRESH_SECONDS,
                 workers_seconds: float = WORKERS_SECONDS, retry_seconds: float = RETRY_SECONDS,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], datetime] = utcnow) -> None:
        self.service = service
        self.now = now
        self._typicals = _Reread(self._read_typicals, refresh_seconds, retry_seconds, clock)
        self._workers = _Reread(self._read_workers, workers_seconds, retry_seconds, clock)

    def typical(self, renderer: str, render_type: str) -> Typical | None:
        """The usual run time of `renderer` drawing `render_type`; None with too little history
        or when the store could not be read."""
        found = self._typicals.get()
        return None if found is None else found.get((renderer, render_type))

    def workers(self, renderer: str) -> int | None:
        """How many live workers can run `renderer`; None when the store could not be read."""
        live = self._workers.get()
        return None if live is None else sum(1 for worker in live if renderer in worker.renderers)

    def eta(self, job: Job, position: int | None = None, now: datetime | None = None) -> float | None:
        """`eta_seconds` of `job` from the shared reads; `position` is its place in the queue
        (pending jobs). None when final, with too little history, or when the store failed."""
        if job.status.is_final or (typical := self.typical(job.renderer, job.render_type)) is None:
            return None
        workers = 1
        if job.status is JobStatus.PENDING and (workers := self.workers(job.renderer)) is None:
            return None
        return seconds_left(job, typical, now or self.now(), position or 1, workers)

    def _read_typicals(self) -> dict[tuple[str, str], Typical]:
        return typicals(self.service.list(status=JobStatus.COMPLETED, limit=HISTORY_JOBS).jobs)

    def _read_workers(self) -> list[WorkerInfo]:
        return self.service.live_workers()


class _Reread(Generic[T]):
    """A value `read` from the store at most every `seconds`; None for `retry_seconds` after a
    read failed."""

    def __init__(self, read: Callable[[], T], seconds: float, retry_seconds: float,
                 clock: Callable[[], float]) -> None:
        self.read, self.seconds, self.retry_seconds, self.clock = read, seconds, retry_seconds, clock
        self._lock = threading.Lock()
        self._value: T | None = None
        self._next_read = float("-inf")

    def get(self) -> T | None:
        with self._lock:
            if self.clock() >= self._next_read:
                self._refresh()
            return self._value

    def _refresh(self) -> None:
        try:
            self._value, wait = self.read(), self.seconds
        except READ_FAULTS as error:
            log.warning("no run-time estimates for now: the store could not be read (%s)", error)
            self._value, wait = None, self.retry_seconds
        except Exception:  # a store's own bug (e.g. a driver error it does not translate): the
            # poll must still answer, and the traceback goes to the log for whoever runs it
            log.exception("no run-time estimates for now: reading the store failed")
            self._value, wait = None, self.retry_seconds
        self._next_read = self.clock() + wait
