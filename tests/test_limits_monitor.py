"""The monitor shows the fleet's provider limits: each capped renderer's slots in use, and the
renderers a provider's 429 paused (issue 19, part 4)."""
from __future__ import annotations

from datetime import timedelta

from test_monitor_page import open_monitor, store_dir  # noqa: F401 - the generated store of 400 jobs

from jobs_core import FileJobStore
from jobs_core.lifecycle import claim
from jobs_core.limits import RendererPause
from jobs_core.models import utcnow
from jobs_core.service import JobService


def limits_lines(app) -> list[str]:
    return [caption.value for caption in app.main.caption if caption.value.startswith("Provider limits:")]


def test_the_monitor_shows_slots_in_use_and_a_provider_s_pause(store_dir, monkeypatch):  # noqa: F811
    monkeypatch.setenv("JOBS_RENDERER_LIMITS", "noop=2,automatic1111=1")
    store = FileJobStore(store_dir)
    service = JobService(store)
    running = service.submit({"projectId": "limits", "conceptInputs": {"floors": 2}}, renderer="noop")
    store.modify(running.job_id, running.project_id, lambda stored: claim(stored, "w-monitor"))
    until = utcnow() + timedelta(minutes=10)
    store.pause_renderer(RendererPause("automatic1111", until, "too many requests"))

    app = open_monitor()
    assert not app.exception, [e.message for e in app.exception]
    assert limits_lines(app) == [
        f"Provider limits: automatic1111 paused by its provider until {until:%H:%M:%S} UTC (too many requests); "
        "noop 1 of 2 slots in use."]


def test_without_limits_or_pauses_the_monitor_says_nothing_of_them(store_dir, monkeypatch):  # noqa: F811
    monkeypatch.delenv("JOBS_RENDERER_LIMITS", raising=False)
    app = open_monitor()
    assert not app.exception, [e.message for e in app.exception]
    assert limits_lines(app) == []
