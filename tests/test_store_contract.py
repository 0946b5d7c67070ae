"""The store contract: every backend runs these bodies (see the `store` fixture)."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from jobs_core import lifecycle
from jobs_core.errors import JobCanceled, JobNotFound, LeaseLost, TransitionConflict
from jobs_core.lifecycle import Lease
from jobs_core.models import JobStatus, utcnow
from jobs_core.renderers.noop import _tiny_png


def submit(service, project="p1", **inputs):
    return service.submit({"projectId": project, "renderType": "axonometric", "conceptInputs": inputs})


def test_create_then_get_with_and_without_project(service):
    job = submit(service, floors=7)
    assert job.status is JobStatus.PENDING and job.progress == 0 and job.attempts == 0
    for found in (service.get(job.job_id, "p1"), service.get(job.job_id)):
        assert found.job_id == job.job_id
        assert found.concept_inputs["floors"] == 7
    concept = service.store.load_concept("p1", job.concept_id)
    assert concept.concept_inputs == job.concept_inputs


def test_get_unknown_job_or_wrong_project_is_not_found(service):
    job = submit(service)
    with pytest.raises(JobNotFound):
        service.get("job_doesnotexist")
    with pytest.raises(JobNotFound):
        service.get(job.job_id, "other-project")


def test_list_by_project_status_and_pages_newest_first(service):
    jobs = [submit(service, project=p) for p in ("a", "b", "a", "a")]
    service.cancel(jobs[0].job_id)
    assert [j.job_id for j in service.list("a").jobs] == [jobs[3].job_id, jobs[2].job_id, jobs[0].job_id]
    assert [j.job_id for j in service.list(status="canceled").jobs] == [jobs[0].job_id]
    assert len(service.list().jobs) == 4
    first = service.list(limit=3)
    assert [j.job_id for j in first.jobs] == [j.job_id for j in reversed(jobs[1:])]
    rest = service.list(limit=3, cursor=first.next_cursor)
    assert [j.job_id for j in rest.jobs] == [jobs[0].job_id] and rest.next_cursor is None
    assert service.store.projects() == ["a", "b"]


def test_claim_takes_oldest_first_and_each_job_once(service):
    jobs = [submit(service) for _ in range(3)]
    claimed = [service.claim_next("w1") for _ in range(4)]
    assert [j.job_id for j in claimed[:3]] == [j.job_id for j in jobs]
    assert claimed[3] is None
    assert all(j.status is JobStatus.PROCESSING and j.attempts == 1 and j.worker_id == "w1" for j in claimed[:3])


def test_threads_racing_for_claims_get_each_job_once(service):
    jobs = {submit(service).job_id for _ in range(40)}

    def drain(worker: str) -> list[str]:
        won = []
        while (job := service.claim_next(worker)) is not None:
            won.append(job.job_id)
        return won

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(drain, [f"w{i}" for i in range(8)]))
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == sorted(jobs)


def test_full_lifecycle_with_progress_image_and_events(service):
    job = submit(service)
    lease = Lease.of(service.claim_next("w1"))
    service.report_progress(lease, 40, "drawing facades")
    service.report_progress(lease, 20, "drawing facades")  # never goes backwards within an attempt
    assert service.get(job.job_id).progress == 40
    done = service.complete(lease, _tiny_png(), prompt="a test")
    assert done.status is JobStatus.COMPLETED and done.progress == 100 and done.finished_at
    assert done.image_url == f"/api/renders/p1/{job.job_id}.png"
    assert service.image(done) == _tiny_png()
    kinds = [e.type for e in service.events(job.job_id)]
    assert kinds == ["created", "claimed", "progress", "completed"]


def test_transitions_are_compare_and_set(service):
    job = submit(service)
    lease = Lease.of(service.claim_next("w1"))
    with pytest.raises(TransitionConflict):
        service.claim(job.job_id, "w2")  # already processing
    stale = Lease(lease.job_id, lease.project_id, "w2", lease.attempt)
    with pytest.raises(LeaseLost):
        service.complete(stale, _tiny_png())  # not the owner
    service.complete(lease, _tiny_png())
    with pytest.raises(TransitionConflict):
        service.cancel(job.job_id)  # completed jobs cannot be canceled
    assert service.get(job.job_id).status is JobStatus.COMPLETED


def test_cancel_pending_is_immediate_and_processing_is_cooperative(service):
    pending = submit(service)
    assert service.cancel(pending.job_id).status is JobStatus.CANCELED
    running = submit(service)
    lease = Lease.of(service.claim_next("w1"))
    asked = service.cancel(running.job_id)
    assert asked.status is JobStatus.PROCESSING and asked.cancel_requested
    with pytest.raises(JobCanceled):
        service.report_progress(lease, 50, "drawing")
    assert service.confirm_cancel(lease).status is JobStatus.CANCELED


def test_retryable_failure_requeues_with_backoff_then_fails_when_spent(service):
    service.settings = service.settings.__class__(**{**service.settings.__dict__, "retry_backoff_seconds": 60})
    job = submit(service)
    lease = Lease.of(service.claim_next("w1"))
    requeued = service.fail(lease, "provider busy", retryable=True)
    assert requeued.status is JobStatus.PENDING and requeued.error == "provider busy"
    assert requeued.available_at > utcnow() + timedelta(seconds=50)
    assert service.claim_next("w1") is None  # backing off: not due yet
    for attempt in (2, 3):
        lease = Lease.of(service.store.modify(job.job_id, None, lambda j: lifecycle.claim(
            j, "w1", now=j.available_at)))
        assert lease.attempt == attempt
        last = service.fail(lease, "provider busy", retryable=True)
    assert last.status is JobStatus.FAILED and last.attempts == 3


def test_non_retryable_failure_then_retry_resets_attempts(service):
    job = submit(service)
    failed = service.fail(Lease.of(service.claim_next("w1")), "bad prompt", retryable=False)
    assert failed.status is JobStatus.FAILED and failed.error == "bad prompt"
    again = service.retry(job.job_id)
    assert again.status is JobStatus.PENDING and again.attempts == 0 and again.error is None
    assert service.claim_next("w2").job_id == job.job_id
    assert [e.type for e in service.events(job.job_id)][-2:] == ["retried", "claimed"]


def test_expired_lease_is_reclaimed_then_failed_when_attempts_are_spent(service):
    job = submit(service)
    clock = utcnow()
    for attempt in range(1, 4):
        claimed = service.claim_next(f"w{attempt}", now=clock)
        assert claimed.attempts == attempt
        later = clock = claimed.heartbeat_at + timedelta(seconds=31)
        assert service.reclaim_expired(now=claimed.heartbeat_at + timedelta(seconds=5)) == []
        [reclaimed] = service.reclaim_expired(now=later)
    assert reclaimed.status is JobStatus.FAILED and reclaimed.error == lifecycle.LOST_WORKER
    assert service.get(job.job_id).attempts == 3


def test_release_returns_job_without_spending_an_attempt(service):
    job = submit(service)
    lease = Lease.of(service.claim_next("w1"))
    released = service.release(lease)
    assert released.status is JobStatus.PENDING and released.attempts == 0
    assert service.claim_next("w2").job_id == job.job_id


def test_queue_position_and_delete(service):
    jobs = [submit(service) for _ in range(3)]
    assert [service.queue_position(j) for j in jobs] == [1, 2, 3]
    service.delete(jobs[0].job_id)
    with pytest.raises(JobNotFound):
        service.get(jobs[0].job_id)
    assert service.queue_position(service.get(jobs[2].job_id)) == 2
    service.claim_next("w1")
    with pytest.raises(TransitionConflict):
        service.delete(jobs[1].job_id)  # processing: cancel first


def test_resubmit_renders_same_concept_in_another_type(service):
    job = submit(service, floors=9)
    again = service.resubmit(job.job_id, "plan")
    assert again.concept_id == job.concept_id and again.render_type == "plan"
    assert again.concept_inputs == job.concept_inputs


def test_a_claim_for_some_renderers_skips_jobs_of_others_and_leaves_them_untouched(service):
    other = service.submit({"projectId": "p1", "renderType": "axonometric", "conceptInputs": {}}, renderer="noop")
    mine = submit(service)
    claimed = service.claim_next("w1", renderers={"axonometric"})
    assert claimed.job_id == mine.job_id
    assert service.claim_next("w1", renderers={"axonometric"}) is None
    left = service.get(other.job_id)
    assert left.status is JobStatus.PENDING and left.attempts == 0 and left == other
    assert service.claim_next("w2", renderers={"noop", "axonometric"}).job_id == other.job_id


def test_workers_say_they_are_alive_and_a_silent_or_stopped_one_is_not_listed(service):
    from jobs_core.store.base import WorkerInfo

    now = utcnow()
    store = service.store
    store.record_worker(WorkerInfo("host.example-1-a", ("axonometric",), now - timedelta(seconds=100)))
    store.record_worker(WorkerInfo("host.example-2-b", ("axonometric", "openai"), now, "the disk is full"))
    store.record_worker(WorkerInfo("host.example-1-a", ("axonometric",), now))  # said it again
    assert [(w.worker_id, w.renderers, w.problem) for w in store.workers(now - timedelta(seconds=10))] == [
        ("host.example-1-a", ("axonometric",), None),
        ("host.example-2-b", ("axonometric", "openai"), "the disk is full")]
    store.forget_worker("host.example-1-a")
    assert [w.worker_id for w in store.workers(now - timedelta(seconds=10))] == ["host.example-2-b"]
    assert store.workers(now + timedelta(seconds=1)) == []


def test_a_pending_job_says_why_it_waits_when_no_live_worker_can_run_it(service):
    from jobs_core.store.base import WorkerInfo

    job = submit(service)
    assert service.waiting_reason(job) == "No worker is running, so the job waits until one starts."
    service.store.record_worker(WorkerInfo("w-drawing-only", ("noop",), utcnow()))
    assert "can use the axonometric renderer" in service.waiting_reason(job)
    service.store.record_worker(WorkerInfo("w-all", ("axonometric", "noop"), utcnow()))
    assert service.waiting_reason(job) is None  # simply queued
    assert service.waiting_reason(service.cancel(job.job_id)) is None


REFUSED_BRIEFS = [
    ({"title": "a\x00b"}, "conceptInputs.title must not contain a NUL character"),
    ({"description": "\ud800"}, "lone surrogate"),
    ({"width": float("nan")}, "conceptInputs.width must be a finite number"),
    ({"note": float("inf")}, "conceptInputs.note must be a finite number"),
    ({"note": 10**40}, "too large a number"),
    ({"note": [[[[[[[[[["deep"]]]]]]]]]]}, "nested more than 8 levels"),
    ({"note": {"k\x00": 1}}, "(a key) must not contain a NUL character"),
]
ACCEPTED_BRIEFS = [
    {"title": "Bibliothèque 図書館 Библиотека 📚", "description": "ﻣﻜﺘﺒﺔ — e\u0301 \u2028 tab\tend"},
    {"note": {"nested": [1, 2.5, True, None, "x"]}, "budget": 10**15},
]


@pytest.mark.parametrize("inputs, sentence", REFUSED_BRIEFS, ids=[s for _, s in REFUSED_BRIEFS])
def test_every_backend_refuses_the_same_briefs_before_anything_is_written(service, inputs, sentence):
    from jobs_core.errors import InvalidInput

    with pytest.raises(InvalidInput, match=re.escape(sentence)):
        submit(service, **inputs)
    assert service.list().jobs == []


def test_every_backend_keeps_unusual_but_valid_briefs_exactly(service):
    for inputs in ACCEPTED_BRIEFS:
        job = submit(service, **inputs)
        stored = service.get(job.job_id)
        assert stored.concept_inputs == job.concept_inputs
        for key, value in inputs.items():
            assert stored.concept_inputs[key] == (value.strip() if isinstance(value, str) else value)


def test_jobs_created_while_others_claim_are_each_claimed_exactly_once(service):
    import threading

    created: list[str] = []
    claimed: list[str] = []
    creating = threading.Event()
    creating.set()

    def create() -> None:
        for _ in range(30):
            created.append(submit(service).job_id)

    def claim() -> None:
        while creating.is_set() or service.store.pending():
            job = service.claim_next("w")
            if job is not None:
                claimed.append(job.job_id)

    creators = [threading.Thread(target=create) for _ in range(3)]
    claimers = [threading.Thread(target=claim) for _ in range(3)]
    for thread in creators + claimers:
        thread.start()
    for thread in creators:
        thread.join(60)
    creating.clear()
    for thread in claimers:
        thread.join(60)
    assert sorted(claimed) == sorted(created) and len(set(claimed)) == 90
    assert {job.job_id for job in service.store.processing()} == set(created)
