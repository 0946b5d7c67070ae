"""Schemathesis against the app's own OpenAPI schema, over HTTP on a real uvicorn server (over the
memory store: the store is not the subject).

Positive and negative cases for every operation: no 5xx, every status documented, every body and
header as the schema says. Bounded by max_examples so it runs in seconds.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jobs_core.api import ApiSettings, create_app
from jobs_core.config import load_settings
from jobs_core.service import JobService
from jobs_core.store import MemoryJobStore
from tests.api_server import serve_in_thread
from tests.test_api_eta import finished_job

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("schema-store")  # the settings' JOBS_DIR; the jobs stay in memory
    service = JobService(MemoryJobStore(), replace(load_settings(root), renderer="axonometric"))
    for seconds in (2, 3, 4):  # a run-time history, so waiting jobs carry a numeric etaSeconds
        finished_job(service.store, "axonometric", "axonometric", seconds)
    # Short waits: generated `Prefer: wait=N` and /process calls must not stall the run.
    app = create_app(service, workers=0, render_size=128,  # no claim threads: jobs run only when /process asks
                     settings=ApiSettings(process_wait_seconds=0.2, max_wait_seconds=0.2, max_body_bytes=16384))
    with serve_in_thread(app) as base:
        yield base


@pytest.fixture(scope="module")
def api_schema(server: str):
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms_to_its_schema(case):
    case.call_and_validate(checks=CHECKS)


def test_real_jobs_in_every_state_match_the_schema(api_schema, server):
    """Generated ids rarely name a real job: validate the answers about real ones too."""
    with httpx.Client(base_url=server, timeout=30) as http:
        created = http.post("/api/jobs/render", json={"projectId": "schema", "conceptInputs": {"floors": 2}})
        api_schema["/api/jobs/render"]["POST"].validate_response(created)
        job_id = created.json()["jobId"]
        pending = http.post("/api/jobs/render", json={"projectId": "schema"}).json()["jobId"]
        waiting = http.get(f"/api/jobs/{pending}")
        api_schema["/api/jobs/{jobId}"]["GET"].validate_response(waiting)
        assert isinstance(waiting.json()["job"]["etaSeconds"], float)
        http.post(f"/api/jobs/{pending}/cancel")
        processed = http.post(f"/api/jobs/{job_id}/process")
        for _ in range(100):  # bounded: the server holds each GET up to its 0.2 s cap
            polled = http.get(f"/api/jobs/{job_id}", params={"projectId": "schema"}, headers={"Prefer": "wait=1"})
            if polled.json()["job"]["status"] == "completed":
                break
        answers = {
            ("/api/jobs/{jobId}/process", "POST"): processed,
            ("/api/jobs/{jobId}", "GET"): polled,
            ("/api/jobs", "GET"): http.get("/api/jobs", params={"limit": 5}),
            ("/api/jobs/{jobId}/events", "GET"): http.get(f"/api/jobs/{job_id}/events"),
            ("/api/jobs/{jobId}/retry", "POST"): http.post(f"/api/jobs/{pending}/retry"),
            ("/api/jobs/{jobId}/cancel", "POST"): http.post(f"/api/jobs/{pending}/cancel"),
            ("/api/health", "GET"): http.get("/api/health"),
        }
        assert polled.json()["job"]["status"] == "completed" and polled.json()["job"]["etaSeconds"] is None
        for (path, method), response in answers.items():
            assert response.status_code < 300, (path, response.text)
            api_schema[path][method].validate_response(response)
        image = http.get(answers[("/api/jobs/{jobId}", "GET")].json()["job"]["imageUrl"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
