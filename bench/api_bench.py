"""HTTP API latency and throughput, beside a bare FastAPI endpoint, with the same load generator.

    python3 -m bench.api_bench [--duration 2] [--rounds 3] [--connections 1 16] [--processes 2]

uvicorn servers, started the same way (uvloop/httptools when installed, no access log), on
127.0.0.1, with their files on the disk of this checkout:
  ours: `python -m jobs_core serve --workers 0` on a fresh file store (create and poll only, the
        seed's hybrid set-up; nothing renders while we measure)
  bare: a FastAPI app whose POST does the one durable write a correct store must do (a temp file
        in the same folder, fsync, os.replace, fsync of the folder) and whose GET reads one file
and, with --processes N > 1, creates again with N processes on each side (`serve --processes N`,
`uvicorn --workers N`). wrk (compiled, so the load generator does not eat the cores) drives each
case at 1 and 16 connections, taking turns for a few rounds (the machine is shared: all then see
the same background load); rows print side by side with the ratios the issue targets: p50 within
1.5x bare, p99 within 2x bare, and the seed's promise of < 1 s. Each row also shows the server's
CPU time per request (all its threads and processes, from /proc). At the end, without HTTP: how
many fsyncs, files and renames one create costs beside the bare write, and their times in this
process.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

ROOT = Path(__file__).resolve().parent.parent
WRK = shutil.which("wrk") or "/usr/bin/wrk"
CREATE_BODY = json.dumps({"projectId": "bench", "renderType": "axonometric",
                          "conceptInputs": {"title": "Bench", "floors": 5, "footprint": "L"}})

# -- the bare peer -------------------------------------------------------------------------------
bare_app = FastAPI()
BARE_DIR = Path(os.environ.get("BENCH_BARE_DIR", tempfile.gettempdir()))


def durable_write(folder: Path, data: bytes) -> str:
    """What any store must do for a new document to survive a crash, and nothing more."""
    name = uuid.uuid4().hex
    temp = folder / f".{name}.tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, folder / f"{name}.json")
    folder_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(folder_fd)
    finally:
        os.close(folder_fd)
    return name


@bare_app.post("/bare/write", status_code=201)
async def bare_write(request: Request) -> Response:
    name = await run_in_threadpool(durable_write, BARE_DIR, await request.body())
    return JSONResponse({"id": name}, status_code=201)


@bare_app.get("/bare/read/{name}")
async def bare_read(name: str) -> Response:
    data = await run_in_threadpool((BARE_DIR / f"{name}.json").read_bytes)
    return Response(data, media_type="application/json")


# -- running servers and wrk -----------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], cwd=ROOT,
                               env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            httpx.get(f"{base}/docs", timeout=1)
            return process, base
        except httpx.TransportError:
            time.sleep(0.05)  # bounded: 20 s for the server to open its port
    process.kill()
    raise SystemExit(f"server did not start: {command}")


@dataclass
class Figures:
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int
    cpu_ms: float | None = None  # the server's CPU time (all its threads and processes) per request


def _cpu_seconds(pid: int) -> float:
    """CPU time of a server: its own and its server processes' (uvicorn's supervisor spawns those)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return own + sum(_cpu_seconds(int(child)) for child in children)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, seconds: float, post_body: str | None, workdir: Path,
        server_pid: int | None = None) -> Figures:
    command = [WRK, f"-t{min(connections, 2)}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    if post_body is not None:
        script = workdir / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(post_body)}\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        command += ["-s", str(script)]
    cpu_before = _cpu_seconds(server_pid) if server_pid else 0.0
    output = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    requests = int(re.search(r"(\d+) requests in", output).group(1))
    cpu_ms = (_cpu_seconds(server_pid) - cpu_before) * 1000 / max(requests, 1) if server_pid else None
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = int(bad.group(1)) if bad else 0
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return Figures(_ms(p50), _ms(p99), rps, errors, cpu_ms)


def alternating(cases: list[tuple[str, int]], connections: int, args: argparse.Namespace,
                post_body: str | None, workdir: Path) -> list[Figures]:
    """Run each (url, server pid) in turn, `rounds` times, so all see the same background load
    (the machine is shared), and keep the median of each figure."""
    runs: list[list[Figures]] = [[] for _ in cases]
    for _ in range(args.rounds):
        for (url, pid), kept in zip(cases, runs, strict=True):
            kept.append(wrk(url, connections, args.duration, post_body, workdir, pid))
    return [_median(kept) for kept in runs]


def _median(runs: list[Figures]) -> Figures:
    def mid(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]
    cpu = [r.cpu_ms for r in runs if r.cpu_ms is not None]
    return Figures(mid([r.p50_ms for r in runs]), mid([r.p99_ms for r in runs]), mid([r.rps for r in runs]),
                   sum(r.errors for r in runs), mid(cpu) if cpu else None)


def _row(label: str, figures: Figures) -> str:
    cpu = "" if figures.cpu_ms is None else f"   server CPU {figures.cpu_ms:5.2f} ms/req"
    return (f"  {label:<36} p50 {figures.p50_ms:7.2f} ms   p99 {figures.p99_ms:7.2f} ms   "
            f"{figures.rps:8.0f} req/s   errors {figures.errors}{cpu}")


def _verdict(ours: Figures, bare: Figures) -> str:
    p50, p99 = ours.p50_ms / bare.p50_ms, ours.p99_ms / bare.p99_ms
    ok = p50 <= 1.5 and p99 <= 2.0 and ours.p99_ms < 1000 and ours.errors == 0
    return (f"  {'ratio ours/bare':<36} p50 {p50:6.2f}x (target <= 1.5x)   p99 {p99:6.2f}x (target <= 2x)   "
            f"{'MEETS' if ok else 'MISSES'} target; seed's < 1 s: {'yes' if ours.p99_ms < 1000 else 'NO'}")


# -- without HTTP: what one create costs on the disk ------------------------------------------------
@contextmanager
def counting_syscalls() -> Iterator[dict[str, int]]:
    """Count this process's fsyncs, opens with O_CREAT (new files, and lock files) and names given
    (rename, replace, link) while the block runs, by wrapping those os functions."""
    counts = {"fsyncs": 0, "opens with O_CREAT": 0, "renames or links": 0}
    wrapped = {"fsync": "fsyncs", "fdatasync": "fsyncs", "rename": "renames or links",
               "replace": "renames or links", "link": "renames or links"}
    real = {name: getattr(os, name) for name in [*wrapped, "open"]}

    def counting(name: str) -> Callable[..., object]:
        def call(*args: object, **kwargs: object) -> object:
            counts[wrapped[name]] += 1
            return real[name](*args, **kwargs)
        return call

    def opened(path: object, flags: int, *args: object, **kwargs: object) -> int:
        counts["opens with O_CREAT"] += bool(flags & os.O_CREAT)
        return real["open"](path, flags, *args, **kwargs)

    for name in wrapped:
        setattr(os, name, counting(name))
    os.open = opened
    try:
        yield counts
    finally:
        for name, function in real.items():
            setattr(os, name, function)


def in_process(seconds: float, call: Callable[[], object]) -> Figures:
    """The same operation without HTTP, one caller: how much of a row is the disk itself."""
    latencies = []
    deadline = time.perf_counter() + seconds
    while (start := time.perf_counter()) < deadline:
        call()
        latencies.append((time.perf_counter() - start) * 1000)
    latencies.sort()
    return Figures(latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)],
                   len(latencies) / seconds, 0)


def create_costs(work: Path, seconds: float) -> None:
    from jobs_core.service import JobService
    from jobs_core.store import FileJobStore

    service = JobService(FileJobStore(work / "in-process-store"))
    body, folder = json.loads(CREATE_BODY), work / "in-process-bare"
    folder.mkdir()
    service.submit(body)  # the first create makes the project's folders
    samples = 20
    with counting_syscalls() as ours:
        for _ in range(samples):
            service.submit(body)
    with counting_syscalls() as bare:
        for _ in range(samples):
            durable_write(folder, CREATE_BODY.encode())
    print("\nwithout HTTP (in this process, one caller): what one create costs on the disk")
    for label, counts in (("bare durable write", bare), ("JobService.submit (file store)", ours)):
        print(f"  {label:<36} " + "   ".join(f"{name} {n / samples:g}" for name, n in counts.items()))
    print(_row("bare durable write", in_process(seconds, lambda: durable_write(folder, CREATE_BODY.encode()))))
    print(_row("JobService.submit (file store)", in_process(seconds, lambda: service.submit(body))))
    service.store.close()


# -- the run ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per case (median kept)")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--processes", type=int, default=2,
                        help="also compare creates with this many server processes on each side (1: skip)")
    args = parser.parse_args(argv)
    if not os.access(WRK, os.X_OK):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="api-bench-", dir=ROOT))  # same disk as a real ./.jobs
    for folder in ("bare", "bare-multi"):
        (work / folder).mkdir()
    servers = _start_servers(work, args.processes)
    try:
        _run(servers, work, args)
        create_costs(work, args.duration)
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(20)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _start_servers(work: Path, processes: int) -> dict[str, tuple[subprocess.Popen, str]]:
    """ours and bare, one process each; with processes > 1, both again with that many processes."""
    ours = [sys.executable, "-m", "jobs_core", "serve", "--workers", "0"]
    bare = [sys.executable, "-m", "uvicorn", "bench.api_bench:bare_app", "--no-access-log", "--log-level", "warning"]
    servers = {"ours": _start(ours, {"JOBS_DIR": str(work / "store"), "JOBS_RENDER_SIZE": "128"}),
               "bare": _start(bare, {"BENCH_BARE_DIR": str(work / "bare")})}
    if processes > 1:
        servers["ours-multi"] = _start([*ours, "--processes", str(processes)],
                                       {"JOBS_DIR": str(work / "store-multi")})
        servers["bare-multi"] = _start([*bare, "--workers", str(processes)],
                                       {"BENCH_BARE_DIR": str(work / "bare-multi")})
    return servers


def _run(servers: dict[str, tuple[subprocess.Popen, str]], work: Path, args: argparse.Namespace) -> None:
    (ours_proc, ours), (bare_proc, bare) = servers["ours"], servers["bare"]
    # Poll targets: a finished job (a plain read) and a copy of its answer for the bare read.
    done = httpx.post(f"{ours}/api/jobs/render", content=CREATE_BODY,
                      headers={"content-type": "application/json"}).json()["jobId"]
    httpx.post(f"{ours}/api/jobs/{done}/process", headers={"Prefer": "wait=30"}, timeout=60)
    sample = httpx.get(f"{ours}/api/jobs/{done}?projectId=bench").content
    bare_id = httpx.post(f"{bare}/bare/write", content=sample).json()["id"]
    print(f"API benchmark: wrk, {args.rounds} alternating rounds of {args.duration:g} s per case (medians), "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
    for connections in args.connections:
        print(f"\n{connections} concurrent client(s)")
        create_bare, create_ours = alternating(
            [(f"{bare}/bare/write", bare_proc.pid), (f"{ours}/api/jobs/render", ours_proc.pid)],
            connections, args, CREATE_BODY, work)
        print(_row("bare: one durable file write", create_bare))
        print(_row("create POST /api/jobs/render", create_ours))
        print(_verdict(create_ours, create_bare))
        poll_bare, poll_ours = alternating(
            [(f"{bare}/bare/read/{bare_id}", bare_proc.pid),
             (f"{ours}/api/jobs/{done}?projectId=bench", ours_proc.pid)], connections, args, None, work)
        print(_row("bare: one file read", poll_bare))
        print(_row("poll GET /api/jobs/{id} (completed)", poll_ours))
        print(_verdict(poll_ours, poll_bare))
        if "ours-multi" in servers:
            _multi_rows(servers, connections, args, work)
    _poll_pending(ours, work, args)


def _multi_rows(servers: dict[str, tuple[subprocess.Popen, str]], connections: int, args: argparse.Namespace,
                work: Path) -> None:
    (ours_proc, ours), (bare_proc, bare) = servers["ours-multi"], servers["bare-multi"]
    bare_multi, ours_multi = alternating([(f"{bare}/bare/write", bare_proc.pid),
                                          (f"{ours}/api/jobs/render", ours_proc.pid)],
                                         connections, args, CREATE_BODY, work)
    print(f"  {args.processes} server processes on each side (serve --processes {args.processes}; "
          f"uvicorn --workers {args.processes}):")
    print(_row(f"bare: one durable file write, {args.processes} proc", bare_multi))
    print(_row(f"create, {args.processes} processes", ours_multi))
    print(_verdict(ours_multi, bare_multi))


def _poll_pending(ours: str, work: Path, args: argparse.Namespace) -> None:
    queued = len(os.listdir(work / "store" / ".state" / "ready"))
    pending = httpx.post(f"{ours}/api/jobs/render", content=CREATE_BODY,
                         headers={"content-type": "application/json"}).json()["jobId"]
    poll_pending = wrk(f"{ours}/api/jobs/{pending}?projectId=bench", 1, args.duration, None, work)
    print(f"\nextra: poll of a pending job behind {queued} queued jobs (queuePosition: shared listing)")
    print(_row("poll GET /api/jobs/{id} (pending)", poll_pending))


if __name__ == "__main__":
    sys.exit(main())
