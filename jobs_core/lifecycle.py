"""The rules of the job lifecycle, in one place.

Each function takes the job as it is *now* in the store (read under the store's lock or row lock)
and returns an `Outcome`: the job as it must become, the event to log and whether the write must
be durable; or it raises TransitionConflict when
the job is not in the state the caller expected. Stores apply these functions atomically
(`JobStore.modify`); nothing else decides a status.

    pending --claim--> processing --> completed
       |                  |  \\-----> failed     (non-retryable error, or attempts exhausted)
       |                  \\--------> pending    (retryable error or lost worker, attempts left)
       \\--cancel--> canceled    processing --cancel--> canceled (cooperative)
    failed/canceled --retry--> pending (same job, attempts reset, history kept in events)
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NamedTuple

from .errors import JobCanceled, LeaseLost, TransitionConflict
from .models import Event, Job, JobStatus, utcnow

P, R, C, F, X = (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.COMPLETED,
                 JobStatus.FAILED, JobStatus.CANCELED)
LOST_WORKER = "worker stopped responding"

if TYPE_CHECKING:
    from .webhooks import Delivery


class Outcome(NamedTuple):
    """What a rule decided: the job as it must become, the event to log, and how durable the write
    must be. `durable=False` (progress and heartbeats of a running attempt) lets a store skip the
    flushes that make a write survive a power loss: the previous version may come back, which only
    loses the latest progress. Every transition (status, owner, attempt, cancel request) is durable.
    `deliveries`: the webhook deliveries the change makes due, written with it (webhooks.py adds them).
    """

    job: Job
    event: Event | None = None
    durable: bool = True
    deliveries: tuple[Delivery, ...] = ()


@dataclass(frozen=True)
class Lease:
    """What a worker holds while it runs a job: the job, its owner and the attempt number."""

    job_id: str
    project_id: str
    worker_id: str
    attempt: int
    #: when this attempt was claimed: with the attempt, it names the attempt's render in a bucket
    started_at: datetime | None = None

    @classmethod
    def of(cls, job: Job) -> Lease:
        if job.status is not R or job.worker_id is None:
            raise TransitionConflict(f"Job {job.job_id} is {job.status.value}, not processing.")
        return cls(job.job_id, job.project_id, job.worker_id, job.attempts, job.started_at)


def _expect(job: Job, *statuses: JobStatus, action: str) -> None:
    if job.status not in statuses:
        allowed = " or ".join(s.value for s in statuses)
        raise TransitionConflict(
            f"Cannot {action} job {job.job_id}: it is {job.status.value}, not {allowed}.")


def _expect_owner(job: Job, lease: Lease, action: str) -> None:
    if job.status is not R or job.worker_id != lease.worker_id or job.attempts != lease.attempt:
        raise LeaseLost(
            f"Cannot {action} job {job.job_id}: worker {lease.worker_id} no longer owns attempt "
            f"{lease.attempt} (the job is {job.status.value}, attempt {job.attempts}).")


def _event(job: Job, kind: str, now: datetime, message: str | None = None) -> Event:
    return Event(at=now, job_id=job.job_id, type=kind, status=job.status, attempt=job.attempts,
                 worker_id=job.worker_id, progress=job.progress, message=message)


def _update(job: Job, now: datetime, **changes: object) -> Job:
    return job.model_copy(update={"updated_at": now, **changes})


def created(job: Job) -> Event:
    """The creation event, from any later version of the job too: it only reads what never changes."""
    return Event(at=job.created_at, job_id=job.job_id, type="created", status=P, attempt=0,
                 worker_id=None, progress=0, message=f"{job.render_type} render queued")


def is_claimable(job: Job, now: datetime) -> bool:
    return job.status is P and job.available_at <= now


def claim(job: Job, worker_id: str, now: datetime | None = None) -> Outcome:
    now = now or utcnow()
    _expect(job, P, action="claim")
    if job.available_at > now:
        raise TransitionConflict(f"Job {job.job_id} is backing off until {job.available_at.isoformat()}.")
    new = _update(job, now, status=R, worker_id=worker_id, attempts=job.attempts + 1,
                  started_at=now, heartbeat_at=now, progress=0, stage="starting", error=None,
                  finished_at=None)
    return Outcome(new, _event(new, "claimed", now, f"attempt {new.attempts} of {new.max_attempts}"))


def progress(job: Job, lease: Lease, percent: int, stage: str, now: datetime | None = None) -> Outcome:
    """Record progress (monotonic within an attempt). Raises JobCanceled once a cancel was asked."""
    now = now or utcnow()
    _expect_owner(job, lease, "report progress on")
    if job.cancel_requested:
        raise JobCanceled(f"Job {job.job_id} was canceled.")
    percent = max(job.progress, min(100, max(0, int(percent))))
    stage = (stage or job.stage).strip()[:80]
    new = _update(job, now, progress=percent, stage=stage, heartbeat_at=now)
    event = _event(new, "progress", now, stage) if stage != job.stage else None
    return Outcome(new, event, durable=False)


def heartbeat(job: Job, lease: Lease, now: datetime | None = None) -> Outcome:
    now = now or utcnow()
    _expect_owner(job, lease, "heartbeat")
    return Outcome(_update(job, now, heartbeat_at=now), None, durable=False)


def complete(job: Job, lease: Lease, image_url: str, prompt: str | None,
             now: datetime | None = None) -> Outcome:
    now = now or utcnow()
    _expect_owner(job, lease, "complete")
    # A cancel asked for too late to stop the render is moot once the image exists.
    new = _update(job, now, status=C, progress=100, stage="done", image_url=image_url,
                  prompt=prompt if prompt is not None else job.prompt, error=None,
                  finished_at=now, heartbeat_at=now, cancel_requested=False)
    return Outcome(new, _event(new, "completed", now))


def image_lost(job: Job, now: datetime | None = None) -> Outcome:
    """A completed job whose image is missing or damaged (found by `repair`): render it again,
    attempt unspent."""
    now = now or utcnow()
    _expect(job, C, action="requeue")
    new = _update(job, now, status=P, progress=0, stage="queued", image_url=None, worker_id=None,
                  heartbeat_at=None, started_at=None, finished_at=None, attempts=max(job.attempts - 1, 0),
                  available_at=now)
    return Outcome(new, _event(new, "requeued", now, "its image was missing or damaged; rendering it again"))


def backoff(attempt: int, base_seconds: float) -> timedelta:
    """Exponential backoff before the next attempt: base, 2*base, 4*base ... capped at 5 minutes."""
    return timedelta(seconds=min(base_seconds * (2 ** max(attempt - 1, 0)), 300.0))


def fail(job: Job, lease: Lease, message: str, retryable: bool, backoff_base: float,
         now: datetime | None = None) -> Outcome:
    """A failed attempt: back to pending (later) while attempts remain and it may help, else failed."""
    now = now or utcnow()
    _expect_owner(job, lease, "fail")
    if job.cancel_requested and retryable:
        return _canceled(job, now)  # the user asked to stop: no further attempt
    if retryable and job.attempts < job.max_attempts:
        new = _update(job, now, status=P, worker_id=None, heartbeat_at=None, error=message,
                      stage="waiting to retry", available_at=now + backoff(job.attempts, backoff_base))
        return Outcome(new, _event(new, "requeued", now, message))
    new = _update(job, now, status=F, error=message, finished_at=now, stage="failed", cancel_requested=False)
    return Outcome(new, _event(new, "failed", now, message))


def release(job: Job, lease: Lease, now: datetime | None = None, *, reason: str | None = None,
            delay_seconds: float = 0.0) -> Outcome:
    """The worker cannot go on (it is shutting down, or the store failed under it): hand the job
    back without spending the attempt, available again after `delay_seconds`."""
    now = now or utcnow()
    _expect_owner(job, lease, "release")
    if job.cancel_requested:
        return _canceled(job, now)
    new = _update(job, now, status=P, worker_id=None, heartbeat_at=None, attempts=job.attempts - 1,
                  progress=0, stage="queued" if not delay_seconds else "waiting for the store",
                  available_at=now + timedelta(seconds=delay_seconds))
    return Outcome(new, _event(new, "released", now, reason or "worker shut down; job returned to the queue"))


def provider_paused(job: Job, lease: Lease, until: datetime, message: str, now: datetime | None = None) -> Outcome:
    """The provider answered "too many requests, come back at `until`": the job goes back to the
    queue, attempt unspent, due when its renderer's pause ends (see limits.py for why the attempt
    is not counted). Due then, not before, so whoever runs it (a worker, the API's /process runner)
    asks the provider again at the time it said, even without looking at the pause."""
    now = now or utcnow()
    _expect_owner(job, lease, "hand back")
    if job.cancel_requested:
        return _canceled(job, now)
    new = _update(job, now, status=P, worker_id=None, heartbeat_at=None, attempts=job.attempts - 1,
                  progress=0, stage="paused by the provider", available_at=until)
    return Outcome(new, _event(new, "released", now, f"{message}; its jobs wait until {until:%H:%M:%S} UTC"))


def cancel(job: Job, now: datetime | None = None) -> Outcome:
    """Pending: canceled at once. Processing: ask the renderer to stop at its next progress report."""
    now = now or utcnow()
    _expect(job, P, R, action="cancel")
    if job.status is P:
        return _canceled(job, now)
    if job.cancel_requested:
        return Outcome(job, None)
    new = _update(job, now, cancel_requested=True, stage="canceling")
    return Outcome(new, _event(new, "cancel-requested", now))


def confirm_cancel(job: Job, lease: Lease, now: datetime | None = None) -> Outcome:
    """The renderer stopped after a cancel request."""
    now = now or utcnow()
    _expect_owner(job, lease, "cancel")
    return _canceled(job, now)


def _canceled(job: Job, now: datetime) -> Outcome:
    new = _update(job, now, status=X, stage="canceled", finished_at=now, cancel_requested=False)
    return Outcome(new, _event(new, "canceled", now))


def retry(job: Job, now: datetime | None = None) -> Outcome:
    now = now or utcnow()
    _expect(job, F, X, action="retry")
    new = _update(job, now, status=P, attempts=0, progress=0, stage="queued", error=None,
                  image_url=None, worker_id=None, heartbeat_at=None, started_at=None,
                  finished_at=None, cancel_requested=False, available_at=now)
    return Outcome(new, _event(new, "retried", now, f"was {job.status.value}: {job.error or 'no error'}"))


def is_expired(job: Job, lease_seconds: float, now: datetime) -> bool:
    beat = job.heartbeat_at or job.started_at or job.updated_at
    return job.status is R and (now - beat).total_seconds() > lease_seconds


def reclaim(job: Job, lease_seconds: float, now: datetime | None = None) -> Outcome:
    """A processing job whose heartbeat is older than the lease: requeue it, or fail it when spent."""
    now = now or utcnow()
    _expect(job, R, action="reclaim")
    if not is_expired(job, lease_seconds, now):
        raise TransitionConflict(f"Job {job.job_id} is alive (heartbeat within the lease).")
    if job.cancel_requested:
        return _canceled(job, now)
    if job.attempts < job.max_attempts:
        new = _update(job, now, status=P, worker_id=None, heartbeat_at=None, stage="queued",
                      error=LOST_WORKER, available_at=now)
        return Outcome(new, _event(new, "requeued", now, f"{LOST_WORKER} (worker {job.worker_id})"))
    new = _update(job, now, status=F, error=LOST_WORKER, finished_at=now, stage="failed")
    return Outcome(new, _event(new, "failed", now, f"{LOST_WORKER} (worker {job.worker_id})"))


def deletable(job: Job) -> None:
    """A running job must be canceled before it can be deleted."""
    if job.status is R:
        raise TransitionConflict(f"Job {job.job_id} is processing; cancel it before deleting it.")


FINISHED = (C, F, X)


def prunable(job: Job, cutoff: datetime, statuses: tuple[JobStatus, ...] = FINISHED) -> None:
    """Retention: a finished job (of `statuses`) last changed before `cutoff` may be removed.

    Its updatedAt is when it finished (or later, if it was changed since): a pending or running
    job, or one retried after the cutoff, is never touched."""
    if job.status not in FINISHED or job.status not in statuses:
        raise TransitionConflict(f"Job {job.job_id} is {job.status.value}; it is kept.")
    if job.updated_at >= cutoff:
        raise TransitionConflict(f"Job {job.job_id} changed at {job.updated_at.isoformat()}, after the cutoff; "
                                 "it is kept.")
