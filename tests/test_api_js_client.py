"""The seed's own JavaScript client, `renderWithJobs`, run by Node.js against a real server."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from jobs_core.api import ApiSettings, create_app
from jobs_core.service import JobService
from tests.api_server import serve_in_thread

SCRIPT = Path(__file__).parent / "js" / "render_with_jobs.mjs"
SEED = Path("/work/shared/seeds/000_ebef05208bcd4c6e.txt")
NODE = shutil.which("node")


def _seed_function(text: str) -> str:
    start = text.index("async function renderWithJobs")
    return text[start:text.index("\n}\n", start) + 2]


def test_the_script_is_the_seed_function_with_only_a_base_url_added():
    script = SCRIPT.read_text()
    ours = _seed_function(script[script.index("// ---- begin seed code"):])
    assert ours.count("${BASE}") == 3
    if SEED.exists():  # undo the base URLs: what is left is the seed's text, byte for byte
        undone = ours.replace("`${BASE}/api/jobs/render`", "'/api/jobs/render'").replace("`${BASE}/api/", "`/api/")
        assert undone == _seed_function(SEED.read_text())


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.parametrize("workers", [0, 1], ids=["process-endpoint", "embedded-worker"])
def test_seed_render_with_jobs_completes_and_its_image_url_serves_a_png(memory_service, workers):
    service = JobService(memory_service.store, replace(memory_service.settings, renderer="axonometric"))
    app = create_app(service, workers=workers, settings=ApiSettings(), render_size=128)
    with serve_in_thread(app) as base:
        run = subprocess.run([NODE, str(SCRIPT), base, "js-project", json.dumps({"floors": 3, "roof": "gable"})],
                             capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["job"]["status"] == "completed" and result["imageBytes"] > 8
    assert "Done! /api/renders/js-project/" in run.stdout
    stored = service.get(result["job"]["jobId"], "js-project")
    assert stored.concept_inputs["roof"] == "gable" and stored.attempts == 1
