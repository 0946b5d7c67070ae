"""How long a render usually takes and how long this one has left, learned from the store's own
history: the run times (startedAt to finishedAt of the last attempt) of recently completed jobs
with the same renderer and render type.

The API's job JSON carries `etaSeconds` from `eta_seconds(service, job)`; the render page shows
`Typical` as "usually 35-50 s" next to it.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime

from .models import Job, JobStatus, utcnow
from .service import JobService

#: completed jobs read to learn from (newest first); older history says less about today's provider
HISTORY_JOBS = 200
#: fewer finished runs than this and an estimate would be a guess
MIN_SAMPLES = 3


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


def typical_run(service: JobService, renderer: str, render_type: str) -> Typical | None:
    """The usual run time of `renderer` drawing `render_type`, from the newest completed jobs of
    every project; None with fewer than MIN_SAMPLES of them."""
    page = service.list(status=JobStatus.COMPLETED, limit=HISTORY_JOBS)
    times = sorted(seconds for job in page.jobs
                   if job.renderer == renderer and job.render_type == render_type
                   and (seconds := run_seconds(job)) is not None)
    if len(times) < MIN_SAMPLES:
        return None
    low, high = times[int(0.2 * (len(times) - 1))], times[round(0.8 * (len(times) - 1))]
    return Typical(low=low, median=statistics.median(times), high=high, samples=len(times))


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
        started = job.started_at or now
        return max(0.0, typical.median - (now - started).total_seconds())
    position = position or service.queue_position(job) or 1
    workers = sum(1 for worker in service.live_workers(now) if job.renderer in worker.renderers)
    return typical.median * position / max(workers, 1)
