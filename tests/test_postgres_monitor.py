"""The monitor's index on PostgreSQL: fed by `jobs_updated_since` (the updatedAt index), no code change."""
from __future__ import annotations

import pytest
from postgres_scratch import make_scratch_store

from jobs_core import JobService
from jobs_core.monitor import JobIndex
from jobs_core.monitor.actions import JobRef, run_action
from jobs_core.monitor.sources import StoreFeedSource


@pytest.fixture
def store():
    created = make_scratch_store()  # skips with the reason when there is no PostgreSQL
    yield created
    created.close()


def test_monitor_index_follows_a_postgres_store(store, settings) -> None:
    service = JobService(store, settings)
    first = service.submit({"projectId": "p1"})
    feed = JobIndex(StoreFeedSource(store), poll_seconds=0)
    feed.start()
    try:
        assert list(feed.frame()["job"]) == [first.job_id]
        second = service.submit({"projectId": "p2"})
        assert set(feed.frame()["job"]) == {first.job_id, second.job_id}
        report = run_action(service, "cancel", [JobRef("p2", second.job_id)], feed)
        assert report.done and feed.rows([f"p2/{second.job_id}.json"])["status"].tolist() == ["canceled"]
        service.claim_next("w1")
        assert feed.frame().set_index("job").loc[first.job_id, "status"] == "processing"
        run_action(service, "delete", [JobRef("p2", second.job_id)], feed)
        assert list(feed.frame()["job"]) == [first.job_id]
    finally:
        feed.close()
