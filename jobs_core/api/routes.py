"""The endpoints. Handlers only translate HTTP to JobService calls and back; every rule about a
job's state lives in jobs_core.lifecycle behind the service."""
from __future__ import annotations

import asyncio
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Body, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from ..errors import InvalidInput, JobNotFound, TransitionConflict
from ..ids import validate_id
from ..models import Job, JobStatus, RenderRequest
from ..service import JobService
from .errors import BadRequestBody
from .lane import ThreadLane
from .positions import QueuePositions
from .render_body import CREATE_DOC, IDEMPOTENCY_HEADER, read_render_request
from .runner import InlineRunner
from .schemas import CreatedJob, ErrorBody, EventList, Health, JobEnvelope, JobList, ProcessRequest
from .settings import ApiSettings

RETRY_AFTER_SECONDS = "1"


CREATE_THREADS = 4  # see lane.py: enough to share fsyncs, few enough to spare the GIL
READ_THREADS = 4


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {400: "bad path, query or header value", 401: "missing or wrong bearer token",
               404: "no such job, render or endpoint", 409: "the job is not in a state that allows this",
               413: "request body too large", 422: "the request body is not a valid request"}
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in (400, 401, 413, *codes)}


@dataclass
class ApiContext:
    service: JobService
    settings: ApiSettings
    runner: InlineRunner
    workers: int
    #: creates and polls run on lanes of their own, not on the shared thread pool (see lane.py)
    creates: ThreadLane = field(default_factory=lambda: ThreadLane(CREATE_THREADS, "create"))
    reads: ThreadLane = field(default_factory=lambda: ThreadLane(READ_THREADS, "read"))


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


def _check_project(project_id: str | None) -> str | None:
    return None if project_id is None else validate_id(project_id, "projectId")


class Handlers:
    """The work behind each route (blocking store calls run on a lane or in the thread pool)."""

    def __init__(self, context: ApiContext) -> None:
        self.context = context
        self.service = context.service
        self.settings = context.settings
        self.positions = QueuePositions(context.service.store)
        # Creates with one Idempotency-Key are serialised in this process whatever the store;
        # across processes, the store's create refuses the duplicate (FileJobStore does).
        self._key_locks = [threading.Lock() for _ in range(64)]

    def job_json(self, job: Job, positions: dict[str, int]) -> dict[str, Any]:
        data = job.public()
        if job.status is JobStatus.PENDING and job.job_id in positions:
            data["queuePosition"] = positions[job.job_id]
        return data

    def job_body(self, job: Job) -> bytes:
        """`{"job": ...}` serialized by pydantic-core directly (the poll path's main cost)."""
        document = job.model_dump_json()
        position = self.positions.of(job)
        if position is not None:
            document = f'{document[:-1]},"queuePosition":{position}}}'
        return f'{{"job":{document}}}'.encode()

    def read_body(self, job_id: str, project_id: str | None) -> tuple[Job, bytes]:
        """Read and serialize in one trip to the thread pool."""
        job = self.service.get(job_id, project_id)
        return job, self.job_body(job)

    def job_response(self, job: Job, status: int = 200, extra: dict[str, str] | None = None,
                     body: bytes | None = None) -> Response:
        headers = dict(extra or {})
        if not job.status.is_final:
            headers["Retry-After"] = RETRY_AFTER_SECONDS
        return Response(body or self.job_body(job), status_code=status, headers=headers,
                        media_type="application/json")

    async def wait_until_final(self, job: Job, seconds: float, request: Request) -> Job:
        """Re-read the job until it is final, `seconds` pass, or the client goes away."""
        deadline = time.monotonic() + seconds
        while not job.status.is_final:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or await request.is_disconnected():
                break
            await asyncio.sleep(min(self.settings.wait_poll_seconds, remaining))
            job = await self.context.reads.run(self.service.get, job.job_id, job.project_id)
        return job

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
            except TransitionConflict:  # another request with this key won the race
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

    def list_page(self, project_id: str | None, status: JobStatus | None, limit: int,
                  cursor: str | None) -> dict[str, Any]:
        page = self.service.list(project_id, status, limit, cursor)
        positions = self.positions.of_many(page.jobs)
        return {"jobs": [self.job_json(job, positions) for job in page.jobs], "nextCursor": page.next_cursor}

    def image(self, project_id: str, filename: str) -> bytes:
        validate_id(project_id, "projectId")
        job_id, dot, suffix = filename.rpartition(".")
        if not dot or suffix != "png":
            raise JobNotFound(f"Renders are served as /api/renders/{{projectId}}/{{jobId}}.png, not {filename[:80]!r}.")
        return self.service.image(self.service.get(validate_id(job_id, "jobId"), project_id))


def _same_request(job: Job, request: RenderRequest) -> bool:
    return (job.render_type == request.render_type
            and job.concept_inputs == request.concept_inputs.model_dump()
            and request.concept_id in (None, job.concept_id))


def _idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not 1 <= len(raw) <= 255 or not raw.isascii() or not raw.isprintable():
        raise InvalidInput("Idempotency-Key must be 1 to 255 printable ASCII characters.")
    return raw


JobIdPath = Path(alias="jobId", description="the job's id, as returned by create")
ProjectQuery = Query(None, alias="projectId", description="the job's project (optional; faster)")
PreferHeader = Header(None, description="`wait=N`: hold the answer until the job is final or N seconds pass")


def add_routes(app: FastAPI, context: ApiContext) -> None:  # noqa: C901 (one closure per route)
    handlers = Handlers(context)
    service, settings = context.service, context.settings

    @app.post("/api/jobs/render", status_code=201, response_model=CreatedJob, tags=["jobs"],
              summary="Create a render job (fast)", responses=_errors(409, 422), openapi_extra=CREATE_DOC)
    async def create_job(request: Request) -> Response:
        render_request = await read_render_request(request)
        key = _idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
        job, replayed = await context.creates.run(handlers.create, render_request, key)
        poll_url = f"/api/jobs/{job.job_id}"
        body = {"jobId": job.job_id, "conceptId": job.concept_id, "status": job.status.value,
                "pollUrl": poll_url, "processUrl": f"{poll_url}/process"}
        headers = {"Location": f"{poll_url}?projectId={job.project_id}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(body, status_code=201, headers=headers)

    @app.get("/api/jobs/{jobId}", response_model=JobEnvelope, tags=["jobs"], summary="Read a job (poll)",
             responses=_errors(404))
    async def get_job(request: Request, job_id: str = JobIdPath, project_id: str | None = ProjectQuery,
                      prefer: str | None = PreferHeader) -> Response:
        project_id = _check_project(project_id)
        job, body = await context.reads.run(handlers.read_body, validate_id(job_id, "jobId"), project_id)
        wait = requested_wait(prefer, settings.max_wait_seconds)
        if wait is None:
            return handlers.job_response(job, body=body)
        job = await handlers.wait_until_final(job, wait, request)
        body = await context.reads.run(handlers.job_body, job)
        return handlers.job_response(job, extra={"Preference-Applied": f"wait={wait:g}"}, body=body)

    @app.post("/api/jobs/{jobId}/process", response_model=JobEnvelope, tags=["jobs"],
              summary="Run a pending job here and wait for it (idempotent)",
              responses={202: {"model": JobEnvelope, "description": "still running; poll for the result"},
                         **_errors(404, 422)})
    async def process_job(request: Request, job_id: str = JobIdPath, project_id: str | None = ProjectQuery,
                          body: ProcessRequest | None = Body(None), prefer: str | None = PreferHeader) -> Response:
        project_id = _check_project(project_id) or (body.project_id if body else None)
        job = await run_in_threadpool(service.get, validate_id(job_id, "jobId"), project_id)
        if job.status is JobStatus.PENDING:
            claimed = await run_in_threadpool(context.runner.start, job)
            job = claimed or await run_in_threadpool(service.get, job.job_id, job.project_id)
        wait = requested_wait(prefer, settings.max_wait_seconds)
        job = await handlers.wait_until_final(job, settings.process_wait_seconds if wait is None else wait, request)
        body = await run_in_threadpool(handlers.job_body, job)
        return handlers.job_response(job, 200 if job.status.is_final else 202, body=body)

    @app.get("/api/jobs", response_model=JobList, tags=["jobs"], summary="List jobs, newest first",
             responses=_errors())
    def list_jobs(project_id: str | None = ProjectQuery, status: JobStatus | None = Query(None),
                  limit: int = Query(50, ge=1, le=500), cursor: str | None = Query(None)) -> Response:
        return JSONResponse(handlers.list_page(_check_project(project_id), status, limit, cursor))

    @app.post("/api/jobs/{jobId}/cancel", response_model=JobEnvelope, tags=["jobs"],
              summary="Cancel a pending or running job", responses=_errors(404, 409))
    def cancel_job(job_id: str = JobIdPath, project_id: str | None = ProjectQuery) -> Response:
        return handlers.job_response(service.cancel(validate_id(job_id, "jobId"), _check_project(project_id)))

    @app.post("/api/jobs/{jobId}/retry", response_model=JobEnvelope, tags=["jobs"],
              summary="Queue a failed or canceled job again", responses=_errors(404, 409))
    def retry_job(job_id: str = JobIdPath, project_id: str | None = ProjectQuery) -> Response:
        return handlers.job_response(service.retry(validate_id(job_id, "jobId"), _check_project(project_id)))

    @app.get("/api/jobs/{jobId}/events", response_model=EventList, tags=["jobs"],
             summary="The job's event log, oldest first", responses=_errors(404))
    def job_events(job_id: str = JobIdPath, project_id: str | None = ProjectQuery) -> Response:
        job = service.get(validate_id(job_id, "jobId"), _check_project(project_id))
        events = service.events(job.job_id, job.project_id)
        return JSONResponse({"events": [event.model_dump(mode="json") for event in events]})

    @app.get("/api/renders/{projectId}/{filename}", response_class=Response, tags=["renders"],
             summary="The image of a completed job ({jobId}.png)",
             responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "the PNG"}, **_errors(404)})
    def render_image(project_id: str = Path(alias="projectId"), filename: str = Path()) -> Response:
        return Response(handlers.image(project_id, filename), media_type="image/png",
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", response_model=Health, tags=["health"], summary="Liveness and queue length")
    def health() -> Response:
        return JSONResponse({"status": "ok", "workers": context.workers,
                             "queueLength": len(service.store.pending())})
