"""The app's runtime (one per server process) and the Streamlit-free helpers behind its pages, on
real stores and real workers."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from jobs_core import JobService, JobStatus, JobStore, Worker
from jobs_core.app_runtime import AppRuntime, live_workers
from jobs_core.app_settings import AppSettings, load_app_settings
from jobs_core.brief_form import EXAMPLE_BRIEFS, brief_problems, field_bounds, field_choices
from jobs_core.direct_render import render_directly
from jobs_core.eta import Typical, eta_seconds, typical_run
from jobs_core.ids import new_job_id
from jobs_core.lifecycle import Lease
from jobs_core.models import ConceptInputs, Job, utcnow
from jobs_core.monitor import JobIndex
from jobs_core.provider_keys import PROVIDER_KEYS, copy_provider_keys
from jobs_core.store.base import WorkerInfo
from jobs_core.words import ago_text, attempt_seconds, brief_summary, count_text, duration_text, elapsed_seconds, plain
from pages import runtime_for

ROOT = Path(__file__).resolve().parent.parent
PROCESS_WIDE = (AppRuntime, JobService, JobStore, JobIndex, Worker)


def wait_final(service: JobService, job_id: str, seconds: float = 30) -> JobStatus:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = service.get(job_id).status
        if status.is_final:
            return status
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} is still {status.value} after {seconds} s")


# -- provider keys --------------------------------------------------------------------------------
def test_provider_keys_are_copied_from_secrets_only_where_the_environment_has_none():
    environ = {"OPENAI_API_KEY": "from-shell"}
    secrets = {"providers": {"OPENAI_API_KEY": "from-secrets", "STABILITY_API_KEY": "stab"},
               "REPLICATE_API_TOKEN": "rep", "FAL_KEY": 42, "UNRELATED": "x"}
    copied = copy_provider_keys(secrets, environ)
    assert copied == ["STABILITY_API_KEY", "REPLICATE_API_TOKEN"]
    assert environ == {"OPENAI_API_KEY": "from-shell", "STABILITY_API_KEY": "stab", "REPLICATE_API_TOKEN": "rep"}


def test_no_secrets_copy_nothing():
    environ: dict[str, str] = {}
    assert copy_provider_keys({}, environ) == [] and environ == {}


def test_the_app_copies_provider_keys_from_streamlit_secrets(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    for name in PROVIDER_KEYS:  # set then delete, so monkeypatch restores the real environment afterwards
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setenv("STABILITY_API_KEY", "from-shell")
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.secrets["providers"] = {"OPENAI_API_KEY": "sk-test", "STABILITY_API_KEY": "from-secrets"}
    try:
        app.run()
        assert not app.exception
        assert os.environ["OPENAI_API_KEY"] == "sk-test"
        assert os.environ["STABILITY_API_KEY"] == "from-shell"
    finally:
        st.cache_resource.clear()


# -- one runtime per process --------------------------------------------------------------------
def app_threads() -> list[str]:
    return sorted(thread.name for thread in threading.enumerate() if thread.name.startswith("jobs-"))


def test_every_session_and_both_pages_share_one_runtime_kept_out_of_session_state(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("JOBS_STORE_URL", f"memory://one-runtime-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("JOBS_APP_WORKERS", "1")
    before = app_threads()
    sessions = [AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run() for _ in range(2)]
    try:
        for app in sessions:
            app.run()  # reruns start nothing either
            for page in ("pages/monitor.py", "pages/render.py"):
                app.switch_page(page).run()
                assert not app.exception, (page, app.exception)
        runtime = runtime_for(load_app_settings())  # the cached one, as the pages reached it
        assert runtime.workers_running and runtime.worker.concurrency == 1
        senders = [f"jobs-webhooks-{index}" for index in range(runtime.worker.webhooks.settings.senders)]
        assert app_threads() == sorted(before + ["jobs-maintenance", "jobs-worker-0", *senders])  # one pool
        for app in sessions:  # per-tab state only: the runtime is reached through app_runtime()
            assert not [key for key, value in app.session_state.items() if isinstance(value, PROCESS_WIDE)]
    finally:
        st.cache_resource.clear()
    assert not runtime.workers_running  # released with the cache: workers stopped
    assert app_threads() == before


def test_sessions_opening_the_monitor_at_once_build_one_index(tmp_path):
    runtime = AppRuntime.start(AppSettings(str(tmp_path / "jobs"), workers=0))
    try:
        for number in range(50):
            runtime.service.submit({"projectId": f"p{number % 5}"})
        start = threading.Barrier(8)

        def open_monitor(_: int) -> JobIndex:
            start.wait()
            return runtime.monitor_index()

        with ThreadPoolExecutor(8) as pool:
            indexes = list(pool.map(open_monitor, range(8)))
        assert len({id(index) for index in indexes}) == 1
        assert len(indexes[0].frame()) == 50
    finally:
        runtime.stop()


def test_the_monitor_index_is_the_runtimes_own_and_follows_its_store():
    runtime = AppRuntime.start(AppSettings(f"memory://index-{uuid.uuid4().hex[:12]}", workers=0))
    try:
        index = runtime.monitor_index()
        assert index.frame().empty
        job = runtime.service.submit({"projectId": "seen"})
        deadline = time.monotonic() + 10
        while job.job_id not in set(runtime.monitor_index().frame()["job"]):  # kept current, not rebuilt
            assert time.monotonic() < deadline, "the index never saw the new job"
            time.sleep(0.05)
        assert runtime.monitor_index() is index
    finally:
        runtime.stop()


IMPORT_EVERY_MODULE = """
import importlib, pkgutil, sys, threading, jobs_core
for module in pkgutil.walk_packages(jobs_core.__path__, "jobs_core."):
    if not module.name.endswith("__main__"):  # that one runs the command line
        importlib.import_module(module.name)
print(threading.active_count(), "streamlit" in sys.modules)
"""


def test_importing_the_library_starts_no_thread_and_never_imports_streamlit():
    out = subprocess.run([sys.executable, "-c", IMPORT_EVERY_MODULE], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert out.stdout.split() == ["1", "False"], out.stderr


def test_the_apps_pool_runs_jobs_submitted_by_another_process_view_of_the_store(tmp_path):
    runtime = AppRuntime.start(AppSettings(str(tmp_path / "jobs"), workers=1))
    try:
        outsider = JobService.from_env(tmp_path / "jobs")  # e.g. the CLI or the API on the same JOBS_DIR
        job = outsider.submit({"projectId": "shared", "conceptInputs": {"floors": 3}})
        assert wait_final(outsider, job.job_id) is JobStatus.COMPLETED
        assert outsider.image(outsider.get(job.job_id))[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        runtime.stop()
    assert not runtime.workers_running


def test_the_pool_is_woken_only_once_a_queued_job_can_be_claimed(tmp_path):
    """A claimer skips a job whose lock is held (it never waits for one). Woken by a create that
    still held the new job's lock, the app's pool slept a whole poll interval: 1 Render in 4."""
    service = JobService.from_env(tmp_path / "jobs")
    store = service.store
    claimable: list[bool] = []
    wake = store.notify_work

    def wake_and_check() -> None:
        for _, job_id in store.pending():
            held = store.locks.try_hold(job_id)
            claimable.append(held is not None)
            if held is not None:
                store.locks.release(held)
        wake()

    store.notify_work = wake_and_check
    job = service.submit({"projectId": "wake", "conceptInputs": {"floors": 3}})
    service.cancel(job.job_id)
    service.retry(job.job_id)  # queued again, by a change of the job
    assert claimable and all(claimable), claimable


def test_a_runtime_without_workers_leaves_jobs_pending():
    runtime = AppRuntime.start(AppSettings(f"memory://idle-{uuid.uuid4().hex[:12]}", workers=0))
    try:
        job = runtime.service.submit({"projectId": "idle"})
        assert runtime.worker is None and not runtime.workers_running
        assert runtime.service.get(job.job_id).status is JobStatus.PENDING
    finally:
        runtime.stop()


def test_live_workers_are_seen_through_fresh_heartbeats_only(memory_service):
    service = memory_service
    job = service.submit({"projectId": "beats"})
    service.claim(job.job_id, "host-a-1", "beats")
    assert list(live_workers(service)) == ["host-a-1"]
    later = utcnow() + timedelta(seconds=service.settings.lease_seconds + 1)
    assert live_workers(service, now=later) == {}
    shorter_lease = JobService(service.store, replace(service.settings, lease_seconds=0.0))
    assert live_workers(shorter_lease, now=utcnow() + timedelta(milliseconds=1)) == {}


# -- the form -----------------------------------------------------------------------------------
def test_form_choices_and_bounds_are_read_from_the_model():
    assert field_choices("footprint") == ["bar", "L", "U", "courtyard", "tower"]
    assert field_bounds("floors") == (1, 120)
    assert field_bounds("floor_height") == (2.4, 8)


def test_every_example_brief_is_a_valid_concept():
    for name, brief in EXAMPLE_BRIEFS.items():
        assert brief_problems("demo", brief) == {}, name
        assert set(brief) == {field.alias or key for key, field in ConceptInputs.model_fields.items()}, name


def test_brief_problems_name_the_field_with_one_sentence_each():
    problems = brief_problems("my project", {"width": 1, "footprint": "star", "floors": 5})
    assert problems == {
        "projectId": "projectId 'my project' may only contain letters, digits, '-' and '_'.",
        "width": "width must be at least 3 (got 1).",
        "footprint": "footprint must be 'bar', 'L', 'U', 'courtyard' or 'tower' (got 'star').",
    }


def test_direct_render_draws_without_creating_a_job(memory_service):
    service = memory_service
    stages: list[str] = []
    result, seconds = render_directly(service, "direct", "plan", {"title": "Direct"},
                                      lambda percent, stage: stages.append(stage))
    assert result.png[:8] == b"\x89PNG\r\n\x1a\n" and seconds > 0
    assert stages and stages[-1] == "saving" and "encoding" in stages
    assert service.list().jobs == []


def test_direct_render_refuses_an_unknown_render_type(memory_service):
    with pytest.raises(Exception, match="renderType 'sketch' is not one of"):
        render_directly(memory_service, "direct", "sketch", {}, lambda *_: None)


def test_durations_read_like_a_person_would_say_them():
    assert duration_text(2.345) == "2.3 s"
    assert duration_text(42) == "42 s"
    assert duration_text(125) == "2 min 05 s"
    assert duration_text(3 * 3600 + 60) == "3 h 01 min"


SLOW_RUNTIME_SCRIPT = """
import sys, threading, time
from jobs_core.app_runtime import AppRuntime
from jobs_core.app_settings import AppSettings
from jobs_core.renderers import Renderer, RenderResult, register

started = threading.Event()

class Slow(Renderer):  # a render that takes long enough to be running when the process exits
    name = "slow"
    render_types = ("axonometric",)
    def render(self, task, progress):
        started.set()
        for percent in range(1, 100):
            progress(percent, "drawing slowly")
            time.sleep(0.05)
        return RenderResult(png=b"")

register("slow", Slow)
runtime = AppRuntime.start(AppSettings(sys.argv[1], workers=1))
job = runtime.service.submit({"projectId": "exit"}, renderer="slow")
started.wait(30)
print(job.job_id, flush=True)
sys.exit(0)  # a normal shutdown, as when `streamlit run` is stopped
"""


def test_a_process_that_exits_hands_its_running_jobs_back_to_the_queue(tmp_path):
    out = subprocess.run([sys.executable, "-c", SLOW_RUNTIME_SCRIPT, str(tmp_path / "jobs")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    service = JobService.from_env(tmp_path / "jobs")
    job = service.get(out.stdout.strip())
    assert job.status is JobStatus.PENDING and job.attempts == 0 and job.worker_id is None
    assert [event.type for event in service.events(job.job_id)][-1] == "released"


def test_brief_summary_describes_a_brief_and_tolerates_a_foreign_one():
    assert brief_summary(EXAMPLE_BRIEFS["Timber housing block"]) == "U 42 × 30 m, 5 floors, gable roof, timber"
    assert brief_summary({"width": "wide"}) == ""


def test_rules_spanning_two_fields_are_filed_under_their_field_with_a_sentence():
    assert brief_problems("demo", {"width": 300, "depth": 3}) == {
        "width": "A 300 x 3 m footprint is more than 20 times longer than it is deep; make width and depth closer."}
    assert brief_problems("demo", {"footprint": "courtyard", "width": 5, "depth": 5}) == {
        "footprint": "A courtyard footprint needs width and depth of at least 9 m (got 5 x 5 m)."}
    assert brief_problems("demo", {"floors": 120, "floorHeight": 8}) == {
        "floors": "120 floors of 8 m make a 960 m tall building; the most is 500 m."}
    # out of range on its own field first; the rule about the whole waits until the fields are right
    assert set(brief_problems("demo", {"floors": 0, "width": 10000})) == {"floors", "width"}


# -- words ----------------------------------------------------------------------------------------
def test_text_a_person_typed_is_escaped_for_markdown():
    shown = plain("**bold** :red[x] [a](http://example.com) `code` # title <b>")
    assert "**" not in shown.replace("\\*", "") and "\\:red\\[x\\]" in shown
    assert "http\u2060\\:" in shown  # no autolink: GitHub-flavoured Markdown links bare URLs even when escaped


def test_counts_have_correct_plurals_and_times_are_relative():
    assert count_text(1, "floor") == "1 floor" and count_text(5, "floor") == "5 floors"
    assert "1 floor," in brief_summary({"floors": 1})
    now = utcnow()
    assert ago_text(now, now) == "just now"
    assert ago_text(now - timedelta(minutes=3), now) == "3 min ago"
    assert ago_text(now - timedelta(days=1, hours=2), now) == "1 day ago"


def test_running_and_completed_times_count_the_current_attempt(memory_service):
    service = memory_service
    job = service.submit({"projectId": "attempts"})
    lease = Lease.of(service.claim(job.job_id, "w-1", "attempts"))
    service.fail(lease, "The provider timed out.", retryable=False)
    old = service.get(job.job_id)
    later = old.finished_at + timedelta(minutes=10)
    # a retry ten minutes later: the new attempt starts its clock when a worker takes it
    retried = replace_times(service.retry(job.job_id, "attempts"), created=old.created_at)
    assert attempt_seconds(retried, later) == 0.0
    running = service.claim(job.job_id, "w-2", "attempts")
    assert attempt_seconds(running, running.started_at + timedelta(seconds=26)) == 26.0
    assert elapsed_seconds(running, running.started_at) < 60  # not since the job was first created


def replace_times(job, created):
    return job.model_copy(update={"created_at": created})


# -- the ETA learned from finished jobs -----------------------------------------------------------
def finished_job(service: JobService, renderer: str, render_type: str, seconds: float, end) -> None:
    """A completed job whose last attempt ran exactly `seconds` (written whole into the store)."""
    job = Job(job_id=new_job_id(), concept_id="cpt_eta", project_id="eta", render_type=render_type,
              renderer=renderer, status=JobStatus.COMPLETED, progress=100, stage="done", attempts=1,
              started_at=end - timedelta(seconds=seconds), finished_at=end, created_at=end - timedelta(seconds=99),
              updated_at=end)
    service.store.create(job, None)


def test_the_eta_is_learned_from_finished_jobs_of_the_same_renderer_and_render_type(memory_service):
    service = memory_service
    end = utcnow()
    for seconds in [35, 40, 42, 45, 50]:
        finished_job(service, "openai", "axonometric", seconds, end)
    finished_job(service, "openai", "plan", 300, end)  # another render type: not counted
    finished_job(service, "axonometric", "axonometric", 0.2, end)  # another renderer: not counted
    typical = typical_run(service, "openai", "axonometric")
    assert typical == Typical(low=35, median=42, high=45, samples=5)
    assert typical_run(service, "openai", "elevation") is None  # no history: no guess
    # a running job 22 s into its attempt: about 20 s left; past the usual time: 0 ("any moment")
    job = service.submit({"projectId": "eta"}, renderer="axonometric")
    running = service.claim(job.job_id, "w-eta", "eta").model_copy(update={"renderer": "openai"})
    assert eta_seconds(service, running, now=running.started_at + timedelta(seconds=22)) == 20
    assert eta_seconds(service, running, now=running.started_at + timedelta(seconds=90)) == 0
    # a pending job third in the queue, one live worker that can run it: three usual runs
    queued = [service.submit({"projectId": "eta"}, renderer="axonometric") for _ in range(3)]
    service.store.record_worker(WorkerInfo("w-openai", ("openai",), utcnow()))
    third = queued[2].model_copy(update={"renderer": "openai"})
    assert service.queue_position(third) == 3
    assert eta_seconds(service, third) == 3 * 42
    assert eta_seconds(service, service.get(job.job_id).model_copy(update={"status": JobStatus.COMPLETED})) is None
