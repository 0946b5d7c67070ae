"""Benchmark the monitor's job index against the floor, in one run.

    python3 -m bench.index_bench [--sizes 10000 100000] [--repeats 3] [--keep-stores DIR]

For each store size: the floor (a loop that lists, reads and json-parses every job file, keeping
nothing, with the fastest primitives: os.read and JSONDecoder.decode), the same loop written
plainly (Path.read_bytes + json.loads), and `JobIndex` builds, interleaved, `--repeats` times
each; the best of each is compared (the machine is shared, so the minimum is the least disturbed
run). Wall-clock and CPU time of this process (all its threads) are printed. Then, on the
largest store: the incremental update after 10 job files change (watcher running), and peak RSS
of a fresh process that builds the index.

Targets (issue 5): build <= 1.3x the floor; incremental update <= 50 ms; <= 400 MB RSS at 100,000.

Issue 17 (`--lead-only [--postgres-url URL]`, with `--keep-stores DIR` holding store-100000): the
first figures after a restart (a fresh process: full scan, then from the snapshot), against the
floor measured in the same run; every filter, order and page change through the functions the
page calls (`index.views.get`, `View.page`); a live refresh when nothing changed; CSV export;
peak RSS of the restarted process.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.generate_store import Plan, generate
from jobs_core.monitor import JobIndex
from jobs_core.store import FileJobStore

_loads = json.JSONDecoder().decode


def floor(jobs_dir: Path) -> int:
    """The floor: list, read and json-parse every job file; keep nothing."""
    count = 0
    for project in os.scandir(jobs_dir):
        for name in os.listdir(project.path):
            fd = os.open(f"{jobs_dir}/{project.name}/{name}", os.O_RDONLY)
            try:
                data = os.read(fd, 1 << 16)
                while chunk := os.read(fd, 1 << 16):
                    data += chunk
            finally:
                os.close(fd)
            _loads(data.decode())
            count += 1
    return count


def plain_loop(jobs_dir: Path) -> int:
    """The same, written the way most Python would be: Path.read_bytes and json.loads."""
    count = 0
    for project in os.scandir(jobs_dir):
        for path in Path(project.path).iterdir():
            json.loads(path.read_bytes())
            count += 1
    return count


def timed(action) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - wall, time.process_time() - cpu


def ensure_store(root: Path, jobs: int) -> FileJobStore:
    if not (root / "jobs").exists():
        started = time.perf_counter()
        generate(root, Plan(jobs=jobs, projects=min(500, max(jobs // 20, 1)), weeks=12, now=datetime.now(UTC)))
        print(f"  generated {jobs} jobs in {root} ({time.perf_counter() - started:.0f} s)")
    return FileJobStore(root)


def bench_build(store: FileJobStore, repeats: int) -> None:
    expected = floor(store.jobs_dir)  # also warms the page cache for both contenders
    floors, plains, builds = [], [], []
    holder: list[JobIndex] = []
    for _ in range(repeats):
        floors.append(timed(lambda: floor(store.jobs_dir)))
        plains.append(timed(lambda: plain_loop(store.jobs_dir)))
        builds.append(timed(lambda: holder.append(JobIndex.for_store(store, watch="off"))))
        rows = len(holder.pop().frame())
        assert rows == expected, f"the index has {rows} rows for {expected} files"
    best_floor = (min(w for w, _ in floors), min(c for _, c in floors))
    best_plain = (min(w for w, _ in plains), min(c for _, c in plains))
    best_build = (min(w for w, _ in builds), min(c for _, c in builds))
    print(f"  {expected:>7,} jobs  floor       wall {best_floor[0]:6.2f} s  cpu {best_floor[1]:6.2f} s"
          "   (os.read + JSONDecoder.decode: the strict floor)")
    print(f"  {'':>7}       plain loop  wall {best_plain[0]:6.2f} s  cpu {best_plain[1]:6.2f} s"
          "   (Path.read_bytes + json.loads)")
    print(f"  {'':>7}       index       wall {best_build[0]:6.2f} s  cpu {best_build[1]:6.2f} s   "
          f"vs floor: wall {best_build[0] / best_floor[0]:.2f}x cpu {best_build[1] / best_floor[1]:.2f}x; "
          f"vs plain loop: wall {best_build[0] / best_plain[0]:.2f}x  (target <= 1.30x)")


def touch_jobs(store: FileJobStore, index: JobIndex, count: int, round_number: int) -> list[str]:
    """Change `count` jobs through the store (atomic writes, as a worker's progress would)."""
    rows = index.frame().iloc[round_number * count:(round_number + 1) * count]
    stage = f"bench round {round_number}"
    for job_id, project in zip(rows["job"], rows["project"], strict=True):
        store.modify(job_id, project, lambda job: (job.model_copy(update={"stage": stage}), None))
    return list(rows.index)


def bench_incremental(store: FileJobStore, rounds: int = 5, changed: int = 10) -> None:
    index = JobIndex.for_store(store, watch="auto")
    try:
        print(f"  index mode: {index.mode}")
        applies, end_to_end = [], []
        for round_number in range(rounds):
            read_before = index.records_read
            keys = touch_jobs(store, index, changed, round_number)
            written = time.perf_counter()
            deadline = written + 10
            while index.pending_changes() < changed and time.perf_counter() < deadline:
                time.sleep(0.001)  # wait for inotify to deliver the events (a real condition, bounded)
            applies.append(timed(lambda: (index.refresh(), index.frame()))[0])  # re-read + new frame
            end_to_end.append(time.perf_counter() - written)
            frame = index.frame()
            stages = set(frame.loc[keys, "stage"])
            assert stages == {f"bench round {round_number}"}, stages
            print(f"    round {round_number}: re-read {index.records_read - read_before} files "
                  f"of {len(frame):,}; refresh+frame {applies[-1] * 1000:.1f} ms; "
                  f"write->visible {end_to_end[-1] * 1000:.1f} ms")
        print(f"  incremental update of {changed} changed files: refresh+frame median "
              f"{statistics.median(applies) * 1000:.1f} ms, max {max(applies) * 1000:.1f} ms (target <= 50 ms); "
              f"write->visible median {statistics.median(end_to_end) * 1000:.1f} ms")
    finally:
        index.close()


def rss_child(root: str) -> None:
    """Run in a fresh process: build the index, print peak RSS (MB) and the frame's own size."""
    index = JobIndex.for_store(FileJobStore(root), watch="auto")
    frame = index.frame()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"rows": len(frame), "peak_rss_mb": round(peak, 1),
                      "frame_mb": round(frame.memory_usage(deep=True).sum() / 2**20, 1)}))
    index.close()


def bench_rss(root: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench.index_bench", "--rss-child", str(root)],
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        print(f"  the memory run failed (exit {out.returncode}):\n{out.stderr}")
        return
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  peak RSS of a process holding the index of {figures['rows']:,} jobs: "
          f"{figures['peak_rss_mb']:.0f} MB (target <= 400 MB); the frame itself {figures['frame_mb']:.0f} MB")


# -- issue 17: what a team lead waits for, at 100,000 jobs -------------------------------------------
def _restart_child(location: str, mode: str) -> None:
    """A fresh process (a server restart): time to the first figures, and its peak RSS."""
    from datetime import UTC, datetime

    from jobs_core.monitor.alerts import DEFAULT_FAILURE_RATE
    from jobs_core.monitor.stats import JobFilter
    from jobs_core.store import open_store

    wall, cpu = time.perf_counter(), time.process_time()
    store = open_store(location)
    index = JobIndex.for_store(store, watch="off", snapshot=(mode == "snapshot"))
    view = index.views.get(JobFilter(), datetime.now(UTC), DEFAULT_FAILURE_RATE)
    view.page(1, 50, "newest first")
    figures = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "built_from": index.built_from,
               "read": index.records_read, "rows": len(index.frame())}
    index.close()  # waits for the snapshot it writes
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))
    store.close()


def _restart(location: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.index_bench", "--restart-child", location, mode],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _cpu_ms(action, repeats: int = 5) -> tuple[float, float]:
    """Best wall and CPU milliseconds of `action` over `repeats` runs."""
    runs = [timed(action) for _ in range(repeats)]
    return min(w for w, _ in runs) * 1000, min(c for _, c in runs) * 1000


def bench_lead(location: str, floor_seconds: float | None) -> None:
    """Issue 17's figures through the functions the page calls (index.views, View.page, to_csv)."""
    from datetime import UTC, datetime, timedelta

    from jobs_core.monitor import stats
    from jobs_core.monitor.alerts import DEFAULT_FAILURE_RATE
    from jobs_core.store import open_store

    scan = _restart(location, "scan")
    first = _restart(location, "snapshot")  # a snapshot exists now (the scan wrote one)
    floor_text = f"floor (read+parse every file) {floor_seconds:.2f} s; " if floor_seconds else ""
    print(f"  first figures after a restart: full scan {scan['wall']:.2f} s (cpu {scan['cpu']:.2f} s); "
          f"{floor_text}from the snapshot {first['wall']:.2f} s (cpu {first['cpu']:.2f} s, "
          f"{first['read']:,} places re-read, built from {first['built_from']}) (target <= 1.5 s)")
    print(f"  peak RSS of that server process: {first['peak_rss_mb']:.0f} MB after the snapshot start, "
          f"{scan['peak_rss_mb']:.0f} MB after a full scan (target <= 300 MB)")
    store = open_store(location)
    index = JobIndex.for_store(store, watch="off")
    views = index.views
    now = datetime.now(UTC)
    frame = index.frame()
    project = frame["project"].iloc[0]
    changes = {
        "status filter (failed)": stats.JobFilter(statuses=("failed",)),
        "project filter": stats.JobFilter(projects=(project,)),
        "error contains 'memory'": stats.JobFilter(error_text="memory"),
        "stuck filter": stats.JobFilter(statuses=(stats.STUCK,)),
    }
    tick = [0]

    def fresh(view_filter):  # each run a new moment far enough on that nothing is cached
        def run() -> None:
            tick[0] += 1
            views._views.clear()
            views.get(view_filter, now + timedelta(microseconds=tick[0]), DEFAULT_FAILURE_RATE).page(1, 50,
                                                                                                  "newest first")
        return run

    for name, view_filter in changes.items():
        wall, cpu = _cpu_ms(fresh(view_filter))
        print(f"  {name:<28} {wall:7.1f} ms wall, {cpu:7.1f} ms cpu (whole view recomputed; target <= 300 ms)")
    everything = views.get(stats.JobFilter(), now, DEFAULT_FAILURE_RATE)
    for name, (number, size, sort) in {"change the order (longest run)": (1, 50, "longest run"),
                                       "200 rows per page": (1, 200, "newest first"),
                                       "page 1,500 of 2,000": (1500, 50, "newest first")}.items():
        wall, cpu = _cpu_ms(lambda number=number, size=size, sort=sort: (everything._pages.clear(),
                                                                       everything.page(number, size, sort)))
        print(f"  {name:<28} {wall:7.1f} ms wall, {cpu:7.1f} ms cpu (target <= 300 ms)")
    wall, cpu = _cpu_ms(lambda: views.get(stats.JobFilter(), now + timedelta(seconds=1), DEFAULT_FAILURE_RATE)
                        .page(1, 50, "newest first"), repeats=20)
    print(f"  live refresh, nothing changed {wall:7.1f} ms wall, {cpu:7.1f} ms cpu per session "
          f"(view lookup + page; Streamlit's own drawing not included; target <= 50 ms)")
    wall, cpu = _cpu_ms(lambda: stats.to_csv(frame), repeats=3)
    plain = timed(lambda: frame.to_csv(index=False))
    print(f"  CSV export of {len(frame):,} jobs: {wall / 1000:.2f} s wall, {cpu / 1000:.2f} s cpu "
          f"(DataFrame.to_csv: {plain[0]:.2f} s) (target <= 1.5 s; built on click, not streamed)")
    index.close()
    store.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep-stores", help="generate stores here and reuse them on the next run")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--restart-child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--lead-only", action="store_true",
                        help="only issue 17's figures (restart, filters, refresh, CSV) on the largest store")
    parser.add_argument("--postgres-url", help="also measure issue 17's figures on this PostgreSQL store")
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if args.restart_child:
        _restart_child(*args.restart_child)
        return
    if args.lead_only:
        largest = Path(args.keep_stores or ".") / f"store-{max(args.sizes)}"
        store = ensure_store(largest, max(args.sizes))
        floor(store.jobs_dir)  # warm the page cache
        floor_seconds = min(timed(lambda: floor(store.jobs_dir))[0] for _ in range(2))
        print(f"issue 17, files, {max(args.sizes):,} jobs:")
        bench_lead(str(largest), floor_seconds)
        if args.postgres_url:
            print("issue 17, PostgreSQL (its own index: scan_jobs + LISTEN/NOTIFY, no snapshot):")
            bench_lead(args.postgres_url, None)
        return
    with tempfile.TemporaryDirectory(prefix="index-bench-") as scratch:
        base = Path(args.keep_stores or scratch)
        stores = {}
        for size in args.sizes:
            print(f"index build, {size:,} jobs:")
            stores[size] = ensure_store(base / f"store-{size}", size)
            bench_build(stores[size], args.repeats)
        largest = max(args.sizes)
        print(f"incremental update, {largest:,} jobs:")
        bench_incremental(stores[largest])
        print("memory:")
        bench_rss(base / f"store-{largest}")


if __name__ == "__main__":
    main()
