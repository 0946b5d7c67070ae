"""What the API sends and receives, as pydantic models: they document the OpenAPI schema and
give `jobs_core.client` typed results. Field names are camelCase on the wire, as in the seed.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..ids import validate_id
from ..models import Event, Job, JobStatus, _Camel


class JobUrls(_Camel):
    """Where to read, cancel and follow a job (Replicate's `urls`), relative to the API's base."""

    get: str = Field(description="GET: the job now (poll)")
    cancel: str = Field(description="POST: cancel the job")
    stream: str = Field(description="GET: the job's states as server-sent events until it is final")

    @classmethod
    def of(cls, job_id: str, project_id: str, stream_access: str | None = None) -> JobUrls:
        """`stream_access`: the signature that opens the stream without the token (stream_access.py)."""
        query = f"?projectId={project_id}"  # ids are URL-safe by construction (ids.validate_id)
        access = f"&access={stream_access}" if stream_access else ""  # URL-safe too: digits, '.', base64url
        return cls(get=f"/api/jobs/{job_id}{query}", cancel=f"/api/jobs/{job_id}/cancel{query}",
                   stream=f"/api/jobs/{job_id}/stream{query}{access}")


class ApiJob(Job):
    """The job document plus `queuePosition` (1 = next to be claimed) while it is pending,
    `etaSeconds`, always present: a number while it waits or runs, else null, `urls`, and
    `waitingReason` while it waits for its provider's limits."""

    queue_position: int | None = Field(None, ge=1, exclude_if=lambda position: position is None)
    eta_seconds: float | None = Field(
        None, ge=0, description="about how many seconds until the job is done, learned from finished jobs of the "
        "same renderer and renderType (0: any moment); null when it is final or there is too little history")
    # Optional only for clients reading an older server's jobs; this server always sends it.
    urls: JobUrls | None = Field(None, exclude_if=lambda urls: urls is None)
    waiting_reason: str | None = Field(
        None, exclude_if=lambda reason: reason is None, description="why a pending job waits for its AI provider, "
        "in plain words: its renderer paused after the provider said too many requests, or every slot of "
        "JOBS_RENDERER_LIMITS in use; absent otherwise")

    @classmethod
    def of(cls, job: Job, queue_position: int | None = None, eta_seconds: float | None = None,
           waiting_reason: str | None = None, stream_access: str | None = None) -> ApiJob:
        # A tenth of a second: estimates learnt from runs that vary by seconds say no more.
        eta = None if eta_seconds is None else round(eta_seconds, 1)
        return cls.model_validate({**job.model_dump(), "queuePosition": queue_position, "etaSeconds": eta,
                                   "urls": JobUrls.of(job.job_id, job.project_id, stream_access),
                                   "waitingReason": waiting_reason})


class JobEnvelope(_Camel):
    job: ApiJob


class CreatedJob(_Camel):
    """The seed's answer to POST /api/jobs/render, field for field, plus `urls`."""

    job_id: str
    concept_id: str
    status: JobStatus
    poll_url: str
    process_url: str
    urls: JobUrls | None = Field(None, exclude_if=lambda urls: urls is None)  # beside the seed's two

    @classmethod
    def of(cls, job: Job, stream_access: str | None = None) -> CreatedJob:
        poll_url = f"/api/jobs/{job.job_id}"
        return cls(job_id=job.job_id, concept_id=job.concept_id, status=job.status, poll_url=poll_url,
                   process_url=f"{poll_url}/process", urls=JobUrls.of(job.job_id, job.project_id, stream_access))


class JobList(_Camel):
    jobs: list[ApiJob]
    next_cursor: str | None = Field(None, description="pass as ?cursor= for the next page")


class EventList(_Camel):
    events: list[Event]


class Health(_Camel):
    status: Literal["ok"] = "ok"
    workers: int = Field(description="embedded worker threads claiming jobs in this process")
    queue_length: int = Field(description="pending jobs in the store")


class ProcessRequest(_Camel):
    """The seed's POST /process body. The job's stored brief is what renders; conceptInputs is
    accepted for compatibility and ignored."""

    model_config = ConfigDict(extra="allow")
    project_id: str | None = None
    concept_inputs: dict[str, Any] | None = None

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str | None) -> str | None:
        return None if value is None else validate_id(value, "projectId")


class ErrorBody(BaseModel):
    error: str = Field(description="one sentence a person can act on")


class WebhookSecret(BaseModel):
    key: str = Field(description="the whsec_... key that signs every webhook (Standard Webhooks)")
