"""`python -m jobs_core renderers` and render-type refusals, as real processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("OPENAI_", "A1111_", "JOBS_"))}
    clean.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-m", "jobs_core", *args, "--jobs-dir", str(cwd / "jobs")],
                          capture_output=True, text=True, env=clean, cwd=cwd, timeout=60)


def test_renderers_lists_each_renderer_its_types_and_what_is_missing(tmp_path):
    done = cli("renderers", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line and not line.startswith("*")}
    assert set(lines) == {"automatic1111", "axonometric", "noop", "openai"}
    assert "axonometric, exploded-axonometric, plan, elevation" in lines["axonometric"]
    assert lines["axonometric"].split()[1] == "*"  # the default
    assert lines["openai"].endswith("not configured: OPENAI_API_KEY is not set")
    assert lines["automatic1111"].endswith("not configured: A1111_BASE_URL is not set")


def test_renderers_json_follows_the_environment(tmp_path):
    env = {"OPENAI_API_KEY": "sk-cli-test-key-123456", "JOBS_RENDERER": "openai",
           "A1111_BASE_URL": "ftp://example"}
    done = cli("renderers", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert rows["openai"]["configured"] and rows["openai"]["default"]
    assert not rows["axonometric"]["default"]
    assert rows["automatic1111"]["problem"] == "A1111_BASE_URL must start with http:// or https://"
    assert "sk-cli-test-key-123456" not in done.stdout + done.stderr


def test_submit_refuses_an_unknown_render_type_in_one_line(tmp_path):
    done = cli("submit", "--project-id", "demo", "--render-type", "section", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == ("error: renderType 'section' is not one of: axonometric, "
                                   "exploded-axonometric, plan, elevation.")


def test_submit_wait_renders_a_plan_end_to_end(tmp_path):
    done = cli("submit", "--project-id", "demo", "--render-type", "plan", "--inputs",
               '{"footprint": "courtyard", "width": 40, "depth": 30}', "--wait", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["status"] == "completed" and job["stage"] == "done"
    image = tmp_path / "jobs" / "renders" / "demo" / f"{job['jobId']}.png"
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
