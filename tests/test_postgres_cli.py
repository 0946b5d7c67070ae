"""The command line on PostgreSQL with nothing but JOBS_STORE_URL: submit, --wait, status, list, worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(pg_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "JOBS_DIR"}
    env.update(JOBS_STORE_URL=pg_url, JOBS_RENDERER="noop", PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "jobs_core", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_the_command_line_works_on_postgres_by_url_alone(pg_url: str, tmp_path: Path):
    waited = cli(pg_url, "submit", "--project-id", "cli", "--inputs", '{"floors": 3}', "--wait")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["status"] == "completed"
    queued = [cli(pg_url, "submit", "--project-id", "cli").stdout.strip() for _ in range(3)]

    drained = cli(pg_url, "worker", "--drain", "--concurrency", "2", "--poll", "0.1")
    assert drained.returncode == 0, drained.stderr
    for job_id in queued:
        status = cli(pg_url, "status", job_id)
        assert json.loads(status.stdout)["status"] == "completed"
    listed = [json.loads(line) for line in cli(pg_url, "list", "--project-id", "cli", "--json").stdout.splitlines()]
    assert len(listed) == 4 and {job["status"] for job in listed} == {"completed"}
    assert not (tmp_path / ".jobs").exists() and not (ROOT / ".jobs" / "jobs" / "cli").exists()  # no files


def test_a_bad_job_id_is_one_clear_line(pg_url: str):
    done = cli(pg_url, "status", "job_../../etc")
    assert done.returncode == 2
    assert done.stderr.strip() == "error: jobId 'job_../../etc' may only contain letters, digits, '-' and '_'."
