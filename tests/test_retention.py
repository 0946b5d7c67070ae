"""Retention (issue 19, part 1): finished jobs older than a cutoff are removed whole, on every store."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from proc_helpers import ROOT, cli_env, run_cli, tree_snapshot, wait_until, worker_log
from retention_helpers import holdings, put_job

from jobs_core import retention
from jobs_core.errors import InvalidInput
from jobs_core.models import JobStatus, utcnow
from jobs_core.retention import PruneRule, RetentionLoop, parse_age, parse_statuses, prune
from jobs_core.store import FileJobStore
from jobs_core.store.base import RemovableJob

C, F, X, P, R = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED, JobStatus.PENDING,
                 JobStatus.PROCESSING)


def rule(days: float = 30, **kwargs) -> PruneRule:
    return PruneRule(cutoff=utcnow() - timedelta(days=days), **kwargs)


# -- every backend ---------------------------------------------------------------------------------
def test_prune_removes_old_finished_jobs_whole_and_never_a_pending_or_running_one(store):
    old_done = put_job(store, C, 40, webhook=True, idempotency_key="k-1")
    old_failed, old_canceled = put_job(store, F, 40), put_job(store, X, 31)
    old_pending, old_running = put_job(store, P, 90), put_job(store, R, 90)
    recent = put_job(store, C, 2)
    size_before = store.store_size()

    report = prune(store, rule(30))

    left = holdings(store)
    assert set(left["jobs"]) == {old_pending.job_id, old_running.job_id, recent.job_id}
    for gone in (old_done, old_failed, old_canceled):
        assert gone.job_id not in left["images"] and (gone.project_id, gone.concept_id) not in left["concepts"]
    assert left["deliveries"] == []  # the old job's webhook went with it
    assert store.find_by_idempotency_key("p1", "k-1") is None
    assert recent.job_id in left["images"] and left["events"][recent.job_id]
    assert dict(report.by_status) == {"completed": 1, "failed": 1, "canceled": 1}
    assert report.renders == 1 and report.concepts == 3 and report.bytes_freed > 0
    size_after = store.store_size()
    assert (size_after.jobs, size_after.renders) == (size_before.jobs - 3, size_before.renders - 1)
    assert "removed 3 job(s) (1 canceled, 1 completed, 1 failed), 1 render(s), 3 concept(s); freed" in report.summary()
    assert prune(store, rule(30)).jobs == 0  # a second run has nothing left to do


def test_a_concept_goes_only_with_the_last_job_that_uses_it(store):
    shared = put_job(store, C, 60)
    put_job(store, C, 60, concept_id=shared.concept_id, save_concept=False)  # a resubmit: same concept
    user = put_job(store, C, 1, concept_id=shared.concept_id, save_concept=False)  # still in use
    report = prune(store, rule(30))
    assert report.jobs == 2 and report.concepts == 0
    assert store.load_concept("p1", shared.concept_id).concept_id == shared.concept_id
    assert prune(store, rule(0.5)).concepts == 1  # its last job goes: the concept too
    assert user.job_id not in holdings(store)["jobs"] and holdings(store)["concepts"] == []


def test_dry_run_says_what_would_go_and_changes_nothing(store):
    for status in (C, F, X, P):
        put_job(store, status, 45)
    before = holdings(store)
    report = prune(store, rule(30), dry_run=True)
    assert holdings(store) == before
    assert report.jobs == 3 and report.bytes_freed > 0 and report.summary().startswith("would remove 3 job(s)")
    assert prune(store, rule(30)).bytes_freed == report.bytes_freed  # it said exactly what a prune frees


def test_status_and_project_filters(store):
    failed_a, completed_a = put_job(store, F, 40, project="a"), put_job(store, C, 40, project="a")
    failed_b = put_job(store, F, 40, project="b")
    prune(store, rule(30, statuses=(F,), project_id="a"))
    assert set(holdings(store)["jobs"]) == {completed_a.job_id, failed_b.job_id}
    assert failed_a.job_id not in holdings(store)["jobs"]


def test_a_job_retried_since_it_was_chosen_is_kept_with_its_concept(store):
    job = put_job(store, F, 40)
    store.modify(job.job_id, job.project_id, lambda old: (old.model_copy(update={"status": P,
                                                                                 "updated_at": utcnow()}), None))
    removal = store.remove_jobs([RemovableJob.of(job)], rule(30).check, [(job.project_id, job.concept_id)])
    assert removal.jobs == [] and removal.concepts == 0
    assert store.get(job.job_id, job.project_id).status is P
    assert store.load_concept(job.project_id, job.concept_id)


def test_the_turn_to_prune_goes_to_one_caller_per_hour(store):
    now = utcnow()
    assert store.last_pruned_at() is None
    assert store.claim_prune_turn(now, timedelta(hours=1)) is True
    assert store.claim_prune_turn(now + timedelta(minutes=59), timedelta(hours=1)) is False
    assert store.claim_prune_turn(now + timedelta(minutes=61), timedelta(hours=1)) is True
    assert abs(store.last_pruned_at() - (now + timedelta(minutes=61))) < timedelta(milliseconds=1)


def test_a_workers_retention_loop_prunes_on_its_turn_only(store):
    put_job(store, C, 40)
    first = RetentionLoop(store, 30, "w-1").run_once()
    second = RetentionLoop(store, 30, "w-2").run_once()
    assert first is not None and first.jobs == 1 and second is None


# -- input -----------------------------------------------------------------------------------------
def test_ages_and_statuses():
    assert parse_age("30d") == timedelta(days=30) and parse_age("12h") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_statuses("completed, failed") == (C, F) and parse_statuses(None) == (C, F, X)
    for bad in ("30x", "", "-3d", "0d", "d"):
        with pytest.raises(InvalidInput, match="is not an age"):
            parse_age(bad)
    with pytest.raises(InvalidInput, match="'running' is not a finished status"):
        parse_statuses("completed,running")


def test_retention_days_setting(monkeypatch):
    monkeypatch.delenv("JOBS_RETENTION_DAYS", raising=False)
    assert retention.retention_days() is None
    monkeypatch.setenv("JOBS_RETENTION_DAYS", "30")
    assert retention.retention_days() == 30
    monkeypatch.setenv("JOBS_RETENTION_DAYS", "a month")
    with pytest.raises(InvalidInput, match="JOBS_RETENTION_DAYS='a month' must be a number of days above 0"):
        retention.retention_days()


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.slow
def test_prune_command_prints_what_it_removed_and_the_space_freed(tmp_path):
    store = FileJobStore(tmp_path)
    kept = put_job(store, C, 5)
    for status in (C, C, F):
        put_job(store, status, 40)
    dry = run_cli("prune", "--older-than", "30d", "--dry-run", jobs_dir=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would remove 3 job(s) (2 completed, 1 failed), 2 render(s), 3 concept(s); would free")
    assert len(list((tmp_path / "jobs" / "p1").iterdir())) == 4
    result = run_cli("prune", "--older-than", "30d", "--status", "completed,failed", jobs_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("removed 3 job(s) (2 completed, 1 failed), 2 render(s), 3 concept(s); freed")
    assert [job.job_id for job in store.iter_jobs()] == [kept.job_id]
    again = run_cli("prune", "--older-than", "30d", jobs_dir=tmp_path)
    assert again.stdout == "nothing to prune: no finished job is older than the cutoff\n"


BAD_PRUNE = [
    (["--older-than", "30x"], "--older-than '30x' is not an age: write a number of days, hours or weeks"),
    (["--older-than", "30d", "--status", "running"], "--status 'running' is not a finished status"),
    (["--older-than", "30d", "--status", "pending"], "--status 'pending' is not a finished status"),
    (["--older-than", "30d", "--project-id", "a/b"], "projectId 'a/b' may only contain"),
    ([], "the following arguments are required: --older-than"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), BAD_PRUNE, ids=[" ".join(a) for a, _ in BAD_PRUNE])
def test_bad_prune_input_is_one_sentence_and_changes_nothing(tmp_path, args, message):
    store = FileJobStore(tmp_path)
    put_job(store, C, 40)
    before = tree_snapshot(tmp_path)
    result = run_cli("prune", *args, jobs_dir=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr
    assert tree_snapshot(tmp_path) == before


# -- kill -9 in the middle of a prune --------------------------------------------------------------
def whole_or_gone(root: Path) -> tuple[int, int]:
    """Every job file there is whole (parses; a completed one has its render and its events); every
    render or event log there belongs to a job file, or to a removal an intent file lists."""
    store = FileJobStore(root)
    jobs = {(job.project_id, job.job_id): job for job in store.iter_jobs()}
    assert not store.list_jobs().unreadable
    for job in jobs.values():
        assert store.events(job.job_id, job.project_id)
        if job.status is C:
            assert (root / "renders" / job.project_id / f"{job.job_id}.png").stat().st_size > 0
    leftovers = [path for kind, suffix in (("renders", ".png"), ("events", ".jsonl"))
                 for path in (root / kind).glob(f"*/*{suffix}")
                 if (path.parent.name, path.name.removesuffix(suffix)) not in jobs]
    return len(jobs), len(leftovers)


@pytest.mark.slow
def test_kill_9_mid_prune_leaves_each_job_whole_or_gone_and_a_rerun_or_repair_finishes(tmp_path):
    store = FileJobStore(tmp_path)
    total = 700  # four batches of 200: the kill lands inside one
    for index in range(total):
        put_job(store, (C, F, X)[index % 3], 40, webhook=index % 10 == 0)
    recent = put_job(store, C, 1)
    process = subprocess.Popen([sys.executable, "-m", "jobs_core", "prune", "--older-than", "30d",
                                "--jobs-dir", str(tmp_path)], cwd=ROOT, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jobs_folder = tmp_path / "jobs" / "p1"
    wait_until(lambda: len(os.listdir(jobs_folder)) < total - 250 or process.poll() is not None,
               timeout=60, what="the prune to be half-way")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the prune finished before it could be killed"
    remaining, leftovers = whole_or_gone(tmp_path)
    assert 1 < remaining < total  # killed mid-way: some gone, some whole
    intents = list((tmp_path / ".state" / "pruning").glob("*.json"))
    assert len(intents) <= 1
    assert leftovers == 0 or intents, "what a kill left of gone jobs is named by an intent file"

    repair = run_cli("repair", jobs_dir=tmp_path)
    assert repair.returncode == 0, repair.stderr
    assert whole_or_gone(tmp_path) == (remaining, 0)
    assert not list((tmp_path / ".state" / "pruning").glob("*.json"))

    result = run_cli("prune", "--older-than", "30d", jobs_dir=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith(f"removed {remaining - 1} job(s)"), result.stdout
    assert whole_or_gone(tmp_path) == (1, 0)
    assert [job.job_id for job in store.iter_jobs()] == [recent.job_id]
    assert [d.job_id for d in store.deliveries()] == []
    assert {path.name for path in (tmp_path / "concepts" / "p1").iterdir()} == {f"{recent.concept_id}.json"}
    assert not list((tmp_path / ".state" / "idempotency").glob("*/*"))


@pytest.mark.slow
def test_kill_9_then_the_next_prune_finishes_what_was_left(tmp_path):
    store = FileJobStore(tmp_path)
    total = 500
    for _ in range(total):
        put_job(store, C, 40)
    process = subprocess.Popen([sys.executable, "-m", "jobs_core", "prune", "--older-than", "30d",
                                "--jobs-dir", str(tmp_path)], cwd=ROOT, env=cli_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    jobs_folder = tmp_path / "jobs" / "p1"
    wait_until(lambda: len(os.listdir(jobs_folder)) < total - 50 or process.poll() is not None,
               timeout=60, what="the prune to start removing")
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the prune finished before it could be killed"
    remaining, _ = whole_or_gone(tmp_path)
    result = run_cli("prune", "--older-than", "30d", jobs_dir=tmp_path)
    assert result.returncode == 0, result.stderr
    assert whole_or_gone(tmp_path) == (0, 0)
    for kind in ("renders", "events", "concepts"):
        assert not list((tmp_path / kind).glob("*/*")), kind
    assert not list((tmp_path / ".state" / "pruning").glob("*.json"))
    assert remaining < total


# -- workers prune by themselves, one at a time --------------------------------------------------------
def start_logged_worker(tmp_path: Path, env: dict) -> subprocess.Popen:
    """`python -m jobs_core worker` on the store of `env` (JOBS_STORE_URL or JOBS_DIR)."""
    log_path = tmp_path / f"worker-{time.monotonic_ns()}.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--poll", "0.05"], cwd=ROOT,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path  # type: ignore[attr-defined]
    return process


def _two_workers_prune_once(store, tmp_path: Path, env: dict) -> None:
    old = [put_job(store, C, 40) for _ in range(5)]
    recent = put_job(store, C, 3)
    workers = [start_logged_worker(tmp_path, env) for _ in range(2)]
    try:
        wait_until(lambda: [job.job_id for job in store.iter_jobs()] == [recent.job_id], timeout=60,
                   what="the workers to prune the old jobs")
        # each worker's retention thread asks for its turn as it starts, and says what it got
        wait_until(lambda: all("retention" in worker_log(w) for w in workers), timeout=30,
                   what="both workers to ask for their turn")
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    logs = [worker_log(worker) for worker in workers]
    pruned = [log for log in logs if f"removed {len(old)} job(s)" in log]
    assert len(pruned) == 1, logs
    assert store.last_pruned_at() is not None


@pytest.mark.slow
def test_two_worker_processes_one_prune_on_files(tmp_path):
    store = FileJobStore(tmp_path / "store")
    env = cli_env(JOBS_RETENTION_DAYS="30", JOBS_RENDERER="noop", JOBS_DIR=str(tmp_path / "store"))
    _two_workers_prune_once(store, tmp_path, env)


@pytest.mark.slow
def test_two_worker_processes_one_prune_on_postgres(tmp_path, pg_url):
    from jobs_core.store import open_store

    store = open_store(pg_url)
    try:
        _two_workers_prune_once(store, tmp_path, cli_env(JOBS_RETENTION_DAYS="30", JOBS_RENDERER="noop",
                                                         JOBS_STORE_URL=pg_url))
    finally:
        store.close()


@pytest.mark.slow
def test_kill_9_mid_prune_on_postgres_leaves_no_half_removed_job(pg_url):
    import psycopg

    from jobs_core.store import open_store

    store = open_store(pg_url)
    total = 700
    try:
        for index in range(total):
            put_job(store, (C, F, X)[index % 3], 40, webhook=index % 10 == 0)
        process = subprocess.Popen([sys.executable, "-m", "jobs_core", "prune", "--older-than", "30d"], cwd=ROOT,
                                   env=cli_env(JOBS_STORE_URL=pg_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            def count(query: str) -> int:
                return conn.execute(query).fetchone()[0]
            wait_until(lambda: count("SELECT count(*) FROM jobs") < total or process.poll() is not None,
                       timeout=60, what="the first batch to commit")
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert process.returncode == -signal.SIGKILL, "the prune finished before it could be killed"
            remaining = count("SELECT count(*) FROM jobs")
            assert 0 < remaining < total and remaining % 200 == total % 200  # whole batches, none half
            for table, column in (("job_images", "job_id"), ("job_events", "job_id"), ("webhook_outbox", "key")):
                assert count(f"SELECT count(*) FROM {table} t WHERE NOT EXISTS "
                             f"(SELECT 1 FROM jobs j WHERE j.job_id = t.{column})") == 0, table
            assert count("SELECT count(*) FROM jobs j WHERE status = 'completed' AND NOT EXISTS "
                         "(SELECT 1 FROM job_images i WHERE i.job_id = j.job_id)") == 0
            assert count("SELECT count(*) FROM jobs j WHERE NOT EXISTS "
                         "(SELECT 1 FROM job_events e WHERE e.job_id = j.job_id)") == 0
        result = subprocess.run(
            [sys.executable, "-m", "jobs_core", "prune", "--older-than", "30d"], cwd=ROOT,
            env=cli_env(JOBS_STORE_URL=pg_url), capture_output=True, text=True, timeout=120)
        assert result.stdout.startswith(f"removed {remaining} job(s)"), result
        assert store.store_size().jobs == 0 and list(store.iter_concepts()) == []
    finally:
        store.close()


def test_the_monitors_size_gauge_measures_at_most_once_a_minute(store):
    put_job(store, C, 40)
    gauge = retention.StoreSizeGauge(store, every_seconds=60)
    assert gauge.latest() is None or gauge.size is not None  # the first measure runs in the background
    measured_at = wait_until(lambda: gauge.measured_at, what="the first measure")
    first = gauge.size
    assert (first.jobs, first.renders) == (1, 1) and first.bytes > 0
    put_job(store, C, 40)
    assert gauge.latest() == first and gauge.measured_at == measured_at  # within the minute: the old figure
    wait_until(lambda: not gauge._measuring.locked(), what="the first measure to let go")
    gauge.latest(now=measured_at + timedelta(seconds=61))
    wait_until(lambda: gauge.measured_at != measured_at, what="a new measure")
    assert gauge.size.jobs == 2
    assert gauge.describe().startswith("Store size: 2 jobs, 2 renders, ")


@pytest.mark.slow
def test_a_worker_with_a_bad_retention_setting_says_so_in_one_line(tmp_path):
    FileJobStore(tmp_path)
    before = tree_snapshot(tmp_path)
    result = run_cli("worker", "--drain", jobs_dir=tmp_path, env=cli_env(JOBS_RETENTION_DAYS="forever"))
    assert result.returncode == 2
    assert result.stderr == "error: JOBS_RETENTION_DAYS='forever' must be a number of days above 0, such as 30.\n"
    assert tree_snapshot(tmp_path) == before
