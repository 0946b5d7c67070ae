"""What the Streamlit app needs from the library, without Streamlit.

The app keeps one `EmbeddedRuntime` per server process (the app wraps `start_runtime` in
`st.cache_resource`): the service on the configured store and, unless disabled, a worker pool that
shares that store with any external `python -m jobs_core worker`. Nothing here imports streamlit,
so every function is testable on its own and usable by other front ends.
"""
from __future__ import annotations

import atexit
import os
import time
import typing
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from .config import env_number, load_settings
from .errors import InvalidInput
from .ids import validate_id
from .lifecycle import is_expired
from .models import ConceptInputs, Job, JobStatus, explain, utcnow
from .renderers import RenderResult, RenderTask, get_renderer
from .service import JobService
from .worker import Worker

#: Provider keys the app copies from Streamlit secrets into the environment when not already set.
PROVIDER_KEYS = ("OPENAI_API_KEY", "STABILITY_API_KEY", "REPLICATE_API_TOKEN", "GEMINI_API_KEY",
                 "GOOGLE_API_KEY", "FAL_KEY", "HF_TOKEN")

#: Ready-made briefs a person can start from (values for ConceptInputs fields).
EXAMPLE_BRIEFS: dict[str, dict[str, Any]] = {
    "Timber housing block": {
        "title": "Timber housing block", "description": "Five storeys of cross-laminated timber flats "
        "around a shared garden.", "buildingType": "housing", "footprint": "U", "width": 42.0,
        "depth": 30.0, "floors": 5, "floorHeight": 3.1, "roof": "gable", "material": "timber",
        "palette": "earth", "windowRatio": 0.35},
    "Brick school": {
        "title": "Brick primary school", "description": "Two-storey school with a courtyard playground.",
        "buildingType": "school", "footprint": "courtyard", "width": 60.0, "depth": 48.0, "floors": 2,
        "floorHeight": 4.0, "roof": "flat", "material": "brick", "palette": "warm", "windowRatio": 0.3},
    "Glass office tower": {
        "title": "Harbour office tower", "description": "Slender office tower on a compact plot.",
        "buildingType": "office", "footprint": "tower", "width": 40.0, "depth": 40.0, "floors": 24,
        "floorHeight": 3.8, "roof": "flat", "material": "glass", "palette": "cool", "windowRatio": 0.8},
    "Concrete workshop": {
        "title": "Makers' workshop", "description": "Long single-storey workshop with north lights.",
        "buildingType": "industrial", "footprint": "bar", "width": 54.0, "depth": 20.0, "floors": 1,
        "floorHeight": 6.0, "roof": "sawtooth", "material": "concrete", "palette": "monochrome", "windowRatio": 0.25},
}

STATUS_COLOURS = {JobStatus.PENDING: "blue", JobStatus.PROCESSING: "orange", JobStatus.COMPLETED: "green",
                  JobStatus.FAILED: "red", JobStatus.CANCELED: "gray"}


# -- the per-process runtime ----------------------------------------------------------------------
@dataclass
class EmbeddedRuntime:
    """The service the pages use and this process's worker pool (None when disabled)."""

    service: JobService
    worker: Worker | None
    started_at: datetime = field(default_factory=utcnow)

    @property
    def workers_running(self) -> bool:
        return self.worker is not None and self.worker.alive

    def stop(self) -> None:
        """Stop the pool: running jobs go back to pending for the next worker."""
        atexit.unregister(self.stop)
        if self.worker is not None:
            self.worker.stop()
        self.service.store.close()


def app_worker_count() -> int:
    """Threads in the app's embedded pool: JOBS_APP_WORKERS (default 1; 0 = external workers only)."""
    return int(env_number("JOBS_APP_WORKERS", 1, 0))


def app_max_wait_seconds() -> float:
    """How long the render page polls before it asks whether to keep waiting (JOBS_APP_MAX_WAIT_SECONDS)."""
    return env_number("JOBS_APP_MAX_WAIT_SECONDS", 120.0, 1.0)


def app_poll_seconds() -> float:
    """Interval of the page's live status refresh (JOBS_APP_POLL_SECONDS, default 0.5 s)."""
    return env_number("JOBS_APP_POLL_SECONDS", 0.5, 0.2)


def start_runtime(store_location: str, concurrency: int) -> EmbeddedRuntime:
    """Open the store and start `concurrency` worker threads on it (none when 0)."""
    service = JobService.from_env(store_location)  # a directory or a postgresql:// URL
    worker = Worker(service, concurrency).start() if concurrency > 0 else None
    runtime = EmbeddedRuntime(service, worker)
    # A server that shuts down hands its running jobs back at once instead of leaving them for
    # the lease to expire (a kill -9 still loses nothing: another worker reclaims them later).
    atexit.register(runtime.stop)
    return runtime


def store_location() -> str:
    """The store this process uses (JOBS_STORE_URL, else JOBS_DIR, else ./.jobs)."""
    return load_settings().store_location


def live_workers(service: JobService, now: datetime | None = None) -> dict[str, datetime]:
    """Workers seen alive through their running jobs' heartbeats: workerId -> last heartbeat.

    An idle external worker leaves no trace in the store, so this only shows workers at work.
    """
    now = now or utcnow()
    seen: dict[str, datetime] = {}
    for job in service.store.processing():
        if job.worker_id and job.heartbeat_at and not is_expired(job, service.settings.lease_seconds, now):
            seen[job.worker_id] = max(job.heartbeat_at, seen.get(job.worker_id, job.heartbeat_at))
    return seen


def copy_provider_keys(secrets: Mapping[str, Any], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy known provider keys from `secrets` (its `[providers]` table, else its top level) into
    the environment where they are not set yet.

    Returns the names copied (never the values). The environment wins: a key exported in the shell
    is not overridden by a secrets file.
    """
    environ = os.environ if environ is None else environ
    table = secrets.get("providers")
    sources = [table, secrets] if isinstance(table, Mapping) else [secrets]
    copied = []
    for name in PROVIDER_KEYS:
        value = next((source[name] for source in sources if source.get(name)), None)
        if isinstance(value, str) and not environ.get(name):
            environ[name] = value
            copied.append(name)
    return copied


# -- the brief form ---------------------------------------------------------------------------
def field_choices(name: str) -> list[str]:
    """The allowed values of a Literal field of ConceptInputs, read from the model itself."""
    annotation = ConceptInputs.model_fields[name].annotation
    return [str(choice) for choice in typing.get_args(annotation)]


def field_bounds(name: str) -> tuple[float | None, float | None]:
    """(minimum, maximum) of a numeric ConceptInputs field, from its ge/le constraints."""
    low = high = None
    for rule in ConceptInputs.model_fields[name].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


def field_default(name: str) -> Any:
    return ConceptInputs.model_fields[name].default


def field_max_length(name: str) -> int | None:
    for rule in ConceptInputs.model_fields[name].metadata:
        if getattr(rule, "max_length", None) is not None:
            return rule.max_length
    return None


def brief_problems(project_id: str, inputs: Mapping[str, Any]) -> dict[str, str]:
    """Field name (camelCase, or "projectId") -> one sentence saying what is wrong; empty when valid."""
    problems: dict[str, str] = {}
    try:
        validate_id(project_id, "projectId")
    except InvalidInput as error:
        problems["projectId"] = str(error)
    try:
        ConceptInputs.model_validate(dict(inputs))
    except ValidationError as error:
        sentences = explain(error, "conceptInputs").rstrip(".").split("; ")
        for item, sentence in zip(error.errors(include_url=False), sentences, strict=False):
            name = str(item["loc"][0]) if item["loc"] else "conceptInputs"
            problems.setdefault(name, sentence.removeprefix("conceptInputs.") + ".")
    return problems


# -- the direct (no job) render, kept for comparison -------------------------------------------
def render_directly(service: JobService, project_id: str, render_type: str, inputs: Mapping[str, Any],
                    progress: Callable[[int, str], None]) -> tuple[RenderResult, float]:
    """Run the renderer in the caller's thread, without a job: (result, seconds). The old way."""
    renderer = get_renderer(service.settings.renderer)
    renderer.check_render_type(render_type)
    concept = ConceptInputs.model_validate(dict(inputs))
    task = RenderTask("direct", validate_id(project_id, "projectId"), render_type, concept.model_dump())
    started = time.perf_counter()
    result = renderer.render(task, progress)
    return result, time.perf_counter() - started


def render_types(service: JobService) -> list[str]:
    return list(get_renderer(service.settings.renderer).render_types)


# -- words for people ---------------------------------------------------------------------------
def brief_summary(inputs: Mapping[str, Any]) -> str:
    """One line describing a brief ("U 42 x 30 m, 5 floors, gable roof, timber"); "" if unreadable."""
    try:
        brief = ConceptInputs.model_validate(dict(inputs))
    except ValidationError:
        return ""
    return (f"{brief.footprint} {brief.width:g} × {brief.depth:g} m, {brief.floors} floors, "
            f"{brief.roof} roof, {brief.material}")


def duration_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def elapsed_seconds(job: Job, now: datetime | None = None) -> float:
    """Seconds since the job was created, up to when it finished."""
    end = job.finished_at if job.status.is_final and job.finished_at else (now or utcnow())
    return (end - job.created_at).total_seconds()


def ago_text(moment: datetime, now: datetime | None = None) -> str:
    delta: timedelta = (now or utcnow()) - moment
    return f"{duration_text(delta.total_seconds())} ago"


def thumbnail(png: bytes, width: int = 360) -> bytes:
    """A smaller PNG for galleries (the full image stays in the store)."""
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(png)) as image:
        image.thumbnail((width, width))
        out = BytesIO()
        image.save(out, "PNG")
    return out.getvalue()
