"""The endpoints. Handlers only translate HTTP to JobService calls and back; every rule about a
job's state lives in jobs_core.lifecycle behind the service.

Creates, polls, /process and /stream (server-sent events, stream.py) are `async` (a poll may wait,
see `Prefer: wait`) and run their store calls on FastAPI's thread pool (anyio's, 40 threads); the
other routes are plain functions, which FastAPI runs there itself. A run_in_threadpool call whose
client went away still runs to its end: a create is never left half done. (A cap of 4 concurrent
store calls, as an anyio CapacityLimiter, measured no better at 16 clients: bench/api_bench.py.)
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import AfterValidator

from .. import metrics
from ..errors import STORE_FAULTS, InvalidInput
from ..ids import validate_id
from ..models import JobStatus, RenderRequest
from ..service import JobService
from ..webhooks_sender import signing_secret
from .context import ApiContext, api_context, job_id_of_render, job_service, requested_wait
from .renders import render_response
from .schemas import (
    ApiJob,
    CreatedJob,
    ErrorBody,
    EventList,
    Health,
    JobEnvelope,
    JobList,
    ProcessRequest,
    WebhookSecret,
)
from .stream import fingerprint, seen_fingerprint

RETRY_AFTER_SECONDS = "1"


def _job_id(value: str) -> str:
    return validate_id(value, "jobId")


def _project_id(value: str | None) -> str | None:
    return None if value is None else validate_id(value, "projectId")


def _idempotency_key(value: str | None) -> str | None:
    if value is not None and not (1 <= len(value) <= 255 and value.isascii() and value.isprintable()):
        raise InvalidInput("Idempotency-Key must be 1 to 255 printable ASCII characters.")
    return value


Api = Annotated[ApiContext, Depends(api_context)]
Service = Annotated[JobService, Depends(job_service)]
JobId = Annotated[str, Path(alias="jobId", description="the job's id, as returned by create"),
                  AfterValidator(_job_id)]
ProjectId = Annotated[str | None, Query(alias="projectId", description="the job's project (optional; faster)"),
                      AfterValidator(_project_id)]
Prefer = Annotated[str | None, Header(description="`wait=N`: hold the answer until the job is final or N seconds pass")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="same key + same body = same job",
           json_schema_extra={"minLength": 1, "maxLength": 255}),
    AfterValidator(_idempotency_key)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {400: "bad path, query or header value", 401: "missing or wrong bearer token",
               404: "no such job, render or endpoint", 409: "the job is not in a state that allows this",
               413: "request body too large", 422: "the request body is not a valid request"}
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in (400, 401, 413, *codes)}


def _envelope(job: ApiJob, response: Response) -> JobEnvelope:
    if not job.status.is_final:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return JobEnvelope(job=job)


@asynccontextmanager
async def _close_streams(app: Any) -> AsyncIterator[None]:
    """Stop the store watch of GET /stream with the app (merged into the app's own lifespan)."""
    yield
    app.state.api.streams.close()


router = APIRouter(prefix="/api", lifespan=_close_streams)


@router.post("/jobs/render", status_code=201, tags=["jobs"], summary="Create a render job (fast)",
             responses=_errors(409, 422))
async def create_job(render: RenderRequest, response: Response, api: Api,
                     idempotency_key: IdempotencyKey = None) -> CreatedJob:
    job, replayed = await run_in_threadpool(api.create, render, idempotency_key)
    response.headers["Location"] = f"/api/jobs/{job.job_id}?projectId={job.project_id}"
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return CreatedJob.of(job, api.stream_access(job))


@router.get("/jobs/{jobId}", tags=["jobs"], summary="Read a job (poll)", responses=_errors(404))
async def get_job(request: Request, response: Response, api: Api, job_id: JobId, project_id: ProjectId = None,
                  prefer: Prefer = None) -> JobEnvelope:
    job = await run_in_threadpool(api.read, job_id, project_id)
    wait = requested_wait(prefer, api.settings.max_wait_seconds)
    if wait is not None:
        job = await api.wait_until_final(job, wait, request)
        response.headers["Preference-Applied"] = f"wait={wait:g}"
    return _envelope(job, response)


LastEventId = Annotated[str | None, Header(alias="Last-Event-ID",
                                           description="the id of the last event seen: resume after it")]
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
          "description": "`event: job`, `id:`, `data:` the job as GET /api/jobs/{jobId} answers under `job`; "
                         "one event per change of status, progress or stage; ends after the final state"},
    204: {"description": "the job is final and Last-Event-ID names its final state: nothing more will come"},
}


@router.get("/jobs/{jobId}/stream", response_class=Response, tags=["jobs"],
            summary="Follow a job: its states as server-sent events until it is final",
            responses={**STREAM_RESPONSES, **_errors(404)})
async def stream_job(api: Api, job_id: JobId, project_id: ProjectId = None,
                     last_event_id: LastEventId = None) -> Response:
    job = await run_in_threadpool(api.service.get, job_id, project_id)  # errors are JSON, before the stream
    seen = seen_fingerprint(last_event_id)
    if job.status.is_final and seen == fingerprint(job):
        return Response(status_code=204)  # EventSource stops reconnecting on a 204
    return api.streams.response(job, seen)


@router.post("/jobs/{jobId}/process", tags=["jobs"], summary="Run a pending job here and wait for it (idempotent)",
             responses={202: {"model": JobEnvelope, "description": "still running; poll for the result"},
                        **_errors(404, 422)})
async def process_job(request: Request, response: Response, api: Api, job_id: JobId, project_id: ProjectId = None,
                      body: Annotated[ProcessRequest | None, Body()] = None, prefer: Prefer = None) -> JobEnvelope:
    job = await run_in_threadpool(api.start, job_id, project_id or (body.project_id if body else None))
    wait = requested_wait(prefer, api.settings.max_wait_seconds)
    job = await api.wait_until_final(job, api.settings.process_wait_seconds if wait is None else wait, request)
    response.status_code = 200 if job.status.is_final else 202
    return _envelope(job, response)


@router.get("/jobs", tags=["jobs"], summary="List jobs, newest first", responses=_errors())
def list_jobs(api: Api, project_id: ProjectId = None, status: JobStatus | None = None,
              limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: str | None = None) -> JobList:
    return api.list_page(project_id, status, limit, cursor)


@router.post("/jobs/{jobId}/cancel", tags=["jobs"], summary="Cancel a pending or running job",
             responses=_errors(404, 409))
def cancel_job(api: Api, response: Response, job_id: JobId, project_id: ProjectId = None) -> JobEnvelope:
    return _envelope(api.answer(api.service.cancel(job_id, project_id)), response)


@router.post("/jobs/{jobId}/retry", tags=["jobs"], summary="Queue a failed or canceled job again",
             responses=_errors(404, 409))
def retry_job(api: Api, response: Response, job_id: JobId, project_id: ProjectId = None) -> JobEnvelope:
    return _envelope(api.answer(api.service.retry(job_id, project_id)), response)


@router.get("/jobs/{jobId}/events", tags=["jobs"], summary="The job's event log, oldest first",
            responses=_errors(404))
def job_events(service: Service, job_id: JobId, project_id: ProjectId = None) -> EventList:
    job = service.get(job_id, project_id)
    return EventList(events=service.events(job.job_id, job.project_id))


@router.get("/renders/{projectId}/{filename}", response_class=Response, tags=["renders"],
            summary="The image of a completed job ({jobId}.png)",
            responses={200: {"content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                             "description": "the PNG"},
                       307: {"description": "renders are in a bucket: a short-lived presigned URL of the PNG"},
                       **_errors(404)})
def render_image(service: Service, project_id: Annotated[str, Path(alias="projectId"), AfterValidator(_project_id)],
                 filename: str) -> Response:
    return render_response(service, service.get(job_id_of_render(filename), project_id))


@router.get("/health", tags=["health"], summary="Liveness and queue length", response_model=Health,
            responses={503: {"model": ErrorBody, "description": "the job store cannot be reached"}})
def health(api: Api) -> Health | JSONResponse:
    try:
        queue_length = len(api.service.store.pending())
    except STORE_FAULTS as error:  # up, but of no use without its store: say which part is down
        metrics.store_error("api", error)
        return JSONResponse({"status": "store unavailable", "error": f"The job store is unavailable: {error}",
                             "workers": api.workers}, status_code=503, headers={"Retry-After": "5"})
    return Health(workers=api.workers, queue_length=queue_length)


@router.get("/webhooks/default/secret", tags=["webhooks"], summary="The key webhooks are signed with",
            responses=_errors())
def webhook_secret(service: Service) -> WebhookSecret:
    # Behind the bearer token like every /api path but health (guard.py): the key proves our signatures.
    return WebhookSecret(key=signing_secret(service.store))
