"""The embeddable Worker (thread pool) with real renderers, on the memory store: the worker is the
subject here; the store contract suite, and the process tests (test_processes.py on files,
test_postgres_workers.py), run workers on the real backends.

Jobs are held mid-render by the `gate` test renderer (tests/gate_renderer.py), which waits for a
real file, so each test decides exactly when a render may finish.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import gate_renderer  # noqa: F401  (registers gate, broken, flaky, crash)
import pytest
from proc_helpers import wait_until

from jobs_core.errors import JobNotFound
from jobs_core.models import JobStatus, utcnow
from jobs_core.worker import Worker


@pytest.fixture
def service(memory_service):
    return memory_service


@pytest.fixture
def fast(service):
    """Short lease and no backoff, so lease expiry and retries happen within a test."""
    service.settings = replace(service.settings, lease_seconds=1.0, retry_backoff_seconds=0.0)
    return service


@pytest.fixture
def gate(tmp_path):
    directory = tmp_path / "gate"
    directory.mkdir()
    return directory


@pytest.fixture
def workers():
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop(timeout=5)


def submit(service, renderer: str, **inputs):
    return service.submit({"projectId": "p1", "conceptInputs": inputs}, renderer=renderer)


def final(service, job_id: str, timeout: float = 30):
    """The job once it is final and its event log has caught up (the log is appended just after)."""
    def done():
        job = service.get(job_id)
        return job.status.is_final and service.events(job_id)[-1].status is job.status and job
    return wait_until(done, timeout, f"{job_id} to finish")


def test_pool_runs_every_job_with_real_drawings(fast, workers):
    jobs = [submit(fast, "axonometric", floors=floors) for floors in (2, 5, 9)]
    worker = Worker(fast, concurrency=2, poll_seconds=0.05, render_size=128).start()
    workers.append(worker)
    done = [final(fast, job.job_id) for job in jobs]
    assert [job.status for job in done] == [JobStatus.COMPLETED] * 3
    images = [fast.image(job) for job in done]
    assert all(image.startswith(b"\x89PNG") for image in images) and len(set(images)) == 3
    wait_until(worker.idle, what="the pool to go idle")
    assert worker.processed == 3 and worker.running_jobs() == []


def test_cancel_while_rendering_stops_the_render_at_its_next_progress_report(fast, gate, workers):
    job = submit(fast, "gate", gateDir=str(gate))
    workers.append(Worker(fast, poll_seconds=0.05).start())
    wait_until(lambda: (gate / "started").exists(), what="the render to start")
    asked = fast.cancel(job.job_id)
    assert asked.status is JobStatus.PROCESSING and asked.cancel_requested
    canceled = final(fast, job.job_id)  # the gate never opens: only the cancel can end this render
    assert canceled.status is JobStatus.CANCELED and not canceled.cancel_requested
    assert [e.type for e in fast.events(job.job_id)][-2:] == ["cancel-requested", "canceled"]


def test_renderer_failures_become_readable_errors_and_the_worker_goes_on(fast, workers):
    broken, crash, fine = submit(fast, "broken"), submit(fast, "crash"), submit(fast, "noop")
    workers.append(Worker(fast, poll_seconds=0.05).start())
    assert final(fast, broken.job_id).error == "the brief cannot be drawn: walls intersect"
    crashed = final(fast, crash.job_id)
    assert crashed.status is JobStatus.FAILED and crashed.attempts == 1  # a bug is not retried
    assert crashed.error == ("The crash renderer failed unexpectedly "
                             "(ZeroDivisionError: integer division or modulo by zero).")
    assert "Traceback" not in crashed.error
    assert final(fast, fine.job_id).status is JobStatus.COMPLETED


def test_an_image_that_is_not_a_whole_png_fails_the_job_and_is_not_stored(fast, workers):
    job = submit(fast, "jpeg")
    workers.append(Worker(fast, poll_seconds=0.05).start())
    failed = final(fast, job.job_id)
    assert failed.status is JobStatus.FAILED and failed.image_url is None
    assert failed.error.startswith("The renderer's image is not a whole PNG (77 bytes")
    with pytest.raises(JobNotFound):
        fast.store.load_image(job.project_id, job.job_id)


def test_retryable_failures_are_retried_until_attempts_are_spent(fast, workers):
    job = submit(fast, "flaky")
    workers.append(Worker(fast, poll_seconds=0.05).start())
    failed = final(fast, job.job_id)
    assert failed.status is JobStatus.FAILED and failed.attempts == failed.max_attempts == 3
    assert failed.error == "the provider is busy"
    kinds = [e.type for e in fast.events(job.job_id) if e.type in ("claimed", "requeued", "failed")]
    assert kinds == ["claimed", "requeued", "claimed", "requeued", "claimed", "failed"]


def test_retryable_failure_backs_off_before_the_next_attempt(service):
    service.settings = replace(service.settings, retry_backoff_seconds=60.0)
    job = submit(service, "flaky")
    worker = Worker(service)
    worker.run(service.claim_next(worker.worker_id))
    requeued = service.get(job.job_id)
    assert requeued.status is JobStatus.PENDING and requeued.attempts == 1
    assert requeued.available_at > utcnow() + timedelta(seconds=55)
    assert service.claim_next("someone-else") is None and service.has_work()


def test_heartbeats_keep_a_long_silent_render_from_being_reclaimed(fast, gate, workers):
    """A render that reports no progress for many leases stays with its worker while it is alive."""
    job = submit(fast, "gate", gateDir=str(gate), quiet=True)
    owner = Worker(fast, poll_seconds=0.05).start()
    workers.append(owner)
    wait_until(lambda: (gate / "started").exists(), what="the render to start")
    rival = Worker(fast, poll_seconds=0.05).start()  # reclaims expired jobs every lease/3
    workers.append(rival)
    lease = fast.settings.lease_seconds
    held = wait_until(lambda: (j := fast.get(job.job_id)).heartbeat_at - j.started_at > timedelta(seconds=3 * lease)
                      and j, what="three leases of heartbeats")
    assert held.status is JobStatus.PROCESSING and held.worker_id == owner.worker_id and held.attempts == 1
    (gate / "open").touch()
    done = final(fast, job.job_id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 1 and done.worker_id == owner.worker_id


def test_a_worker_whose_job_was_reclaimed_stops_and_cannot_overwrite_the_new_owner(fast, gate, workers):
    job = submit(fast, "gate", gateDir=str(gate))
    first = Worker(fast, poll_seconds=0.05).start()
    workers.append(first)
    wait_until(lambda: (gate / "started").exists(), what="the render to start")
    # As if the first worker had gone silent: the job is reclaimed (time jumps past its lease).
    [requeued] = fast.reclaim_expired(now=fast.get(job.job_id).heartbeat_at + timedelta(seconds=5))
    assert requeued.status is JobStatus.PENDING
    wait_until(lambda: first.running_jobs() == [], what="the first worker to notice and let go")
    first.stop(timeout=5)
    assert fast.get(job.job_id).status is JobStatus.PENDING  # it let go without failing or releasing it

    (gate / "open").touch()
    second = Worker(fast, poll_seconds=0.05).start()
    workers.append(second)
    done = final(fast, job.job_id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 2 and done.worker_id == second.worker_id


def test_stop_releases_running_jobs_without_spending_the_attempt(fast, gate, workers):
    job = submit(fast, "gate", gateDir=str(gate))
    worker = Worker(fast, poll_seconds=0.05).start()
    wait_until(lambda: (gate / "started").exists(), what="the render to start")
    worker.stop(timeout=10)
    released = fast.get(job.job_id)
    assert released.status is JobStatus.PENDING and released.attempts == 0 and released.worker_id is None
    assert not worker.alive


class _NeedsKey:
    """A renderer that can run only where TEST_RENDER_KEY is set, as an AI provider needs its key."""

    name = "needs-key"

    def configuration_problem(self):
        import os

        return None if os.environ.get("TEST_RENDER_KEY") else "TEST_RENDER_KEY is not set"


def test_a_worker_never_claims_a_job_whose_renderer_is_not_set_up_here(service, workers, monkeypatch):
    from jobs_core.renderers import get_renderer, register
    from jobs_core.renderers.noop import NoopRenderer

    class NeedsKey(_NeedsKey, NoopRenderer):
        pass

    register("needs-key", NeedsKey)
    monkeypatch.delenv("TEST_RENDER_KEY", raising=False)
    assert get_renderer("needs-key").configuration_problem() == "TEST_RENDER_KEY is not set"
    keyed = submit(service, "needs-key")
    drawn = submit(service, "axonometric")
    without_key = Worker(service, poll_seconds=0.05).start()
    workers.append(without_key)
    assert final(service, drawn.job_id).status is JobStatus.COMPLETED
    waiting = service.get(keyed.job_id)
    assert waiting.status is JobStatus.PENDING and waiting.attempts == 0 and waiting.error is None
    monkeypatch.setenv("TEST_RENDER_KEY", "present")
    with_key = Worker(service, poll_seconds=0.05).start()
    workers.append(with_key)
    done = final(service, keyed.job_id)
    assert done.status is JobStatus.COMPLETED and done.worker_id == with_key.worker_id


def test_a_running_pool_is_listed_as_alive_with_what_it_can_run_until_it_stops(service):
    worker = Worker(service, poll_seconds=0.05).start()
    try:
        [seen] = service.live_workers()
        assert seen.worker_id == worker.worker_id and "axonometric" in seen.renderers
    finally:
        worker.stop()
    assert service.live_workers() == []
