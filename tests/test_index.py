"""The monitor's job index, through the store contract only: built by the store's `scan_jobs`, kept
current by its own watch (a file watcher or signature polling, PostgreSQL's notifications, the
memory store's own writes). First on every backend, then what only files have (foreign files,
temp files, links, folders that come and go), then the statistics on a generated store."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from proc_helpers import ROOT, cli_env

from bench.generate_store import Plan, generate
from jobs_core import FileJobStore, JobService
from jobs_core.lifecycle import Lease
from jobs_core.models import Job, JobStatus
from jobs_core.monitor import JobIndex, stats
from jobs_core.monitor.actions import JobRef, run_action
from jobs_core.monitor.index import MANUAL, POLLING, WATCHING
from jobs_core.renderers.noop import _tiny_png
from jobs_core.store import JobStore, MemoryJobStore, file_watch

NOW = datetime.now(UTC)


def wait_until(condition, timeout: float = 15.0, what: str = "the condition") -> None:
    """Poll a real condition (a change reaching the index) with a bounded wait."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def statuses(index: JobIndex) -> dict[str, str]:
    frame = index.frame()
    return dict(zip(frame["job"], frame["status"].astype(str), strict=True))


def unlike_a_fresh_build(index: JobIndex) -> str | None:
    """How the live index differs from a new full scan of its store; None when it holds the same."""
    fresh = JobIndex.for_store(index.store, watch="off", snapshot=False)
    if index.unreadable() != fresh.unreadable():
        return f"unreadable {index.unreadable()} != {fresh.unreadable()}"
    try:
        pd.testing.assert_frame_equal(index.frame().sort_index(), fresh.frame().sort_index())
    except AssertionError as difference:
        return str(difference)
    return None


def same_as_a_fresh_build(index: JobIndex) -> bool:
    return unlike_a_fresh_build(index) is None


@pytest.fixture
def live(service: JobService):
    made = JobIndex.for_store(service.store, lease_seconds=30)
    yield made
    made.close()


# -- every backend ---------------------------------------------------------------------------------
def test_the_index_has_one_row_per_job_with_its_values(service: JobService) -> None:
    first = service.submit({"projectId": "p1", "renderType": "plan"})
    second = service.submit({"projectId": "p2", "renderType": "elevation"})
    claimed = service.claim(second.job_id, "w1")
    service.report_progress(Lease.of(claimed), 40, "drawing facades")
    index = JobIndex.for_store(service.store, watch="off")
    frame = index.frame()
    assert len(frame) == 2 and index.records_read == 2 and not index.unreadable()
    row = frame.loc[service.store.record_key("p2", second.job_id)]
    assert (row["job"], row["project"], row["render_type"], row["status"], row["progress"], row["stage"],
            row["attempts"], row["worker"]) == (second.job_id, "p2", "elevation", "processing", 40,
                                                "drawing facades", 1, "w1")
    assert row["created"] == second.created_at
    assert frame.loc[service.store.record_key("p1", first.job_id), "status"] == "pending"


def test_changes_and_deletions_reach_the_index_as_they_happen(service: JobService, live: JobIndex) -> None:
    assert live.mode == WATCHING and live.describe_mode().startswith("Live: ")
    job = service.submit({"projectId": "p1"})
    wait_until(lambda: statuses(live).get(job.job_id) == "pending", what="the new job")
    claimed = service.claim(job.job_id, "w1")
    wait_until(lambda: statuses(live).get(job.job_id) == "processing", what="the claim")
    service.complete(Lease.of(claimed), _tiny_png())
    wait_until(lambda: statuses(live).get(job.job_id) == "completed", what="the completion")
    service.delete(job.job_id, job.project_id)
    wait_until(lambda: job.job_id not in statuses(live), what="the deletion")
    assert live.frame().empty and not live.unreadable()


def test_after_many_changes_the_index_equals_a_fresh_build(service: JobService, live: JobIndex) -> None:
    jobs = [service.submit({"projectId": f"p{n % 3}", "renderType": "plan"}) for n in range(12)]
    for job in jobs[:6]:
        lease = Lease.of(service.claim(job.job_id, "w1"))
        if job is jobs[0]:
            service.complete(lease, _tiny_png())
        elif job is jobs[1]:
            service.fail(lease, "The renderer ran out of memory.")
            service.retry(job.job_id, job.project_id)
        else:
            service.report_progress(lease, 50, "roof")
    service.cancel(jobs[6].job_id, jobs[6].project_id)
    service.delete(jobs[6].job_id, jobs[6].project_id)
    service.cancel(jobs[7].job_id, jobs[7].project_id)
    wait_until(lambda: same_as_a_fresh_build(live), what="the index to catch up")
    assert len(live.frame()) == 11
    assert Counter(statuses(live).values()) == {"processing": 4, "pending": 5, "canceled": 1, "completed": 1}


def test_a_change_made_by_another_process_reaches_the_index(service: JobService, live: JobIndex) -> None:
    store = service.store
    if isinstance(store, MemoryJobStore):
        pytest.skip("a memory store lives in one process")
    env = cli_env(JOBS_DIR=str(store.root)) if isinstance(store, FileJobStore) else cli_env(JOBS_STORE_URL=store.url)

    def run(*args: str) -> str:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    job_id = run("-m", "jobs_core", "submit", "--project-id", "elsewhere", "--render-type", "plan")
    wait_until(lambda: statuses(live).get(job_id) == "pending", what="the job submitted by the CLI")
    run("-m", "jobs_core", "worker", "--drain", "--poll", "0.05")
    wait_until(lambda: statuses(live).get(job_id) == "completed", what="the job the CLI worker rendered")
    run("-c", "import sys; from jobs_core import JobService; JobService.from_env().delete(sys.argv[1], 'elsewhere')",
        job_id)
    wait_until(lambda: job_id not in statuses(live), what="the job deleted by another process")
    assert unlike_a_fresh_build(live) is None


def test_with_watching_off_only_marked_jobs_are_read_again(service: JobService) -> None:
    index = JobIndex.for_store(service.store, watch="off")
    assert index.mode == MANUAL and index.describe_mode().startswith("Manual: ")
    job = service.submit({"projectId": "p"})
    assert index.frame().empty
    index.mark_job("p", job.job_id)
    assert statuses(index) == {job.job_id: "pending"}
    report = run_action(service, "cancel", [JobRef("p", job.job_id)], index)  # the page's own actions
    assert report.done and statuses(index) == {job.job_id: "canceled"}
    run_action(service, "delete", [JobRef("p", job.job_id)], index)
    assert index.frame().empty and index.records_read == 3


def test_a_job_read_again_as_it_was_changes_nothing(service: JobService) -> None:
    job = service.submit({"projectId": "p"})
    index = JobIndex.for_store(service.store, watch="off")
    frame, version = index.frame(), index.version
    index.mark_job("p", job.job_id)  # e.g. a watch event that changed no field the index keeps
    assert index.refresh() == 1 and index.version == version and index.frame() is frame
    service.cancel(job.job_id, "p")
    index.mark_job("p", job.job_id)
    assert index.refresh() == 1 and index.version == version + 1 and statuses(index) == {job.job_id: "canceled"}


def test_a_reader_keeps_its_frame_while_the_index_moves_on(service: JobService) -> None:
    kept, gone = service.submit({"projectId": "p"}), service.submit({"projectId": "p"})
    index = JobIndex.for_store(service.store, watch="off")
    before = index.frame()
    service.cancel(gone.job_id, "p")
    service.delete(gone.job_id, "p")
    index.mark_job("p", gone.job_id)
    after = index.frame()
    assert set(before["job"]) == {kept.job_id, gone.job_id}  # the frame handed out is unchanged
    assert set(after["job"]) == {kept.job_id}


def test_an_unknown_watch_mode_is_refused_with_the_choices(service: JobService, monkeypatch) -> None:
    monkeypatch.setenv("JOBS_MONITOR_WATCH", "inotify")
    with pytest.raises(ValueError, match="JOBS_MONITOR_WATCH='inotify' must be one of: auto, poll, off"):
        JobIndex.open(service)


def test_stuck_means_processing_with_a_heartbeat_older_than_the_lease(store: JobStore) -> None:
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


# -- the file store: what only files have -----------------------------------------------------------
@pytest.fixture
def files(tmp_path: Path) -> FileJobStore:
    return FileJobStore(tmp_path / "store")


@pytest.fixture
def watched(files: FileJobStore):
    made = JobIndex.for_store(files)
    yield made
    made.close()


def reasons(index: JobIndex, jobs_dir: Path) -> dict[str, str]:
    return {os.path.relpath(bad.location, jobs_dir): bad.reason for bad in index.unreadable()}


def write_doc(path: Path, doc: object) -> None:
    path.write_text(json.dumps(doc))


def test_the_scan_says_why_a_place_is_not_a_readable_job(files: FileJobStore) -> None:
    jobs = files.jobs_dir
    project = jobs / "p"
    project.mkdir()
    job = {"jobId": "job_E", "projectId": "p", "renderType": "plan", "status": "pending"}
    (project / "job_A.json").write_text("")
    write_doc(project / "job_B.json", [1, 2])
    write_doc(project / "job_C.json", {**job, "jobId": "job_other"})
    (project / "job_D.json").write_bytes(b"\xff\xfe")
    write_doc(project / "job_E.json", job)  # the one readable job
    write_doc(project / "job_F.json", {**job, "jobId": "job_F", "status": ["pending"]})  # unhashable status
    (project / "job_G.json").write_text('{"jobId": ')
    write_doc(project / "job_H.json", None)
    (project / "job_I.json").symlink_to(project / "job_E.json")  # links are not followed
    os.mkfifo(project / "job_J.json")  # would block a plain open() forever
    (project / "job_K.json").mkdir()
    (project / "job_L.json").write_bytes(b" " * (1 << 20) + b"{}")
    (project / "notes.txt").write_text("hello")
    (project / ".job_E.json.1234abcd.tmp").write_text("{half")  # the store's temp file: not a place
    (jobs / "README").write_text("not a project")
    (jobs / "not a project").mkdir()
    index = JobIndex.for_store(files, watch="off")
    assert list(index.frame()["job"]) == ["job_E"]
    assert reasons(index, jobs) == {
        "p/job_A.json": "the file is empty",
        "p/job_B.json": "holds a JSON array, not a job object",
        "p/job_C.json": "names job job_other of project p but holds the place of job job_C of project p",
        "p/job_D.json": "not valid JSON (not UTF-8 text)",
        "p/job_F.json": "not a job document (status ['pending'] is unknown)",
        "p/job_G.json": "not valid JSON at line 1, column 11 (expecting value)",
        "p/job_H.json": "holds a JSON null, not a job object",
        "p/job_I.json": "a symbolic link",
        "p/job_J.json": "a FIFO",
        "p/job_K.json": "a folder",
        "p/job_L.json": "larger than 1 MiB",
        "p/notes.txt": "not a job file",
        "README": "not a project folder",
        "not a project": "not a project folder"}
    for record in files.scan_jobs():  # one rule: a place read again reads as the scan found it
        assert files.read_record(record.key) == record


def test_a_linked_project_folder_is_not_followed(files: FileJobStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    write_doc(outside / "job_A.json", {"jobId": "job_A", "projectId": "p", "renderType": "plan",
                                       "status": "pending"})
    (files.jobs_dir / "p").symlink_to(outside)
    index = JobIndex.for_store(files, watch="off")
    assert index.frame().empty
    assert reasons(index, files.jobs_dir) == {"p": "a symbolic link"}
    assert files.read_record("p").problem == "a symbolic link"
    assert files.read_record("p/job_A.json").gone


def test_keys_that_name_no_place_of_the_store_read_as_nothing(files: FileJobStore) -> None:
    JobService(files).submit({"projectId": "p"})
    for key in ("../store/jobs", "p/../../x.json", "", ".", "p/sub/x.json", "p/.x.json.abc.tmp", "p"):
        assert files.read_record(key).gone, key


def test_a_new_project_folder_is_no_false_alarm_and_its_jobs_appear(files: FileJobStore, watched: JobIndex) -> None:
    (files.jobs_dir / "fresh").mkdir()  # a project folder made before its first job file
    (files.jobs_dir / "marker.txt").write_text("x")  # events arrive in order: once this shows, mkdir did
    wait_until(lambda: watched.unreadable(), what="the marker file")
    assert reasons(watched, files.jobs_dir) == {"marker.txt": "not a project folder"}
    job = JobService(FileJobStore(files.root)).submit({"projectId": "brand-new"})  # folder and file at once
    wait_until(lambda: job.job_id in statuses(watched), what="the new project's job")
    assert reasons(watched, files.jobs_dir) == {"marker.txt": "not a project folder"}
    assert unlike_a_fresh_build(watched) is None


# watchdog warns that it replaces its own watch of the folder that came back; harmless.
@pytest.mark.filterwarnings("ignore:Callback with id:RuntimeWarning")
def test_a_project_folder_moved_out_and_back_takes_its_jobs_along(files: FileJobStore, watched: JobIndex,
                                                                   tmp_path: Path) -> None:
    service = JobService(files)
    moving = [service.submit({"projectId": "moving"}) for _ in range(3)]
    staying = service.submit({"projectId": "staying"})
    wait_until(lambda: len(watched.frame()) == 4, what="four jobs")
    os.rename(files.jobs_dir / "moving", tmp_path / "archived")  # one event for the folder, none per file
    wait_until(lambda: set(statuses(watched)) == {staying.job_id}, what="the moved-out jobs to go")
    os.rename(tmp_path / "archived", files.jobs_dir / "moving")
    wait_until(lambda: len(watched.frame()) == 4, what="the moved-in jobs to return")
    assert set(statuses(watched)) == {job.job_id for job in moving} | {staying.job_id}
    assert unlike_a_fresh_build(watched) is None


# -- the file store at scale: a generated store of 3000 jobs -------------------------------------
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
    found = {Job.model_validate_json(path.read_bytes()).status for path in paths[::7]}
    assert found == set(JobStatus)
    assert len(big_store.pending()) == count_files(big_store.root)["pending"]


def test_build_has_one_row_per_job_with_the_documents_values(big_store: FileJobStore, index: JobIndex) -> None:
    frame = index.frame()
    assert len(frame) == 3000
    assert index.records_read == 3000
    assert dict(frame["status"].value_counts()) == dict(count_files(big_store.root))
    some = frame.iloc[1234]
    job = big_store.get(some["job"], some["project"])
    assert (some["status"], some["progress"], some["render_type"], some["attempts"]) == (
        job.status.value, job.progress, job.render_type, job.attempts)
    assert some["created"] == job.created_at
    if job.started_at and job.finished_at:
        assert some["run_time"] == pytest.approx((job.finished_at - job.started_at).total_seconds())


def test_the_watcher_rereads_only_the_ten_changed_files(big_store: FileJobStore, index: JobIndex) -> None:
    assert index.mode == WATCHING
    service = JobService(big_store)
    frame = index.frame()
    failed = frame[frame["status"] == "failed"].head(10)
    read_before = index.records_read
    for row in failed.itertuples():
        service.retry(row.job, row.project)  # real atomic writes: temp file + rename
    wait_until(lambda: (index.rows(list(failed.index))["status"] == "pending").all(), what="ten retried jobs")
    read = index.records_read - read_before
    assert 10 <= read < 40, f"{read} files read for 10 changed jobs (a rescan would read 3000)"
    assert len(index.frame()) == 3000


def test_a_corrupt_file_is_listed_and_a_repaired_one_returns(big_store: FileJobStore, index: JobIndex) -> None:
    victim = index.frame().iloc[0]
    path = big_store.job_path(victim["project"], victim["job"])
    original = path.read_bytes()
    path.write_bytes(original[: len(original) // 2])  # a torn write, not through the store
    wait_until(lambda: index.unreadable(), what="the corrupt file")
    [bad] = index.unreadable()
    assert bad.location == str(path) and bad.reason.startswith("not valid JSON at line")
    assert len(index.frame()) == 2999
    (path.parent / "notes.txt").write_text("hello")
    wait_until(lambda: len(index.unreadable()) == 2, what="the foreign file")
    path.write_bytes(original)
    wait_until(lambda: len(index.frame()) == 3000, what="the repaired file")
    assert [(Path(bad.location).name, bad.reason) for bad in index.unreadable()] == [("notes.txt", "not a job file")]
    assert unlike_a_fresh_build(index) is None


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


def test_polling_finds_changes_and_deletions_without_a_watcher(big_store: FileJobStore) -> None:
    polled = JobIndex.for_store(big_store, watch="poll", poll_seconds=0.1)
    try:
        assert polled.mode == POLLING
        assert polled.describe_mode() == ("Polling: polling was asked for, so file signatures are compared "
                                          "every 0.1 s instead.")
        service = JobService(FileJobStore(big_store.root))
        job = service.submit({"projectId": "polled", "renderType": "plan"})
        wait_until(lambda: job.job_id in statuses(polled), what="the polled job")
        read_before = polled.records_read
        service.cancel(job.job_id, job.project_id)
        key = big_store.record_key("polled", job.job_id)
        wait_until(lambda: polled.rows([key])["status"].tolist() == ["canceled"], what="the cancel")
        assert polled.records_read - read_before <= 3
        service.delete(job.job_id, job.project_id)
        wait_until(lambda: job.job_id not in statuses(polled), what="the deletion")
        assert unlike_a_fresh_build(polled) is None
    finally:
        polled.close()


def test_the_page_is_told_when_the_watcher_cannot_start(big_store: FileJobStore, monkeypatch) -> None:
    # inotify limits cannot be exhausted safely on a shared machine: make the observer fail as it would.
    def refuse(self) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(file_watch.Observer, "start", refuse)
    fallback = JobIndex.for_store(big_store, poll_seconds=0.1)
    try:
        assert fallback.mode == POLLING
        assert fallback.describe_mode() == ("Polling: the file watcher could not start (inotify watch limit "
                                            "reached), so file signatures are compared every 0.1 s instead.")
        assert len(fallback.frame()) == 3000
        job = JobService(big_store).submit({"projectId": "after-fallback"})
        wait_until(lambda: job.job_id in statuses(fallback), what="a job found by polling")
    finally:
        fallback.close()


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
    docs = [json.loads(p.read_text()) for p in (big_store.root / "jobs" / project).glob("*.json")]
    assert by_project.loc[project, "failed"] == sum(doc["status"] == "failed" for doc in docs)


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


# -- the shared view cache (a live refresh when nothing changed is a lookup) ----------------------
def test_a_view_is_reused_until_a_job_or_the_clock_changes_it(service: JobService) -> None:
    from jobs_core.monitor.view import compute_view

    running = service.submit({"projectId": "p"})
    service.claim(running.job_id, "w1")
    service.submit({"projectId": "p"})
    index = JobIndex.for_store(service.store, lease_seconds=30, watch="off")
    views, everything = index.views, stats.JobFilter()
    now = datetime.now(UTC)
    first = views.get(everything, now)
    assert views.get(everything, now + timedelta(seconds=5)) is first and views.hits == 1
    # the clock alone: the running job's heartbeat passes the lease, so "stuck" changes
    assert first.valid_until <= now + timedelta(seconds=30)
    later = views.get(everything, now + timedelta(seconds=31))
    assert later is not first and later.headline.stuck == 1 and first.headline.stuck == 0
    # a job changes: recomputed at once
    other = service.submit({"projectId": "q"})
    index.mark_job("q", other.job_id)
    changed = views.get(everything, now + timedelta(seconds=32))
    assert changed.headline.total == 3
    fresh = compute_view(index.frame(), everything, now + timedelta(seconds=32), 30)
    assert changed.headline == fresh.headline
    pd.testing.assert_frame_equal(changed.by_project, fresh.by_project)
    # another filter is its own entry
    assert views.get(stats.JobFilter(projects=("q",)), now + timedelta(seconds=32)).headline.total == 1


def test_alerts_fire_on_the_failure_rate_of_the_last_hour_only(memory_service: JobService) -> None:
    from jobs_core.monitor import alerts

    for n in range(12):
        job = memory_service.submit({"projectId": "p"})
        lease = Lease.of(memory_service.claim(job.job_id, "w1"))
        if n < 3:
            memory_service.fail(lease, "boom")
        else:
            memory_service.complete(lease, _tiny_png())
    frame = JobIndex.for_store(memory_service.store, watch="off").frame()
    now = datetime.now(UTC)
    assert alerts.failure_alert(frame, now, 0.2).message.startswith("25% of the jobs that finished in the last hour")
    assert alerts.failure_alert(frame, now, 0.25) is None  # above the threshold, not at it
    assert alerts.failure_alert(frame, now + timedelta(hours=2), 0.2) is None  # they are no longer recent
    assert alerts.failure_rate_threshold({"JOBS_ALERT_FAILURE_RATE": "0.5"}) == 0.5
    assert alerts.failure_rate_threshold({"JOBS_ALERT_FAILURE_RATE": "35%"}) == pytest.approx(0.35)
    with pytest.raises(ValueError, match="must be above 0% and at most 100%"):
        alerts.failure_rate_threshold({"JOBS_ALERT_FAILURE_RATE": "0"})
    delivered: list[alerts.Alert] = []
    log = alerts.AlertLog(sinks=[delivered.append])  # the webhook seam
    found = alerts.current_alerts(frame, now, 30, 0.2)
    assert log.update(found) == found and log.update(found) == [] and delivered == found
    assert log.update([]) == [] and log.active() == []


# -- the snapshot on disk (the file store): a restart re-reads only what changed ---------------------
def snapshot_path(store: FileJobStore) -> Path:
    return store.root / ".state" / "monitor" / "index.arrow"


def reopened(store: FileJobStore) -> JobIndex:
    index = JobIndex.for_store(FileJobStore(store.root), lease_seconds=30, watch="off")
    index.close()  # waits for the snapshot it writes in the background
    return index


def test_a_restart_from_the_snapshot_equals_a_full_rebuild(big_store: FileJobStore) -> None:
    first = reopened(big_store)
    assert first.built_from == "scan" and snapshot_path(big_store).is_file()
    service = JobService(big_store)
    frame = first.frame()
    failed = frame[frame["status"] == "failed"].head(5)
    for row in failed.itertuples():  # changed through the store, while "the server was down"
        service.retry(row.job, row.project)
    gone = frame[frame["status"] == "completed"].iloc[0]
    service.delete(gone["job"], gone["project"])
    added = service.submit({"projectId": "after-the-snapshot"})
    edited = frame[frame["status"] == "canceled"].iloc[0]
    path = big_store.job_path(edited["project"], edited["job"])
    doc = json.loads(path.read_text())
    doc["stage"] = "edited in place by hand"  # same inode, same size would be a rename-free write
    path.write_text(json.dumps(doc, indent=2))
    torn = frame[frame["status"] == "completed"].iloc[1]
    torn_path = big_store.job_path(torn["project"], torn["job"])
    torn_path.write_bytes(torn_path.read_bytes()[:100])
    (big_store.jobs_dir / "stray.txt").write_text("not a project")

    second = reopened(big_store)
    assert second.built_from == "snapshot"
    assert 8 <= second.records_read < 30, f"{second.records_read} places read again (a scan reads 3000)"
    assert unlike_a_fresh_build(second) is None
    assert added.job_id in set(second.frame()["job"]) and gone["job"] not in set(second.frame()["job"])
    assert second.frame().loc[big_store.record_key(edited["project"], edited["job"]), "stage"] == \
        "edited in place by hand"
    assert {Path(bad.location).name for bad in second.unreadable()} == {torn_path.name, "stray.txt"}

    torn_path.write_bytes(json.dumps(json.loads(big_store.job_path(added.project_id, added.job_id).read_text())
                                     | {"jobId": torn["job"], "projectId": torn["project"]}).encode())
    third = reopened(big_store)  # a place unreadable last time is always read again
    assert third.built_from == "snapshot" and unlike_a_fresh_build(third) is None


def test_a_file_edited_by_hand_in_any_field_reads_as_edited_after_a_restart(big_store: FileJobStore) -> None:
    """Files are untrusted: even what never changes through the lifecycle (render type, title,
    creation time) may be edited by hand, and a restart from the snapshot must show the edit."""
    frame = reopened(big_store).frame()
    key = frame.index[0]
    path = big_store.job_path(frame.iloc[0]["project"], frame.iloc[0]["job"])
    doc = json.loads(path.read_text())
    other = next(kind for kind in ("plan", "elevation", "section") if kind != doc["renderType"])
    doc["renderType"], doc["conceptInputs"]["title"] = other, "Renamed by hand"
    doc["createdAt"] = "2020-01-02T03:04:05.000000Z"
    path.write_text(json.dumps(doc, indent=2))
    again = reopened(big_store)
    assert again.built_from == "snapshot" and unlike_a_fresh_build(again) is None
    assert (again.frame().loc[key, "render_type"], again.frame().loc[key, "title"]) == (other, "Renamed by hand")


def test_the_snapshot_start_reads_each_changed_place_as_read_record_does(big_store: FileJobStore) -> None:
    """The restart reads its changed files a folder at a time (`read_many`): each place must read
    as `read_record` reads it, one gone between the stat and the read included."""
    everything = JobIndex.for_store(big_store, watch="off", snapshot=False).frame()
    frame = everything[everything["status"] == "completed"]  # each may be deleted
    keys = list(frame.index[:40])
    deleted = frame.iloc[40]
    JobService(big_store).delete(deleted["job"], deleted["project"])
    torn = big_store.job_path(frame.iloc[41]["project"], frame.iloc[41]["job"])
    torn.write_bytes(torn.read_bytes()[:100])
    (big_store.jobs_dir / "stray.txt").write_text("not a project")
    (torn.parent / "notes.txt").write_text("not a job")
    project = frame.iloc[0]["project"]
    keys += [frame.index[40], frame.index[41], "stray.txt", f"{torn.parent.name}/notes.txt", project,
             f"{project}/.{frame.iloc[0]['job']}.json.tmp", f"no-such-project/{frame.iloc[0]['job']}.json", "../x"]
    files = big_store._file_views
    assert sorted(files.read_many(keys), key=lambda record: record.key) == \
        sorted((big_store.read_record(key) for key in keys), key=lambda record: record.key)
    records = {record.key: record for record in files.read_many(keys)}
    assert records[frame.index[40]].doc is None and records[frame.index[40]].problem is None  # gone
    assert records[frame.index[41]].problem and records[keys[0]].doc is not None


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "other store", "old format", "a link"])
def test_a_damaged_old_or_foreign_snapshot_is_rebuilt_never_trusted(big_store: FileJobStore, tmp_path: Path,
                                                                     damage: str, caplog) -> None:
    from jobs_core.monitor import snapshot

    reopened(big_store)
    path = snapshot_path(big_store)
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"PAR1 not really" * 100)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other store":  # a snapshot copied from another store
        other = FileJobStore(tmp_path / "other")
        JobService(other).submit({"projectId": "elsewhere"})
        reopened(other)
        path.write_bytes(snapshot_path(other).read_bytes())
    elif damage == "old format":
        original = snapshot.FORMAT
        try:
            snapshot.FORMAT = original + 1  # a newer build of the code meets this older snapshot
            rebuilt = reopened(big_store)
        finally:
            snapshot.FORMAT = original
        assert rebuilt.built_from == "scan" and rebuilt.records_read == 3000
        return
    else:
        target = tmp_path / "planted.arrow"
        target.write_bytes(data)
        path.unlink()
        path.symlink_to(target)
    with caplog.at_level("INFO", logger="jobs_core.monitor"):
        rebuilt = reopened(big_store)
    assert rebuilt.built_from == "scan" and rebuilt.records_read == 3000
    assert unlike_a_fresh_build(rebuilt) is None
    assert any("building the index from every job file" in record.message for record in caplog.records)
    if damage != "a link":
        assert reopened(big_store).built_from == "snapshot"  # the rebuild wrote a good one again


def test_a_store_changed_while_the_index_was_built_is_caught_up_at_the_next_start(big_store: FileJobStore) -> None:
    live_index = JobIndex.for_store(big_store, lease_seconds=30)  # watching, and it wrote a snapshot
    try:
        service = JobService(big_store)
        jobs = [service.submit({"projectId": "while-running"}) for _ in range(3)]
        wait_until(lambda: all(job.job_id in statuses(live_index) for job in jobs), what="the new jobs")
    finally:
        live_index.close()
    restarted = reopened(big_store)  # the snapshot predates the new jobs: they are read, not missed
    assert restarted.built_from == "snapshot" and unlike_a_fresh_build(restarted) is None


def test_a_live_index_keeps_its_snapshot_current(big_store: FileJobStore, monkeypatch) -> None:
    """The server ran for a while and absorbed changes: a restart reads none of them again."""
    from jobs_core.monitor import snapshot

    monkeypatch.setattr(snapshot, "BATCH_ROWS", 700)  # several record batches, as at 100,000 jobs
    live_index = JobIndex.for_store(big_store, lease_seconds=30, save_seconds=0.05)
    try:
        service = JobService(big_store)
        frame = live_index.frame()
        failed = frame[frame["status"] == "failed"].head(5)
        for row in failed.itertuples():
            service.retry(row.job, row.project)
        gone = frame[frame["status"] == "completed"].iloc[0]
        service.delete(gone["job"], gone["project"])
        added = [service.submit({"projectId": "while-running"}) for _ in range(3)]
        keys = {big_store.record_key(job.project_id, job.job_id) for job in added}
        # No page asks: the saver thread applies what the watch reported and writes the snapshot
        # (files read within a clock tick of being written are read once more, a moment later).
        wait_until(lambda: keys <= set(live_index._rows.position) and live_index.snapshot_is_current(),
                   what="a snapshot with the changes")
    finally:
        live_index.close()
    restarted = reopened(big_store)
    assert restarted.built_from == "snapshot" and restarted.records_read == 0
    assert unlike_a_fresh_build(restarted) is None
    jobs = set(restarted.frame()["job"])
    assert {job.job_id for job in added} <= jobs and gone["job"] not in jobs


def test_a_file_rewritten_in_place_within_one_clock_tick_is_read_again(big_store: FileJobStore,
                                                                      monkeypatch) -> None:
    """Same inode, same size, same mtime (written twice in one tick of the file system's clock):
    the signature cannot tell, so a signature that close to its reading is not kept."""
    from jobs_core.monitor import snapshot

    # A coarse clock (a minute a tick): however slow this machine, the stat falls in the write's tick.
    monkeypatch.setattr(snapshot, "RACY_SECONDS", 60)
    frame = reopened(big_store).frame()
    job = frame[frame["status"] == "canceled"].iloc[0]
    path = big_store.job_path(job["project"], job["job"])
    doc = json.loads(path.read_text())
    doc["stage"] = "first"
    path.write_text(json.dumps(doc))
    tick = path.stat().st_mtime_ns  # just now
    read_then = reopened(big_store)  # reads "first": the file changed since the snapshot
    assert read_then.frame().loc[big_store.record_key(job["project"], job["job"]), "stage"] == "first"
    doc["stage"] = "again"  # the same length as "first"
    path.write_text(json.dumps(doc))
    os.utime(path, ns=(tick, tick))  # ... and within the same tick
    assert path.stat().st_mtime_ns == tick
    restarted = reopened(big_store)
    assert restarted.frame().loc[big_store.record_key(job["project"], job["job"]), "stage"] == "again"
    assert unlike_a_fresh_build(restarted) is None


def test_when_most_files_changed_since_the_snapshot_a_full_scan_is_made(big_store: FileJobStore) -> None:
    reopened(big_store)
    for path in sorted(big_store.jobs_dir.glob("*/*.json"))[:2000]:  # rewritten by rename: new inodes
        temp = path.with_name(f".{path.name}.x.tmp")
        temp.write_bytes(path.read_bytes())
        past = time.time_ns() - 10 * 10**9  # not racy (snapshot.settled) however fast this machine wrote them
        os.utime(temp, ns=(past, past))
        temp.replace(path)
    restarted = reopened(big_store)
    assert restarted.built_from == "scan" and restarted.records_read == 3000
    assert unlike_a_fresh_build(restarted) is None
    assert reopened(big_store).built_from == "snapshot"


def test_a_temp_file_left_by_a_crashed_snapshot_write_changes_nothing(big_store: FileJobStore) -> None:
    reopened(big_store)
    (snapshot_path(big_store).parent / ".index.arrow.dead.tmp").write_bytes(b"half a snapshot")
    restarted = reopened(big_store)
    assert restarted.built_from == "snapshot" and restarted.records_read == 0


def test_the_csv_export_holds_every_filtered_job_whatever_the_batch_size(big_store: FileJobStore,
                                                                       index: JobIndex) -> None:
    import csv
    import io

    frame = index.frame()
    failed = stats.JobFilter(statuses=("failed",)).apply(frame, NOW, 30)
    whole = stats.to_csv(failed)
    chunks = list(stats.csv_chunks(failed, batch_rows=7))
    assert len(chunks) == -(-len(failed) // 7) and b"".join(chunks) == whole  # streamed, a batch at a time
    lines = list(csv.DictReader(io.StringIO(whole.decode())))
    assert list(lines[0]) == stats.TABLE_COLUMNS
    on_disk = {path.stem: json.loads(path.read_text()) for path in big_store.jobs_dir.glob("*/*.json")}
    assert sorted(line["job"] for line in lines) == sorted(job for job, doc in on_disk.items()
                                                            if doc.get("status") == "failed")
    for line in lines:
        doc = on_disk[line["job"]]
        assert (line["status"], line["project"], int(line["attempts"])) == ("failed", doc["projectId"],
                                                                            doc["attempts"])
        assert pd.Timestamp(line["created"]) == pd.Timestamp(doc["createdAt"])
    assert stats.to_csv(failed.iloc[0:0]).decode().strip() == ",".join(f'"{c}"' for c in stats.TABLE_COLUMNS)
