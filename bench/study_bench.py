"""A design study against single renders: the time from Render to a full 3 x 2 grid with two
workers, beside the same six briefs rendered as six single renders submitted one after another
(each after the previous one finished: a person trying variations one by one), in one run.

    python -m bench.study_bench [--rounds 5] [--workers 2] [--size 1024] [--stores files postgres]
                                [--postgres URL] [--dir DIR]

Prints figures, asserts nothing.
  * study: `create_study` (one create of six jobs, validated first, as POST /api/studies and the
    Render page do), then the study read by id until every job is final (what the page's grid does);
  * one after another: the same six briefs, each `submit`ted once the previous one is final;
  * peer, for information: the six submitted at once as plain jobs, then waited for: the floor a
    study can reach with these workers (a study is those six jobs plus a record in each).
The workers are `--workers` real worker processes (`python -m jobs_core worker --poll 0.05`, so
one process per CPU-bound render: threads of one process would share one interpreter lock),
started before the clock and warmed up on a few renders. Rounds alternate the three, so each sees the
same machine load; medians per store. Each figure ends at the last job's `finishedAt` in the
store (so the bench's own reads cost it nothing); "one after another" sees each render done
within 20 ms and asks for the next, as a person at the page would, only faster.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from jobs_core.config import load_settings
from jobs_core.models import Job, JobStatus, utcnow
from jobs_core.service import JobService
from jobs_core.store import open_store
from jobs_core.studies import create_study, plan_study, read_study

BRIEF = {"title": "Harbour Library", "buildingType": "cultural", "footprint": "U", "width": 48, "depth": 34,
         "floorHeight": 4, "material": "brick", "palette": "warm", "windowRatio": 0.45}
VARY = {"floors": [4, 8, 12], "roof": ["flat", "gable"]}
POLL = 0.02  # how soon "one after another" sees a render done and asks for the next
SLOW_POLL = 0.1  # the others are timed by the store's finishedAt: their reads need not be quick
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _wait(done: Callable[[], bool], poll: float = POLL) -> None:
    while not done():
        time.sleep(poll)


def _done_after(started: datetime, jobs: list[Job]) -> float:
    """Seconds from `started` to the last of `jobs` finishing, by the store's own finishedAt."""
    assert all(job.status == JobStatus.COMPLETED and job.finished_at is not None for job in jobs)
    return (max(job.finished_at for job in jobs) - started).total_seconds()


def run_study(service: JobService, project: str) -> float:
    started = utcnow()
    study, _ = create_study(service, {"projectId": project, "conceptInputs": BRIEF, "vary": VARY})
    _wait(lambda: read_study(service, study.study_id, project).is_final, SLOW_POLL)
    return _done_after(started, read_study(service, study.study_id, project).jobs)


def _briefs() -> list[dict]:
    plan = plan_study({"projectId": "p", "conceptInputs": BRIEF, "vary": VARY})
    return [cell.brief.model_dump() for cell in plan.cells]


def run_one_after_another(service: JobService, project: str) -> float:
    started, jobs = utcnow(), []
    for brief in _briefs():  # the next is asked for once the last is seen done (within POLL)
        job = service.submit({"projectId": project, "conceptInputs": brief})
        _wait(lambda job=job: service.get(job.job_id, project).status.is_final)
        jobs.append(service.get(job.job_id, project))
    return _done_after(started, jobs)


def run_all_at_once(service: JobService, project: str) -> float:
    started = utcnow()
    jobs = [service.submit({"projectId": project, "conceptInputs": brief}) for brief in _briefs()]
    for job in jobs:
        _wait(lambda job=job: service.get(job.job_id, project).status.is_final, SLOW_POLL)
    return _done_after(started, [service.get(job.job_id, project) for job in jobs])


def start_workers(location: str, count: int, size: int) -> list[subprocess.Popen]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBS_")}
    env.update(JOBS_STORE_URL=location, JOBS_RENDERER="axonometric", JOBS_RENDER_SIZE=str(size),
               PYTHONPATH=ROOT)
    return [subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--poll", "0.05"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(count)]


def bench_store(location: str, label: str, rounds: int, workers: int, size: int) -> None:
    settings = replace(load_settings(), renderer="axonometric")
    service = JobService(open_store(location), settings)
    processes = start_workers(location, workers, size)
    try:
        for _ in range(2):  # fonts, caches, the store's folders: warm workers, as on a running server
            run_all_at_once(service, "warmup")
        times: dict[str, list[float]] = {"study": [], "one after another": [], "six at once (peer)": []}
        for round_number in range(rounds):
            project = f"round{round_number}"
            times["study"].append(run_study(service, f"{project}-study"))
            times["one after another"].append(run_one_after_another(service, f"{project}-singles"))
            times["six at once (peer)"].append(run_all_at_once(service, f"{project}-peer"))
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(30)
        service.store.close()
    study = statistics.median(times["study"])
    print(f"\n{label}: {workers} workers, {size} px renders, {rounds} rounds (median; all rounds in brackets)")
    for name, values in times.items():
        ratio = statistics.median(values) / study
        shown = ", ".join(f"{value:.2f}" for value in values)
        print(f"  {name:<22} {statistics.median(values):6.2f} s  ({shown})  {ratio:4.2f}x the study")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--stores", nargs="+", default=["files", "postgres"])
    parser.add_argument("--postgres", default=os.environ.get("JOBS_TEST_POSTGRES_URL"))
    parser.add_argument("--dir", default=".", help="where the files store's temporary directory goes")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; render of a 3 x 2 study ({', '.join(f'{k}={v}' for k, v in VARY.items())})")
    if "files" in args.stores:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="study-bench-") as root:
            bench_store(root, "files", args.rounds, args.workers, args.size)
    if "postgres" in args.stores:
        if not args.postgres:
            print("\npostgres: skipped (no --postgres URL or JOBS_TEST_POSTGRES_URL)")
            return
        sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
        from postgres_scratch import create_schema, drop_schema, schema_url

        schema = create_schema()
        try:
            bench_store(schema_url(schema), "postgres", args.rounds, args.workers, args.size)
        finally:
            drop_schema(schema)


if __name__ == "__main__":
    main()
