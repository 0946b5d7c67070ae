"""Throughput of no-op jobs with 1, 4 and 8 worker processes: file store, PostgreSQL, and RQ.

    python3 -m bench.throughput_bench [--jobs 500] [--repeats 3] [--workers 1 4 8] [--backends files postgres rq]

Each run queues JOBS no-op jobs, then forks N worker processes (a `Worker` of concurrency 1
each, on its own store connection) and times from their start until every job is finished. RQ
runs the same workload with N SimpleWorker processes (bench/rq_peer.py), in the same run, so the
figures are side by side on the same machine load; runs are interleaved and repeated, and the
median is reported, because other processes on a shared machine make single runs noisy.
Information, not a target (what users feel is bench/real_work_bench.py), with one floor: at 4
workers the file store drains no-op jobs at least as fast as RQ.
PostgreSQL comes from BENCH_POSTGRES_URL / JOBS_TEST_POSTGRES_URL (default: local server).
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from jobs_core.config import load_settings
from jobs_core.service import JobService
from jobs_core.store import open_store
from jobs_core.worker import Worker

WORKER_COUNTS = (1, 4, 8)
RUN_TIMEOUT_SECONDS = 300.0
POSTGRES_URL = (os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("JOBS_TEST_POSTGRES_URL")
                or "postgresql://postgres@127.0.0.1:5432/postgres")


def _service(location: str) -> JobService:
    settings = replace(load_settings(), renderer="noop", lease_seconds=30.0, store_url=None)
    return JobService(open_store(location), settings)


def _work_until(location: str, stop: multiprocessing.synchronize.Event) -> None:
    """One worker process: claim and run jobs until the parent says everything is done."""
    service = _service(location)
    worker = Worker(service, concurrency=1, poll_seconds=0.05).start()
    stop.wait(RUN_TIMEOUT_SECONDS)
    worker.stop()
    service.store.close()


def _drained(service: JobService) -> bool:
    return not service.store.pending() and not service.store.processing()


def our_throughput(location: str, jobs: int, workers: int) -> dict[str, float]:
    """Queue `jobs` no-op jobs in the store at `location`, drain them with `workers` processes."""
    service = _service(location)
    started = time.perf_counter()
    for index in range(jobs):
        service.submit({"projectId": f"bench{index % 8}"})
    enqueued = time.perf_counter()
    service.store.close()  # no pool threads or connections cross the fork
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    processes = [context.Process(target=_work_until, args=(location, stop)) for _ in range(workers)]
    began = time.perf_counter()
    for process in processes:
        process.start()
    watcher = _service(location)
    try:
        deadline = began + RUN_TIMEOUT_SECONDS
        while not _drained(watcher) and time.perf_counter() < deadline:
            time.sleep(0.01)
        finished = time.perf_counter()
        drained = _drained(watcher)
    finally:
        stop.set()
        for process in processes:
            process.join(30)
        watcher.store.close()
    if not drained:
        raise RuntimeError(f"{workers} workers did not drain {jobs} jobs within {RUN_TIMEOUT_SECONDS:.0f} s")
    return {"enqueue_ms": (enqueued - started) * 1000 / jobs, "jobs_per_s": jobs / (finished - began)}


@contextmanager
def file_location() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="jobs-bench-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def postgres_location() -> Iterator[str]:
    import psycopg

    schema = f"jobs_bench_{secrets.token_hex(4)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def rq_run(jobs: int, workers: int) -> dict[str, float]:
    from bench.rq_peer import rq_throughput

    return rq_throughput(jobs, workers)


def main(jobs: int, worker_counts: list[int], names: list[str], repeats: int) -> None:
    backends: list[tuple[str, Callable[[int, int], dict[str, float]]]] = []
    for name, location in (("files", file_location), ("postgres", postgres_location)):
        def run(count: int, n: int, location=location) -> dict[str, float]:
            with location() as where:
                return our_throughput(where, count, n)
        if name in names:
            backends.append((name, run))
    if "rq" in names:
        backends.append(("rq (redis)", rq_run))

    print(f"no-op jobs, {jobs} per run, {repeats} runs per cell (interleaved), {os.cpu_count()} CPU cores, "
          f"load average {os.getloadavg()[0]:.1f}; worker = 1 process of concurrency 1", flush=True)
    rates: dict[tuple[str, int], list[float]] = {}
    enqueue: dict[tuple[str, int], list[float]] = {}
    for repeat in range(repeats):
        for workers in worker_counts:
            for name, run in backends:
                try:
                    figures = run(jobs, workers)
                except Exception as error:  # one missing service must not hide the other figures
                    print(f"  {name} x{workers}: n/a ({type(error).__name__}: {error})", flush=True)
                    continue
                rates.setdefault((name, workers), []).append(figures["jobs_per_s"])
                enqueue.setdefault((name, workers), []).append(figures["enqueue_ms"])
                print(f"  run {repeat + 1}: {name} x{workers}: {figures['jobs_per_s']:.0f} jobs/s", flush=True)
    print(f"\n{'backend':<12} {'workers':>7} {'jobs/s median':>14} {'min':>6} {'max':>6} {'enqueue ms/job':>15}")
    for workers in worker_counts:
        for name, _ in backends:
            if (name, workers) in rates:
                runs = rates[name, workers]
                print(f"{name:<12} {workers:>7} {statistics.median(runs):>14.0f} {min(runs):>6.0f} {max(runs):>6.0f} "
                      f"{statistics.median(enqueue[name, workers]):>15.2f}")
    peer = rates.get(("rq (redis)", 4))
    for name in ("files", "postgres"):
        ours = rates.get((name, 4))
        if ours and peer:
            ratio = statistics.median(ours) / statistics.median(peer)
            note = f"floor >= 1.0x: {'meets' if ratio >= 1 else 'misses'}" if name == "files" else "information"
            print(f"{name} {statistics.median(ours):.0f} jobs/s vs RQ {statistics.median(peer):.0f} jobs/s at "
                  f"4 workers (medians) = {ratio:.2f}x   {note}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=500, help="jobs per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is reported")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    parser.add_argument("--backends", nargs="+", default=["files", "postgres", "rq"],
                        choices=["files", "postgres", "rq"])
    arguments = parser.parse_args()
    main(arguments.jobs, arguments.workers, arguments.backends, arguments.repeats)
