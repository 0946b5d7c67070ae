"""Renders kept in the store vs in an S3 bucket: time to save and to load one render.

    python -m bench.renders_bench [--runs 40] [--size 1024] [--postgres URL]

A real 1024 px drawing (its PNG as a worker makes it) is saved and loaded `--runs` times, each
time as the render of a new job: in the file store (a durable file write: the floor), in
PostgreSQL when --postgres (or JOBS_TEST_POSTGRES_URL) names a server, and in a bucket of moto's
S3 server started on 127.0.0.1 in a process of its own (a real HTTP server, SigV4-signed calls
through boto3, as to MinIO or AWS). The places alternate round by round, so all see the same
background load. It also times a whole completion (render kept, then the job recorded as
completed) and the presigned URL the API answers imageUrl with. No target: the figures say what a
bucket costs per render next to the render itself (~100-250 ms at 1024 px, bench/render_bench.py).
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
from dataclasses import dataclass, field
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


KINDS = ("save", "load", "save+load", "complete", "link")


@dataclass
class Place:
    """One place renders are kept, with completed jobs to save renders of and what was measured."""

    label: str
    service: JobService
    jobs: list[Job]
    figures: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})


def place(label: str, store: JobStore, renders: Renders, png: bytes, runs: int) -> Place:
    service = JobService(store, renders=renders)
    return Place(label, service, completed_jobs(service, runs + 1, png))


def ms(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1000


def measure_round(where: Place, index: int, png: bytes) -> None:
    """One of each measurement on a job of its own (each render is a new file or object)."""
    renders, job, figures = where.service.renders, where.jobs[index], where.figures
    figures["save"].append(ms(lambda: renders.put(job, png)))
    figures["load"].append(ms(lambda: renders.load(job)))
    figures["save+load"].append(figures["save"][-1] + figures["load"][-1])
    figures["link"].append(ms(lambda: where.service.image_link(job)))
    where.service.submit({"projectId": "bench", "conceptInputs": {}})
    lease = Lease.of(where.service.claim_next("bench-worker"))
    figures["complete"].append(ms(lambda: where.service.complete(lease, png)))  # kept, then completed


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
    places: list[Place] = []
    schema, pg = None, None
    try:
        files = FileJobStore(work / "files")
        places.append(place("files store", files, StoreRenders(files), png, args.runs))
        if args.postgres:
            from tests.postgres_scratch import create_schema, schema_url

            schema = create_schema()
            pg = open_store(schema_url(schema))
            places.append(place("PostgreSQL store", pg, StoreRenders(pg), png, args.runs))
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        settings = ArtifactSettings(url=f"s3://{BUCKET}/bench", endpoint_url=endpoint, proxy=False, link_seconds=300)
        in_bucket = FileJobStore(work / "with-bucket")
        places.append(place("bucket (moto, 127.0.0.1)", in_bucket, open_renders(in_bucket, settings), png, args.runs))
        for where in places:
            measure_round(where, args.runs, png)  # warm: connections, caches
            where.figures = {k: [] for k in KINDS}
        for index in range(args.runs):  # alternate: every place sees the same background load
            for where in places:
                measure_round(where, index, png)
    finally:
        moto.kill()
        moto.wait()
        if pg is not None:
            pg.close()
        if schema is not None:
            from tests.postgres_scratch import drop_schema

            drop_schema(schema)
    print(f"one {args.size} px render, {len(png) // 1024} KB; {args.runs} runs each; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; ms (median / p95)")
    floor = places[0].figures
    print(f"{'where':<26} {'save':>13} {'load':>13} {'save+load':>13} {'x files':>8} {'completion':>13} "
          f"{'imageUrl link':>14}")
    for label, figures in ((where.label, where.figures) for where in places):
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
