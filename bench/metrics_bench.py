"""What metrics cost: create/poll latency with and without them, and a scrape at 10,000 jobs.

    python3 -m bench.metrics_bench [--duration 2] [--rounds 3] [--connections 1 16] [--jobs 10000]
                                   [--postgres postgresql://postgres@127.0.0.1:5432/postgres]

Part 1, over HTTP with wrk (as bench/api_bench.py drives the API), three `serve --workers 0`
servers on fresh file stores, taking turns so all see the same background load (medians kept):
  off:          the same server with the metric event functions replaced by no-ops (the floor)
  on:           as shipped (each process counts in its own memory)
  on, multiproc: as shipped with PROMETHEUS_MULTIPROC_DIR set (counts in memory-mapped files,
                what `serve --processes N` uses)
Every server is scraped once a second while it is measured (Prometheus' usual interval is 15 s).

Part 2, a scrape at 10,000 jobs in the store (bench/generate_store.py's jobs: every state, and a
backlog where a third are pending and a fifth running), in this process and over HTTP: the whole
scrape (the store's gauges read afresh, every counter written out) beside the store read the
gauges make (`active_counts()`, which counts the index), the listings it replaces (`pending()`, all
GET /api/health does, and `processing()`, which reads every running job) and a scrape whose gauges
come from the cache (a scrape within 2 s of another).

Part 3, in process: what recording one event costs, in memory and in multiprocess files.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.api_bench import CREATE_BODY, ROOT, WRK, Figures, _row, _start, alternating
from bench.generate_store import Plan, generate

EVENT_FUNCTIONS = ("job_created", "job_claimed", "attempt_ended", "job_changed", "webhook_attempt",
                   "webhook_dropped", "store_error")


def serve_without_metrics(argv: list[str]) -> int:
    """`python -m jobs_core serve ...` with every metric event a no-op: the floor of part 1."""
    from jobs_core import cli, metrics

    for name in EVENT_FUNCTIONS:
        setattr(metrics, name, lambda *args, **kwargs: None)
    return cli.main(argv)


class Scraper:
    """Scrapes each URL once a second in a thread, as Prometheus would; keeps the latencies."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as http:
            while not self._stop.wait(1.0):
                for url in self.urls:
                    started = time.perf_counter()
                    ok = http.get(url).status_code == 200
                    self.latencies_ms.append((time.perf_counter() - started) * 1000)
                    self.failures += not ok


def _ratio(on: Figures, off: Figures) -> str:
    return f"p50 {on.p50_ms / off.p50_ms:5.2f}x   p99 {on.p99_ms / off.p99_ms:5.2f}x"


def latency_with_and_without(work: Path, args: argparse.Namespace) -> None:
    ours = ["-m", "jobs_core", "serve", "--workers", "0"]
    multiproc = work / "multiproc"
    multiproc.mkdir()
    servers = {
        "off": _start([sys.executable, "-m", "bench.metrics_bench", "--serve-without-metrics", *ours[2:]],
                      {"JOBS_DIR": str(work / "store-off")}),
        "on": _start([sys.executable, *ours], {"JOBS_DIR": str(work / "store-on")}),
        "on, multiproc": _start([sys.executable, *ours], {"JOBS_DIR": str(work / "store-mp"),
                                                          "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}),
    }
    try:
        done = {}
        for name, (_, base) in servers.items():  # a completed job each, to poll
            job_id = httpx.post(f"{base}/api/jobs/render", content=CREATE_BODY,
                                headers={"content-type": "application/json"}).json()["jobId"]
            httpx.post(f"{base}/api/jobs/{job_id}/process", headers={"Prefer": "wait=30"}, timeout=60)
            done[name] = job_id
        print(f"part 1: wrk, {args.rounds} alternating rounds of {args.duration:g} s per case (medians), "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; each server scraped "
              "every second")
        with Scraper([f"{base}/metrics" for _, base in servers.values()]) as scraper:
            for connections in args.connections:
                print(f"\n{connections} concurrent client(s)")
                for what, path, body in (("create", "/api/jobs/render", CREATE_BODY),
                                         ("poll", "/api/jobs/{job}?projectId=bench", None)):
                    cases = [(f"{base}{path.format(job=done[name])}", process.pid)
                             for name, (process, base) in servers.items()]
                    figures = dict(zip(servers, alternating(cases, connections, args, body, work), strict=True))
                    for name, found in figures.items():
                        print(_row(f"{what}, metrics {name}", found))
                    for name in ("on", "on, multiproc"):
                        print(f"  {'ratio ' + name + '/off':<36} {_ratio(figures[name], figures['off'])}")
        scraped = sorted(scraper.latencies_ms)
        print(f"\n  scrapes meanwhile: {len(scraped)}, p50 {scraped[len(scraped) // 2]:.1f} ms, "
              f"max {scraped[-1]:.1f} ms, failures {scraper.failures}")
        created = httpx.get(f"{servers['on'][1]}/metrics").text
        line = next(line for line in created.splitlines() if line.startswith("jobs_created_total"))
        print(f"  the 'on' server counted: {line}")
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(20)


# -- part 2 -------------------------------------------------------------------------------------------
def _timed(call, repeat: int) -> tuple[float, float]:
    """(p50, max) in ms of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return times[len(times) // 2], times[-1]


def scrape_at(root: Path, label: str, repeat: int) -> None:
    from jobs_core.store import FileJobStore

    store = FileJobStore(root)
    scrape_in_process(store, label, repeat)
    over_http({"JOBS_DIR": str(root)}, repeat)
    store.close()


def scrape_in_process(store, label: str, repeat: int) -> None:
    from jobs_core.metrics import exposition, scrape_registry

    pending, running = len(store.pending()), len(store.processing())
    fresh, cached = scrape_registry(store, cache_seconds=0), scrape_registry(store)
    body = exposition(fresh, None)[0]
    print(f"\n{label}: {pending} pending, {running} running; a scrape is {len(body)} bytes")
    rows = (("the gauges' store read: active_counts()", store.active_counts),
            ("listing them: pending(), processing()", lambda: (len(store.pending()), store.processing())),
            ("GET /api/health's read: pending()", lambda: len(store.pending())),
            ("whole scrape, gauges read afresh", lambda: exposition(fresh, None)),
            ("whole scrape, gauges from the cache", lambda: exposition(cached, None)))
    for name, call in rows:
        p50, worst = _timed(call, repeat)
        print(f"  in process   {name:<38} p50 {p50:7.2f} ms   max {worst:7.2f} ms")


def over_http(env: dict[str, str], repeat: int) -> None:
    process, base = _start([sys.executable, "-m", "jobs_core", "serve", "--workers", "0"], env)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            for name, path, pause in (("GET /api/health", "/api/health", 0.0),
                                      ("GET /metrics, gauges from the cache", "/metrics", 0.0),
                                      ("GET /metrics, gauges read afresh", "/metrics", 2.1)):
                http.get(path)
                times = []
                for _ in range(5 if pause else repeat):
                    time.sleep(pause)  # past the gauges' 2 s cache: this scrape reads the store
                    started = time.perf_counter()
                    assert http.get(path).status_code == 200
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                print(f"  over HTTP    {name:<38} p50 {times[len(times) // 2]:7.2f} ms   max {times[-1]:7.2f} ms")
    finally:
        process.terminate()
        process.wait(20)


def scrape_on_postgres(server_url: str, files_root: Path, label: str, repeat: int) -> None:
    """The same jobs copied into a fresh schema of `server_url` (dropped after)."""
    import secrets
    from urllib.parse import quote

    import psycopg

    from jobs_core.migrate import migrate
    from jobs_core.store import FileJobStore
    from jobs_core.store.postgres import PostgresJobStore

    schema = f"metrics_bench_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = f"{server_url}{'&' if '?' in server_url else '?'}options={quote(f'-csearch_path={schema}')}"
    try:
        store, source = PostgresJobStore(url), FileJobStore(files_root)
        migrate(source, store)
        scrape_in_process(store, label, repeat)
        over_http({"JOBS_STORE_URL": url}, repeat)
        store.close()
        source.close()
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


# -- part 3 -------------------------------------------------------------------------------------------
EVENT_COST = """
import time
from datetime import timedelta
from jobs_core import metrics
from jobs_core.models import Job, JobStatus, utcnow
now = utcnow()
job = Job(job_id="job_1", concept_id="cpt_1", project_id="p", render_type="plan", status=JobStatus.COMPLETED,
          started_at=now - timedelta(seconds=30), updated_at=now)
for name, call in (("job_created (a counter)", lambda: metrics.job_created(job)),
                   ("attempt_ended (a histogram and a counter)", lambda: metrics.attempt_ended(job))):
    call()
    started = time.perf_counter()
    for _ in range(20000):
        call()
    print(f"  {MODE:<24} {name:<44} {(time.perf_counter() - started) / 20000 * 1e6:6.2f} us a call")
"""


def event_costs(work: Path) -> None:
    """What recording one event costs, in a fresh process per mode (the mode is chosen at import)."""
    print("\npart 3: one event recorded, in process (beside a create's server CPU time in part 1)")
    folder = work / "event-multiproc"
    folder.mkdir()
    for mode, env in (("in memory", {}), ("multiprocess files", {"PROMETHEUS_MULTIPROC_DIR": str(folder)})):
        code = f"MODE = {mode!r}\n{EVENT_COST}"
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, check=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-without-metrics"]:
        return serve_without_metrics(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per case (median kept)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the store of part 2")
    parser.add_argument("--repeat", type=int, default=20, help="scrapes per row of part 2")
    parser.add_argument("--postgres", metavar="URL", help="also part 2's backlog on this PostgreSQL server "
                                                          "(in a schema of its own, dropped after)")
    args = parser.parse_args(argv)
    if not os.access(WRK, os.X_OK):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="metrics-bench-", dir=ROOT))  # same disk as a real ./.jobs
    try:
        latency_with_and_without(work, args)
        now = datetime.now(UTC)
        generate(work / "store-10k", Plan(jobs=args.jobs, projects=200, weeks=12, now=now))
        scrape_at(work / "store-10k", f"part 2: {args.jobs} jobs over 12 weeks (mostly finished)", args.repeat)
        # all created within the last 2 hours: the generator leaves 2 in 5 pending and 1 in 5 running
        generate(work / "store-backlog", Plan(jobs=args.jobs, projects=200, weeks=1 / 84, now=now, stuck=0))
        if args.postgres:  # copied first: a server's reclaim pass requeues the backlog's stale running jobs
            scrape_on_postgres(args.postgres, work / "store-backlog", f"part 2: {args.jobs} jobs, a backlog, "
                               "on PostgreSQL", args.repeat)
        scrape_at(work / "store-backlog", f"part 2: {args.jobs} jobs, a backlog", args.repeat)
        event_costs(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
