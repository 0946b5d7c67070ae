"""A hundred renders at once on PostgreSQL, two worker processes killed midway (issue 19, part 5).

    python3 -m bench.scale_bench [--jobs 2000] [--processes 4] [--threads 25] [--kill 2]
                                 [--provider-seconds 1 3] [--lease 10] [--pool-size N]
                                 [--timeout 600] [--no-restart]

Queues JOBS `openai` jobs on a fresh schema, then starts PROCESSES worker processes of THREADS
threads each (`python -m jobs_core worker --concurrency THREADS`, through bench/scale_worker.py,
which also times each claim) against a stand-in images API on 127.0.0.1 that answers each request
after a random 1-3 s (bench/standin_provider.py). When half the jobs are done, KILL of the
processes get SIGKILL while they hold jobs; a supervisor would start them again, and so does this
run (unless --no-restart). Their jobs are reclaimed once the lease passes.

Printed, from the same run: whether every job completed exactly once (its `completed` events,
its image, its requests to the provider: a job a killed process held asks the provider twice,
that is allowed; completing twice is not), the claim latency p50/p99, the peak of PostgreSQL
connections the workers held (sampled from pg_stat_activity every 0.1 s) beside what a
connection per thread would take, the NOTIFY traffic one listener received, and the throughput
beside the ideal (JOBS x mean provider time / (PROCESSES x THREADS)), which no real run reaches:
startup, the kill and the lease are paid inside it.

Bounded: after --timeout seconds the run stops and prints what is left. PostgreSQL comes from
BENCH_POSTGRES_URL / JOBS_TEST_POSTGRES_URL (default: the local server); the schema is dropped.
tests/test_postgres_scale.py runs the same code small (200 jobs, 2 x 10 threads, one SIGKILL).
"""
from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from bench.standin_provider import StandInProvider
from jobs_core.config import load_settings
from jobs_core.service import JobService
from jobs_core.store.postgres import PostgresJobStore

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = (os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("JOBS_TEST_POSTGRES_URL")
                or "postgresql://postgres@127.0.0.1:5432/postgres")
TITLE = "Scale job {:05d}"
SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class Plan:
    jobs: int = 2000
    processes: int = 4
    threads: int = 25
    kills: int = 2
    provider_seconds: tuple[float, float] = (1.0, 3.0)
    lease_seconds: float = 10.0
    pool_size: int | None = None  # JOBS_PG_POOL_SIZE of the workers; None: the product's default (8)
    timeout_seconds: float = 600.0
    restart: bool = True  # start a new process for each one killed, as a supervisor would
    server_url: str = POSTGRES_URL

    @property
    def concurrency(self) -> int:
        return self.processes * self.threads


@dataclass
class Outcome:
    plan: Plan
    job_ids: list[str]
    statuses: Counter[str] = field(default_factory=Counter)
    completions: Counter[str] = field(default_factory=Counter)  # job id -> its `completed` events
    claims: Counter[str] = field(default_factory=Counter)  # job id -> its `claimed` events
    images: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # job id -> requests the provider saw
    provider_delays: list[float] = field(default_factory=list)
    peak_provider_in_flight: int = 0
    held_at_kill: set[str] = field(default_factory=set)
    claim_ms: list[float] = field(default_factory=list)  # claims that got a job
    steady_claim_ms: list[float] = field(default_factory=list)  # the same, once each pool was open
    empty_claims: int = 0
    peak_connections: int = 0
    peak_active: int = 0  # running a statement or inside a transaction
    peak_by_process: dict[str, int] = field(default_factory=dict)
    notifications: Counter[str] = field(default_factory=Counter)  # "work" / "change"
    submit_seconds: float = 0.0
    run_seconds: float = 0.0  # workers launched -> last job finished
    claiming_seconds: float = 0.0  # first claim -> last job finished
    job_seconds: list[float] = field(default_factory=list)  # claimed -> finished, of each job's last attempt
    exit_codes: dict[str, int | None] = field(default_factory=dict)
    worker_cpu_seconds: float = 0.0
    warnings: Counter[str] = field(default_factory=Counter)
    load: tuple[float, float] = (0.0, 0.0)  # the machine's 1-minute load average at launch and at the end
    timed_out: bool = False
    left: list[tuple] = field(default_factory=list)  # (job id, status, attempts, worker) not completed

    @property
    def mean_provider_seconds(self) -> float:
        return statistics.fmean(self.provider_delays) if self.provider_delays else 0.0

    @property
    def ideal_seconds(self) -> float:
        return self.plan.jobs * self.mean_provider_seconds / self.plan.concurrency

    @property
    def pool_bound(self) -> int:
        """What the workers may hold at most: a pool per process and its LISTEN connection."""
        return ((self.plan.pool_size or 8) + 1) * self.plan.processes  # a killed one's sessions end with it


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def schema_url(server_url: str, schema: str, application_name: str) -> str:
    joiner = "&" if "?" in server_url else "?"
    return (f"{server_url}{joiner}options={quote(f'-csearch_path={schema}')}"
            f"&application_name={quote(application_name)}")


class ConnectionSampler(threading.Thread):
    """Counts the sessions whose application_name starts with `prefix`, every SAMPLE_SECONDS."""

    def __init__(self, server_url: str, prefix: str) -> None:
        super().__init__(name="scale-connections", daemon=True)
        self.server_url, self.prefix = server_url, prefix
        self.peak = self.peak_active = 0
        self.peak_by_name: dict[str, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            while not self.stopping.wait(SAMPLE_SECONDS):
                rows = conn.execute("SELECT application_name, state FROM pg_stat_activity "
                                    "WHERE starts_with(application_name, %s)", [self.prefix]).fetchall()
                by_name = Counter(name for name, _ in rows)
                self.peak = max(self.peak, len(rows))
                self.peak_active = max(self.peak_active, sum(1 for _, state in rows if state != "idle"))
                for name, count in by_name.items():
                    self.peak_by_name[name] = max(self.peak_by_name.get(name, 0), count)


class NotifyCounter(threading.Thread):
    """LISTENs on the store's two channels and counts what arrives."""

    def __init__(self, url: str, channels: dict[str, str]) -> None:
        super().__init__(name="scale-notify", daemon=True)
        self.url, self.channels = url, channels  # kind -> channel
        self.counts: Counter[str] = Counter()
        self.listening, self.stopping = threading.Event(), threading.Event()

    def run(self) -> None:
        kinds = {channel: kind for kind, channel in self.channels.items()}
        with psycopg.connect(self.url, autocommit=True) as conn:
            for channel in kinds:
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            self.listening.set()
            while not self.stopping.is_set():
                for note in conn.notifies(timeout=0.2):
                    self.counts[kinds[note.channel]] += 1


class Fleet:
    """The worker processes, each named by its application_name (which its sessions carry)."""

    def __init__(self, plan: Plan, schema: str, prefix: str, provider_url: str, workdir: Path) -> None:
        self.plan, self.schema, self.prefix = plan, schema, prefix
        self.provider_url, self.workdir = provider_url, workdir
        self.processes: dict[str, subprocess.Popen] = {}
        self.cpu: dict[str, float] = {}

    def start(self, name: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT),
               "JOBS_STORE_URL": schema_url(self.plan.server_url, self.schema, self.prefix + name),
               "JOBS_LEASE_SECONDS": str(self.plan.lease_seconds),
               "OPENAI_API_KEY": "sk-standin-scale-bench", "OPENAI_BASE_URL": self.provider_url,
               "SCALE_CLAIM_TIMES": str(self.workdir / f"claims-{name}.txt")}
        env.pop("JOBS_DIR", None)
        if self.plan.pool_size:
            env["JOBS_PG_POOL_SIZE"] = str(self.plan.pool_size)
        log = open(self.workdir / f"worker-{name}.log", "wb")  # noqa: SIM115 (the child keeps it)
        process = subprocess.Popen([sys.executable, "-m", "bench.scale_worker", "--concurrency",
                                    str(self.plan.threads)], env=env, cwd=ROOT, stdout=log, stderr=log)
        log.close()
        self.processes[name] = process
        return process

    def cpu_seconds(self, name: str) -> None:
        """Note the process's CPU time so far (user + system, from /proc, as bench/api_bench.py)."""
        try:
            fields = Path(f"/proc/{self.processes[name].pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.cpu[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass  # not Linux, or already gone: the figure is left out

    def warnings(self) -> Counter[str]:
        """WARNING and ERROR lines in the workers' logs, by logger."""
        seen: Counter[str] = Counter()
        for path in self.workdir.glob("worker-*.log"):
            for line in path.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) > 3 and parts[2] in ("WARNING", "ERROR"):
                    seen[f"{parts[2]} {parts[3].rstrip(':')}"] += 1
        return seen

    def kill(self, name: str) -> int:
        process = self.processes[name]
        self.cpu_seconds(name)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        return process.pid

    def stop(self) -> dict[str, int | None]:
        for name, process in self.processes.items():
            if process.poll() is None:
                self.cpu_seconds(name)
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = None
        return codes

    def claim_times(self) -> tuple[list[float], list[float], int]:
        """Claims that got a job (ms), the same without each process's first claim per thread (made
        while its pool was still opening connections), and how many claims found nothing."""
        got, steady, empty = [], [], 0
        for path in self.workdir.glob("claims-*.txt"):
            for index, line in enumerate(path.read_text().splitlines()):
                parts = line.split()
                if len(parts) != 2:
                    continue  # a line a SIGKILL cut short
                if parts[1] == "1":
                    got.append(float(parts[0]))
                    if index >= self.plan.threads:
                        steady.append(float(parts[0]))
                else:
                    empty += 1
        return got, steady, empty


class Database:
    """The bench's own session on the schema (to watch and to check the outcome)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def rows(self, query: str, params: tuple = ()) -> list[tuple]:
        return self.conn.execute(query, params).fetchall()

    def completed(self) -> int:
        return self.rows("SELECT count(*) FROM jobs WHERE status = 'completed'")[0][0]

    def held_by(self, pid: int) -> set[str]:
        return {row[0] for row in self.rows("SELECT job_id FROM jobs WHERE status = 'processing' "
                                            "AND worker_id LIKE %s", (f"%-{pid}-%",))}


def submit_jobs(service: JobService, count: int) -> list[str]:
    return [service.submit({"projectId": f"scale{index % 8}", "renderType": "axonometric",
                            "conceptInputs": {"title": TITLE.format(index), "floors": 2 + index % 5}},
                           renderer="openai").job_id
            for index in range(count)]


def wait_until(condition: Callable[[], bool], deadline: float) -> bool:
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.25)
    return True


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def run(plan: Plan, say: Callable[[str], None] = print) -> Outcome:
    tag = secrets.token_hex(4)
    schema, prefix = f"scale_{tag}", f"scale{tag}-w"
    with psycopg.connect(plan.server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    workdir = Path(tempfile.mkdtemp(prefix="scale-bench-"))
    provider = StandInProvider(*plan.provider_seconds)
    provider_url = provider.start()
    store = PostgresJobStore(schema_url(plan.server_url, schema, f"scale{tag}-bench"), pool_size=4)
    db = Database(schema_url(plan.server_url, schema, f"scale{tag}-bench"))
    try:
        return _run(plan, store, db, Fleet(plan, schema, prefix, provider_url, workdir), provider, say)
    finally:
        provider.stop()
        store.close()
        db.conn.close()
        with psycopg.connect(plan.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        shutil.rmtree(workdir, ignore_errors=True)


def _run(plan: Plan, store: PostgresJobStore, db: Database, fleet: Fleet, provider: StandInProvider,
         say: Callable[[str], None]) -> Outcome:
    service = JobService(store, replace(load_settings(), lease_seconds=plan.lease_seconds, store_url=None))
    started = time.monotonic()
    outcome = Outcome(plan, submit_jobs(service, plan.jobs))
    outcome.submit_seconds = time.monotonic() - started
    say(f"queued {plan.jobs} jobs in {outcome.submit_seconds:.1f} s; starting {plan.processes} x {plan.threads}")
    counter = NotifyCounter(plan.server_url, {"work": store.work_channel, "change": store.change_channel})
    sampler = ConnectionSampler(plan.server_url, fleet.prefix)
    counter.start()
    counter.listening.wait(10)
    sampler.start()
    deadline = time.monotonic() + plan.timeout_seconds
    launched = time.time()
    outcome.load = (os.getloadavg()[0], 0.0)
    names = [f"{index}" for index in range(plan.processes)]
    for name in names:
        fleet.start(name)
    try:
        if plan.kills and wait_until(lambda: db.completed() >= plan.jobs // 2, deadline):
            for name in names[:plan.kills]:
                pid = fleet.kill(name)
                outcome.held_at_kill |= db.held_by(pid)
                if plan.restart:
                    fleet.start(f"{name}-restarted")
            say(f"killed {plan.kills} processes (SIGKILL) holding {len(outcome.held_at_kill)} jobs"
                f"{', started new ones' if plan.restart else ''}")
        outcome.timed_out = not wait_until(lambda: db.completed() >= plan.jobs, deadline)
    finally:
        outcome.exit_codes = fleet.stop()
        counter.stopping.set()
        sampler.stopping.set()
        counter.join(5)
        sampler.join(5)
    _gather(outcome, db, fleet, provider, sampler, counter, launched)
    return outcome


def _gather(outcome: Outcome, db: Database, fleet: Fleet, provider: StandInProvider, sampler: ConnectionSampler,
            counter: NotifyCounter, launched: float) -> None:
    outcome.statuses = Counter(dict(db.rows("SELECT status, count(*) FROM jobs GROUP BY status")))
    for kind, store_field in (("completed", outcome.completions), ("claimed", outcome.claims)):
        store_field.update(dict(db.rows("SELECT job_id, count(*) FROM job_events WHERE doc->>'type' = %s "
                                        "GROUP BY job_id", (kind,))))
    outcome.images = db.rows("SELECT count(*) FROM job_images")[0][0]
    last, first = db.rows("SELECT extract(epoch FROM max((doc->>'finishedAt')::timestamptz)), "
                          "(SELECT extract(epoch FROM min((doc->>'at')::timestamptz)) FROM job_events "
                          " WHERE doc->>'type' = 'claimed') FROM jobs WHERE status = 'completed'")[0]
    outcome.run_seconds = float(last) - launched if last is not None else float("nan")
    outcome.claiming_seconds = float(last) - float(first) if last is not None else float("nan")
    outcome.job_seconds = [float(row[0]) for row in db.rows(
        "SELECT extract(epoch FROM (doc->>'finishedAt')::timestamptz - (doc->>'startedAt')::timestamptz) "
        "FROM jobs WHERE status = 'completed'")]
    outcome.left = db.rows("SELECT job_id, status, (doc->>'attempts')::int, worker_id FROM jobs "
                           "WHERE status <> 'completed' ORDER BY job_id LIMIT 20")
    by_title = {TITLE.format(index): job_id for index, job_id in enumerate(outcome.job_ids)}
    outcome.requests = Counter(by_title.get(r.title, f"unknown:{r.title}") for r in provider.requests)
    outcome.provider_delays = [r.delay for r in provider.requests]
    outcome.peak_provider_in_flight = peak_overlap([(r.at, r.at + r.delay) for r in provider.requests])
    outcome.claim_ms, outcome.steady_claim_ms, outcome.empty_claims = fleet.claim_times()
    outcome.peak_connections, outcome.peak_active = sampler.peak, sampler.peak_active
    outcome.peak_by_process = {name.removeprefix(fleet.prefix): peak
                               for name, peak in sorted(sampler.peak_by_name.items())}
    outcome.notifications = counter.counts
    outcome.worker_cpu_seconds = sum(fleet.cpu.values())
    outcome.warnings = fleet.warnings()
    outcome.load = (outcome.load[0], os.getloadavg()[0])


def report(outcome: Outcome) -> list[str]:
    plan, jobs = outcome.plan, outcome.plan.jobs
    once = sum(1 for job_id in outcome.job_ids if outcome.completions[job_id] == 1)
    twice = sum(1 for job_id in outcome.job_ids if outcome.completions[job_id] > 1)
    asked = Counter(outcome.requests[job_id] for job_id in outcome.job_ids)
    repeated = {job_id for job_id in outcome.job_ids if outcome.requests[job_id] > 1}
    reclaimed = sum(1 for job_id in outcome.job_ids if outcome.claims[job_id] > 1)
    low, high = plan.provider_seconds
    others = ", ".join(f"{count} {status}" for status, count in sorted(outcome.statuses.items())
                       if status != "completed")
    lines = [
        f"scale run: {jobs} jobs, {plan.processes} processes x {plan.threads} threads = {plan.concurrency} renders "
        f"at once, provider {low:g}-{high:g} s, lease {plan.lease_seconds:g} s, {plan.kills} killed (SIGKILL) "
        f"midway{', replaced' if plan.restart and plan.kills else ''}",
        f"  jobs               {outcome.statuses['completed']} completed{f' ({others})' if others else ''}; "
        f"`completed` events: {once} jobs once, {twice} more than once, {jobs - once - twice} never; "
        f"images {outcome.images}",
        f"  provider requests  {sum(outcome.requests.values())} for {jobs} jobs: "
        + ", ".join(f"{count} jobs asked {times}x" for times, count in sorted(asked.items()))
        + f"; {len(repeated - outcome.held_at_kill)} repeats outside the {len(outcome.held_at_kill)} jobs the "
          f"killed processes held; {reclaimed} jobs claimed twice; peak {outcome.peak_provider_in_flight} "
          "requests in flight",
        f"  claim latency      p50 {percentile(outcome.claim_ms, 0.5):.1f} ms, p99 "
        f"{percentile(outcome.claim_ms, 0.99):.1f} ms, max {max(outcome.claim_ms, default=float('nan')):.1f} ms "
        f"({len(outcome.claim_ms)} claims that got a job, {outcome.empty_claims} that found none); "
        f"without each process's first claim per thread (its pool still connecting): p50 "
        f"{percentile(outcome.steady_claim_ms, 0.5):.1f} ms, p99 {percentile(outcome.steady_claim_ms, 0.99):.1f} ms",
        f"  connections        peak {outcome.peak_connections} open by the workers ({outcome.peak_active} busy), "
        f"bound {outcome.pool_bound} (a pool of {plan.pool_size or 8} + 1 LISTEN per process); a connection per "
        f"thread would be {plan.concurrency + plan.processes}; per process: "
        + ", ".join(f"{name} {peak}" for name, peak in outcome.peak_by_process.items()),
        f"  NOTIFY             {outcome.notifications['work']} on the work channel, "
        f"{outcome.notifications['change']} on the change channel "
        f"({outcome.notifications['change'] / max(jobs, 1):.1f} per job) received by one listener",
        f"  throughput         {jobs} jobs in {outcome.run_seconds:.1f} s from launch = "
        f"{jobs / outcome.run_seconds:.1f} jobs/s; ideal {jobs} x {outcome.mean_provider_seconds:.2f} s / "
        f"{plan.concurrency} = {outcome.ideal_seconds:.1f} s = {jobs / outcome.ideal_seconds:.1f} jobs/s; "
        f"{outcome.ideal_seconds / outcome.run_seconds:.0%} of ideal ({outcome.claiming_seconds:.1f} s from the "
        f"first claim: {outcome.ideal_seconds / outcome.claiming_seconds:.0%}); a job ran p50 "
        f"{percentile(outcome.job_seconds, 0.5):.2f} s, p99 {percentile(outcome.job_seconds, 0.99):.2f} s "
        f"from claim to completion",
        f"  workers            {outcome.worker_cpu_seconds:.1f} s of CPU in all ("
        f"{outcome.worker_cpu_seconds * 1000 / max(jobs, 1):.0f} ms a job); log warnings: "
        f"{dict(outcome.warnings) or 'none'}; exit codes {outcome.exit_codes}",
        f"  machine            {os.cpu_count()} cores, load average {outcome.load[0]:.1f} at launch, "
        f"{outcome.load[1]:.1f} at the end (other processes share it); {jobs} jobs queued in "
        f"{outcome.submit_seconds:.1f} s before the launch",
    ]
    if outcome.timed_out:
        lines.append(f"  TIMED OUT after {plan.timeout_seconds:g} s; not completed (first 20): {outcome.left}")
    return [wrapped for line in lines for wrapped in textwrap.wrap(line, 100, subsequent_indent=" " * 21)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=25)
    parser.add_argument("--kill", type=int, default=2)
    parser.add_argument("--provider-seconds", type=float, nargs=2, default=(1.0, 3.0), metavar=("MIN", "MAX"))
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--pool-size", type=int, default=None, help="JOBS_PG_POOL_SIZE of the workers")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--no-restart", action="store_true", help="do not replace the killed processes")
    args = parser.parse_args()
    plan = Plan(jobs=args.jobs, processes=args.processes, threads=args.threads, kills=args.kill,
                provider_seconds=tuple(args.provider_seconds), lease_seconds=args.lease, pool_size=args.pool_size,
                timeout_seconds=args.timeout, restart=not args.no_restart)
    for line in report(run(plan)):
        print(line)


if __name__ == "__main__":
    main()
