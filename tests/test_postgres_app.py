"""The Streamlit app and its monitor page on PostgreSQL, selected by JOBS_STORE_URL alone."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from postgres_scratch import create_schema, drop_schema, require_postgres, schema_url
from test_app import jobs_in_every_state, press_render, run_app, wait_for

from jobs_core import JobService, JobStatus

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobService]:
    require_postgres()
    schema = create_schema()
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("JOBS_STORE_URL", schema_url(schema))
    monkeypatch.delenv("JOBS_DIR", raising=False)
    monkeypatch.setenv("JOBS_APP_WORKERS", "1")
    monkeypatch.setenv("JOBS_RENDER_SIZE", "256")
    service = JobService.from_env()
    yield service
    st.cache_resource.clear()  # the app's worker pool and store, as at a server shutdown
    service.store.close()
    drop_schema(schema)


def test_the_app_renders_a_concept_on_postgres(service: JobService):
    app = run_app("pg-site")
    app.selectbox(key="field_example").select("Brick school").run()
    press_render(app)
    job = wait_for(service, app.session_state["active_job"], lambda job: job.status.is_final)
    assert job.status is JobStatus.COMPLETED
    app.run()
    assert not app.exception
    assert len(app.get("image")) >= 1
    assert service.image(job)[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_page_runs_on_postgres_with_jobs_in_every_state(service: JobService):
    made = jobs_in_every_state(service, project="demo")
    for page in ("pages/render.py", "pages/monitor.py"):
        app = run_app("demo", made[JobStatus.COMPLETED].job_id)
        app.switch_page(page).run()
        assert not app.exception, (page, app.exception)
