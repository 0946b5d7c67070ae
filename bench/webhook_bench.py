"""Webhook delivery latency: from a job's completion (its finishedAt) to the receipt of its signed
`completed` delivery by a receiver on 127.0.0.1, on each backend.

    .venv/bin/python bench/webhook_bench.py [--jobs 300] [--postgres postgresql://...]

Workers run in this process (3 pools of 2 threads, each with its own store instance where the
backend allows, as separate processes would have), so a delivery is sent either by the pool whose
worker completed the job (woken at once) or by another pool at its next look (JOBS_WEBHOOK_POLL_SECONDS,
0.2 s by default). Prints p50 / p99 / max in milliseconds.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from jobs_core.service import JobService  # noqa: E402
from jobs_core.store import FileJobStore, memory_store  # noqa: E402
from jobs_core.worker import Worker  # noqa: E402


class Receipts:
    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()
        receipts = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                now = time.time()
                with receipts.lock:
                    receipts.at.setdefault(body["jobId"], now)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def run(name: str, open_store, jobs: int, rate: float) -> None:
    receipts = Receipts()
    stores = [open_store() for _ in range(4)]
    client = JobService(stores[0])
    pools = [Worker(JobService(store), concurrency=2, poll_seconds=0.05).start() for store in stores[1:]]
    ids = []
    started = time.monotonic()
    for index in range(jobs):
        if rate:  # a steady stream of jobs: the figure is a delivery's latency, not a backlog's
            time.sleep(max(0.0, started + index / rate - time.monotonic()))
        ids.append(client.submit({"projectId": "bench", "webhook": receipts.url, "webhookEventsFilter": ["completed"]},
                                 renderer="noop").job_id)
    deadline = time.monotonic() + 300
    while len(receipts.at) < jobs and time.monotonic() < deadline:
        time.sleep(0.1)  # a bench waits for the work it measures
    for pool in pools:
        pool.stop()
    latencies = []
    for job_id in ids:
        finished: datetime | None = client.get(job_id).finished_at
        if job_id in receipts.at and finished is not None:
            latencies.append((receipts.at[job_id] - finished.timestamp()) * 1000)
    receipts.server.shutdown()
    for store in stores:
        store.close()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{name:10s} {len(latencies):4d}/{jobs} delivered   p50 {statistics.median(latencies):7.1f} ms   "
          f"p99 {p99:7.1f} ms   max {latencies[-1]:7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="jobs created per second (0: all at once)")
    parser.add_argument("--postgres", default=os.environ.get("JOBS_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    pace = f"{args.rate:g} jobs/s" if args.rate else "all at once"
    print(f"completion -> receipt of the signed `completed` webhook, {args.jobs} jobs ({pace}), 3 pools x 2 threads")
    run("memory", lambda: memory_store(f"webhook-bench-{args.rate}"), args.jobs, args.rate)
    with tempfile.TemporaryDirectory() as root:
        run("files", lambda: FileJobStore(root), args.jobs, args.rate)
    if args.postgres:
        from jobs_core.store.postgres import PostgresJobStore

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from postgres_scratch import create_schema, drop_schema, schema_url

        schema = create_schema()
        try:
            run("postgres", lambda: PostgresJobStore(schema_url(schema)), args.jobs, args.rate)
        finally:
            drop_schema(schema)


if __name__ == "__main__":
    main()
