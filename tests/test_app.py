"""The Streamlit app through AppTest: every page, the form, and a job's whole life on the render page.

AppTest runs the app in this process, so a named memory store (JOBS_STORE_URL=memory://NAME) is
the one store of both the app and the test; the tests about files in the store use a real jobs
directory. Real worker threads (the app's own pool, or one started here), real renderer. Waiting
for a job is a bounded poll on the store's real state.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from jobs_core import Job, JobService, JobStatus, Worker
from jobs_core.brief_form import EXAMPLE_BRIEFS
from jobs_core.ids import new_job_id
from jobs_core.lifecycle import Lease
from jobs_core.models import utcnow
from jobs_core.renderers import RenderTask, get_renderer

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = ["pages/render.py", "pages/monitor.py"]


@pytest.fixture
def app_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Small renders and no worker in the app unless a test asks for one."""
    monkeypatch.chdir(ROOT)  # .streamlit/config.toml is read from the working directory
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    monkeypatch.setenv("JOBS_RENDER_SIZE", "256")
    monkeypatch.setenv("JOBS_RETRY_BACKOFF_SECONDS", "0")
    yield
    st.cache_resource.clear()  # stops the app's runtime (on_release), like a server shutdown


@pytest.fixture
def store_url(app_settings: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh memory store, shared by the app and the test."""
    url = f"memory://test-app-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("JOBS_STORE_URL", url)
    monkeypatch.delenv("JOBS_DIR", raising=False)
    return url


@pytest.fixture
def service(store_url: str) -> JobService:
    return JobService.from_env()


@pytest.fixture
def jobs_dir(app_settings: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh jobs directory, for the tests about the files in the store."""
    root = tmp_path / "jobs"
    monkeypatch.setenv("JOBS_DIR", str(root))
    monkeypatch.delenv("JOBS_STORE_URL", raising=False)
    return root


@pytest.fixture
def file_service(jobs_dir: Path) -> JobService:
    return JobService.from_env(jobs_dir)


def run_app(project: str | None = "demo", job_id: str | None = None) -> AppTest:
    app = AppTest.from_file(APP, default_timeout=60)
    if project is not None:
        app.query_params["project"] = project
    if job_id is not None:
        app.query_params["job"] = job_id
    return app.run()


def texts(app: AppTest) -> str:
    """Everything a person reads on the page, in one string."""
    parts = [e.value for kind in ("markdown", "caption", "error", "warning", "info", "success", "subheader",
                                  "title") for e in app.get(kind)]
    parts += [str(getattr(bar, "proto", "")) for bar in app.get("progress")]
    return "\n".join(str(part) for part in parts)


def press_render(app: AppTest) -> AppTest:
    app.button(key="render").click()
    return app.run()


def wait_for(service: JobService, job_id: str, done: Callable[[Job], bool], seconds: float = 60) -> Job:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job = service.get(job_id)
        if done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never reached the expected state; it is {job.status.value}")


def claim(service: JobService, job: Job) -> Lease:
    return Lease.of(service.claim(job.job_id, "test-worker", job.project_id))


def jobs_in_every_state(service: JobService, project: str = "demo") -> dict[JobStatus, Job]:
    """One job per status, made through the service's real transitions."""
    made = {status: service.submit({"projectId": project, "conceptInputs": {"title": f"{status.value} job"}})
            for status in JobStatus}
    lease = claim(service, made[JobStatus.PROCESSING])
    service.report_progress(lease, 40, "drawing facades")
    lease = claim(service, made[JobStatus.COMPLETED])
    task = RenderTask(lease.job_id, project, "axonometric", made[JobStatus.COMPLETED].concept_inputs, 128)
    service.complete(lease, get_renderer("axonometric").render(task, lambda *_: None).png)
    service.fail(claim(service, made[JobStatus.FAILED]), "The provider refused the prompt.", retryable=False)
    service.cancel(made[JobStatus.CANCELED].job_id, project)
    return {status: service.get(job.job_id) for status, job in made.items()}


# -- every page, on a store with jobs in every state and a corrupt file ----------------------------
def foreign_completed_job(service: JobService, project: str = "demo") -> Job:
    """A completed job whose brief another client wrote oddly (the job document allows any dict)."""
    job = Job(job_id=new_job_id(), concept_id="cpt_foreign", project_id=project, render_type="axonometric",
              concept_inputs={"width": "wide", "title": 7})
    service.store.create(job, None)
    lease = claim(service, job)
    return service.complete(lease, get_renderer("noop").render(None, lambda *_: None).png)


def test_every_page_runs_without_exception_on_every_job_state_and_a_corrupt_file(file_service, jobs_dir):
    jobs = jobs_in_every_state(file_service)
    odd = foreign_completed_job(file_service)
    (jobs_dir / "jobs" / "demo" / "job_corrupt.json").write_text("{ this is not json")
    for job_id in [None, odd.job_id, *(job.job_id for job in jobs.values())]:
        app = run_app("demo", job_id)
        assert not app.exception, (job_id, app.exception)
        for page in PAGES:
            app.switch_page(page).run()
            assert not app.exception, (page, job_id, app.exception)
    app = run_app("demo")
    shown = texts(app)
    assert "not readable jobs" in shown and "job_corrupt.json" in shown
    badges = {e.value for e in app.markdown if "badge" in e.value}
    for word in ["queued", "rendering", "done", "failed", "canceled"]:  # a badge per status, in plain words
        assert any(word in badge for badge in badges), word


def test_a_url_naming_a_missing_or_malformed_job_is_explained(service):
    for job_id in ["job_01ZZZZZZZZZZZZZZZZZZZZZZZZ", "../../etc/passwd"]:
        app = run_app("demo", job_id)
        assert not app.exception
        assert f"There is no job {job_id} in project demo (it may have been deleted)." in [i.value for i in app.info]
        assert "job" not in app.query_params


def test_sidebar_shows_the_store_and_the_worker_pool(service, monkeypatch):
    app = run_app()
    assert service.store.describe() in "\n".join(c.value for c in app.sidebar.code)
    assert "does not render by itself" in "\n".join(w.value for w in app.sidebar.warning)
    st.cache_resource.clear()
    monkeypatch.setenv("JOBS_APP_WORKERS", "2")
    app = run_app()
    assert "renders in the background" in "\n".join(s.value for s in app.sidebar.success)
    assert "2 threads" in "\n".join(c.value for c in app.sidebar.caption)


def test_a_bad_setting_is_explained_instead_of_a_traceback(store_url, monkeypatch):
    monkeypatch.setenv("JOBS_LEASE_SECONDS", "soon")
    app = run_app()
    assert not app.exception
    assert "The app cannot start: JOBS_LEASE_SECONDS='soon' is not a number." in [e.value for e in app.error]
    monkeypatch.delenv("JOBS_LEASE_SECONDS")
    monkeypatch.setenv("JOBS_RENDERER", "crayons")
    app = run_app()
    assert not app.exception
    [error] = [e.value for e in app.error]  # other renderers may be registered: only the start is fixed
    assert error.startswith("The app cannot start: Unknown renderer 'crayons'; choose one of: ")
    assert "axonometric" in error


# -- the form -----------------------------------------------------------------------------------
def test_an_invalid_project_id_is_explained_next_to_the_field_and_creates_nothing(service):
    app = run_app()
    app.text_input(key="field_project").set_value("my/project").run()
    press_render(app)
    assert not app.exception
    errors = [e.value for e in app.error]
    assert "projectId 'my/project' may only contain letters, digits, '-' and '_'." in errors
    assert service.list().jobs == []
    app.text_input(key="field_project").set_value("").run()
    press_render(app)
    assert "projectId is empty; give 1 to 64 letters, digits, '-' or '_'." in [e.value for e in app.error]
    assert service.list().jobs == []


def test_an_example_brief_fills_in_the_form(store_url):
    app = run_app()
    example = EXAMPLE_BRIEFS["Glass office tower"]
    app.selectbox(key="field_example").select("Glass office tower").run()
    assert app.text_input(key="field_title").value == example["title"]
    assert app.number_input(key="field_floors").value == example["floors"]
    assert app.selectbox(key="field_footprint").value == example["footprint"]


def test_form_choices_come_from_the_model(store_url):
    from jobs_core.models import ConceptInputs

    app = AppTest.from_file(APP, default_timeout=60)
    app.run()
    footprint = app.selectbox(key="field_footprint")
    assert list(footprint.options) == list(ConceptInputs.model_fields["footprint"].annotation.__args__)


# -- the job's life -----------------------------------------------------------------------------
def test_render_creates_a_job_and_returns_at_once_with_its_queue_position(service):
    app = run_app("site-7")
    app.text_input(key="field_title").set_value("Corner house")
    app.selectbox(key="field_render_type").select("plan")
    press_render(app)
    assert not app.exception
    [job] = service.list("site-7").jobs
    assert job.status is JobStatus.PENDING and job.render_type == "plan"
    assert job.concept_inputs["title"] == "Corner house"
    assert app.query_params["job"] == job.job_id and app.query_params["project"] == "site-7"
    shown = texts(app)
    assert "Queued: position 1 in the queue" in shown
    assert "No worker is running, so the job waits until one starts." in shown
    assert "Cancel" in [b.label for b in app.button]


def test_the_page_shows_the_finished_render_once_the_worker_is_done(service, monkeypatch):
    monkeypatch.setenv("JOBS_APP_WORKERS", "1")
    app = run_app("site-8")
    app.selectbox(key="field_example").select("Brick school").run()
    press_render(app)
    job_id = app.session_state["active_job"]
    job = wait_for(service, job_id, lambda job: job.status.is_final)
    assert job.status is JobStatus.COMPLETED
    app.run()
    assert not app.exception
    assert len(app.get("image")) >= 1
    assert "Download PNG" in [b.label for b in app.get("download_button")]
    assert "Brick primary school · 3D view (axonometric)" in [s.value for s in app.subheader]
    # one click renders the same concept in another type: same conceptId, new job
    app.selectbox(key=f"again_{job_id}").select("elevation").run()
    app.button(key=f"again_button_{job_id}").click().run()
    again = wait_for(service, app.session_state["active_job"], lambda job: job.status.is_final)
    assert again.job_id != job_id and again.concept_id == job.concept_id
    assert again.render_type == "elevation" and again.status is JobStatus.COMPLETED


def test_cancel_while_pending_then_retry(service):
    app = run_app()
    press_render(app)
    job_id = app.session_state["active_job"]
    app.button(key=f"cancel_{job_id}").click().run()
    assert not app.exception
    assert service.get(job_id).status is JobStatus.CANCELED
    assert "This render was canceled." in [w.value for w in app.warning]
    app.button(key=f"retry_{job_id}").click().run()
    assert service.get(job_id).status is JobStatus.PENDING
    assert "Queued: position 1 in the queue" in texts(app)


def test_cancel_while_processing_stops_the_render(service):
    app = run_app()
    press_render(app)
    job_id = app.session_state["active_job"]
    lease = claim(service, service.get(job_id))
    app.run()
    app.button(key=f"cancel_{job_id}").click().run()
    assert service.get(job_id).cancel_requested
    assert "Canceling…" in texts(app)
    # the renderer's next progress report is refused, and the worker confirms the cancel
    with pytest.raises(Exception, match="canceled"):
        service.report_progress(lease, 50, "drawing facades")
    service.confirm_cancel(lease)
    app.run()
    assert "This render was canceled." in [w.value for w in app.warning]


def test_a_failure_shows_the_jobs_error_and_retry_lets_a_worker_finish_it(service):
    app = run_app()
    press_render(app)
    job_id = app.session_state["active_job"]
    service.fail(claim(service, service.get(job_id)), "The provider refused the prompt.", retryable=False)
    app.run()
    assert not app.exception
    assert "The render failed: The provider refused the prompt." in [e.value for e in app.error]
    history = app.dataframe[0].value
    assert list(history["what"]) == ["created", "claimed", "failed"]
    assert history["note"].iloc[-1] == "The provider refused the prompt."
    app.button(key=f"retry_{job_id}").click().run()
    assert service.get(job_id).status is JobStatus.PENDING
    worker = Worker(service, 1, poll_seconds=0.05).start()
    try:
        done = wait_for(service, job_id, lambda job: job.status.is_final)
    finally:
        worker.stop()
    assert done.status is JobStatus.COMPLETED and done.attempts == 1
    app.run()
    assert len(app.get("image")) >= 1


def test_after_the_maximum_wait_the_page_says_it_is_still_running_and_offers_to_keep_waiting(
        service, monkeypatch):
    monkeypatch.setenv("JOBS_APP_MAX_WAIT_SECONDS", "1")
    app = run_app()
    press_render(app)
    job_id = app.session_state["active_job"]
    created = service.get(job_id).created_at.timestamp()
    while time.time() < created + 1.2:  # the condition under test is time itself passing
        time.sleep(0.05)
    app.run()
    warnings = [w.value for w in app.warning]
    assert any("still pending after" in w and "keeps going in the background" in w for w in warnings)
    app.button(key="keep_waiting").click().run()
    assert not any("still pending" in w.value for w in app.warning)


def test_direct_render_without_the_job_pattern_stores_no_job(service):
    app = run_app()
    app.checkbox(key="field_use_jobs").uncheck()
    press_render(app)
    assert not app.exception
    assert service.list().jobs == []
    assert len(app.get("image")) >= 1
    assert any("not in the background" in c.value for c in app.caption)


def test_a_second_tab_shows_the_same_jobs(service):
    first = run_app("shared-1")
    first.text_input(key="field_title").set_value("Shared brief")
    first.selectbox(key="field_render_type").select("elevation")
    press_render(first)
    job_id = first.session_state["active_job"]
    second = run_app("shared-1")  # a new session that only knows the project's URL
    assert any(s.value == "Renders in shared-1" for s in second.subheader)
    second.button(key=f"show_{job_id}").click().run()
    assert second.session_state["active_job"] == job_id
    assert "Queued: position 1 in the queue" in texts(second)
    reloaded = run_app("shared-1", job_id)  # a reload of the first tab's URL
    assert reloaded.session_state["active_job"] == job_id
    assert "Queued: position 1 in the queue" in texts(reloaded)
    assert reloaded.text_input(key="field_title").value == "Shared brief"
    assert reloaded.selectbox(key="field_render_type").value == "elevation"


def test_leaving_the_page_and_coming_back_keeps_the_project_brief_and_job(service):
    app = run_app("keep-1")
    app.text_input(key="field_title").set_value("Kept title")
    press_render(app)
    job_id = app.session_state["active_job"]
    app.switch_page("pages/monitor.py").run()
    assert not app.exception
    app.switch_page("pages/render.py").run()
    assert not app.exception
    assert app.text_input(key="field_project").value == "keep-1"
    assert app.text_input(key="field_title").value == "Kept title"
    assert app.session_state["active_job"] == job_id


def test_the_page_estimates_time_left_from_finished_jobs(service):
    end = utcnow()
    for seconds in [35, 40, 42, 45, 50]:  # finished renders of the same renderer and render type
        done = Job(job_id=new_job_id(), concept_id="cpt_eta", project_id="eta", render_type="axonometric",
                   renderer="axonometric", status=JobStatus.COMPLETED, progress=100, stage="done", attempts=1,
                   started_at=end - timedelta(seconds=seconds), finished_at=end, created_at=end - timedelta(minutes=5),
                   updated_at=end)
        service.store.create(done, None)
    app = run_app("eta")
    press_render(app)
    job_id = app.session_state["active_job"]
    assert "Usually 35 s–45 s; about 42 s left." in texts(app)  # first in the queue, no live worker: one run
    claim(service, service.get(job_id))
    app.run()
    assert "Usually 35 s–45 s; about 4" in texts(app)  # 42 s less what this attempt has run
