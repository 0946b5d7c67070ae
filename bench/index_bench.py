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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep-stores", help="generate stores here and reuse them on the next run")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_child)
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
