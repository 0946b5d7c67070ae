"""Claim latency with and without JOBS_RENDERER_LIMITS, side by side in one run, on files and PostgreSQL.

    python -m bench.limits_bench [--jobs 200] [--rounds 5] [--running 20] [--stores files postgres]
                                 [--postgres URL]

Prints figures, asserts nothing. On each store, with --running jobs of the limited renderer
already in processing (live leases, which a limited claim counts), each round claims --jobs jobs
one at a time (each claim timed alone; the job is then completed, untimed, so the running set
stays the same size) in these configurations, alternating, so disk or server noise hits them alike:
  * no limits: the peer, today's claim (it still skips paused renderers: one look per claim);
  * limited, slots free: the claimed renderer is capped (noop=1000): every claim takes the
    renderer's lock and counts its running jobs, atomically with the claim;
  * limited, head full: the first --jobs queued jobs belong to a renderer at its cap, the job to
    claim is queued behind them (no head-of-line blocking: the claim passes them by).
Medians and 90th percentiles over every round, and the ratio to the peer.
PostgreSQL runs when --postgres URL or JOBS_TEST_POSTGRES_URL is given (a scratch schema per run).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import quote

from jobs_core.config import load_settings
from jobs_core.lifecycle import Lease
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import open_store

CONFIGS = ("no limits", "limited, slots free", "limited, head full")


@contextmanager
def files_location() -> Iterator[str]:
    root = tempfile.mkdtemp(prefix="limits-bench-")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def postgres_location(server: str) -> Iterator[str]:
    """A new empty schema on `server`, dropped afterwards."""
    import psycopg

    schema = f"jobs_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{server}{'&' if '?' in server else '?'}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def services(location: str) -> dict[str, JobService]:
    """One store, seen through the three configurations."""
    store = open_store(location)
    base = replace(load_settings(), store_url=None, renderer="noop", lease_seconds=3600.0, retry_backoff_seconds=0.0)
    return {CONFIGS[0]: JobService(store, base),
            CONFIGS[1]: JobService(store, replace(base, renderer_limits={"noop": 1000})),
            CONFIGS[2]: JobService(store, replace(base, renderer_limits={"noop": 1000, "axonometric": 1}))}


def submit(service: JobService, renderer: str) -> None:
    service.submit({"projectId": "bench", "renderType": "axonometric"}, renderer=renderer)


def hold_running(service: JobService, count: int) -> None:
    """`count` noop jobs in processing with live leases (a worker that is busy), plus one
    axonometric job holding that renderer's only slot in the head-full configuration."""
    for _ in range(count):
        submit(service, "noop")
    submit(service, "axonometric")
    for _ in range(count + 1):
        service.claim_next("busy-worker")


def timed_claims(service: JobService, config: str, jobs: int) -> list[float]:
    """Claim `jobs` noop jobs one by one, timing each claim alone; complete each (untimed)."""
    if config == CONFIGS[2]:
        for _ in range(jobs):
            submit(service, "axonometric")  # queued first, their renderer is full
    for _ in range(jobs):
        submit(service, "noop")
    times = []
    for _ in range(jobs):
        started = time.perf_counter()
        job = service.claim_next("bench-worker")
        times.append(time.perf_counter() - started)
        assert job is not None and job.renderer == "noop", "the claim found no noop job"
        service.complete(Lease.of(job), _tiny_png())
    if config == CONFIGS[2]:
        for listed in service.list(status="pending").jobs:
            service.cancel(listed.job_id, listed.project_id)  # the next round starts from an empty queue
    return times


def bench_store(name: str, location: str, jobs: int, rounds: int, running: int) -> None:
    configured = services(location)
    hold_running(configured[CONFIGS[0]], running)
    timed_claims(configured[CONFIGS[0]], CONFIGS[0], 20)  # warm-up: caches, prepared statements
    times: dict[str, list[float]] = {config: [] for config in CONFIGS}
    for round_index in range(rounds):
        order = CONFIGS if round_index % 2 == 0 else tuple(reversed(CONFIGS))
        for config in order:
            times[config] += timed_claims(configured[config], config, jobs)
    peer = statistics.median(times[CONFIGS[0]])
    print(f"\n{name}: claim latency, {rounds} rounds x {jobs} claims, {running} jobs of the limited renderer running")
    print(f"  {'configuration':<22} {'median':>9} {'p90':>9}   vs no limits")
    for config in CONFIGS:
        ordered = sorted(times[config])
        median, p90 = statistics.median(ordered), ordered[int(len(ordered) * 0.9)]
        print(f"  {config:<22} {median * 1000:>7.2f}ms {p90 * 1000:>7.2f}ms   {median / peer:.2f}x")
    configured[CONFIGS[0]].store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--running", type=int, default=20)
    parser.add_argument("--stores", nargs="+", choices=["files", "postgres"], default=["files", "postgres"])
    parser.add_argument("--postgres", default=os.environ.get("JOBS_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    for name in args.stores:
        if name == "postgres" and not args.postgres:
            print("\npostgres: skipped (no --postgres URL or JOBS_TEST_POSTGRES_URL)")
            continue
        with files_location() if name == "files" else postgres_location(args.postgres) as location:
            bench_store(name, location, args.jobs, args.rounds, args.running)


if __name__ == "__main__":
    main()
