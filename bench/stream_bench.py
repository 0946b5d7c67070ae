"""GET /api/jobs/{jobId}/stream: what open streams cost the API, and how fast a change reaches them.

    python3 -m bench.stream_bench [--streams 1000] [--requests 300] [--rounds 3] [--changes 50]
                                  [--postgres URL | --no-postgres]

For each store (files; PostgreSQL on a scratch schema when a server answers) a real API server,
`python -m jobs_core serve --workers 0`, on 127.0.0.1:
  1. load: creates and polls (GET /api/jobs/{jobId}), one at a time from this process, with no
     stream open and then with `--streams` open streams (held by a separate process, on as many
     pending jobs that exist in both cases, so only the streams differ), taking turns for a few
     rounds (the machine is shared); p50/p99 side by side, the server's CPU time per request, and
     its CPU use while idle with the streams open, over one safety re-read interval (keep-alive
     comments, safety re-reads, disconnect checks);
  2. latency: a separate process claims a job and reports `--changes` progress steps 0.1 s apart;
     for each step, the time from the store write's return in that process to the event's arrival
     here through the open stream (file watcher / PostgreSQL notifications); p50, p99.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory
from urllib.parse import quote

import httpx

from jobs_core.api.stream import SAFETY_SECONDS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = os.environ.get("JOBS_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
HELD = "held"  # the project of the jobs whose streams are held open


# -- servers ---------------------------------------------------------------------------------------
def _env(store: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    key = "JOBS_STORE_URL" if store.startswith("postgresql") else "JOBS_DIR"
    return {**env, key: store, "PYTHONPATH": str(ROOT)}


@contextmanager
def api_server(store: str) -> Iterator[tuple[str, int]]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "jobs_core", "serve", "--workers", "0", "--port", str(port)],
                              cwd=ROOT, env=_env(store), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                httpx.get(f"{base}/api/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)  # bounded: 20 s for the server to open its port
        else:
            raise SystemExit("the API server did not start")
        yield base, server.pid
    finally:
        server.terminate()
        server.wait(30)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- 1. load with and without open streams -----------------------------------------------------------
def create_held_jobs(base: str, count: int) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        for _ in range(count):
            http.post("/api/jobs/render", json={"projectId": HELD}).raise_for_status()


def hold_streams(base: str, count: int) -> None:
    """(A separate process.) Open a stream on each of `count` pending jobs of HELD, say "ready" once
    every one showed its first event, and keep them open until stdin closes."""
    async def main() -> None:
        limits = httpx.Limits(max_connections=count + 16, max_keepalive_connections=count + 16)
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(60, read=None), limits=limits) as http:
            urls, cursor = [], None
            while len(urls) < count:
                params = {"projectId": HELD, "limit": 500, **({"cursor": cursor} if cursor else {})}
                page = (await http.get("/api/jobs", params=params)).json()
                urls += [job["urls"]["stream"] for job in page["jobs"]]
                cursor = page.get("nextCursor")
                if cursor is None:
                    break
            started = 0
            everyone = asyncio.Event()

            async def follow(url: str) -> None:
                nonlocal started
                async with http.stream("GET", url) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data:") and not everyone.is_set():
                            started += 1
                            if started == len(urls):
                                everyone.set()

            tasks = [asyncio.create_task(follow(url)) for url in urls[:count]]
            await everyone.wait()
            print("ready", len(tasks), flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


@contextmanager
def open_streams(base: str, count: int) -> Iterator[None]:
    if count == 0:
        yield
        return
    holder = subprocess.Popen([sys.executable, "-m", "bench.stream_bench", "--hold", base, "--streams", str(count)],
                              cwd=ROOT, env=_env("unused"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"the stream holder did not get ready: {line!r}")
        yield
    finally:
        holder.stdin.close()
        holder.wait(60)


def timed_requests(base: str, pid: int, requests: int) -> dict[str, list[float]]:
    """Creates, then polls of the jobs just created, one at a time: milliseconds each, and the
    server's CPU milliseconds per request."""
    figures: dict[str, list[float]] = {"create": [], "poll": []}
    with httpx.Client(base_url=base, timeout=30) as http:
        cpu = cpu_seconds(pid)
        ids = []
        for _ in range(requests):
            started = time.perf_counter()
            response = http.post("/api/jobs/render", json={"projectId": "bench", "conceptInputs": {"floors": 3}})
            figures["create"].append((time.perf_counter() - started) * 1000)
            ids.append(response.json()["jobId"])
        for job_id in ids:
            started = time.perf_counter()
            http.get(f"/api/jobs/{job_id}", params={"projectId": "bench"}).raise_for_status()
            figures["poll"].append((time.perf_counter() - started) * 1000)
        figures["cpu"] = [(cpu_seconds(pid) - cpu) * 1000 / (2 * requests)]
    return figures


def idle_cpu_percent(pid: int, seconds: float = 5.0) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)  # measuring what the server does meanwhile, unasked
    return (cpu_seconds(pid) - before) * 100 / seconds


def load_figures(store: str, args: argparse.Namespace) -> None:
    with api_server(store) as (base, pid):
        create_held_jobs(base, args.streams)
        kept: dict[int, dict[str, list[float]]] = {0: {}, args.streams: {}}
        for round_number in range(args.rounds):
            order = [0, args.streams] if round_number % 2 == 0 else [args.streams, 0]  # against drift
            for count in order:
                with open_streams(base, count):
                    figures = timed_requests(base, pid, args.requests)
                    if round_number == 0:  # long enough for every stream's safety re-read
                        figures["idle"] = [idle_cpu_percent(pid, SAFETY_SECONDS * 1.15)]
                for name, values in figures.items():
                    kept[count].setdefault(name, []).extend(values)
        print(f"  creates and polls, {args.requests} each per round, {args.rounds} rounds, one at a time:")
        for name in ("create", "poll"):
            cells = [f"{count:>5} streams: p50 {_p(kept[count][name], 50):6.2f} ms  p99 "
                     f"{_p(kept[count][name], 99):6.2f} ms" for count in kept]
            print(f"    {name:<7} " + "   |   ".join(cells))
        print("    server  " + "   |   ".join(
            f"{count:>5} streams: {statistics.median(kept[count]['cpu']):5.2f} ms CPU/request, idle "
            f"{statistics.median(kept[count]['idle']):4.1f} % CPU" for count in kept))


def _p(values: list[float], percent: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * percent / 100))]


# -- 2. latency from a change in another process to the event ---------------------------------------
def make_changes(job_id: str, count: int, interval: float) -> None:
    """(A separate process.) Claim the job, report `count` progress steps; print when each was written."""
    from jobs_core.lifecycle import Lease
    from jobs_core.service import JobService

    service = JobService.from_env()
    lease = Lease.of(service.claim(job_id, f"bench-{os.getpid()}"))
    print("claimed", time.time(), flush=True)
    for step in range(1, count + 1):
        time.sleep(interval)  # the pace of a renderer's progress reports
        service.report_progress(lease, step, "bench")
        print(step, time.time(), flush=True)
    service.store.close()


def latency_figures(store: str, args: argparse.Namespace) -> None:
    with api_server(store) as (base, _), httpx.Client(base_url=base, timeout=60) as http:
        created = http.post("/api/jobs/render", json={"projectId": "latency"}).json()
        arrived: dict[int, float] = {}
        first = threading.Event()

        def read() -> None:
            with httpx.Client(base_url=base, timeout=60) as own, \
                    own.stream("GET", created["urls"]["stream"]) as response:
                for line in response.iter_lines():
                    if line.startswith("data:"):
                        job = json.loads(line[5:])
                        if job["status"] == "processing":
                            arrived.setdefault(job["progress"], time.time())
                        first.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        first.wait(30)
        changer = subprocess.run([sys.executable, "-m", "bench.stream_bench", "--change", created["jobId"],
                                  "--changes", str(args.changes)], cwd=ROOT, env=_env(store),
                                 capture_output=True, text=True, timeout=120, check=True)
        written = {int(step): float(at) for step, at in
                   (line.split() for line in changer.stdout.splitlines() if not line.startswith("claimed"))}
        time.sleep(1.0)  # the last events' way here; a missing one counts as lost below
        http.post(created["urls"]["cancel"])
        reader.join(10)
    latencies = [(arrived[step] - at) * 1000 for step, at in written.items() if step in arrived]
    # A stream sends the job as it is when it reads it: a write overtaken by the next before the
    # read is not an event of its own (the client sees the later state), counted as "coalesced".
    coalesced = len(written) - len(latencies)
    print(f"  latency, {len(written)} progress writes in another process -> event here: p50 "
          f"{_p(latencies, 50):6.1f} ms   p99 {_p(latencies, 99):6.1f} ms   max {max(latencies):6.1f} ms"
          f"   coalesced: {coalesced}")


# -- stores ----------------------------------------------------------------------------------------
@contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    import psycopg

    schema = f"bench_stream_{secrets.token_hex(4)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{url}{'&' if '?' in url else '?'}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def postgres_answers(url: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3):
            return True
    except Exception:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--postgres", default=DEFAULT_PG)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--hold", help=argparse.SUPPRESS)  # internal: the stream-holding process
    parser.add_argument("--change", help=argparse.SUPPRESS)  # internal: the changing process
    args = parser.parse_args()
    if args.hold:
        return hold_streams(args.hold, args.streams)
    if args.change:
        return make_changes(args.change, args.changes, 0.1)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} cores")
    with TemporaryDirectory(prefix="stream-bench-") as folder:
        print(f"files ({folder})")
        load_figures(f"{folder}/load", args)
        latency_figures(f"{folder}/latency", args)
    if args.no_postgres:
        return
    if not postgres_answers(args.postgres):
        print(f"PostgreSQL: skipped (none answers at {args.postgres}; --postgres URL)")
        return
    print("PostgreSQL")
    with scratch_schema(args.postgres) as url:
        load_figures(url, args)
    with scratch_schema(args.postgres) as url:
        latency_figures(url, args)
    print(f"load average afterwards {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
