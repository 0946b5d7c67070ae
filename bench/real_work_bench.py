"""Real work: N axonometric renders of varied briefs drained by W worker processes through the store,
beside W processes that call the renderer directly on the same briefs, in one run.

    python -m bench.real_work_bench [--jobs 100] [--workers 2] [--rounds 5] [--stores files postgres]
                                    [--postgres URL] [--size 1024] [--breakdown-jobs 20]
                                    [--noop-jobs 2000] [--noop-rounds 3] [--no-rq] [--dir DIR]

Prints figures, asserts nothing.
  * ours: N jobs (render type "axonometric", briefs varied deterministically in footprint, size,
    floors, roof, material, palette, glazing) are queued in a fresh store (a new directory; a new
    schema on PostgreSQL), then W processes run the CLI's `worker --drain` command on it (its
    parser and handler, on a service opened before the start signal);
  * direct: W processes render the same briefs with `get_renderer("axonometric").render(...)`,
    taking them first come first served (a counter in a shared file, under flock), as the
    store's workers do, so neither side gains from a lucky split of heavy and light briefs.
Both kinds of process are started the same way (`python -m bench.real_work_bench _child ...`), import
everything, render one warm-up brief (fonts, caches: a long-running worker is warm), open the store
(ours), say "ready" and wait on their stdin; the clock starts when the parent releases them all.
It stops when the last image exists: the latest `finishedAt` in the store (ours; the last job's
own write is outside it, a few ms of a run of seconds) or the latest end of a render (direct).
The time until every process has exited is printed beside it, for information (ours includes
`--drain` noticing the queue is empty). Runs alternate (ours, direct, ours, direct...) so both see
the same machine load; medians per store against the target: ours <= 1.05x direct. The CPU time
the processes used after the start signal is printed too: other programs on the machine disturb
it less than wall time, though not to nothing (on PostgreSQL it leaves out the server's own CPU).

Then, per store, where the store's time goes: one process runs --breakdown-jobs jobs through
`Worker.run` (the path a worker thread takes) with claim, progress reports and completion timed
(wall and CPU), each beside the same brief rendered directly in the same process; and the floor
of the disk: the image and a job document written durably. Last, for information, the no-op throughput
of the file store beside RQ's SimpleWorker at 4 worker processes (bench/core_bench.py's
measurement); the file store must stay at least as fast (>= 1.0x).

PostgreSQL runs when --postgres URL or JOBS_TEST_POSTGRES_URL is given (a scratch schema per run,
dropped afterwards); files run in a temp dir under --dir (default: the current directory's disk).
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote

from jobs_core.models import ConceptInputs, Footprint, Job, JobStatus, Material, Palette, Roof
from jobs_core.renderers import RenderTask, get_renderer
from jobs_core.service import JobService
from jobs_core.store import open_store

ROOT = Path(__file__).resolve().parent.parent
TARGET = 1.05
RUN_TIMEOUT_SECONDS = 900.0
RENDER_TYPE = "axonometric"
BUILDING_TYPES = ("housing", "offices", "school", "library", "mixed-use", "workshop")


def _no_progress(percent: int, stage: str) -> None:
    return None


# -- the briefs ----------------------------------------------------------------------------------
def varied_briefs(count: int, seed: int = 2026) -> list[tuple[str, dict[str, Any]]]:
    """`count` (projectId, brief) pairs, the same for the same seed, each a valid ConceptInputs."""
    rng = random.Random(seed)
    briefs = []
    for index in range(count):
        footprint = rng.choice(get_args(Footprint))
        if footprint == "tower":
            width = rng.uniform(14, 40)
            depth, floors = width * rng.uniform(0.7, 1.0), rng.randint(10, 60)
        else:
            width = rng.uniform(16, 120)
            depth, floors = rng.uniform(max(12.0, width / 4), min(width * 1.2, 90.0)), rng.randint(1, 24)
        brief = {"title": f"Study {index + 1}", "buildingType": rng.choice(BUILDING_TYPES),
                 "footprint": footprint, "width": round(width, 1), "depth": round(depth, 1),
                 "floors": floors, "floorHeight": round(rng.uniform(2.8, 4.5), 1),
                 "roof": rng.choice(get_args(Roof)), "material": rng.choice(get_args(Material)),
                 "palette": rng.choice(get_args(Palette)), "windowRatio": round(rng.uniform(0.2, 0.7), 2)}
        ConceptInputs.model_validate(brief)  # valid by construction; fails loudly if the rules change
        briefs.append((f"site{index % 4}", brief))
    return briefs


# -- the child processes (both sides) ------------------------------------------------------------
def _warm_renderer():
    renderer = get_renderer(RENDER_TYPE)
    renderer.render(RenderTask("warm-up", "warm-up", RENDER_TYPE, {}), _no_progress)
    return renderer


def _ready_then_wait() -> float:
    """Say ready, wait for the start signal; the CPU time used so far (start-up is not counted)."""
    print("ready", flush=True)
    sys.stdin.readline()
    return time.process_time()


def _report(cpu_at_start: float, **figures: object) -> None:
    """The child's last stdout line: its figures, and the CPU seconds it used after the start signal."""
    print(json.dumps({"cpu": time.process_time() - cpu_at_start, **figures}), flush=True)


def _child_worker(location: str) -> None:
    """A worker process as a user runs it: `python -m jobs_core worker --drain --jobs-dir LOCATION`."""
    from jobs_core.cli import build_parser

    _warm_renderer()
    args = build_parser().parse_args(["worker", "--drain", "--jobs-dir", location])
    service = JobService.from_env(args.jobs_dir)
    service.has_work()  # the store is open and has answered once (a connection, on PostgreSQL)
    cpu = _ready_then_wait()
    args.handler(args, service)
    _report(cpu)
    service.store.close()


def _take_next(counter: int) -> int:
    """The index of the next brief nobody took yet: a counter in a shared file, under flock.
    (Not a file per brief: on this disk a new inode can cost milliseconds after many deletions.)"""
    fcntl.flock(counter, fcntl.LOCK_EX)
    try:
        index = int(os.pread(counter, 20, 0) or b"0")
        os.pwrite(counter, b"%20d" % (index + 1), 0)
    finally:
        fcntl.flock(counter, fcntl.LOCK_UN)
    return index


def _child_direct(briefs_file: str, counter_file: str) -> None:
    """Render the briefs nobody else took yet; report when the last render ended."""
    renderer = _warm_renderer()
    briefs = json.loads(Path(briefs_file).read_text())
    counter = os.open(counter_file, os.O_RDWR)
    cpu = _ready_then_wait()
    finished, renders = None, 0
    while (index := _take_next(counter)) < len(briefs):
        project_id, brief = briefs[index]
        renderer.render(RenderTask(f"direct-{index}", project_id, RENDER_TYPE, brief), _no_progress)
        finished, renders = time.time(), renders + 1
    _report(cpu, finished=finished, renders=renders)


def child_main(argv: list[str]) -> None:
    role, *rest = argv
    {"worker": _child_worker, "direct": _child_direct}[role](*rest)


# -- running a side ------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float  # start signal -> last image
    exited: float  # start signal -> every process gone
    cpu: float  # CPU seconds of the W processes after the start signal (not PostgreSQL's own)


def run_children(arguments: list[list[str]], size: int) -> tuple[float, list[dict], float]:
    """Start one child per argument list, release them together once all are ready.

    Returns (start time, each child's report, time when the last one exited).
    """
    env = {**os.environ, "JOBS_RENDER_SIZE": str(size),
           "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    children = [subprocess.Popen([sys.executable, "-m", "bench.real_work_bench", "_child", *argument],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
                for argument in arguments]
    try:
        for child in children:
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a child process stopped before it was ready (exit {child.wait()})")
        started = time.time()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outputs = [child.communicate(timeout=RUN_TIMEOUT_SECONDS)[0] for child in children]
        exited = time.time()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    failed = [child.returncode for child in children if child.returncode]
    if failed:
        raise RuntimeError(f"child processes exited with {failed}")
    return started, [json.loads(output.strip().splitlines()[-1]) for output in outputs], exited


def ours(location: str, briefs: list[tuple[str, dict]], workers: int, size: int) -> Run:
    service = JobService(open_store(location))
    for project_id, brief in briefs:
        service.submit({"projectId": project_id, "renderType": RENDER_TYPE, "conceptInputs": brief},
                       renderer="axonometric")
    service.store.close()
    started, reports, exited = run_children([["worker", location]] * workers, size)
    store = open_store(location)
    try:
        jobs = list(store.iter_jobs())
    finally:
        store.close()
    done = [job for job in jobs if job.status is JobStatus.COMPLETED]
    if len(done) != len(briefs):
        statuses = sorted(job.status.value for job in jobs)
        raise RuntimeError(f"{len(done)} of {len(briefs)} jobs completed ({statuses})")
    return Run(max(job.finished_at.timestamp() for job in done) - started, exited - started,
               sum(report["cpu"] for report in reports))


def direct(briefs_file: Path, count: int, workers: int, size: int, scratch: Path) -> Run:
    counter = scratch / "direct-counter"
    counter.write_bytes(b"")
    started, reports, exited = run_children([["direct", str(briefs_file), str(counter)]] * workers, size)
    renders = sum(report["renders"] for report in reports)
    if renders != count:
        raise RuntimeError(f"{renders} of {count} briefs rendered")
    return Run(max(report["finished"] for report in reports if report["finished"]) - started,
               exited - started, sum(report["cpu"] for report in reports))


# -- stores --------------------------------------------------------------------------------------
@contextmanager
def file_location(base: Path) -> Iterator[str]:
    """A new directory, kept until the whole run ends: deleting files between runs would make the
    next run's new files slower on some disks (freed inodes are skipped for a while)."""
    yield tempfile.mkdtemp(prefix="store-", dir=base)


@contextmanager
def postgres_location(server: str) -> Iterator[str]:
    """A new empty schema on `server`, dropped afterwards (as tests/postgres_scratch.py does)."""
    import psycopg

    schema = f"jobs_bench_{secrets.token_hex(6)}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{server}{'&' if '?' in server else '?'}options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- where the store's time goes -----------------------------------------------------------------
class _Clock:
    """Wall and CPU milliseconds spent inside the wrapped calls since the last `take()`."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0
        self.calls = 0

    def wrap(self, action: Callable) -> Callable:
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return action(*args, **kwargs)
            finally:
                self.wall += (time.perf_counter() - wall) * 1000
                self.cpu += (time.process_time() - cpu) * 1000
                self.calls += 1
        return timed

    def take(self) -> tuple[float, float, int]:
        taken = (self.wall, self.cpu, self.calls)
        self.wall = self.cpu = 0.0
        self.calls = 0
        return taken


def breakdown(location: str, briefs: list[tuple[str, dict]], size: int) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) per job of each part of a job's run in one process, and of the same
    brief rendered directly in the same process (before or after the job, in turns)."""
    from jobs_core.worker import Worker

    renderer = _warm_renderer()
    service = JobService(open_store(location))
    for project_id, brief in briefs:
        service.submit({"projectId": project_id, "renderType": RENDER_TYPE, "conceptInputs": brief},
                       renderer="axonometric")
    worker = Worker(service, render_size=size)  # not started: run() is what a claim thread does with a job
    clocks = {name: _Clock() for name in ("claim", "progress", "complete", "run", "direct")}
    claim_next = clocks["claim"].wrap(service.claim_next)
    service.report_progress = clocks["progress"].wrap(service.report_progress)  # measuring, not changing
    service.complete = clocks["complete"].wrap(service.complete)
    run, render = clocks["run"].wrap(worker.run), clocks["direct"].wrap(renderer.render)
    samples: dict[tuple[str, int], list[float]] = {}
    for index, (project_id, brief) in enumerate(briefs):
        direct_task = RenderTask(f"direct-{index}", project_id, RENDER_TYPE, brief, size)
        if index % 2:
            render(direct_task, _no_progress)
        run(claim_next(worker.worker_id))  # jobs come out in the order they were submitted
        if not index % 2:
            render(direct_task, _no_progress)
        taken = {name: clock.take() for name, clock in clocks.items()}
        samples.setdefault(("reports", 0), []).append(taken["progress"][2])
        for i in (0, 1):  # wall, CPU
            parts = {name: figures[i] for name, figures in taken.items()}
            parts["store"] = parts["claim"] + parts["progress"] + parts["complete"]
            parts["job"] = parts["claim"] + parts["run"]
            for name, value in parts.items():
                samples.setdefault((name, i), []).append(value)
    service.store.close()
    medians = {key: statistics.median(values) for key, values in samples.items()}
    return {name: (medians[name, 0], medians.get((name, 1), 0.0))
            for name in ("claim", "progress", "complete", "store", "job", "direct", "reports")}


def print_breakdown(name: str, figures: dict[str, tuple[float, float]]) -> None:
    def pair(part: str) -> str:
        return f"{figures[part][0]:.2f}/{figures[part][1]:.2f}"

    (job_wall, job_cpu), (direct_wall, direct_cpu) = figures["job"], figures["direct"]
    print(f"  {name:9s} claim {pair('claim')}  progress ({figures['reports'][0]:.0f} reports) {pair('progress')}"
          f"  complete {pair('complete')}  = store {pair('store')} ms per job")
    print(f"  {'':9s} whole job {pair('job')} ms beside the same brief rendered directly {pair('direct')} ms"
          f" = {job_wall / direct_wall:.3f}x wall, {job_cpu / direct_cpu:.3f}x CPU")


def durable_floor_ms(folder: Path, briefs: list[tuple[str, dict]], size: int) -> tuple[float, int]:
    """Median ms to write one render and one job-sized document durably, beside the render's bytes."""
    from bench.core_bench import fsynced_write  # the same floor as the per-operation benchmark's

    renderer = _warm_renderer()
    folder.mkdir(parents=True, exist_ok=True)
    samples, sizes = [], []
    for index, (project_id, brief) in enumerate(briefs):
        png = renderer.render(RenderTask(f"floor-{index}", project_id, RENDER_TYPE, brief, size), _no_progress).png
        document = Job(job_id=f"job_{index:026d}", concept_id=f"cpt_{index:026d}", project_id=project_id,
                       render_type=RENDER_TYPE, concept_inputs=brief).to_json().encode()
        began = time.perf_counter()
        fsynced_write(folder / f"{index}.png", png)
        fsynced_write(folder / f"{index}.json", document)
        samples.append((time.perf_counter() - began) * 1000)
        sizes.append(len(png))
    return statistics.median(samples), int(statistics.median(sizes))


# -- the no-op comparison with RQ (information) ----------------------------------------------------
def noop_versus_rq(base: Path, jobs: int, rounds: int, with_rq: bool) -> None:
    from bench.core_bench import queued_store, rq_figures, throughput  # its measurement, reused

    workers = 4
    queued = base / "noop-queued"
    queued_store(queued, jobs)
    ours_runs, peer_runs = [], []
    for round_number in range(rounds):  # alternating: both see the same disk and load
        root = base / f"noop-{round_number}"
        shutil.copytree(queued, root)
        ours_runs.append(throughput(root, jobs, workers)["jobs_per_s"])
        peer = rq_figures(jobs, workers) if with_rq else "skipped (--no-rq)"
        if isinstance(peer, dict):
            peer_runs.append(peer["jobs_per_s"])
    runs = ", ".join(f"{rate:.0f}" for rate in ours_runs)
    print(f"  file store {statistics.median(ours_runs):6.0f} jobs/s (runs {runs})")
    if not peer_runs:
        print(f"  RQ {peer}")
        return
    ratio = statistics.median(ours_runs) / statistics.median(peer_runs)
    runs = ", ".join(f"{rate:.0f}" for rate in peer_runs)
    verdict = "meets" if ratio >= 1.0 else "misses"
    print(f"  RQ         {statistics.median(peer_runs):6.0f} jobs/s (runs {runs})   files/RQ {ratio:.2f}x"
          f"   floor >= 1.0x: {verdict}")


# -- report --------------------------------------------------------------------------------------
def real_work(name: str, location: Callable[[], Any], args: argparse.Namespace, base: Path,
              briefs: list[tuple[str, dict]], briefs_file: Path) -> None:
    ours_runs: list[Run] = []
    direct_runs: list[Run] = []
    for round_number in range(args.rounds):
        with location() as where:
            ours_runs.append(ours(where, briefs, args.workers, args.size))
        direct_runs.append(direct(briefs_file, len(briefs), args.workers, args.size, base))
        mine, peer = ours_runs[-1], direct_runs[-1]
        print(f"  {name} round {round_number + 1}: ours {mine.seconds:6.2f} s  direct {peer.seconds:6.2f} s"
              f"  = {mine.seconds / peer.seconds:.3f}x   CPU {mine.cpu:5.2f} / {peer.cpu:5.2f} s"
              f"   (all exited after {mine.exited:.2f} / {peer.exited:.2f} s; load {os.getloadavg()[0]:.2f})",
              flush=True)
    medians = {side: {figure: statistics.median(getattr(run, figure) for run in runs) for figure in ("seconds", "cpu")}
               for side, runs in (("ours", ours_runs), ("direct", direct_runs))}
    paired = statistics.median(o.seconds / d.seconds for o, d in zip(ours_runs, direct_runs, strict=True))
    ours_s, direct_s = medians["ours"]["seconds"], medians["direct"]["seconds"]
    ratio = ours_s / direct_s
    verdict = "meets" if ratio <= TARGET else "misses"
    print(f"  {name}: ours {ours_s:.2f} s, direct {direct_s:.2f} s (medians of {args.rounds}) = {ratio:.3f}x"
          f"  (median of the paired rounds' ratios {paired:.3f}x)   target <= {TARGET}x: {verdict}")
    extra_ms = (ours_s - direct_s) * 1000 * args.workers / len(briefs)
    cpu_ratio = medians["ours"]["cpu"] / medians["direct"]["cpu"]
    extra_cpu_ms = (medians["ours"]["cpu"] - medians["direct"]["cpu"]) * 1000 / len(briefs)
    server = ", not counting the server's" if name == "postgres" else ""
    print(f"  {'':{len(name)}s}  {extra_ms:+.1f} ms per job in each process; CPU of the processes "
          f"{cpu_ratio:.3f}x ({extra_cpu_ms:+.1f} ms per job{server});"
          f" {len(briefs) / ours_s:.1f} vs {len(briefs) / direct_s:.1f} renders/s\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100, help="renders per run (N)")
    parser.add_argument("--workers", type=int, default=2, help="processes on each side (W)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating ours/direct runs per store (medians)")
    parser.add_argument("--stores", nargs="+", choices=["files", "postgres"], default=["files", "postgres"])
    parser.add_argument("--postgres", default=os.environ.get("JOBS_TEST_POSTGRES_URL"),
                        help="a PostgreSQL server URL (default: JOBS_TEST_POSTGRES_URL; none: files only)")
    parser.add_argument("--size", type=int, default=1024, help="render size in pixels (JOBS_RENDER_SIZE)")
    parser.add_argument("--breakdown-jobs", type=int, default=20, help="jobs timed per store (0: skip)")
    parser.add_argument("--noop-jobs", type=int, default=2000, help="no-op jobs per RQ comparison run (0: skip)")
    parser.add_argument("--noop-rounds", type=int, default=3)
    parser.add_argument("--no-rq", action="store_true", help="no-op figures without the RQ peer")
    parser.add_argument("--dir", default=".", help="where the file stores go (default: the current directory)")
    args = parser.parse_args()
    if args.jobs < 1 or args.workers < 1 or args.rounds < 1:
        parser.error("--jobs, --workers and --rounds must be at least 1")
    stores: dict[str, Callable[[], Any]] = {}
    base = Path(tempfile.mkdtemp(prefix="real-work-bench-", dir=args.dir))
    if "files" in args.stores:
        stores["files"] = lambda: file_location(base)
    if "postgres" in args.stores and args.postgres:
        stores["postgres"] = lambda: postgres_location(args.postgres)
    began = time.perf_counter()
    try:
        run(args, base, stores)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\ntotal run {time.perf_counter() - began:.0f} s")


def run(args: argparse.Namespace, base: Path, stores: dict[str, Callable[[], Any]]) -> None:
    briefs = varied_briefs(args.jobs)
    briefs_file = base / "briefs.json"
    briefs_file.write_text(json.dumps(briefs))
    skipped = "" if "postgres" in stores else " (PostgreSQL: no --postgres URL or JOBS_TEST_POSTGRES_URL)"
    print(f"real work: {args.jobs} {RENDER_TYPE} renders of varied briefs at {args.size} px, {args.workers} "
          f"processes per side, {args.rounds} alternating rounds per store{skipped}")
    print(f"disk: {base.resolve()}  cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}\n", flush=True)
    for name, location in stores.items():
        real_work(name, location, args, base, briefs, briefs_file)
    if args.breakdown_jobs:
        print(f"where the store's time goes: {args.breakdown_jobs} jobs through Worker.run in one process "
              "(medians per job, wall/CPU ms)")
        for name, location in stores.items():
            with location() as where:
                print_breakdown(name, breakdown(where, briefs[:args.breakdown_jobs], args.size))
        floor, png_bytes = durable_floor_ms(base / "floor", briefs[:args.breakdown_jobs], args.size)
        print(f"  {'floor':9s} {floor:.2f} ms per job to write its image ({png_bytes / 1024:.0f} KB) and a "
              "job-sized document durably on this disk (temp file, fsync, rename, folder fsync; each)")
        print(flush=True)
    if args.noop_jobs:
        print(f"information: no-op throughput, {args.noop_jobs} jobs, 4 worker processes, file store beside RQ "
              f"SimpleWorker ({args.noop_rounds} alternating rounds, medians; bench/core_bench.py's measurement)",
              flush=True)
        noop_versus_rq(base, args.noop_jobs, args.noop_rounds, not args.no_rq)


if __name__ == "__main__":
    if sys.argv[1:2] == ["_child"]:
        child_main(sys.argv[2:])
    else:
        main()
