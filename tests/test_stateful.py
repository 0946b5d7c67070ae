"""Hypothesis stateful test: random sequences of every lifecycle action against a model.

The model states what each action must do (status, attempts, progress, cancel flag, queue order,
which jobs a reclaim takes). After every step the store is compared with the model and checked for
illegal states: no job is lost, none appears, none is in a state the design does not allow, and the
store's queue and running indexes agree with the job documents. Runs on every backend in BACKENDS.
"""
from __future__ import annotations

import shutil
import tempfile
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from conftest import BACKENDS
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from jobs_core.config import load_settings
from jobs_core.errors import JobCanceled, LeaseLost, TransitionConflict
from jobs_core.lifecycle import Lease
from jobs_core.models import Job, JobStatus, utcnow
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService

P, R, C, F, X = (JobStatus.PENDING, JobStatus.PROCESSING, JobStatus.COMPLETED,
                 JobStatus.FAILED, JobStatus.CANCELED)
LEASE_SECONDS = 30.0
MAX_ATTEMPTS = 3
WORKERS = st.sampled_from(["w1", "w2", "w3"])


@dataclass
class Expected:
    """What the model says one job is."""

    project_id: str
    status: JobStatus = P
    attempts: int = 0
    progress: int = 0
    cancel_requested: bool = False
    available_at: datetime | None = None
    beat: datetime | None = None  # last heartbeat, as written by the action that set it
    lease: Lease | None = None



class LifecycleMachine(RuleBasedStateMachine):
    backend = "files"

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="stateful-"))
        store = BACKENDS[self.backend](self.directory)
        base = load_settings(self.directory / "jobs-store")
        self.service = JobService(store, replace(base, store_url=None, lease_seconds=LEASE_SECONDS,
                                                 max_attempts=MAX_ATTEMPTS, retry_backoff_seconds=0.0,
                                                 renderer="axonometric"))
        self.jobs: dict[str, Expected] = {}
        self.old_leases: list[Lease] = []
        self.clock = utcnow()

    def teardown(self) -> None:
        self.service.store.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- helpers -----------------------------------------------------------------------------
    def now(self) -> datetime:
        self.clock = max(self.clock, utcnow())
        return self.clock

    def ids(self, *statuses: JobStatus) -> list[str]:
        return sorted(job_id for job_id, job in self.jobs.items() if job.status in statuses)

    def running(self, data) -> tuple[str, Expected]:
        job_id = data.draw(st.sampled_from(self.ids(R)), label="job")
        return job_id, self.jobs[job_id]

    def started(self, job_id: str, job: Job) -> None:
        expected = self.jobs[job_id]
        assert job.status is R and job.attempts == expected.attempts + 1 and job.progress == 0
        expected.status, expected.attempts, expected.progress = R, job.attempts, 0
        expected.cancel_requested, expected.beat = False, job.heartbeat_at
        expected.lease = Lease.of(job)

    def ended(self, expected: Expected) -> None:
        if expected.lease is not None:
            self.old_leases.append(expected.lease)
        expected.lease, expected.beat = None, None

    def requeued(self, expected: Expected, job: Job, attempts: int) -> None:
        assert job.status is P and job.attempts == attempts
        self.ended(expected)
        expected.status, expected.attempts, expected.available_at = P, attempts, job.available_at
        expected.progress = job.progress

    def finished(self, expected: Expected, job: Job, status: JobStatus) -> None:
        assert job.status is status, (job.status, status)
        self.ended(expected)
        expected.status, expected.cancel_requested, expected.progress = status, False, job.progress

    def unchanged(self, job_id: str, action, error: type[Exception]) -> None:
        before = self.service.get(job_id).model_dump_json()
        with pytest.raises(error):
            action()
        assert self.service.get(job_id).model_dump_json() == before

    # -- creating and claiming ---------------------------------------------------------------
    @rule(project=st.sampled_from(["p1", "p2"]))
    def submit(self, project: str) -> None:
        job = self.service.submit({"projectId": project})
        assert job.status is P and job.attempts == 0 and job.job_id not in self.jobs
        self.jobs[job.job_id] = Expected(project, available_at=job.available_at)

    def due(self, now: datetime) -> list[str]:
        pending = [job_id for job_id in self.ids(P) if self.jobs[job_id].available_at <= now]
        return sorted(pending, key=self.queue_key)

    def queue_key(self, job_id: str) -> tuple[datetime | int, str]:
        """The store's queue order: availableAt, then jobId. The file store's queue markers name the
        millisecond; the others keep the exact time."""
        at = self.jobs[job_id].available_at
        return (int(at.timestamp() * 1000) if self.backend == "files" else at), job_id

    @rule(worker=WORKERS)
    def claim_next(self, worker: str) -> None:
        now = self.now()
        due = self.due(now)
        job = self.service.claim_next(worker, now=now)
        if not due:
            assert job is None
            return
        assert job is not None and job.job_id == due[0]  # the oldest available job, first
        assert job.worker_id == worker
        self.started(job.job_id, job)

    @rule(count=st.integers(2, 6))
    def concurrent_claims(self, count: int) -> None:
        now = self.now()
        due = set(self.due(now))
        start, results = threading.Barrier(count), [None] * count

        def claim(index: int) -> None:
            start.wait(timeout=10)
            results[index] = self.service.claim_next(f"t{index}", now=now)

        threads = [threading.Thread(target=claim, args=(index,)) for index in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        won = [job for job in results if job is not None]
        assert len({job.job_id for job in won}) == len(won)  # no job claimed twice
        assert {job.job_id for job in won} <= due
        assert len(won) >= min(1, len(due))
        for job in won:
            self.started(job.job_id, job)

    # -- the running job -----------------------------------------------------------------------
    @precondition(lambda self: self.ids(R))
    @rule(data=st.data(), percent=st.integers(-5, 105), stage=st.sampled_from(["massing", "facades", ""]))
    def progress(self, data, percent: int, stage: str) -> None:
        job_id, expected = self.running(data)
        if expected.cancel_requested:
            self.unchanged(job_id, lambda: self.service.report_progress(expected.lease, percent, stage), JobCanceled)
            return
        job = self.service.report_progress(expected.lease, percent, stage)
        expected.progress = max(expected.progress, min(100, max(0, percent)))  # monotonic within an attempt
        assert job.progress == expected.progress and job.status is R
        expected.beat = job.heartbeat_at

    @precondition(lambda self: self.ids(R))
    @rule(data=st.data())
    def heartbeat(self, data) -> None:
        job_id, expected = self.running(data)
        job = self.service.heartbeat(expected.lease)
        assert job.heartbeat_at >= utcnow() - timedelta(seconds=5)
        expected.beat = job.heartbeat_at

    @precondition(lambda self: self.ids(R))
    @rule(data=st.data())
    def complete(self, data) -> None:
        job_id, expected = self.running(data)
        job = self.service.complete(expected.lease, _tiny_png(), prompt=None)
        self.finished(expected, job, C)
        assert job.progress == 100

    @precondition(lambda self: self.ids(R))
    @rule(data=st.data(), retryable=st.booleans())
    def fail(self, data, retryable: bool) -> None:
        job_id, expected = self.running(data)
        job = self.service.fail(expected.lease, "the provider said no", retryable=retryable)
        if retryable and expected.cancel_requested:
            self.finished(expected, job, X)  # no retry of a job the user asked to stop
        elif retryable and expected.attempts < MAX_ATTEMPTS:
            self.requeued(expected, job, expected.attempts)  # the attempt is spent
            assert job.error == "the provider said no"
        else:
            self.finished(expected, job, F)
            assert job.error == "the provider said no"

    @precondition(lambda self: self.ids(R))
    @rule(data=st.data())
    def release(self, data) -> None:
        job_id, expected = self.running(data)
        job = self.service.release(expected.lease)
        if expected.cancel_requested:
            self.finished(expected, job, X)
        else:
            self.requeued(expected, job, expected.attempts - 1)  # shutting down does not spend it

    @precondition(lambda self: any(self.jobs[j].cancel_requested for j in self.ids(R)))
    @rule(data=st.data())
    def confirm_cancel(self, data) -> None:
        job_id = data.draw(st.sampled_from([j for j in self.ids(R) if self.jobs[j].cancel_requested]))
        expected = self.jobs[job_id]
        self.finished(expected, self.service.confirm_cancel(expected.lease), X)

    @precondition(lambda self: self.old_leases)
    @rule(data=st.data(), action=st.sampled_from(["complete", "fail", "progress", "heartbeat", "release"]))
    def stale_owner_is_refused(self, data, action: str) -> None:
        lease = data.draw(st.sampled_from(self.old_leases))
        if lease.job_id not in self.jobs or self.jobs[lease.job_id].lease == lease:
            return  # deleted, or the same worker holds the same attempt again: not stale
        calls = {"complete": lambda: self.service.complete(lease, _tiny_png()),
                 "fail": lambda: self.service.fail(lease, "late", retryable=True),
                 "progress": lambda: self.service.report_progress(lease, 99, "late"),
                 "heartbeat": lambda: self.service.heartbeat(lease),
                 "release": lambda: self.service.release(lease)}
        self.unchanged(lease.job_id, calls[action], LeaseLost)

    # -- user actions ----------------------------------------------------------------------------
    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def cancel(self, data) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        expected = self.jobs[job_id]
        if expected.status in (C, F, X):
            self.unchanged(job_id, lambda: self.service.cancel(job_id), TransitionConflict)
            return
        job = self.service.cancel(job_id)
        if expected.status is P:
            self.finished(expected, job, X)
        else:
            assert job.status is R and job.cancel_requested  # cooperative: the renderer stops itself
            expected.cancel_requested = True

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def retry(self, data) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        expected = self.jobs[job_id]
        if expected.status not in (F, X):
            self.unchanged(job_id, lambda: self.service.retry(job_id), TransitionConflict)
            return
        job = self.service.retry(job_id)
        self.requeued(expected, job, 0)
        assert job.error is None and job.progress == 0

    @precondition(lambda self: self.jobs)
    @rule(data=st.data())
    def delete(self, data) -> None:
        job_id = data.draw(st.sampled_from(sorted(self.jobs)))
        if self.jobs[job_id].status is R:
            self.unchanged(job_id, lambda: self.service.delete(job_id), TransitionConflict)
            return
        self.service.delete(job_id)
        del self.jobs[job_id]

    # -- time passes -------------------------------------------------------------------------------
    @rule(after_lease=st.booleans())
    def reclaim(self, after_lease: bool) -> None:
        now = self.now() + timedelta(seconds=LEASE_SECONDS + 1 if after_lease else 0)
        self.clock = now
        expired = {job_id for job_id in self.ids(R)
                   if (now - self.jobs[job_id].beat).total_seconds() > LEASE_SECONDS}
        reclaimed = self.service.reclaim_expired(now=now)
        assert {job.job_id for job in reclaimed} == expired
        for job in reclaimed:
            expected = self.jobs[job.job_id]
            if expected.cancel_requested:
                self.finished(expected, job, X)
            elif expected.attempts < MAX_ATTEMPTS:
                self.requeued(expected, job, expected.attempts)
                assert job.error == "worker stopped responding"
            else:
                self.finished(expected, job, F)

    # -- after every step ------------------------------------------------------------------------
    @invariant()
    def store_matches_the_model(self) -> None:
        page = self.service.list()
        assert page.unreadable == []
        stored = {job.job_id: job for job in page.jobs}
        assert set(stored) == set(self.jobs), "a job was lost or appeared"
        for job_id, job in stored.items():
            expected = self.jobs[job_id]
            seen = (job.status, job.attempts, job.cancel_requested, job.progress, job.project_id)
            assert seen == (expected.status, expected.attempts, expected.cancel_requested, expected.progress,
                            expected.project_id), job_id
            assert_legal(job)
            last = self.service.events(job_id)[-1]
            assert last.status is job.status and last.attempt == job.attempts  # the log ends where the job is
        assert sorted(job_id for _, job_id in self.service.store.pending()) == self.ids(P)
        assert sorted(job.job_id for job in self.service.store.processing()) == self.ids(R)


def assert_legal(job: Job) -> None:
    """States the design allows, whatever the history."""
    assert 0 <= job.attempts <= job.max_attempts and 0 <= job.progress <= 100
    if job.status is P:
        assert job.attempts < job.max_attempts and job.worker_id is None and not job.cancel_requested
    if job.status is R:
        assert job.attempts >= 1 and job.worker_id and job.heartbeat_at and job.started_at
    if job.status.is_final:
        assert job.finished_at is not None and not job.cancel_requested
    if job.status is C:
        assert job.progress == 100 and job.image_url and job.error is None
    if job.status is F:
        assert job.error


for _name in BACKENDS:
    _machine = type(f"LifecycleMachine_{_name}", (LifecycleMachine,), {"backend": _name})
    _case = _machine.TestCase
    _case.settings = settings(max_examples=25, stateful_step_count=30, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow])
    globals()[f"TestLifecycle_{_name}"] = _case
del _name, _machine, _case
