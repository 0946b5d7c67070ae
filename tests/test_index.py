"""The monitor's job index: built from real job files, kept current by a real watcher (inotify),
by signature polling, or by a store's change feed."""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bench.generate_store import Plan, generate
from jobs_core import FileJobStore, JobService
from jobs_core.models import Job, JobStatus
from jobs_core.monitor import JobIndex, stats
from jobs_core.monitor.actions import JobRef, run_action
from jobs_core.monitor.sources import FileJobSource, StoreFeedSource

NOW = datetime.now(UTC)


def wait_until(condition, timeout: float = 10.0, what: str = "the condition") -> None:
    """Poll a real condition (an inotify event reaching the index) with a bounded wait."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def count_files(root: Path) -> Counter:
    """An independent count: parse every job file with json, no jobs_core code involved."""
    counts: Counter = Counter()
    for path in (root / "jobs").glob("*/*.json"):
        try:
            counts[json.loads(path.read_text())["status"]] += 1
        except (ValueError, KeyError):
            counts["unreadable"] += 1
    return counts


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("template") / "store"
    generate(root, Plan(jobs=3000, projects=40, weeks=8, now=NOW))
    return root


@pytest.fixture
def big_store(template: Path, tmp_path: Path) -> FileJobStore:
    shutil.copytree(template, tmp_path / "store")  # each test changes its own copy
    return FileJobStore(tmp_path / "store")


@pytest.fixture
def index(big_store: FileJobStore):
    made = JobIndex.for_store(big_store, lease_seconds=30)
    yield made
    made.close()


def test_generated_jobs_are_valid_job_documents(big_store: FileJobStore) -> None:
    paths = sorted((big_store.root / "jobs").glob("*/*.json"))
    assert len(paths) == 3000
    statuses = {Job.model_validate_json(path.read_bytes()).status for path in paths[::7]}
    assert statuses == set(JobStatus)
    assert len(big_store.pending()) == count_files(big_store.root)["pending"]


def test_build_has_one_row_per_job_with_the_documents_values(big_store: FileJobStore, index: JobIndex) -> None:
    frame = index.frame()
    assert len(frame) == 3000
    assert index.files_read == 3000
    assert dict(frame["status"].value_counts()) == dict(count_files(big_store.root))
    some = frame.iloc[1234]
    job = big_store.get(some["job"], some["project"])
    assert (some["status"], some["progress"], some["render_type"], some["attempts"]) == (
        job.status.value, job.progress, job.render_type, job.attempts)
    assert some["created"] == job.created_at
    if job.started_at and job.finished_at:
        assert some["run_time"] == pytest.approx((job.finished_at - job.started_at).total_seconds())


def test_watcher_rereads_only_the_ten_changed_files(big_store: FileJobStore, index: JobIndex) -> None:
    assert index.mode == "watching"
    service = JobService(big_store)
    frame = index.frame()
    failed = frame[frame["status"] == "failed"].head(10)
    read_before = index.files_read
    for row in failed.itertuples():
        service.retry(row.job, row.project)  # real atomic writes: temp file + rename
    wait_until(lambda: (index.rows(list(failed.index))["status"] == "pending").all(), what="ten retried jobs")
    read = index.files_read - read_before
    assert 10 <= read < 40, f"{read} files read for 10 changed jobs (a rescan would read 3000)"
    assert len(index.frame()) == 3000


def test_new_and_deleted_jobs_from_another_writer_show_up(big_store: FileJobStore, index: JobIndex) -> None:
    service = JobService(FileJobStore(big_store.root))  # a second store object, as another process has
    job = service.submit({"projectId": "brand-new-project", "renderType": "plan"})
    wait_until(lambda: job.job_id in set(index.frame()["job"]), what="the new job")
    assert index.frame().loc[f"brand-new-project/{job.job_id}.json", "status"] == "pending"
    service.cancel(job.job_id, job.project_id)
    service.delete(job.job_id, job.project_id)
    wait_until(lambda: job.job_id not in set(index.frame()["job"]), what="the deletion")
    assert len(index.frame()) == 3000


def test_a_corrupt_file_is_listed_and_a_repaired_one_returns(big_store: FileJobStore, index: JobIndex) -> None:
    victim = index.frame().iloc[0]
    path = big_store.job_path(victim["project"], victim["job"])
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])  # a torn write, not through the store
    wait_until(lambda: index.unreadable(), what="the corrupt file")
    [bad] = index.unreadable()
    assert bad.location.endswith(f"{victim['job']}.json") and "not valid JSON" in bad.reason
    assert len(index.frame()) == 2999
    (path.parent / "notes.txt").write_text("hello")
    wait_until(lambda: len(index.unreadable()) == 2, what="the foreign file")
    assert {bad.reason for bad in index.unreadable()} >= {"not a job file"}
    path.write_bytes(original)
    wait_until(lambda: len(index.frame()) == 3000, what="the repaired file")
    assert [bad.reason for bad in index.unreadable()] == ["not a job file"]


def test_temp_files_of_atomic_writes_are_ignored(big_store: FileJobStore, index: JobIndex) -> None:
    frame = index.frame()
    row = frame[frame["status"] == "completed"].iloc[0]
    temp = big_store.root / "jobs" / row["project"] / ".job_X.json.abcd1234.tmp"
    temp.write_text("{half")
    # inotify delivers events in order: once a later change is visible, the temp file's was handled.
    JobService(big_store).delete(row["job"], row["project"])
    wait_until(lambda: len(index.frame()) == 2999, what="the delete")
    assert not index.unreadable()
    assert not any(".tmp" in key for key in index.frame().index)


def test_polling_fallback_finds_changes_without_a_watcher(big_store: FileJobStore) -> None:
    polled = JobIndex.for_store(big_store, watch="poll", poll_seconds=0.1)
    try:
        assert polled.mode == "polling" and "Polling" in polled.describe_mode()
        service = JobService(big_store)
        job = service.submit({"projectId": "polled", "renderType": "plan"})
        wait_until(lambda: job.job_id in set(polled.frame()["job"]), what="the polled job")
        read_before = polled.files_read
        service.cancel(job.job_id, job.project_id)
        wait_until(lambda: polled.rows([f"polled/{job.job_id}.json"])["status"].tolist() == ["canceled"],
                   what="the cancel")
        assert polled.files_read - read_before <= 3
    finally:
        polled.close()


def test_the_page_is_told_when_the_watcher_cannot_start(big_store: FileJobStore, monkeypatch) -> None:
    # inotify limits cannot be exhausted safely on a shared machine: make the observer fail as it would.
    from jobs_core.monitor import index as index_module

    def refuse(self) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(index_module.JobsWatcher, "start", refuse)
    fallback = JobIndex.for_store(big_store, poll_seconds=0.1)
    try:
        assert fallback.mode == "polling"
        assert "inotify watch limit reached" in fallback.describe_mode()
        assert len(fallback.frame()) == 3000
    finally:
        fallback.close()


def test_store_feed_path_for_other_backends(tmp_path: Path) -> None:
    store = FileJobStore(tmp_path / "feed")
    service = JobService(store)
    first = service.submit({"projectId": "p1"})
    feed = JobIndex(StoreFeedSource(store), poll_seconds=0)  # the generic path, on a real store
    feed.start()
    assert list(feed.frame()["job"]) == [first.job_id]
    second = service.submit({"projectId": "p2"})
    assert set(feed.frame()["job"]) == {first.job_id, second.job_id}
    report = run_action(service, "cancel", [JobRef("p2", second.job_id)], feed)
    assert report.done and feed.rows([f"p2/{second.job_id}.json"])["status"].tolist() == ["canceled"]
    run_action(service, "delete", [JobRef("p2", second.job_id)], feed)
    assert list(feed.frame()["job"]) == [first.job_id]


def test_headline_and_groups_match_an_independent_count(big_store: FileJobStore, index: JobIndex) -> None:
    counts = count_files(big_store.root)
    figures = stats.headline(index.frame(), datetime.now(UTC), lease_seconds=30)
    finished = counts["completed"] + counts["failed"] + counts["canceled"]
    assert (figures.total, figures.pending, figures.running) == (3000, counts["pending"], counts["processing"])
    assert figures.completion_rate == pytest.approx(counts["completed"] / finished)
    assert figures.failure_rate == pytest.approx(counts["failed"] / finished)
    assert figures.stuck >= 25  # the generator leaves 25 jobs whose worker died an hour ago
    by_project = stats.by_group(index.frame(), "project", datetime.now(UTC), 30)
    assert by_project["total"].sum() == 3000 and len(by_project) == 40
    project = by_project.index[0]
    files = [json.loads(p.read_text()) for p in (big_store.root / "jobs" / project).glob("*.json")]
    assert by_project.loc[project, "failed"] == sum(doc["status"] == "failed" for doc in files)


def test_stuck_means_processing_with_a_heartbeat_older_than_the_lease(tmp_path: Path) -> None:
    store = FileJobStore(tmp_path / "s")
    service = JobService(store)
    alive, dead = service.submit({"projectId": "p"}), service.submit({"projectId": "p"})
    service.claim(alive.job_id, "w1")
    service.claim(dead.job_id, "w2")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)  # w2 died five minutes ago
    store.modify(dead.job_id, "p", lambda job: (job.model_copy(update={"heartbeat_at": long_ago}), None))
    index = JobIndex.for_store(store, watch="off")
    mask = stats.stuck_mask(index.frame(), datetime.now(UTC), lease_seconds=30)
    assert list(index.frame()[mask]["job"]) == [dead.job_id]
    stuck = stats.JobFilter(statuses=(stats.STUCK,)).apply(index.frame(), datetime.now(UTC), 30)
    assert list(stuck["job"]) == [dead.job_id]


def test_filters_and_failures_by_error(big_store: FileJobStore, index: JobIndex) -> None:
    frame, now = index.frame(), datetime.now(UTC)
    docs = [json.loads(p.read_text()) for p in (big_store.root / "jobs").glob("*/*.json")]
    memory = stats.JobFilter(statuses=("failed",), error_text="OUT OF MEMORY").apply(frame, now, 30)
    assert len(memory) == sum(d["status"] == "failed" and "out of memory" in (d["error"] or "") for d in docs)
    project = frame.iloc[0]["project"]
    cutoff = NOW - timedelta(days=14)
    recent = stats.JobFilter(projects=(project,), created_from=cutoff).apply(frame, now, 30)
    assert len(recent) == sum(d["projectId"] == project and datetime.fromisoformat(d["createdAt"]) >= cutoff
                              for d in docs)
    failures = stats.failures_by_error(frame)
    assert failures["count"].sum() == sum(d["status"] == "failed" for d in docs)
    top = failures.iloc[0]
    latest = max((d for d in docs if d["error"] == top["error"] and d["status"] == "failed"),
                 key=lambda d: d["finishedAt"])
    assert top["latest_job"] == latest["jobId"]


def test_a_page_of_rows_is_in_order_and_bounded(index: JobIndex) -> None:
    frame = index.frame()
    second = stats.page_of(frame, page=2, size=50, sort="newest first")
    assert len(second) == 50
    everything = frame.sort_values("created", ascending=False)
    assert list(second["job"]) == list(everything["job"].iloc[50:100])
    assert stats.page_count(len(frame), 50) == 60


def test_a_reader_keeps_its_frame_while_the_index_moves_on(big_store: FileJobStore) -> None:
    manual = JobIndex.for_store(big_store, watch="off")
    before = manual.frame()
    row = before[before["status"] == "completed"].iloc[0]
    JobService(big_store).delete(row["job"], row["project"])
    manual.mark_job(row["project"], row["job"])
    after = manual.frame()
    assert len(before) == 3000 and row["job"] in set(before["job"])  # the frame handed out is unchanged
    assert len(after) == 2999 and row["job"] not in set(after["job"])
    assert manual.files_read == 3001


def test_source_reports_why_a_file_is_not_a_job(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs" / "p"
    jobs.mkdir(parents=True)
    (jobs / "job_A.json").write_text("")
    (jobs / "job_B.json").write_text("[1, 2]")
    (jobs / "job_C.json").write_text(json.dumps({"jobId": "job_other", "projectId": "p", "renderType": "plan",
                                                 "status": "pending"}))
    (jobs / "job_D.json").write_bytes(b"\xff\xfe")
    source = FileJobSource(tmp_path / "jobs")
    reasons = {key: found.problem for key, found in source.initial()}
    assert reasons == {"p/job_A.json": "the file is empty",
                       "p/job_B.json": "holds a JSON list, not a job object",
                       "p/job_C.json": "its jobId or projectId does not match its path",
                       "p/job_D.json": "not valid JSON (not UTF-8 text)"}
