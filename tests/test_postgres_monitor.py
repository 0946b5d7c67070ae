"""PostgreSQL's watch for the monitor: its NOTIFY change channel, and the safety poll that finds
what a lost notification did not tell (tests/test_index.py runs the index itself on PostgreSQL)."""
from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import psycopg
import pytest
from postgres_scratch import make_scratch_store

from jobs_core import JobService
from jobs_core.monitor import JobIndex
from jobs_core.monitor.index import POLLING, WATCHING
from jobs_core.store.postgres_watch import PostgresJobWatch


@pytest.fixture
def store():
    created = make_scratch_store()  # skips with the reason when there is no PostgreSQL
    yield created
    created.close()


class Heard:
    """The keys a watch reported, for a test to wait on."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, keys: set[str]) -> None:
        with self.lock:
            self.keys |= keys

    def wait_for(self, key: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if key in self.keys:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {key} to be reported")
            time.sleep(0.01)


def change_without_notifying(store, job_id: str) -> None:
    """Change a row as a writer whose notification was lost leaves it (a new stage and updatedAt),
    without sending a NOTIFY."""
    now = datetime.now(UTC)
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET doc = doc || jsonb_build_object('stage', 'edited by hand', 'updatedAt', "
                     "%s::text), updated_at = %s WHERE job_id = %s",
                     [now.isoformat().replace("+00:00", "Z"), now, job_id])


def test_the_index_on_postgres_is_told_of_changes(store, settings) -> None:
    service = JobService(store, settings)
    index = JobIndex.for_store(store)
    try:
        assert index.mode == WATCHING
        assert index.describe_mode().startswith("Live: PostgreSQL notifies each committed change")
        job = service.submit({"projectId": "p1"})
        key = store.record_key("p1", job.job_id)
        deadline = time.monotonic() + 15
        while key not in index.frame().index:
            assert time.monotonic() < deadline, "the notification never reached the index"
            time.sleep(0.01)
    finally:
        index.close()


def test_a_change_whose_notification_was_lost_is_found_by_the_safety_poll(store, settings) -> None:
    job = JobService(store, settings).submit({"projectId": "p1"})
    heard = Heard()
    watch = PostgresJobWatch(store, heard, safety_seconds=0.1)
    try:
        assert not watch.polling
        change_without_notifying(store, job.job_id)
        heard.wait_for(store.record_key("p1", job.job_id))
        assert store.get(job.job_id, "p1").stage == "edited by hand"
    finally:
        watch.close()


def test_a_job_asked_about_again_is_reported_once(store, settings) -> None:
    job = JobService(store, settings).submit({"projectId": "p1"})
    watch = PostgresJobWatch(store, Heard(), mode="poll", poll_seconds=3600)  # polled by hand below
    try:
        key = store.record_key("p1", job.job_id)
        change_without_notifying(store, job.job_id)
        assert watch.poll_once() == {key}
        assert watch.poll_once() == set()  # still in the overlap window, but not news
        change_without_notifying(store, job.job_id)
        assert watch.poll_once() == {key}
    finally:
        watch.close()


def test_poll_mode_does_not_listen_and_still_sees_changes(store, settings) -> None:
    service = JobService(store, settings)
    index = JobIndex.for_store(store, watch="poll", poll_seconds=0.1)
    try:
        assert index.mode == POLLING
        assert index.describe_mode() == "Polling: PostgreSQL is asked for changed jobs every 0.1 s."
        job = service.submit({"projectId": "p1"})
        change_without_notifying(store, job.job_id)
        key = store.record_key("p1", job.job_id)
        deadline = time.monotonic() + 15
        while key not in index.frame().index or index.frame().loc[key, "stage"] != "edited by hand":
            assert time.monotonic() < deadline, "the poll never found the change"
            time.sleep(0.01)
    finally:
        index.close()


def test_a_closed_watch_reports_nothing_more(store, settings) -> None:
    service = JobService(store, settings)
    heard = Heard()
    watch = PostgresJobWatch(store, heard, safety_seconds=3600)
    first = service.submit({"projectId": "p1"})
    heard.wait_for(store.record_key("p1", first.job_id))
    watch.close()
    later = Heard()
    store.on_change(lambda project, job_id, status: later({job_id}))  # a second listener, to know when
    second = service.submit({"projectId": "p1"})
    later.wait_for(second.job_id)
    assert store.record_key("p1", second.job_id) not in heard.keys
