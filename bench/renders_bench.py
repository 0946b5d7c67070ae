"""Renders kept in the store vs in an S3 bucket: time to save and to load one render.

    python -m bench.renders_bench [--runs 40] [--size 1024] [--postgres URL]

A real 1024 px drawing (its PNG as a worker makes it) is saved and loaded again `--runs` times:
in the file store (a durable file write: the floor), in PostgreSQL when --postgres (or
JOBS_TEST_POSTGRES_URL) names a server, and in a bucket of moto's S3 server started on 127.0.0.1
in a process of its own (a real HTTP server, SigV4-signed calls through boto3, as to MinIO or AWS).
It also times a whole completion (render kept, then the job recorded as completed) and the
presigned URL the API answers imageUrl with. No target: the figures say what a bucket costs per
render next to the render itself (~100-250 ms at 1024 px, bench/render_bench.py).
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import boto3  # noqa: E402

from jobs_core.artifacts import Renders, StoreRenders, open_renders  # noqa: E402
from jobs_core.config import ArtifactSettings  # noqa: E402
from jobs_core.lifecycle import Lease  # noqa: E402
from jobs_core.models import Job  # noqa: E402
from jobs_core.renderers import RenderTask, get_renderer  # noqa: E402
from jobs_core.service import JobService  # noqa: E402
from jobs_core.store import FileJobStore, JobStore, open_store  # noqa: E402

BUCKET = "bench-renders"


def drawing(size: int) -> bytes:
    task = RenderTask("bench", "bench", "axonometric", {"title": "Harbour Library", "floors": 4}, size)
    return get_renderer("axonometric").render(task, lambda *_: None).png


def start_moto() -> tuple[subprocess.Popen, str]:
    """moto's S3 server in its own process (not a thread: it would share this one's GIL)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto's server did not start within 30 s")


def completed_jobs(service: JobService, count: int, png: bytes) -> list[Job]:
    """`count` jobs completed through the service, to save and load renders of."""
    jobs = []
    for _ in range(count):
        service.submit({"projectId": "bench", "conceptInputs": {"title": "Harbour Library"}})
        jobs.append(service.complete(Lease.of(service.claim_next("bench-worker")), png))
    return jobs


def timed(action: Callable[[], object], runs: int) -> list[float]:
    action()  # warm: connections, imports
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(label: str, store: JobStore, renders: Renders, png: bytes, runs: int) -> dict[str, list[float]]:
    service = JobService(store, renders=renders)
    jobs = iter(completed_jobs(service, runs + 1, png))
    job = next(jobs)
    figures = {
        "save": timed(lambda: renders.put(job, png), runs),
        "load": timed(lambda: renders.load(job), runs),
        "save+load": timed(lambda: (renders.put(job, png), renders.load(job)), runs),
    }
    figures["complete"] = []
    for _ in range(runs):  # a worker's whole completion: render kept, then the job completed
        service.submit({"projectId": "bench", "conceptInputs": {}})
        lease = Lease.of(service.claim_next("bench-worker"))
        started = time.perf_counter()
        service.complete(lease, png)
        figures["complete"].append((time.perf_counter() - started) * 1000)
    figures["link"] = timed(lambda: service.image_link(job), runs)
    print(f"  measured {label}", file=sys.stderr)
    return figures


def p(samples: list[float], q: float) -> float:
    return statistics.quantiles(samples, n=100)[int(q) - 1] if len(samples) > 1 else samples[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--postgres", default=os.environ.get("JOBS_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    for name, value in (("AWS_ACCESS_KEY_ID", "bench"), ("AWS_SECRET_ACCESS_KEY", "bench"),
                        ("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_EC2_METADATA_DISABLED", "true")):
        os.environ.setdefault(name, value)
    png = drawing(args.size)
    moto, endpoint = start_moto()
    work = Path(tempfile.mkdtemp(prefix="renders-bench-"))
    results: dict[str, dict[str, list[float]]] = {}
    try:
        files = FileJobStore(work / "files")
        results["files store"] = measure("files store", files, StoreRenders(files), png, args.runs)
        if args.postgres:
            from tests.postgres_scratch import create_schema, drop_schema, schema_url

            schema = create_schema()
            try:
                pg = open_store(schema_url(schema))
                results["PostgreSQL store"] = measure("PostgreSQL", pg, StoreRenders(pg), png, args.runs)
                pg.close()
            finally:
                drop_schema(schema)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        settings = ArtifactSettings(url=f"s3://{BUCKET}/bench", endpoint_url=endpoint, proxy=False, link_seconds=300)
        in_bucket = FileJobStore(work / "with-bucket")
        results["bucket (moto, 127.0.0.1)"] = measure("bucket", in_bucket, open_renders(in_bucket, settings), png,
                                                      args.runs)
    finally:
        moto.kill()
        moto.wait()
    print(f"one {args.size} px render, {len(png) // 1024} KB; {args.runs} runs each; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; ms (median / p95)")
    floor = results["files store"]
    print(f"{'where':<26} {'save':>13} {'load':>13} {'save+load':>13} {'x files':>8} {'completion':>13} "
          f"{'imageUrl link':>14}")
    for label, figures in results.items():
        cells = [f"{statistics.median(figures[k]):6.2f} / {p(figures[k], 95):5.1f}" for k in
                 ("save", "load", "save+load")]
        ratio = statistics.median(figures["save+load"]) / statistics.median(floor["save+load"])
        link = "307 presigned" if label.startswith("bucket") else "bytes"
        print(f"{label:<26} {cells[0]:>13} {cells[1]:>13} {cells[2]:>13} {ratio:7.1f}x "
              f"{statistics.median(figures['complete']):6.2f} / {p(figures['complete'], 95):5.1f} "
              f"{statistics.median(figures['link']):6.3f} {link}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
