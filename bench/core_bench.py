"""Benchmark of the job machinery on the FileJobStore, beside its floor and its peer, in one run.

    python -m bench.core_bench [--jobs 5000] [--ops 1000] [--finished 100000] [--workers 1 4]
                               [--throughput-rounds 3] [--no-rq]

Prints figures, asserts nothing. Each figure sits beside what it is compared to, measured in the
same run on the same disk:
  * floor: one fsynced atomic write of a job-sized file (temp file, fsync, rename, directory fsync);
  * per operation (one process, `noop` renderer): create, claim, progress, complete, each call
    timed right after a floor write (medians and means); a no-op job's whole lifecycle is create +
    claim + complete (the noop renderer reports no progress), and each progress report of a real
    renderer adds the progress figure, printed on its own line;
    targets create <= 2x floor, lifecycle <= 6x floor;
  * throughput: --jobs jobs submitted, then drained by 1 and by 4 worker processes (each claims
    and runs jobs through the real Worker.run path), beside RQ's SimpleWorker on this machine's
    Redis (bench/rq_peer.py), in alternating rounds (medians); both clocks start once every
    worker process has started and opened its queue; information, not a target (what users feel is
    bench/real_work_bench.py), with one floor: at 4 workers the file store drains no-op jobs at
    least as fast as RQ (>= 1.0x);
  * a store already holding --finished completed jobs (written directly, without fsync, to set up
    quickly): create and claim must cost <= 1.2x what they cost in an empty store. Empty and full
    stores are measured in alternating rounds so that disk noise from other processes hits both.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from jobs_core.config import load_settings
from jobs_core.lifecycle import Lease
from jobs_core.models import Job, JobStatus, utcnow
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.worker import Worker

BRIEF = {"title": "Harbour offices", "floors": 6, "footprint": "L", "material": "timber", "roof": "gable"}


def open_service(root: Path) -> JobService:
    settings = replace(load_settings(root), store_url=None, renderer="noop", retry_backoff_seconds=0.0)
    return JobService(FileJobStore(root), settings)


def submit(service: JobService, project: str = "bench") -> Job:
    return service.submit({"projectId": project, "renderType": "axonometric", "conceptInputs": BRIEF})


def fsynced_write(path: Path, data: bytes) -> None:
    """The floor: temp file, write, fsync, rename, folder fsync; what one durable file write costs
    at least, written here with plain calls so that it does not move with the store's own code."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def per_op_ms(count: int, action: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for index in range(count):
        action(index)
    return (time.perf_counter() - started) * 1000 / count


# -- per-operation costs ---------------------------------------------------------------------------
def lifecycle_ms(root: Path, floor_dir: Path, count: int, rounds: int) -> dict[str, tuple[float, float]]:
    """(median, mean) ms per call of the floor and of each operation, each call paired with a floor write.

    The disk is shared and its latency drifts by 2x within a minute: every operation is timed
    right after one floor write, so each sample and its floor see the same conditions. Medians
    show the typical call; means include the disk's stalls.
    """
    service = open_service(root)
    floor_data = Job(job_id="job_" + "0" * 26, concept_id="cpt_" + "0" * 26, project_id="bench",
                     render_type="axonometric", renderer="noop", concept_inputs=BRIEF).to_json().encode()
    floor_path = floor_dir / "floor.json"
    samples: dict[str, list[float]] = {"floor": []}

    def paired(name: str, action: Callable[[], object]) -> None:
        began = time.perf_counter()
        fsynced_write(floor_path, floor_data)
        middle = time.perf_counter()
        action()
        samples["floor"].append((middle - began) * 1000)
        samples.setdefault(name, []).append((time.perf_counter() - middle) * 1000)

    batch = max(count // rounds, 1)
    png = _tiny_png()
    for _ in range(rounds):
        jobs: list[Job] = []
        for _ in range(batch):
            paired("create", lambda: submit(service))
        for _ in range(batch):
            paired("claim", lambda jobs=jobs: jobs.append(service.claim_next("bench-worker")))
        leases = [Lease.of(job) for job in jobs]
        for lease in leases:
            paired("progress", lambda lease=lease: service.report_progress(lease, 50, "encoding"))
        for lease in leases:
            paired("complete", lambda lease=lease: service.complete(lease, png))
    figures = {name: (statistics.median(values), statistics.fmean(values)) for name, values in samples.items()}
    # A no-op job's whole lifecycle is submit, claim and complete (the workload); a
    # progress report is what each report of a real renderer adds, printed beside it.
    ops = ("create", "claim", "complete")
    figures["lifecycle"] = (sum(figures[name][0] for name in ops), sum(figures[name][1] for name in ops))
    progress = figures["progress"]
    figures["lifecycle + 1 progress report"] = (figures["lifecycle"][0] + progress[0],
                                                 figures["lifecycle"][1] + progress[1])
    return figures


# -- throughput with worker processes ------------------------------------------------------------
def _drain(root: str, start) -> None:
    service = open_service(Path(root))
    worker = Worker(service)  # not started: this loop is its claim loop, without idle polling
    start.wait()
    while (job := service.claim_next(worker.worker_id)) is not None:
        worker.run(job)


def queued_store(root: Path, jobs: int) -> float:
    """A store with `jobs` pending jobs; returns the create cost per job (ms)."""
    service = open_service(root)
    return per_op_ms(jobs, lambda _: submit(service))


def throughput(root: Path, jobs: int, workers: int) -> dict[str, float]:
    service = open_service(root)
    start = multiprocessing.Barrier(workers + 1)
    processes = [multiprocessing.Process(target=_drain, args=(str(root), start)) for _ in range(workers)]
    for process in processes:
        process.start()
    start.wait()  # every worker has imported and opened the store: time the work, not the startup
    began = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - began
    done = sum(1 for job in service.store.iter_jobs() if job.status is JobStatus.COMPLETED)
    return {"jobs_per_s": jobs / elapsed, "completed": done}


def _rates(runs: list[float]) -> str:
    return ", ".join(f"{rate:.0f}" for rate in runs)


def rq_figures(jobs: int, workers: int) -> dict[str, float] | str:
    try:
        from bench.rq_peer import rq_throughput

        return rq_throughput(jobs, workers)
    except Exception as error:  # no Redis or no rq: say so and carry on with our own figures
        return f"unavailable ({type(error).__name__}: {error})"


# -- a store full of finished jobs ---------------------------------------------------------------
def fill_with_finished(root: Path, count: int) -> float:
    """Write `count` completed job files straight to disk (no fsync: this is only setup)."""
    service = open_service(root)
    template = submit(service)
    service.delete(template.job_id)
    now = utcnow()
    done = template.model_copy(update={"status": JobStatus.COMPLETED, "progress": 100, "stage": "done",
                                       "attempts": 1, "started_at": now, "finished_at": now})
    text = done.to_json()
    directory = root / "jobs" / "bench"
    started = time.perf_counter()
    for index in range(count):
        job_id = f"job_0{index:025d}"  # sorts before every new id, like jobs from long ago
        (directory / f"{job_id}.json").write_text(text.replace(template.job_id, job_id))
    return time.perf_counter() - started


def cpu_and_wall_ms(count: int, action: Callable[[int], object]) -> tuple[float, float]:
    """(CPU ms, wall ms) per call: CPU time shows the work done, whatever the disk's queue does."""
    cpu, wall = time.process_time(), time.perf_counter()
    for index in range(count):
        action(index)
    return (time.process_time() - cpu) * 1000 / count, (time.perf_counter() - wall) * 1000 / count


def create_and_claim_ms(root: Path, count: int) -> dict[str, tuple[float, float]]:
    service = open_service(root)
    return {"create": cpu_and_wall_ms(count, lambda _: submit(service)),
            "claim": cpu_and_wall_ms(count, lambda _: service.claim_next("bench-worker"))}


def full_store_rounds(base: Path, finished: int, ops: int, rounds: int) -> dict[str, list[float]]:
    empty, full = base / "empty", base / "full"
    seconds = fill_with_finished(full, finished)
    print(f"  ({finished:,} finished jobs written in {seconds:.1f} s)")
    figures: dict[str, list[tuple[float, float]]] = {}
    for index in range(rounds):
        order = ((empty, "empty"), (full, "full"))
        for root, name in order if index % 2 == 0 else reversed(order):  # neither always goes first
            for op, cost in create_and_claim_ms(root, ops // rounds).items():
                figures.setdefault(f"{name}_{op}", []).append(cost)
    return figures


# -- report --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per throughput run")
    parser.add_argument("--ops", type=int, default=1000, help="operations per per-op measurement")
    parser.add_argument("--finished", type=int, default=100_000, help="finished jobs in the full store")
    parser.add_argument("--rounds", type=int, default=8, help="alternating empty/full rounds")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--throughput-rounds", type=int, default=3,
                        help="alternating ours/RQ throughput runs per worker count (medians)")
    parser.add_argument("--no-rq", action="store_true", help="skip the RQ peer")
    parser.add_argument("--dir", help="where to put the stores (default: a temp dir under the current one)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="core-bench-", dir=args.dir or "."))
    began = time.perf_counter()
    try:
        run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"\ntotal run {time.perf_counter() - began:.0f} s")


def run(args: argparse.Namespace, base: Path) -> None:
    print(f"disk: {base.resolve()}  cpus: {os.cpu_count()}  load average: {os.getloadavg()[0]:.2f}\n")
    print(f"per operation, one process, {args.ops} jobs in {args.rounds} batches, noop renderer (medians)")
    costs = lifecycle_ms(base / "ops", base, args.ops, args.rounds)
    floor_median, floor_mean = costs.pop("floor")
    print(f"  {'':31s} {'median':>9s} {'mean':>9s}   (each call timed right after one floor write)")
    print(f"  {'floor':31s} {floor_median:6.2f} ms {floor_mean:6.2f} ms   one fsynced atomic write of a job-sized file")
    targets = {"create": 2.0, "lifecycle": 6.0}
    for name, (median, mean) in costs.items():
        target = f"   target <= {targets[name]:.0f}x" if name in targets else ""
        print(f"  {name:31s} {median:6.2f} ms {mean:6.2f} ms   = {median / floor_median:4.2f}x (median)"
              f" {mean / floor_mean:4.2f}x (mean) floor{target}")
    print()

    print(f"throughput, {args.jobs} jobs, worker processes (noop renderer), beside RQ SimpleWorker "
          f"(load average {os.getloadavg()[0]:.2f})")
    queued = base / "queued"
    create = queued_store(queued, args.jobs)
    print(f"  create with up to {args.jobs} jobs queued: {create:.2f} ms per job (the same store is copied "
          f"for each worker count)")
    for workers in args.workers:
        ours_runs, peer_runs, completed = [], [], []
        for round_number in range(args.throughput_rounds):  # alternating: both see the same disk and load
            root = base / f"throughput-{workers}-{round_number}"
            shutil.copytree(queued, root)
            ours = throughput(root, args.jobs, workers)
            ours_runs.append(ours["jobs_per_s"])
            completed.append(ours["completed"])
            peer = "skipped" if args.no_rq else rq_figures(args.jobs, workers)
            if isinstance(peer, dict):
                peer_runs.append(peer["jobs_per_s"])
        line = (f"  {workers} worker(s): ours {statistics.median(ours_runs):7.1f} jobs/s ({min(completed)} of "
                f"{args.jobs} completed in each run; runs {_rates(ours_runs)})")
        if peer_runs:
            ratio = statistics.median(ours_runs) / statistics.median(peer_runs)
            line += f"\n  {'':11s} RQ   {statistics.median(peer_runs):7.1f} jobs/s (runs {_rates(peer_runs)})"
            if workers == 4:
                line += f"   ours/RQ {ratio:.2f}x   floor >= 1.0x: {'meets' if ratio >= 1.0 else 'misses'}"
            else:
                line += f"   ours/RQ {ratio:.2f}x (information)"
        else:
            line += f" | RQ {peer}"
        print(line)
    print()

    print(f"a store with {args.finished:,} finished jobs vs an empty one ({args.ops} ops, "
          f"{args.rounds} alternating rounds, medians)")
    figures = full_store_rounds(base / "scale", args.finished, args.ops, args.rounds)
    for op in ("create", "claim"):
        for index, kind in ((1, "wall"), (0, "CPU ")):
            empty = statistics.median(cost[index] for cost in figures[f"empty_{op}"])
            full = statistics.median(cost[index] for cost in figures[f"full_{op}"])
            print(f"  {op:7s} {kind}  empty {empty:6.2f} ms   full {full:6.2f} ms   = {full / empty:4.2f}x"
                  f"   target <= 1.2x")
    print(f"  (load average now {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
