"""Benchmark `prune` (retention) on the file store and on PostgreSQL, beside the floor, in one run.

    python3 -m bench.prune_bench [--jobs 10000] [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

A store of `--jobs` jobs (bench.generate_store: every job with its event log, completed ones with
a render) dated two months back, so all but the few still queued or running are finished over
30 days ago. Copies of it are pruned with `retention.prune(--older-than 30d)` and, as the floor,
emptied of the same jobs' files (or rows) with no checks at all:
- files: the floor unlinks each job file, render and event log (os.unlink, nothing else): what
  any removal must do at least; prune adds the job lock, the re-read and check, the intent file,
  one folder fsync per batch, and the size of what goes;
- PostgreSQL: the floor is one DELETE per table with every job id, in one transaction; prune runs
  one transaction per 200 jobs, locking and checking each row.
Also: how long the monitor's size measure (`store_size`) takes on the full store, and how long a
prune spends finding its jobs (it reads every job: the floor is given the list for free). On
PostgreSQL "freed" is the size of the rows removed: the server reuses that space for new rows
(autovacuum) rather than shrinking its files.
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from bench.generate_store import Plan, generate
from jobs_core.migrate import migrate
from jobs_core.models import utcnow
from jobs_core.retention import PruneRule, _targets_and_concept_users, human_bytes, prune
from jobs_core.store import FileJobStore, open_store


def rule() -> PruneRule:
    return PruneRule(cutoff=utcnow() - timedelta(days=30))


def finished_paths(root: Path, store: FileJobStore) -> list[Path]:
    cutoff = rule().cutoff
    paths = []
    for job in store.iter_jobs():
        if job.status.is_final and job.updated_at < cutoff:
            paths += [root / "jobs" / job.project_id / f"{job.job_id}.json",
                      root / "renders" / job.project_id / f"{job.job_id}.png",
                      root / "events" / job.project_id / f"{job.job_id}.jsonl"]
    return paths


def files_figures(source: Path, work: Path) -> None:
    floor_root, prune_root = work / "floor", work / "prune"
    shutil.copytree(source, floor_root)
    shutil.copytree(source, prune_root)
    store = FileJobStore(prune_root)
    started = time.perf_counter()
    size = store.store_size()
    size_seconds = time.perf_counter() - started
    print(f"files: store of {size.jobs:,} jobs, {size.renders:,} renders, {human_bytes(size.bytes)}; "
          f"store_size (the monitor's measure) took {size_seconds * 1000:.0f} ms")

    paths = finished_paths(floor_root, FileJobStore(floor_root))
    started = time.perf_counter()
    freed = 0
    for path in paths:
        try:
            freed += path.stat().st_size
            os.unlink(path)
        except FileNotFoundError:
            continue
    floor_seconds = time.perf_counter() - started

    started = time.perf_counter()
    targets, _ = _targets_and_concept_users(store, rule())
    scan_seconds = time.perf_counter() - started
    print(f"files: of which finding the {len(targets):,} jobs (reading every job file) takes {scan_seconds:.2f} s")
    started = time.perf_counter()
    report = prune(store, rule())
    prune_seconds = time.perf_counter() - started
    left = store.store_size()
    print(f"files: floor (unlink {len(paths):,} files, no checks) {floor_seconds:.2f} s, freed {human_bytes(freed)}")
    print(f"files: prune {prune_seconds:.2f} s ({report.jobs / prune_seconds:,.0f} jobs/s, "
          f"{prune_seconds / floor_seconds:.1f}x the floor): {report.summary()}; "
          f"left {left.jobs:,} jobs, {human_bytes(left.bytes)}")


def postgres_figures(source: Path, server: str) -> None:
    import psycopg

    schema = f"bench_prune_{secrets.token_hex(4)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{server}{'&' if '?' in server else '?'}options={quote(f'-csearch_path={schema}')}"
    store = open_store(url)
    try:
        started = time.perf_counter()
        migrate(FileJobStore(source), store)
        print(f"postgres: loaded by `migrate` in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        size = store.store_size()
        print(f"postgres: store of {size.jobs:,} jobs, {size.renders:,} renders, {human_bytes(size.bytes)} "
              f"(tables with indexes); store_size took {(time.perf_counter() - started) * 1000:.0f} ms")
        floor_seconds = _postgres_floor(server, schema)
        started = time.perf_counter()
        report = prune(store, rule())
        prune_seconds = time.perf_counter() - started
        print(f"postgres: floor (one DELETE per table, one transaction, no checks) {floor_seconds:.2f} s")
        print(f"postgres: prune {prune_seconds:.2f} s ({report.jobs / prune_seconds:,.0f} jobs/s, "
              f"{prune_seconds / floor_seconds:.1f}x the floor): {report.summary()}")
    finally:
        store.close()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}_floor CASCADE")


def _postgres_floor(server: str, schema: str) -> float:
    """Copy the tables into a second schema and delete the same jobs there in one go."""
    import psycopg

    floor = f"{schema}_floor"
    cutoff = rule().cutoff
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {floor}")
        for table in ("jobs", "job_events", "job_images", "job_concepts", "webhook_outbox"):
            conn.execute(f"CREATE TABLE {floor}.{table} (LIKE {schema}.{table} INCLUDING ALL)")
            conn.execute(f"INSERT INTO {floor}.{table} SELECT * FROM {schema}.{table}")
        conn.execute(f"VACUUM ANALYZE {floor}.jobs")
        started = time.perf_counter()
        with conn.transaction():
            ids = [row[0] for row in conn.execute(
                f"SELECT job_id FROM {floor}.jobs WHERE status IN ('completed', 'failed', 'canceled') "
                "AND updated_at < %s", [cutoff])]
            for table, column in (("jobs", "job_id"), ("job_events", "job_id"), ("job_images", "job_id"),
                                  ("webhook_outbox", "key")):
                conn.execute(f"DELETE FROM {floor}.{table} WHERE {column} = ANY(%s)", [ids])
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--postgres", default=os.environ.get("JOBS_TEST_POSTGRES_URL"),
                        help="a server to bench on (a scratch schema is made and dropped)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prune-bench-") as work:
        source = Path(work) / "source"
        two_months_ago = datetime.now(UTC) - timedelta(days=60)
        started = time.perf_counter()
        generate(source, Plan(jobs=args.jobs, projects=50, weeks=4, now=two_months_ago), images=True, events=True)
        print(f"generated {args.jobs:,} jobs (dated {two_months_ago:%Y-%m-%d} and the 4 weeks before) "
              f"in {time.perf_counter() - started:.1f} s")
        files_figures(source, Path(work))
        if args.postgres:
            postgres_figures(source, args.postgres)
        else:
            print("postgres: skipped (give --postgres URL or set JOBS_TEST_POSTGRES_URL)")


if __name__ == "__main__":
    main()
