"""The webhook outbox part of the store contract: every backend runs these bodies (`store` fixture).

Deliveries are written with the change that makes them due; one sender at a time holds each; of
one job only the first is claimable; a claim expires; a retry comes back with its attempts; the
outbox and the signing secret survive reopening the store (a restart of every process).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest

from jobs_core.lifecycle import Lease
from jobs_core.models import JobStatus, utcnow
from jobs_core.renderers.noop import _tiny_png
from jobs_core.store import FileJobStore, MemoryJobStore
from jobs_core.webhooks import Delivery, alert_delivery, body_of

URL = "http://127.0.0.1:9/hook"
LEASE = 30.0


def webhook_job(service, events=None, project="p1"):
    return service.submit({"projectId": project, "renderType": "axonometric", "webhook": URL,
                           "webhookEventsFilter": events})


def later(seconds: float = 0.0):
    return utcnow() + timedelta(seconds=seconds)


def reopen(store):
    if isinstance(store, MemoryJobStore):
        pytest.skip("a memory store does not outlive its process")
    if isinstance(store, FileJobStore):
        return FileJobStore(store.root)
    from jobs_core.store.postgres import PostgresJobStore

    return PostgresJobStore(store.url)


def test_a_claim_and_a_completion_make_start_and_completed_due_with_the_job_as_it_was(service):
    job = webhook_job(service)
    assert service.store.deliveries() == []  # created: nothing to tell yet
    claimed = service.claim_next("w1")
    done = service.complete(Lease.of(claimed), _tiny_png(), None)
    start, completed = service.store.deliveries()
    assert (start.event, completed.event) == ("start", "completed")
    assert start.order < completed.order and start.key == completed.key == job.job_id
    assert start.body == body_of(claimed) and completed.body == body_of(done)
    assert start.url == URL and start.attempts == 0 and start.id != completed.id


def test_jobs_without_a_webhook_and_filtered_events_make_nothing_due(service):
    plain = service.submit({"projectId": "p1"})
    filtered = webhook_job(service, ["completed"])
    leases = {job.job_id: Lease.of(job) for job in (service.claim_next("w1"), service.claim_next("w1"))}
    assert service.store.deliveries() == []  # no webhook; `start` filtered out
    service.cancel(plain.job_id)
    service.cancel(filtered.job_id)
    service.confirm_cancel(leases[plain.job_id])
    service.confirm_cancel(leases[filtered.job_id])
    [canceled] = service.store.deliveries()
    assert canceled.event == "completed" and canceled.job_id == filtered.job_id


def test_only_the_first_delivery_of_a_job_is_claimable_and_a_claim_is_held(service):
    job = webhook_job(service)
    lease = Lease.of(service.claim_next("w1"))
    service.fail(lease, "broken", retryable=False)
    first = service.store.claim_delivery(later(), LEASE)
    assert first is not None and first.event == "start" and first.claim
    assert service.store.claim_delivery(later(), LEASE) is None  # held; and `completed` waits its turn
    assert service.store.finish_delivery(first)
    second = service.store.claim_delivery(later(), LEASE)
    assert second.event == "completed" and second.job_id == job.job_id
    assert service.store.finish_delivery(second)
    assert service.store.deliveries() == [] and service.store.claim_delivery(later(), LEASE) is None


def test_a_retry_comes_back_with_its_attempts_when_due_and_not_before(service):
    webhook_job(service, ["start"])
    service.claim_next("w1")
    claimed = service.store.claim_delivery(later(), LEASE)
    next_at = later(60)
    assert service.store.retry_delivery(replace(claimed, attempts=1, next_at=next_at, last_error="HTTP 500"))
    assert service.store.claim_delivery(later(), LEASE) is None  # not due yet
    again = service.store.claim_delivery(next_at + timedelta(seconds=1), LEASE)
    assert again.id == claimed.id and again.attempts == 1 and again.body == claimed.body


def test_an_expired_claim_is_taken_over_and_the_old_sender_can_no_longer_finish_it(service):
    webhook_job(service, ["start"])
    service.claim_next("w1")
    first = service.store.claim_delivery(later(), lease_seconds=5)
    assert service.store.claim_delivery(later(1), LEASE) is None
    taken = service.store.claim_delivery(later(10), LEASE)  # the first sender died: its lease ran out
    assert taken is not None and taken.id == first.id and taken.claim != first.claim
    assert not service.store.finish_delivery(first)
    assert not service.store.retry_delivery(replace(first, attempts=1))
    assert service.store.finish_delivery(taken)
    assert service.store.deliveries() == []


def test_threads_racing_for_deliveries_get_each_one_once(service):
    for index in range(30):
        webhook_job(service, ["start"], project=f"p{index % 3}")
    while service.claim_next("w1") is not None:
        pass
    assert len(service.store.deliveries()) == 30

    def drain(_: int) -> list[str]:
        won = []
        while (delivery := service.store.claim_delivery(later(), LEASE)) is not None:
            won.append(delivery.id)
            assert service.store.finish_delivery(delivery)
        return won

    with ThreadPoolExecutor(6) as pool:
        claimed = [delivery_id for won in pool.map(drain, range(6)) for delivery_id in won]
    assert len(claimed) == len(set(claimed)) == 30
    assert service.store.deliveries() == []


def test_alert_deliveries_are_queued_once_and_keep_their_order(service):
    alerts = [alert_delivery(URL, "stuck", "2 jobs are stuck."), alert_delivery(URL, "failure-rate", "30% failed.")]
    service.store.enqueue_deliveries(alerts)
    service.store.enqueue_deliveries(alerts[:1])  # the same id again: still one
    assert [d.id for d in service.store.deliveries()] == [d.id for d in alerts]
    first = service.store.claim_delivery(later(), LEASE)
    assert first.id == alerts[0].id and first.job_id is None
    assert Delivery.from_json(first.to_json()) == replace(first, claim=None)


def test_the_secret_is_the_first_one_stored(service):
    first = service.store.webhook_secret("whsec_first")
    assert first == "whsec_first"
    assert service.store.webhook_secret("whsec_second") == "whsec_first"


def test_pending_deliveries_and_the_secret_survive_reopening_the_store(service):
    webhook_job(service)
    claimed = service.claim_next("w1")
    service.complete(Lease.of(claimed), _tiny_png(), None)
    held = service.store.claim_delivery(later(), lease_seconds=5)  # a sender dies holding it
    secret = service.store.webhook_secret("whsec_kept")
    reopened = reopen(service.store)
    try:
        assert [d.event for d in reopened.deliveries()] == ["start", "completed"]
        assert reopened.webhook_secret("whsec_other") == secret
        taken = reopened.claim_delivery(later(10), LEASE)
        assert taken.id == held.id
        assert reopened.get(claimed.job_id).status is JobStatus.COMPLETED
    finally:
        reopened.close()
