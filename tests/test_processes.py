"""Real worker processes on a real FileJobStore: racing claims, and a worker killed with SIGKILL."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path

import gate_renderer  # noqa: F401  (registers the `gate` test renderer in this process too)
import pytest
from proc_helpers import cli_env, start_worker, wait_until, worker_log

from jobs_core import lifecycle
from jobs_core.config import load_settings
from jobs_core.models import Concept, Event, JobStatus, utcnow
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.store.atomic import is_temp_name
from jobs_core.store.files import read_job_file

pytestmark = pytest.mark.slow


def file_service(jobs_dir: Path, **settings) -> JobService:
    base = replace(load_settings(jobs_dir), store_url=None, retry_backoff_seconds=0.0)
    return JobService(FileJobStore(jobs_dir), replace(base, **settings))


def submit_many(service: JobService, count: int, renderer: str, **inputs) -> list[str]:
    return [service.submit({"projectId": f"p{index % 3}", "conceptInputs": inputs}, renderer=renderer).job_id
            for index in range(count)]


def assert_every_file_parses(jobs_dir: Path) -> None:
    """Every job, concept and event line in the store is whole; no file is torn by a kill."""
    checked = 0
    for path in jobs_dir.rglob("*"):
        if path.is_dir() or is_temp_name(path.name) or ".state" in path.parts:
            continue
        kind = path.relative_to(jobs_dir).parts[0]
        if kind == "jobs":
            read_job_file(path)
        elif kind == "concepts":
            Concept.model_validate_json(path.read_bytes())
        elif kind == "events":
            for line in path.read_text().splitlines():
                Event.model_validate_json(line)
        elif kind == "renders":
            assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n"), path
        checked += 1
    assert checked > 0


# -- 8 processes, 400 jobs -----------------------------------------------------------------------
def test_eight_worker_processes_process_400_jobs_each_exactly_once(tmp_path):
    jobs_dir = tmp_path / "store"
    service = file_service(jobs_dir)
    job_ids = submit_many(service, 400, "noop")
    workers = [start_worker(jobs_dir, "--drain") for _ in range(8)]
    for worker in workers:
        assert worker.wait(timeout=240) == 0, worker_log(worker)

    claims: Counter[str] = Counter()
    completions: Counter[str] = Counter()
    claimants = set()
    for job_id in job_ids:
        job = service.get(job_id)
        assert job.status is JobStatus.COMPLETED and job.attempts == 1, job
        events = service.events(job_id)
        claims[job_id] += sum(e.type == "claimed" for e in events)
        completions[job_id] += sum(e.type == "completed" for e in events)
        claimants.update(e.worker_id for e in events if e.type == "claimed")
    assert set(claims.values()) == {1} and set(completions.values()) == {1}
    assert len(claimants) >= 2, "the processes did not race: one worker took every job"
    processed = sum(int(line.rsplit(" after ", 1)[1].split()[0])
                    for worker in workers for line in worker_log(worker).splitlines() if " stopped after " in line)
    assert processed == 400  # the workers' own counts agree with the store: nothing run twice
    assert service.store.pending() == [] and service.store.processing() == []
    assert_every_file_parses(jobs_dir)


def _claim_until_empty(jobs_dir: str, worker_id: str, start, out) -> None:
    service = file_service(Path(jobs_dir))
    start.wait(timeout=60)  # every process begins claiming at the same instant
    won = []
    while (job := service.claim_next(worker_id)) is not None:
        won.append(job.job_id)
    out.put((worker_id, won))


def test_processes_calling_claim_next_at_once_each_win_distinct_jobs(tmp_path):
    jobs_dir = tmp_path / "store"
    service = file_service(jobs_dir)
    job_ids = submit_many(service, 400, "noop")
    start, out = multiprocessing.Barrier(8), multiprocessing.Queue()
    processes = [multiprocessing.Process(target=_claim_until_empty, args=(str(jobs_dir), f"racer{i}", start, out))
                 for i in range(8)]
    for process in processes:
        process.start()
    results = dict(out.get(timeout=240) for _ in processes)
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0

    winner = {job_id: worker for worker, won in results.items() for job_id in won}
    assert sum(len(won) for won in results.values()) == len(winner) == 400  # no job won twice
    assert set(winner) == set(job_ids)  # none missed
    assert sum(1 for won in results.values() if won) >= 2
    for job_id, worker in winner.items():  # the store agrees with what each claimant was told
        job = service.get(job_id)
        assert (job.status, job.worker_id, job.attempts) == (JobStatus.PROCESSING, worker, 1)


# -- SIGKILL mid-job -----------------------------------------------------------------------------
def test_worker_killed_mid_job_is_reclaimed_and_finished_by_another_worker(tmp_path):
    jobs_dir, gate = tmp_path / "store", tmp_path / "gate"
    gate.mkdir()
    service = file_service(jobs_dir, lease_seconds=1.0)
    [job_id] = submit_many(service, 1, "gate", gateDir=str(gate))
    env = cli_env(JOBS_LEASE_SECONDS="1")

    doomed = start_worker(jobs_dir, env=env)
    wait_until(lambda: (gate / "started").exists(), what="the first worker to start the render")
    os.kill(doomed.pid, signal.SIGKILL)
    assert doomed.wait(timeout=10) == -signal.SIGKILL
    held = service.get(job_id)
    assert held.status is JobStatus.PROCESSING and held.attempts == 1 and held.worker_id

    (gate / "open").touch()
    # The job is only reclaimable once its last heartbeat is older than the lease; a draining worker
    # started before that would rightly find nothing to do.
    wait_until(lambda: lifecycle.is_expired(service.get(job_id), 1.0, utcnow()), what="the lease to expire")
    rescuer = start_worker(jobs_dir, "--drain", env=env)
    assert rescuer.wait(timeout=60) == 0, worker_log(rescuer)

    done = service.get(job_id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 2
    assert done.worker_id != held.worker_id
    kinds = [(e.type, e.attempt) for e in service.events(job_id) if e.type != "progress"]
    assert kinds == [("created", 0), ("claimed", 1), ("requeued", 1), ("claimed", 2), ("completed", 2)]
    requeued = next(e for e in service.events(job_id) if e.type == "requeued")
    assert lifecycle.LOST_WORKER in requeued.message
    assert service.image(done).startswith(b"\x89PNG")
    assert_every_file_parses(jobs_dir)
    assert service.list().unreadable == []
    assert len((gate / "started").read_text().splitlines()) == 2  # rendered twice: once killed, once done
    assert json.loads((jobs_dir / "jobs" / done.project_id / f"{job_id}.json").read_text())["attempts"] == 2
