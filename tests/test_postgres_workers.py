"""Six worker processes on one PostgreSQL store, two of them killed with SIGKILL midway.

Each of the 1,000 jobs must be completed exactly once, none lost; the jobs the killed workers held
are reclaimed after the lease and finished by the survivors.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from jobs_core.service import JobService

ROOT = Path(__file__).resolve().parent.parent
JOBS = 1000
WORKERS = 6
LEASE_SECONDS = 2.0

pytestmark = pytest.mark.slow


def start_worker(pg_url: str) -> subprocess.Popen:
    env = {**os.environ, "JOBS_STORE_URL": pg_url, "JOBS_LEASE_SECONDS": str(LEASE_SECONDS),
           "JOBS_PG_POOL_SIZE": "3", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--poll", "0.5"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def query(pg_url: str, sql: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def completed_count(pg_url: str) -> int:
    return query(pg_url, "SELECT count(*) FROM jobs WHERE status = 'completed'")[0][0]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def kill_while_holding_a_job(pg_url: str, worker: subprocess.Popen) -> list[str]:
    """Freeze the worker until we catch it holding a job, then SIGKILL it; the jobs it held."""
    for _ in range(200):
        os.kill(worker.pid, signal.SIGSTOP)
        held = [row[0] for row in query(
            pg_url, "SELECT job_id FROM jobs WHERE status = 'processing' AND worker_id LIKE %s",
            (f"%-{worker.pid}-%",))]
        if held:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            return held
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.02)
    raise AssertionError(f"worker {worker.pid} was never caught holding a job")


def test_six_workers_two_killed_midway_each_job_completed_exactly_once(pg_url: str, settings):
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(pg_url, pool_size=2)
    service = JobService(store, replace(settings, renderer="noop"))
    job_ids = {service.submit({"projectId": f"p{i % 7}"}).job_id for i in range(JOBS)}
    workers = [start_worker(pg_url) for _ in range(WORKERS)]
    try:
        wait_for(lambda: completed_count(pg_url) >= JOBS // 4, 120, "a quarter of the jobs")
        victims = workers[:2]
        held = {job_id: victim.pid for victim in victims for job_id in kill_while_holding_a_job(pg_url, victim)}
        wait_for(lambda: completed_count(pg_url) == JOBS, 180, "every job to complete")
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        exit_codes = [worker.wait(30) for worker in workers]
        store.close()
    assert exit_codes[2:] == [0] * (WORKERS - 2) and exit_codes[:2] == [-signal.SIGKILL] * 2

    assert {job.job_id for job in store_jobs(pg_url)} == job_ids  # none lost, none invented
    completions = query(pg_url, "SELECT doc->>'jobId', doc->>'workerId' FROM job_events "
                                "WHERE doc->>'type' = 'completed'")
    assert sorted(job_id for job_id, _ in completions) == sorted(job_ids)  # each exactly once
    finishers = {worker_id for _, worker_id in completions}
    assert len(finishers) >= 3  # the work really was shared

    reclaimed = query(pg_url, "SELECT doc->>'jobId', doc->>'message' FROM job_events WHERE doc->>'type' = 'requeued'")
    reclaimed_ids = {job_id for job_id, _ in reclaimed}
    # A job seen held may still have been completed by its victim: a completion already sent to the
    # server when the worker was frozen commits after our read. Every other held job was reclaimed.
    finished_by_victim = {job_id for job_id, worker_id in completions
                          if job_id in held and f"-{held[job_id]}-" in worker_id}
    assert set(held) - finished_by_victim <= reclaimed_ids and set(held) - finished_by_victim
    for job_id, pid in held.items():
        if job_id in finished_by_victim:
            continue
        message = next(message for reclaimed_id, message in reclaimed if reclaimed_id == job_id)
        assert f"-{pid}-" in message  # requeued because *that* worker stopped responding
        attempts, finisher = query(pg_url, "SELECT (doc->>'attempts')::int, doc->>'workerId' FROM jobs "
                                        "WHERE job_id = %s", (job_id,))[0]
        assert attempts >= 2 and f"-{pid}-" not in finisher


def store_jobs(pg_url: str):
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(pg_url, pool_size=1)
    try:
        return list(store.iter_jobs())
    finally:
        store.close()
