"""What the routes share (`ApiContext`, reached through the `api_context` dependency) and the
steps behind a route that are more than one JobService call: idempotent creates, queue positions
and run-time estimates, waiting for a job to finish."""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import anyio
from fastapi import Request
from fastapi.concurrency import run_in_threadpool

from ..errors import InvalidInput, JobNotFound, TransitionConflict
from ..eta import RunHistory
from ..ids import validate_id
from ..models import Job, JobStatus, RenderRequest
from ..service import JobService
from .errors import BadRequestBody
from .positions import QueuePositions
from .runner import InlineRunner
from .schemas import ApiJob, JobList
from .settings import ApiSettings
from .stream import StreamHub
from .stream_access import stream_access
from .waiting import WaitingReasons


@dataclass
class ApiContext:
    service: JobService
    settings: ApiSettings
    runner: InlineRunner
    workers: int
    positions: QueuePositions = field(init=False)
    history: RunHistory = field(init=False)  # etaSeconds: one listing of finished jobs for many polls
    waiting: WaitingReasons = field(init=False)  # waitingReason: one look at provider limits for many polls
    streams: StreamHub = field(init=False)  # GET /stream: the open streams and the one watch that wakes them
    # Creates with one Idempotency-Key are serialised in this process whatever the store;
    # across processes, the store's create refuses the duplicate.
    _key_locks: list[threading.Lock] = field(default_factory=lambda: [threading.Lock() for _ in range(64)])

    def __post_init__(self) -> None:
        self.positions = QueuePositions(self.service.store)
        self.history = RunHistory(self.service)
        self.waiting = WaitingReasons(self.service)
        self.streams = StreamHub(self.service.store, self.answer)

    # -- reading ---------------------------------------------------------------------------------
    def answer(self, job: Job) -> ApiJob:
        return self._answer(job, self.positions.of(job))

    def _answer(self, job: Job, position: int | None) -> ApiJob:
        return ApiJob.of(job, position, self.history.eta(job, position), self.waiting.of(job),
                         self.stream_access(job))

    def stream_access(self, job: Job) -> str | None:
        """The signature for the job's stream URL when the API has a token (EventSource can't send it)."""
        return stream_access(self.settings.token, job.job_id) if self.settings.token else None

    def read(self, job_id: str, project_id: str | None) -> ApiJob:
        return self.answer(self.service.get(job_id, project_id))

    async def wait_until_final(self, job: ApiJob, seconds: float, request: Request) -> ApiJob:
        """Re-read the job until it is final, `seconds` pass, or the client goes away."""
        deadline = time.monotonic() + seconds
        while not job.status.is_final:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or await request.is_disconnected():
                break
            await anyio.sleep(min(self.settings.wait_poll_seconds, remaining))
            job = await run_in_threadpool(self.read, job.job_id, job.project_id)
        return job

    def list_page(self, project_id: str | None, status: JobStatus | None, limit: int,
                  cursor: str | None) -> JobList:
        page = self.service.list(project_id, status, limit, cursor)
        positions = self.positions.of_many(page.jobs)
        # one queue listing and one run-time history serve the whole page
        return JobList(jobs=[self._answer(job, positions.get(job.job_id)) for job in page.jobs],
                       next_cursor=page.next_cursor)

    # -- changing --------------------------------------------------------------------------------
    def start(self, job_id: str, project_id: str | None) -> ApiJob:
        """POST /process: start rendering the job here if it is pending (see runner.py)."""
        job = self.service.get(job_id, project_id)
        if job.status is JobStatus.PENDING:
            job = self.runner.start(job) or self.service.get(job.job_id, job.project_id)
        return self.answer(job)

    def create(self, request: RenderRequest, key: str | None) -> tuple[Job, bool]:
        """(job, replayed): a new job, or the one an earlier request with this key created."""
        if key is None:
            return self._submit(request, None), False
        with self._key_locks[hash((request.project_id, key)) % len(self._key_locks)]:
            return self._create_once(request, key)

    def _create_once(self, request: RenderRequest, key: str) -> tuple[Job, bool]:
        existing = self.service.store.find_by_idempotency_key(request.project_id, key)
        if existing is None:
            try:
                return self._submit(request, key), False
            except TransitionConflict:  # another process's request with this key won the race
                existing = self.service.store.find_by_idempotency_key(request.project_id, key)
                if existing is None:
                    raise
        if not _same_request(existing, request):
            raise TransitionConflict(
                f"Idempotency-Key was already used for job {existing.job_id} with a different request body.")
        return existing, True

    def _submit(self, request: RenderRequest, key: str | None) -> Job:
        try:
            return self.service.submit(request, idempotency_key=key)
        except InvalidInput as error:  # e.g. a renderType this renderer cannot draw
            raise BadRequestBody(str(error)) from None


# The dependencies routes declare to reach the app's ApiContext and JobService. `async` only so
# FastAPI calls them in the event loop: it would run a plain function on a worker thread.
async def api_context(request: Request) -> ApiContext:
    return request.app.state.api


async def job_service(request: Request) -> JobService:
    return request.app.state.api.service


def _same_request(job: Job, request: RenderRequest) -> bool:
    return (job.render_type == request.render_type
            and job.concept_inputs == request.concept_inputs.model_dump()
            and request.concept_id in (None, job.concept_id))


def requested_wait(prefer: str | None, cap: float) -> float | None:
    """Seconds asked for by `Prefer: wait=N` (RFC 7240), capped; None when not asked."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.partition("=")
        if name.strip().lower() != "wait":
            continue
        try:
            seconds = float(value.split(";")[0].strip().strip('"'))
        except ValueError:
            return None  # RFC 7240: a preference that cannot be honoured is ignored
        return min(seconds, cap) if math.isfinite(seconds) and seconds >= 0 else None
    return None


def job_id_of_render(filename: str) -> str:
    """The jobId in a render's file name, `{jobId}.png`."""
    job_id, dot, suffix = filename.rpartition(".")
    if not dot or suffix != "png":
        raise JobNotFound(f"Renders are served as /api/renders/{{projectId}}/{{jobId}}.png, not {filename[:80]!r}.")
    return validate_id(job_id, "jobId")
