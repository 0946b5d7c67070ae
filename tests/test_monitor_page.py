"""The monitor page through Streamlit's AppTest, on a generated store of real job files.

The store is the subject here (the index reads every file, the watcher follows them, a corrupt
file is listed), so these run on a jobs directory. The page is opened through app.py, as a person
reaches it, with no worker in the app so that nothing changes the generated jobs underneath.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from bench.generate_store import Plan, generate
from jobs_core import FileJobStore, JobService
from jobs_core.lifecycle import Lease
from jobs_core.models import JobStatus
from jobs_core.renderers.noop import _tiny_png

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")


def independent_counts(root: Path) -> tuple[Counter, list[dict]]:
    """Status counts made with json alone (no jobs_core code), and the documents themselves."""
    docs = []
    for path in (root / "jobs").glob("*/*.json"):
        try:
            docs.append(json.loads(path.read_text()))
        except ValueError:
            continue
    return Counter(doc["status"] for doc in docs), docs


@pytest.fixture
def store_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "store"
    generate(root, Plan(jobs=400, projects=12, weeks=6, now=datetime.now(UTC)), images=True, events=True)
    monkeypatch.setenv("JOBS_DIR", str(root))
    monkeypatch.delenv("JOBS_STORE_URL", raising=False)
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    yield root
    st.cache_resource.clear()  # stops the app's runtime and with it the index's watcher


def open_monitor() -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60).run()  # the render page, the default
    return app.switch_page("pages/monitor.py").run()


def run_page() -> AppTest:
    app = open_monitor()
    assert not app.exception, [e.message for e in app.exception]
    return app


def metric(app: AppTest, label: str) -> str:
    [found] = [m for m in app.metric if m.label == label]
    return found.value


def jobs_table(app: AppTest):
    return next(frame for frame in app.dataframe if frame.key and frame.key.startswith("monitor_jobs_"))


def test_metrics_equal_an_independent_count(store_dir: Path) -> None:
    counts, _ = independent_counts(store_dir)
    finished = counts["completed"] + counts["failed"] + counts["canceled"]
    app = run_page()
    assert metric(app, "Jobs") == f"{sum(counts.values()):,}"
    assert metric(app, "Pending") == str(counts["pending"])
    assert metric(app, "Running now") == str(counts["processing"])
    assert metric(app, "Completion rate") == f"{counts['completed'] / finished:.1%}"
    assert metric(app, "Failure rate") == f"{counts['failed'] / finished:.1%}"
    assert int(metric(app, "Stuck")) >= 25  # the generator's dead workers
    table = jobs_table(app).value
    assert len(table) == 50  # one page of rows, never the whole store
    [stuck] = app.main.warning  # the generator's dead workers, by name; nothing else is wrong
    assert stuck.value.startswith("Stuck: 25 jobs whose worker stopped heartbeating for longer than the lease "
                                  "(30 s): worker-")


def test_filters_narrow_every_figure(store_dir: Path) -> None:
    counts, docs = independent_counts(store_dir)
    app = run_page()
    app.multiselect(key="filter_statuses").set_value(["failed"]).run()
    assert metric(app, "Jobs") == str(counts["failed"])
    assert metric(app, "Failure rate") == "100.0%"
    project = sorted({doc["projectId"] for doc in docs})[3]
    app.multiselect(key="filter_projects").set_value([project]).run()
    expected = sum(doc["status"] == "failed" and doc["projectId"] == project for doc in docs)
    assert metric(app, "Jobs") == str(expected)
    assert set(jobs_table(app).value["project"]) <= {project}
    app.multiselect(key="filter_projects").set_value([]).run()
    app.text_input(key="filter_error").input("timed out").run()
    expected = sum(doc["status"] == "failed" and "timed out" in (doc["error"] or "") for doc in docs)
    assert metric(app, "Jobs") == str(expected)


def select_rows(app: AppTest, rows: list[int]) -> None:
    app.session_state[jobs_table(app).key] = {"selection": {"rows": rows, "columns": []}}
    app.run()


def test_retry_and_delete_selected_jobs_change_the_store(store_dir: Path) -> None:
    store = FileJobStore(store_dir)
    app = run_page()
    app.multiselect(key="filter_statuses").set_value(["failed"]).run()
    shown = jobs_table(app).value
    first, second = shown.iloc[0], shown.iloc[1]
    select_rows(app, [0, 1])
    [retry] = [b for b in app.button if b.label == "Retry 2"]
    retry.click().run()
    assert not app.exception
    assert store.get(first["job"], first["project"]).status is JobStatus.PENDING
    assert store.get(second["job"], second["project"]).status is JobStatus.PENDING
    assert any("Retried 2 jobs" in s.value for s in app.success)

    third = jobs_table(app).value.iloc[0]  # the view is still "failed": the retried jobs left it
    assert third["job"] not in {first["job"], second["job"]}
    select_rows(app, [0])
    [delete] = [b for b in app.button if b.label == "Delete 1"]
    delete.click().run()
    assert store.get(third["job"], third["project"]).status is JobStatus.FAILED  # not before confirming
    [confirm] = [b for b in app.button if b.label == "Yes, delete"]
    confirm.click().run()
    assert not (store_dir / "jobs" / third["project"] / f"{third['job']}.json").exists()
    assert any("Deleted 1 job" in s.value for s in app.success)


def test_refused_actions_say_why_and_change_nothing(store_dir: Path) -> None:
    store = FileJobStore(store_dir)
    app = run_page()
    app.multiselect(key="filter_statuses").set_value(["completed"]).run()
    row = jobs_table(app).value.iloc[0]
    select_rows(app, [0])
    [cancel] = [b for b in app.button if b.label == "Cancel 1"]
    cancel.click().run()
    assert store.get(row["job"], row["project"]).status is JobStatus.COMPLETED
    assert any("could not be changed" in w.value for w in app.warning)
    assert any("Cannot cancel job" in c.value for c in app.caption)


def test_one_selected_job_shows_its_brief_image_and_history(store_dir: Path) -> None:
    app = run_page()
    app.multiselect(key="filter_statuses").set_value(["completed"]).run()
    row = jobs_table(app).value.iloc[0]
    select_rows(app, [0])
    doc = json.loads((store_dir / "jobs" / row["project"] / f"{row['job']}.json").read_text())
    assert [s.value for s in app.subheader] == [f"{doc['conceptInputs']['title']} · {doc['renderType']}"]
    assert app.get("image"), "the job's image is shown"
    history = [frame.value for frame in app.dataframe if "event" in frame.value.columns]
    assert list(history[0]["event"]) == ["created", "claimed", "completed"]


def test_a_corrupt_file_is_listed_while_everything_else_works(store_dir: Path) -> None:
    counts, docs = independent_counts(store_dir)
    victim = docs[0]
    path = store_dir / "jobs" / victim["projectId"] / f"{victim['jobId']}.json"
    path.write_text('{"jobId": "truncated')
    app = run_page()
    assert metric(app, "Jobs") == f"{sum(counts.values()) - 1:,}"
    assert any("1 file(s) in the store are not readable jobs" in w.value for w in app.warning)
    unreadable = [frame.value for frame in app.dataframe if "reason" in frame.value.columns][0]
    assert unreadable["file"].tolist() == [str(path)]
    assert "not valid JSON" in unreadable["reason"].iloc[0]


def test_an_empty_store_shows_a_hint_and_zeroes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("JOBS_STORE_URL", raising=False)
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    try:
        app = run_page()
        assert metric(app, "Jobs") == "0" and metric(app, "Completion rate") == "–"
        assert any("No jobs in the store yet" in info.value for info in app.info)
    finally:
        st.cache_resource.clear()


def test_the_page_says_when_it_polls_instead_of_watching(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobs_core.store import file_watch

    def refuse(self) -> None:  # inotify limits cannot be exhausted safely on a shared machine
        raise OSError(24, "too many open files")

    monkeypatch.setattr(file_watch.Observer, "start", refuse)
    app = run_page()
    assert any("Polling: the file watcher could not start (too many open files)" in info.value for info in app.info)
    assert metric(app, "Jobs") == "400"


def test_a_selection_stays_on_its_jobs_while_new_jobs_arrive(store_dir: Path) -> None:
    app = run_page()
    newest = jobs_table(app).value.iloc[0]["job"]
    select_rows(app, [0])
    arrived = JobService(FileJobStore(store_dir)).submit({"projectId": "late-arrival"})
    deadline = time.monotonic() + 10
    while metric(app, "Jobs") != "401":  # the watcher has to see the new file first (bounded)
        assert time.monotonic() < deadline, "the new job never reached the page"
        time.sleep(0.1)
        app.run()
    assert jobs_table(app).value.iloc[0]["job"] == newest  # not shifted under the selection
    assert [b.label for b in app.button if b.key == "monitor_cancel"] == ["Cancel 1"]
    select_rows(app, [])
    assert jobs_table(app).value.iloc[0]["job"] == arrived.job_id  # unselected: the live order again


def test_a_bad_watch_setting_is_a_clear_sentence(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_MONITOR_WATCH", "sometimes")
    app = open_monitor()
    assert not app.exception
    assert [e.value for e in app.error] == ["JOBS_MONITOR_WATCH='sometimes' must be one of: auto, poll, off."]


def test_polling_can_be_asked_for(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBS_MONITOR_WATCH", "poll")
    app = run_page()
    assert any("Polling: polling was asked for" in info.value for info in app.info)


def test_the_page_number_stays_in_range_when_the_view_shrinks(store_dir: Path) -> None:
    app = run_page()
    app.number_input(key="monitor_page").set_value(8).run()
    assert jobs_table(app).value.iloc[0]["job"] != ""
    app.multiselect(key="filter_statuses").set_value(["canceled"]).run()  # about 20 jobs: one page
    assert not app.exception
    assert app.number_input(key="monitor_page").value == 1
    assert len(jobs_table(app).value) == int(metric(app, "Jobs"))


# -- issue 17: truthful, bulk actions, alerts -------------------------------------------------------
def press(app: AppTest, label: str) -> None:
    [button] = [b for b in app.button if b.label == label]
    button.click().run()
    assert not app.exception, [e.message for e in app.exception]


def test_retry_all_failed_jobs_shown_after_a_confirmation(store_dir: Path) -> None:
    _, docs = independent_counts(store_dir)
    project = sorted({doc["projectId"] for doc in docs})[2]
    shown = [doc for doc in docs if doc["projectId"] == project and doc["status"] == "failed"]
    others = [doc for doc in docs if doc["projectId"] != project and doc["status"] == "failed"]
    assert shown and others
    app = run_page()
    app.multiselect(key="filter_projects").set_value([project]).run()
    label = f"Retry all {len(shown)} failed job{'s' if len(shown) != 1 else ''} shown"
    press(app, label)
    store = FileJobStore(store_dir)
    assert {store.get(d["jobId"], project).status for d in shown} == {JobStatus.FAILED}  # not before confirming
    assert any(f"Retry {len(shown)} failed job" in w.value for w in app.warning)
    press(app, f"Yes, retry {len(shown)}")
    assert {store.get(d["jobId"], project).status for d in shown} == {JobStatus.PENDING}
    assert {store.get(d["jobId"], d["projectId"]).status for d in others} == {JobStatus.FAILED}  # not shown
    assert any(f"Retried {len(shown)} job" in s.value for s in app.success)
    assert not [b for b in app.button if b.label.startswith("Retry all")]  # none left failed in this view


def test_cancel_all_pending_can_be_declined(store_dir: Path) -> None:
    service = JobService(FileJobStore(store_dir))
    for _ in range(3):
        service.submit({"projectId": "queued"})
    app = run_page()
    app.multiselect(key="filter_statuses").set_value(["pending"]).run()
    count = int(metric(app, "Jobs"))
    assert count > 0
    press(app, f"Cancel all {count} pending job{'s' if count != 1 else ''} shown")
    press(app, "No, leave them")
    assert FileJobStore(store_dir).pending() and len(FileJobStore(store_dir).pending()) == count
    press(app, f"Cancel all {count} pending job{'s' if count != 1 else ''} shown")
    press(app, f"Yes, cancel {count}")
    assert FileJobStore(store_dir).pending() == []
    assert metric(app, "Jobs") == "0"  # the view (pending) is empty now


def test_the_page_goes_back_to_1_when_a_filter_or_the_order_changes(store_dir: Path) -> None:
    app = run_page()
    app.number_input(key="monitor_page").set_value(6).run()
    app.number_input(key="monitor_page").set_value(7).run()  # a page change alone keeps the page
    assert app.number_input(key="monitor_page").value == 7
    app.multiselect(key="filter_statuses").set_value(["completed"]).run()
    assert app.number_input(key="monitor_page").value == 1
    app.number_input(key="monitor_page").set_value(3).run()
    app.selectbox(key="monitor_sort").set_value("oldest first").run()
    assert app.number_input(key="monitor_page").value == 1
    oldest = min((doc for doc in independent_counts(store_dir)[1] if doc["status"] == "completed"),
                 key=lambda doc: doc["createdAt"])
    assert jobs_table(app).value.iloc[0]["job"] == oldest["jobId"]


def test_the_table_leads_with_what_a_person_scans_for(store_dir: Path) -> None:
    app = run_page()
    app.multiselect(key="filter_statuses").set_value(["completed"]).run()
    table = jobs_table(app).value
    assert list(table.columns[:6]) == ["title", "project", "status", "progress", "thumbnail", "created"]
    assert list(table.columns).index("job") > 10
    row = table.iloc[0]
    doc = json.loads((store_dir / "jobs" / row["project"] / f"{row['job']}.json").read_text())
    assert row["title"] == doc["conceptInputs"]["title"]
    assert row["thumbnail"].startswith("data:image/png;base64,")  # the generator wrote its image
    # the full image opens on the app's own Render page (no HTTP API needed), beside the time
    assert list(table.columns).index("image_url") == 6
    assert row["image_url"] == f"render?project={row['project']}&job={row['job']}"
    app.multiselect(key="filter_statuses").set_value(["failed"]).run()
    failed = jobs_table(app).value.iloc[0]
    assert failed["image_url"] == "" and failed["thumbnail"] == ""  # nothing to open: an empty cell
    assert "UTC" in app.main.caption[-1].value


def test_stuck_jobs_are_marked_and_name_their_worker(store_dir: Path) -> None:
    app = run_page()
    app.multiselect(key="filter_statuses").set_value(["stuck"]).run()
    table = jobs_table(app).value
    assert set(table["status"]) == {"stuck"} and len(table) == 25
    [warning] = [w for w in app.warning if w.value.startswith("Stuck:")]
    workers = table["worker"].value_counts()
    busiest = workers.index[0]
    assert f"{busiest} ({workers.iloc[0]})" in warning.value
    if len(workers) > 5:
        assert f"and {len(workers) - 5} more." in warning.value
    detail = next(frame.value for frame in app.dataframe if "last_heartbeat" in frame.value.columns)
    assert dict(zip(detail["worker"], detail["jobs"], strict=True)) == dict(workers)
    assert set(detail["state"]) == {"not seen since"}  # no worker runs: each one is silent


def test_a_new_project_reaches_the_filter_live_and_is_no_false_alarm(store_dir: Path) -> None:
    app = run_page()
    assert "brand-new" not in app.multiselect(key="filter_projects").options
    JobService(FileJobStore(store_dir)).submit({"projectId": "brand-new"})
    deadline = time.monotonic() + 10
    while "brand-new" not in app.multiselect(key="filter_projects").options:
        assert time.monotonic() < deadline, "the new project never reached the filter"
        time.sleep(0.1)
        app.run()  # what the live fragment's tick does: it reruns the whole page for a new project
    assert not [w for w in app.warning if "not readable" in w.value]
    assert "Unreadable (0)" in [tab.label for tab in app.tabs]


def failure_store(root: Path, failed: int, completed: int) -> None:
    service = JobService(FileJobStore(root))
    for n in range(failed + completed):
        job = service.submit({"projectId": "alerts"})
        lease = Lease.of(service.claim(job.job_id, "w1", "alerts"))
        if n < failed:
            service.fail(lease, "The renderer ran out of memory.")
        else:
            service.complete(lease, _tiny_png())


def test_a_high_failure_rate_over_the_last_hour_raises_a_banner(tmp_path: Path, monkeypatch, caplog) -> None:
    root = tmp_path / "alerting"
    failure_store(root, failed=3, completed=7)  # 30% of 10 jobs finished in the last hour
    monkeypatch.setenv("JOBS_DIR", str(root))
    monkeypatch.delenv("JOBS_STORE_URL", raising=False)
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    try:
        with caplog.at_level("WARNING", logger="jobs_core.monitor.alerts"):
            app = run_page()
            app.run()  # a second look logs nothing new
        assert [e.value for e in app.error] == [
            "30% of the jobs that finished in the last hour failed (3 of 10; the alert threshold is 20%)."]
        assert [r.message for r in caplog.records].count(
            "alert: 30% of the jobs that finished in the last hour failed (3 of 10; the alert threshold is 20%).") == 1
        monkeypatch.setenv("JOBS_ALERT_FAILURE_RATE", "40%")
        app.run()
        assert not app.error
        monkeypatch.setenv("JOBS_ALERT_FAILURE_RATE", "lots")
        app.run()
        assert [e.value for e in app.error] == [
            "JOBS_ALERT_FAILURE_RATE='lots' must be a percentage such as 20% or a fraction such as 0.2.",
            "30% of the jobs that finished in the last hour failed (3 of 10; the alert threshold is 20%)."]
    finally:
        st.cache_resource.clear()


def test_fewer_than_ten_finished_jobs_raise_no_alert(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "few"
    failure_store(root, failed=5, completed=4)  # 55%, but of 9 jobs
    monkeypatch.setenv("JOBS_DIR", str(root))
    monkeypatch.delenv("JOBS_STORE_URL", raising=False)
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    try:
        assert not run_page().error
    finally:
        st.cache_resource.clear()
