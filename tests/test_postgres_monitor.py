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


# -- the first build from the index's fields (column_scan.py, postgres_scan.py) -------------------
def _edit(store, statement: str, params=()) -> None:
    """A row changed by hand, as anyone with the database can (rows are untrusted)."""
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute(statement, params)


def _odd_rows(store, service: JobService) -> None:
    """Rows whose documents are not what the store writes: each must read as `scan_jobs` reads it."""
    jobs = [service.submit({"projectId": "odd", "conceptInputs": {"title": f"odd {n}"}}) for n in range(14)]
    edits = [
        "doc || '{\"progress\": 5.0}'",  # a float: the index counts it as 0, as json.loads gives a float
        "doc || '{\"progress\": \"40\"}'",  # text where a number belongs
        "doc || '{\"attempts\": true}'",
        "doc || '{\"stage\": 7}'",  # a number where text belongs
        "doc || '{\"conceptInputs\": {\"title\": 12}}'",
        "doc || '{\"conceptInputs\": [\"a list\"]}'",
        "doc || '{\"conceptInputs\": \"a text\"}'",
        "doc - 'stage' - 'workerId' - 'progress'",  # fields missing
        "doc || '{\"updatedAt\": \"not a time\", \"createdAt\": 5}'",
        "doc || '{\"status\": \"lost\", \"error\": null}'",
        "doc || '{\"jobId\": \"someone-else\"}'",  # not this row's job: unreadable
        "'[1, 2]'::jsonb",  # not a document: unreadable
        "doc - 'jobId'",
        "doc || '{\"projectId\": \"elsewhere\", \"progress\": -12}'",
    ]
    for job, edit in zip(jobs, edits, strict=True):
        _edit(store, f"UPDATE jobs SET doc = {edit} WHERE job_id = %s", [job.job_id])


def _plain_rows(service: JobService) -> None:
    """Jobs in every state, with text that CSV must carry as it is (commas, quotes, new lines)."""
    from jobs_core.lifecycle import Lease
    from jobs_core.renderers.noop import _tiny_png

    titles = ["Plain", 'With "quotes", commas', "Two\nlines\r\nand a return", "", "Ünïcødé 漢字 🏠", "\\N"]
    jobs = [service.submit({"projectId": f"p{n % 3}", "renderType": "plan", "conceptInputs": {"title": title}})
            for n, title in enumerate(titles)]
    running = Lease.of(service.claim(jobs[0].job_id, "w1"))
    service.report_progress(running, 40, 'drawing "facades", east\nside')
    service.complete(Lease.of(service.claim(jobs[1].job_id, "w2")), _tiny_png())
    service.fail(Lease.of(service.claim(jobs[2].job_id, "w,3")), "The renderer ran out of memory,\n\"twice\".")
    service.cancel(jobs[3].job_id)


def _builds_agree(store) -> JobIndex:
    """The index built from fields equals the one built from whole documents; returns the first."""
    from_fields = JobIndex.for_store(store, watch="off")
    from_documents = JobIndex.for_store(store, watch="off", field_scan=False)
    assert from_fields.field_scan and not from_documents.field_scan
    assert from_fields.unreadable() == from_documents.unreadable()
    import pandas as pd

    pd.testing.assert_frame_equal(from_fields.frame().sort_index(), from_documents.frame().sort_index())
    return from_fields


@pytest.mark.parametrize("batch_rows", [16384, 3])  # one batch; many, cut between any rows
def test_the_first_build_from_fields_equals_one_from_whole_documents(store, settings, batch_rows, monkeypatch) -> None:
    from jobs_core.monitor import column_scan
    from jobs_core.store import postgres_scan

    monkeypatch.setattr(postgres_scan, "BATCH_ROWS", batch_rows)

    assert _builds_agree(store).frame().empty  # an empty table too
    service = JobService(store, settings)
    _plain_rows(service)
    _odd_rows(store, service)
    _edit(store, "UPDATE jobs SET doc = jsonb_set(doc, '{conceptInputs,title}', to_jsonb(repeat('é', 300))) "
                 "WHERE doc -> 'conceptInputs' ->> 'title' = 'Plain'")  # longer than the index keeps
    index = _builds_agree(store)
    batches = list(store.scan_job_fields(column_scan._fields()))
    assert len(batches) == (1 if batch_rows > 20 else 7)
    # plain rows as fields, the rest whole
    assert sum(len(batch.keys) for batch in batches) == 11 and sum(len(batch.others) for batch in batches) == 9
    assert len(index.frame()) == 17 and len(index.unreadable()) == 3
    long_titles = index.frame()["title"].loc[lambda titles: titles.str.startswith("é", na=False)]
    assert long_titles.str.len().tolist() == [200]


def test_a_restart_sees_what_changed_and_was_deleted_while_the_monitor_was_down(store, settings) -> None:
    from jobs_core.lifecycle import Lease

    service = JobService(store, settings)
    jobs = [service.submit({"projectId": f"p{n % 2}"}) for n in range(6)]
    before = JobIndex.for_store(store, watch="off")
    before.close()
    running = Lease.of(service.claim(jobs[0].job_id, "w1"))
    service.report_progress(running, 70, "roof")
    service.delete(jobs[1].job_id, jobs[1].project_id)
    service.cancel(jobs[2].job_id)
    added = service.submit({"projectId": "p9"})
    change_without_notifying(store, jobs[3].job_id)
    after = _builds_agree(store)
    frame = after.frame()
    assert store.record_key(jobs[1].project_id, jobs[1].job_id) not in frame.index
    assert frame.loc[store.record_key("p9", added.job_id), "status"] == "pending"
    assert frame.loc[store.record_key(jobs[0].project_id, jobs[0].job_id), "progress"] == 70
    assert frame.loc[store.record_key(jobs[3].project_id, jobs[3].job_id), "stage"] == "edited by hand"
