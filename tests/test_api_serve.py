"""`python -m jobs_core serve` as a real process: embedded workers, the hybrid set-up with a
separate worker process, graceful stop, and one-line errors for bad options."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.api_server import free_port

ROOT = Path(__file__).resolve().parent.parent


def _env(jobs_dir: Path) -> dict[str, str]:
    return {**os.environ, "JOBS_DIR": str(jobs_dir), "JOBS_RENDER_SIZE": "128", "PYTHONPATH": str(ROOT)}


def _start(jobs_dir: Path, *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "jobs_core", "serve", "--port", str(port), *args],
                               cwd=ROOT, env=_env(jobs_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/api/health", timeout=1).status_code == 200:
                return process, base
        except httpx.TransportError:
            if process.poll() is not None:
                break
            time.sleep(0.05)  # bounded wait for the port to open
    process.kill()
    raise AssertionError(f"serve did not start: {process.communicate()[0]}")


def _stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises the signal: the conventional "ended by SIGTERM"
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    return output


def _create_and_wait(base: str, project: str = "cli") -> dict:
    job_id = httpx.post(f"{base}/api/jobs/render", json={"projectId": project}, timeout=30).json()["jobId"]
    return _wait_done(base, job_id)


def _wait_done(base: str, job_id: str) -> dict:
    with httpx.Client(base_url=base, timeout=30) as http:
        for _ in range(100):
            job = http.get(f"/api/jobs/{job_id}", headers={"Prefer": "wait=0.5"}).json()["job"]
            if job["status"] in ("completed", "failed"):
                return job
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.mark.slow
def test_serve_with_an_embedded_worker_renders_and_stops_cleanly(tmp_path):
    process, base = _start(tmp_path / "store", "--workers", "1")
    try:
        job = _create_and_wait(base)
        assert job["status"] == "completed"
        assert (tmp_path / "store" / "renders" / "cli" / f"{job['jobId']}.png").read_bytes().startswith(b"\x89PNG")
        assert httpx.get(f"{base}/api/health").json()["workers"] == 1
    finally:
        output = _stop(process)
    assert "1 embedded worker thread" in output and "Traceback" not in output


@pytest.mark.slow
def test_hybrid_serve_without_workers_and_a_separate_worker_process(tmp_path):
    store = tmp_path / "store"
    process, base = _start(store, "--workers", "0")
    try:
        with httpx.Client(base_url=base) as http:
            job_id = http.post("/api/jobs/render", json={"projectId": "hybrid"}).json()["jobId"]
            assert http.get(f"/api/jobs/{job_id}").json()["job"]["status"] == "pending"
        worker = subprocess.run([sys.executable, "-m", "jobs_core", "worker", "--drain", "--poll", "0.1"],
                                cwd=ROOT, env=_env(store), capture_output=True, text=True, timeout=60)
        assert worker.returncode == 0, worker.stderr
        job = httpx.get(f"{base}/api/jobs/{job_id}", params={"projectId": "hybrid"}).json()["job"]
        assert job["status"] == "completed" and httpx.get(base + job["imageUrl"]).content.startswith(b"\x89PNG")
    finally:
        _stop(process)


@pytest.mark.slow
def test_serve_in_two_processes_shares_one_store_and_one_port(tmp_path):
    store = tmp_path / "store"
    process, base = _start(store, "--processes", "2", "--workers", "1")
    body = {"projectId": "multi", "renderType": "axonometric", "conceptInputs": {"title": "Twin", "floors": 4}}

    def create(key: str | None) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        with httpx.Client(base_url=base, timeout=30) as http:  # a connection of its own: either process may take it
            response = http.post("/api/jobs/render", json=body, headers=headers)
            assert response.status_code == 201, response.text
            return response.json()["jobId"]

    try:
        with ThreadPoolExecutor(16) as pool:
            same_key = set(pool.map(create, ["twin-key"] * 16))
            fresh = list(pool.map(create, [None] * 8))
        assert len(same_key) == 1  # one job for one key, whichever process each request reached
        jobs = [_wait_done(base, job_id) for job_id in [*same_key, *fresh]]
        assert {job["status"] for job in jobs} == {"completed"}  # the embedded workers of both render
        assert len(list((store / "jobs" / "multi").glob("*.json"))) == 9
    finally:
        output = _stop(process)
    assert output.count("Started server process") == 2 and output.count("Application shutdown complete") == 2
    assert "2 processes with 1 embedded worker thread(s) each" in output and "Traceback" not in output


@pytest.mark.parametrize(("args", "message"), [
    (["--port", "0"], "--port must be between 1 and 65535"),
    (["--workers", "-1"], "--workers must be 0 or more"),
    (["--processes", "0"], "--processes must be between 1 and 64"),
    (["--port", "eighty"], "invalid int value"),
])
def test_bad_serve_options_get_one_line(tmp_path, args, message):
    run = subprocess.run([sys.executable, "-m", "jobs_core", "serve", *args], cwd=ROOT, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
