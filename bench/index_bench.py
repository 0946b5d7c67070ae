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
first figures after a restart (a fresh process: full scan, then from the snapshot, with where the
time goes), against the floor measured in the same run; a restart after 20,000 jobs changed, with
the snapshot as the start left it and as a live index kept it; every filter, order and page change
through the functions the page calls (`index.views.get`, `View.page`); the live tick's lookups;
CSV export beside pyarrow's and pandas' writers; peak RSS of the restarted process (VmHWM); and
the server CPU of a real `streamlit run app.py` per live tick and open browser (needs chromium),
with the app's Streamlit options and with the two that cost CPU on every run turned off. With
`--postgres-url` (an empty store there is filled from the file store by COPY), the same on
PostgreSQL: the first figures built from the index's fields and from whole documents, beside the
floor (a bare SELECT of every row), interleaved three times.
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
from jobs_core.monitor.snapshot import IndexSnapshot
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


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM, the high-water mark of its own memory. Not getrusage's
    ru_maxrss: Linux carries that over exec from the process that started this one, so a child of
    a bench that already held an index reported the parent's peak (390-490 MB instead of 245)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


def rss_child(root: str) -> None:
    """Run in a fresh process: build the index, print peak RSS (MB) and the frame's own size."""
    index = JobIndex.for_store(FileJobStore(root), watch="auto")
    frame = index.frame()
    peak = peak_rss_mb()
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
    """A fresh process (a server restart): time to the first figures, where it goes, and peak RSS."""
    from datetime import UTC, datetime

    from jobs_core.monitor.alerts import DEFAULT_FAILURE_RATE
    from jobs_core.monitor.stats import JobFilter
    from jobs_core.store import open_store

    wall, cpu = time.perf_counter(), time.process_time()
    store = open_store(location)
    index = JobIndex.for_store(store, watch="off", snapshot=(mode == "snapshot"), field_scan=(mode != "documents"))
    built = time.perf_counter() - wall
    now = datetime.now(UTC)
    view = index.views.get(JobFilter(), now)
    index.views.alerts(now, DEFAULT_FAILURE_RATE)
    view.page(1, 50, "newest first")
    figures = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "built_from": index.built_from,
               "read": index.records_read, "rows": len(index.frame()), "build": built,
               "view": time.perf_counter() - wall - built}
    index.close()  # waits for the snapshot it writes
    figures["peak_rss_mb"] = peak_rss_mb()
    if index.snapshot is not None:  # the parts of a snapshot start, timed again one by one (warm)
        figures["stat"] = timed(index.snapshot.stat_all)[0]
        figures["decode"] = timed(index.snapshot._read)[0]
    print(json.dumps(figures))
    store.close()


def _restart(location: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.index_bench", "--restart-child", location, mode],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def rewrite_files(store: FileJobStore, count: int) -> int:
    """Rewrite `count` job files as a worker's update would (same content, a new file by rename)."""
    paths = sorted(store.jobs_dir.glob("*/*.json"))[:count]
    for path in paths:
        temp = path.with_name(f".{path.name}.bench.tmp")
        temp.write_bytes(path.read_bytes())
        os.replace(temp, path)
    return len(paths)


def bench_restart_after_changes(location: str, changed: int) -> None:
    """The first figures after a restart of a server that ran while `changed` jobs changed: with
    the snapshot as the build left it (what a crash right after the start leaves), and with the
    snapshot a live index kept current."""
    store = FileJobStore(location)
    rewrite_files(store, changed)
    changed_files = sorted(store.jobs_dir.glob("*/*.json"))[:changed]
    # the floor of such a start: the stat of every file (to know which changed) + read+parse of the changed
    snapshot = IndexSnapshot.for_store(store)
    stat_seconds = min(timed(snapshot.stat_all)[0] for _ in range(2))
    read_seconds = min(timed(lambda: [_loads(path.read_bytes().decode()) for path in changed_files])[0]
                       for _ in range(2))
    stale = _restart(location, "snapshot")  # and it writes a current snapshot again
    live = JobIndex.for_store(store, watch="auto", save_seconds=0.5)
    try:
        saves, before = live.saves, live.records_read
        rewrite_files(store, changed)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (live.saves > saves and live.snapshot_is_current()):
            time.sleep(0.05)  # the watch and the saver thread at work (a real condition, bounded)
        absorbed = live.records_read - before
    finally:
        live.close()
    kept = _restart(location, "snapshot")
    print(f"  after {changed:,} jobs changed: snapshot left as at the start {stale['wall']:.2f} s "
          f"({stale['read']:,} places re-read, built from {stale['built_from']}, peak RSS "
          f"{stale['peak_rss_mb']:.0f} MB); snapshot kept current by the live index {kept['wall']:.2f} s "
          f"({kept['read']:,} re-read; the live index re-read {absorbed:,} and saved); floor: the stat of every "
          f"file {stat_seconds:.2f} s + read+parse of the {changed:,} changed {read_seconds:.2f} s")


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

    if "://" in location:
        bench_postgres_restart(location)
    else:
        bench_files_restart(location, floor_seconds)
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
            views.get(view_filter, now + timedelta(microseconds=tick[0])).page(1, 50, "newest first")
        return run

    for name, view_filter in changes.items():
        wall, cpu = _cpu_ms(fresh(view_filter))
        print(f"  {name:<28} {wall:7.1f} ms wall, {cpu:7.1f} ms cpu (whole view recomputed; target <= 300 ms)")
    everything = views.get(stats.JobFilter(), now)
    for name, (number, size, sort) in {"change the order (longest run)": (1, 50, "longest run"),
                                       "200 rows per page": (1, 200, "newest first"),
                                       "page 1,500 of 2,000": (1500, 50, "newest first")}.items():
        wall, cpu = _cpu_ms(lambda number=number, size=size, sort=sort: (everything._pages.clear(),
                                                                       everything.page(number, size, sort)))
        print(f"  {name:<28} {wall:7.1f} ms wall, {cpu:7.1f} ms cpu (target <= 300 ms)")
    later = now + timedelta(seconds=1)
    wall, cpu = _cpu_ms(lambda: (views.get(stats.JobFilter(), later), views.alerts(later, DEFAULT_FAILURE_RATE),
                                 index.memo("projects", lambda rows: sorted(rows["project"].unique()))), repeats=20)
    print(f"  live tick, nothing changed    {wall:7.1f} ms wall, {cpu:7.1f} ms cpu per session "
          "(the tick's lookups: view, alerts, projects; Streamlit's drawing below)")
    bench_csv(frame)
    index.close()
    store.close()


def bench_files_restart(location: str, floor_seconds: float | None) -> None:
    scan = _restart(location, "scan")
    # the snapshot as a server that ran a while leaves it (a start from it writes what it caught up
    # with at its next save, not at once)
    current = JobIndex.for_store(FileJobStore(location), watch="off", save_seconds=0)
    current.refresh()
    current.close()
    first = _restart(location, "snapshot")
    floor_text = f"floor (read+parse every file) {floor_seconds:.2f} s; " if floor_seconds else ""
    print(f"  first figures after a restart: full scan {scan['wall']:.2f} s (cpu {scan['cpu']:.2f} s); "
          f"{floor_text}from the snapshot {first['wall']:.2f} s (cpu {first['cpu']:.2f} s, "
          f"{first['read']:,} places re-read, built from {first['built_from']}) (target <= 1.5 s)")
    if "stat" in first:
        print(f"    where it goes: index build {first['build']:.2f} s (stat of every file {first['stat']:.2f} s "
              f"beside the snapshot's read+decode {first['decode']:.2f} s, then rows), first view "
              f"{first['view']:.2f} s")
    print(f"  peak RSS of that server process: {first['peak_rss_mb']:.0f} MB after the snapshot start, "
          f"{scan['peak_rss_mb']:.0f} MB after a full scan (target <= 300 MB)")
    if "stat" in first:
        bench_restart_after_changes(location, 20_000)


def postgres_floor(url: str) -> float:
    """The floor on PostgreSQL: a bare SELECT of every row's ids and document (fetched, not parsed)."""
    import psycopg

    best = float("inf")
    for _ in range(2):
        with psycopg.connect(url) as conn:
            best = min(best, timed(lambda conn=conn: conn.execute("SELECT project_id, job_id, doc::text FROM jobs")
                                   .fetchall())[0])
    return best


def bench_postgres_restart(url: str) -> None:
    """The first figures after a restart on PostgreSQL: built from the index's fields (column_scan.py)
    and from whole documents (scan_jobs), each in a fresh process, beside the floor, interleaved."""
    floors, fields, documents = [], [], []
    for _ in range(3):
        floors.append(postgres_floor(url))
        fields.append(_restart(url, "fields"))
        documents.append(_restart(url, "documents"))
    best = min(fields, key=lambda run: run["wall"])
    whole = min(documents, key=lambda run: run["wall"])
    runs = ", ".join(f"{run['wall']:.2f}" for run in fields)
    print(f"  first figures after a restart: from the index's fields {best['wall']:.2f} s (build "
          f"{best['build']:.2f} s, first view {best['view']:.2f} s, cpu {best['cpu']:.2f} s); from whole documents "
          f"(scan_jobs) {whole['wall']:.2f} s (build {whole['build']:.2f} s); floor (a bare SELECT of the "
          f"{best['rows']:,} rows) {min(floors):.2f} s (target <= 1.5 s; best of 3; the fields' runs {runs} s, "
          f"the floor's {', '.join(f'{floor:.2f}' for floor in floors)} s)")
    print(f"  peak RSS of that server process: {best['peak_rss_mb']:.0f} MB from the fields, "
          f"{whole['peak_rss_mb']:.0f} MB from whole documents (target <= 300 MB)")


def ensure_postgres(url: str, files: FileJobStore) -> None:
    """Fill an empty PostgreSQL store with the file store's jobs (COPY: some 10 s for 100,000)."""
    import psycopg

    from jobs_core.models import Job
    from jobs_core.store import open_store

    open_store(url).close()  # creates the tables
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT count(*) FROM jobs").fetchone()[0]:
            return
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY jobs (job_id, project_id, status, available_at, updated_at, "
                                            "heartbeat_at, worker_id, idempotency_key, doc) FROM STDIN") as copy:
            for path in sorted(files.jobs_dir.glob("*/*.json")):
                job = Job.model_validate_json(path.read_bytes())
                copy.write_row((job.job_id, job.project_id, job.status.value, job.available_at, job.updated_at,
                                job.heartbeat_at, job.worker_id, job.idempotency_key, job.model_dump_json()))
        conn.commit()
        conn.execute("ANALYZE jobs")
        conn.commit()
    print(f"  copied the file store's jobs into {url} ({time.perf_counter() - started:.0f} s)")


def bench_csv(frame) -> None:
    """CSV export through the page's function, beside two floors measured now: pyarrow's writer
    alone on a table already in Arrow, and DataFrame.to_csv."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pa_csv

    from jobs_core.monitor import stats

    wall, cpu = _cpu_ms(lambda: stats.to_csv(frame), repeats=3)
    first = timed(lambda: next(stats.csv_chunks(frame)))
    arrow = pa.Table.from_pandas(frame[stats.TABLE_COLUMNS].astype({"status": str}), preserve_index=False)
    writer_only = min(timed(lambda: pa_csv.write_csv(arrow, io.BytesIO()))[0] for _ in range(3))
    plain = min(timed(lambda: frame.to_csv(index=False))[0] for _ in range(2))
    print(f"  CSV export of {len(frame):,} jobs: {wall / 1000:.2f} s wall, {cpu / 1000:.2f} s cpu, "
          f"first {stats.CSV_BATCH_ROWS:,} rows out after {first[0] * 1000:.0f} ms (target <= 1.5 s); floors: "
          f"pyarrow's writer alone {writer_only:.2f} s, DataFrame.to_csv {plain:.2f} s. Made only when the "
          "button is pressed (Streamlit's deferred download), never on a rerun")


#: Streamlit options that cost CPU on every script run, a fragment's tick included: a full garbage
#: collection after each run (runner.postScriptGC, some 60-90 ms in a server holding the index), and
#: the watcher of the app's source files (a scan of every imported module after each run)
QUIET_STREAMLIT = ("--runner.postScriptGC", "false", "--server.fileWatcherType", "none")


def bench_live_ticks(location: str, sessions: int = 2, seconds: float = 30.0) -> None:
    for options in ((), QUIET_STREAMLIT):
        live_ticks(location, sessions, seconds, options)


def live_ticks(location: str, sessions: int, seconds: float, options: tuple[str, ...]) -> None:
    """CPU of a real server (`streamlit run app.py`) per live tick and open browser session, with
    nothing changing in the store: what the page's 3-second tick costs, Streamlit's drawing included."""
    import shutil
    import socket

    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if chromium is None:
        print("  live tick in a real server: skipped (needs Debian's chromium and playwright)")
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "JOBS_STORE_URL": location, "JOBS_APP_WORKERS": "0"}
    env.pop("JOBS_DIR", None)
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                               "--server.port", str(port), "--server.address", "127.0.0.1",
                               "--browser.gatherUsageStats", "false", *options],
                              cwd=Path(__file__).resolve().parent.parent, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def server_cpu() -> float:
        fields = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
            for _ in range(sessions):
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                deadline = time.monotonic() + 120
                while True:  # the server may still be starting
                    try:
                        page.goto(f"http://127.0.0.1:{port}/monitor")
                        break
                    except Exception:  # noqa: BLE001 - not listening yet
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.5)
                page.locator("[data-testid='stMetric']").first.wait_for(timeout=180_000)
            time.sleep(8)  # the first draws and their images settle (then: only ticks)
            cpu, wall = server_cpu(), time.monotonic()
            time.sleep(seconds)  # idle on purpose: the ticks are what is measured
            used, span = server_cpu() - cpu, time.monotonic() - wall
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    ticks = span / 3
    print(f"  live tick in a real server, nothing changed: {used * 1000 / ticks / sessions:.0f} ms of server CPU "
          f"per tick and open browser ({sessions} open, {used:.2f} s CPU over {span:.0f} s; target <= 50 ms); "
          f"Streamlit options: {' '.join(options) or 'as in .streamlit/config.toml'}")


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
        bench_live_ticks(str(largest))
        if args.postgres_url:
            print("issue 17, PostgreSQL (its own index: the fields by COPY, then LISTEN/NOTIFY; no snapshot):")
            ensure_postgres(args.postgres_url, store)
            bench_lead(args.postgres_url, None)
            bench_live_ticks(args.postgres_url)
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
