"""Helpers for tests that drive real processes (`python -m jobs_core ...`) and real files."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
T = TypeVar("T")


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a CLI process: our test renderers importable, no inherited store URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBS_")}
    env.update(PYTHONPATH=f"{ROOT}{os.pathsep}{TESTS}", JOBS_RENDERER_MODULES="gate_renderer",
               JOBS_RENDER_SIZE="128", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def run_cli(*args: str, jobs_dir: Path | None, timeout: float = 60, env: dict | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `python -m jobs_core ARGS --jobs-dir DIR` to completion and capture its output
    (without `--jobs-dir` when `jobs_dir` is None: the store is the one `env` names)."""
    where = ["--jobs-dir", str(jobs_dir)] if jobs_dir is not None else []
    return subprocess.run([sys.executable, "-m", "jobs_core", *args, *where],
                          cwd=ROOT, env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout, input=stdin)


def start_worker(jobs_dir: Path, *args: str, env: dict | None = None, by_env: bool = False) -> subprocess.Popen:
    """Start `python -m jobs_core worker` as a real process (stdout/stderr to files in the store's
    parent). With `by_env`, the store is the one `env` names (JOBS_STORE_URL) and `jobs_dir` only
    holds the log."""
    log_path = jobs_dir.parent / f"worker-{time.monotonic_ns()}.log"
    where = [] if by_env else ["--jobs-dir", str(jobs_dir)]
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", *where, "--poll", "0.05", *args],
                                   cwd=ROOT, env=env or cli_env(), stdout=log, stderr=subprocess.STDOUT)
    process.log_path = log_path  # type: ignore[attr-defined]
    return process


def worker_log(process: subprocess.Popen) -> str:
    return Path(process.log_path).read_text()  # type: ignore[attr-defined]


def wait_until(condition: Callable[[], T], timeout: float = 30, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def tree_snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under `root` with its mode, mtime and content hash: equal snapshots mean untouched."""
    snapshot = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(directory, name)
            stat = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
            snapshot[str(path.relative_to(root))] = (stat.st_mode, stat.st_mtime_ns, digest)
    return snapshot
