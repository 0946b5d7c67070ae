"""A Python client for the HTTP API (httpx), with typed results and exceptions you can catch.

    from jobs_core.client import JobsClient

    with JobsClient("http://127.0.0.1:8000") as api:
        created = api.create("demo", {"floors": 8, "footprint": "L"})
        job = api.wait(created.job_id, "demo", on_update=lambda j: print(j.progress, j.stage))
        png = api.image(job)

Errors are the library's own where one fits (`NotFound` is a JobNotFound, `Conflict` a
TransitionConflict, `BadRequest` an InvalidInput), so code written against JobService keeps working.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from .api.schemas import ApiJob, CreatedJob, EventList, Health, JobList
from .errors import InvalidInput, JobNotFound, JobsError, TransitionConflict
from .models import Event, JobStatus


class ApiError(JobsError):
    """The API answered with an error (or not at all). `status` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class BadRequest(ApiError, InvalidInput):
    """400/413/422: the request was refused; the message says what to fix."""


class Unauthorized(ApiError):
    """401: the API needs a bearer token (JOBS_API_TOKEN)."""


class NotFound(ApiError, JobNotFound):
    """404: no such job or render."""


class Conflict(ApiError, TransitionConflict):
    """409: the job is not in a state that allows this, or an Idempotency-Key was reused."""


class ApiUnavailable(ApiError):
    """The server could not be reached, timed out, or failed (5xx)."""


class WaitTimeout(ApiError):
    """`wait` gave up after its maximum number of polls; the job goes on and can be polled later."""

    def __init__(self, message: str, job: ApiJob) -> None:
        super().__init__(message)
        self.job = job


class JobFailed(ApiError):
    """`wait(raise_on_failure=True)`: the job ended failed or canceled. `job.error` says why."""

    def __init__(self, job: ApiJob) -> None:
        super().__init__(job.error or f"Job {job.job_id} ended {job.status.value}.")
        self.job = job


_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict,
                                         413: BadRequest, 422: BadRequest}


class JobsClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout,
                                 transport=transport)

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    # -- the seed's three calls -----------------------------------------------------------------
    def create(self, project_id: str, concept_inputs: dict[str, Any] | None = None,
               render_type: str = "axonometric", *, concept_id: str | None = None,
               idempotency_key: str | None = None) -> CreatedJob:
        """Queue a render job; returns at once with its jobId. Same idempotency_key + body = same job."""
        body: dict[str, Any] = {"projectId": project_id, "renderType": render_type,
                                "conceptInputs": concept_inputs or {}}
        if concept_id is not None:
            body["conceptId"] = concept_id
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._typed(CreatedJob, self._call("POST", "/api/jobs/render", json=body, headers=headers))

    def process(self, job_id: str, project_id: str | None = None, *, wait: float | None = None) -> ApiJob:
        """Ask the server to run the job now; returns the job when final or after `wait` seconds
        (the server's bound when None). The render goes on if this call times out."""
        body = {"projectId": project_id} if project_id else {}
        response = self._call("POST", f"/api/jobs/{job_id}/process", json=body,
                              headers=_prefer(wait), timeout=self._timeout_for(wait))
        return self._typed(ApiJob, response, "job")

    def get(self, job_id: str, project_id: str | None = None, *, wait: float | None = None) -> ApiJob:
        """The job now, or (with `wait`) once final or after `wait` seconds (server-capped)."""
        response = self._call("GET", f"/api/jobs/{job_id}", params=_project(project_id),
                              headers=_prefer(wait), timeout=self._timeout_for(wait))
        return self._typed(ApiJob, response, "job")

    def wait(self, job_id: str, project_id: str | None = None, *, poll_interval: float = 2.0,
             max_attempts: int = 150, on_update: Callable[[ApiJob], None] | None = None,
             raise_on_failure: bool = False) -> ApiJob:
        """Poll until the job is final (the seed's loop, bounded as its best practices ask).

        Each attempt is a GET that the server may hold up to `poll_interval` seconds (Prefer: wait),
        so a finished job is seen at once rather than at the next tick. WaitTimeout after
        `max_attempts` polls; JobFailed on failure/cancel when `raise_on_failure`.
        """
        if max_attempts < 1:
            raise InvalidInput(f"max_attempts must be at least 1, not {max_attempts}.")
        job = None
        for _ in range(max_attempts):
            started = time.monotonic()
            job = self.get(job_id, project_id, wait=poll_interval)
            if on_update is not None:
                on_update(job)
            if job.status.is_final:
                if raise_on_failure and job.status is not JobStatus.COMPLETED:
                    raise JobFailed(job)
                return job
            # A proxy may drop the Prefer header: keep the pace rather than spin through attempts.
            time.sleep(max(0.0, poll_interval - (time.monotonic() - started)))
        assert job is not None
        raise WaitTimeout(f"Job {job_id} is still {job.status.value} after {max_attempts} polls "
                          f"({job.progress}%, {job.stage}).", job)

    # -- extensions -----------------------------------------------------------------------------
    def cancel(self, job_id: str, project_id: str | None = None) -> ApiJob:
        return self._typed(ApiJob, self._call("POST", f"/api/jobs/{job_id}/cancel", params=_project(project_id)), "job")

    def retry(self, job_id: str, project_id: str | None = None) -> ApiJob:
        return self._typed(ApiJob, self._call("POST", f"/api/jobs/{job_id}/retry", params=_project(project_id)), "job")

    def list(self, project_id: str | None = None, status: JobStatus | str | None = None, limit: int = 50,
             cursor: str | None = None) -> JobList:
        params: dict[str, Any] = {"limit": limit, **_project(project_id)}
        if status is not None:
            params["status"] = JobStatus(status).value if isinstance(status, JobStatus) else status
        if cursor is not None:
            params["cursor"] = cursor
        return self._typed(JobList, self._call("GET", "/api/jobs", params=params))

    def events(self, job_id: str, project_id: str | None = None) -> list[Event]:
        response = self._call("GET", f"/api/jobs/{job_id}/events", params=_project(project_id))
        return self._typed(EventList, response).events

    def image(self, job: ApiJob) -> bytes:
        """The PNG of a completed job (its imageUrl)."""
        if not job.image_url:
            raise NotFound(f"Job {job.job_id} has no image: it is {job.status.value}.", 404)
        return self._call("GET", job.image_url).content

    def health(self) -> Health:
        return self._typed(Health, self._call("GET", "/api/health"))

    # -- plumbing -------------------------------------------------------------------------------
    def _timeout_for(self, wait: float | None) -> httpx.Timeout | None:
        if wait is None:
            return None
        base = self.http.timeout.read or 30.0
        return httpx.Timeout(self.http.timeout.connect, read=base + wait)

    def _call(self, method: str, url: str, *, timeout: httpx.Timeout | None = None, **kwargs: Any) -> httpx.Response:
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            raise ApiUnavailable(f"{method} {url} timed out after waiting for {self.http.base_url}.") from None
        except httpx.TransportError as error:
            raise ApiUnavailable(f"Cannot reach the jobs API at {self.http.base_url}: {error}.") from None
        if response.is_success:
            return response
        message = _error_message(response)
        kind = _BY_STATUS.get(response.status_code, ApiUnavailable if response.status_code >= 500 else ApiError)
        raise kind(message, response.status_code)

    @staticmethod
    def _typed(model: type, response: httpx.Response, key: str | None = None) -> Any:
        try:
            data = response.json()
            return model.model_validate(data[key] if key else data)
        except (ValueError, KeyError, TypeError, ValidationError):
            raise ApiError(f"The API answered {response.request.url.path} with something that is not "
                           f"a {model.__name__}.", response.status_code) from None


def _project(project_id: str | None) -> dict[str, str]:
    return {"projectId": project_id} if project_id else {}


def _prefer(wait: float | None) -> dict[str, str] | None:
    return {"Prefer": f"wait={wait:g}"} if wait is not None else None


def _error_message(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]
        if isinstance(message, str):
            return message
    except (ValueError, KeyError, TypeError):
        pass
    return f"The API answered HTTP {response.status_code} to {response.request.method} {response.request.url.path}."
