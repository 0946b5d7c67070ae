"""A Python client for the HTTP API (httpx), with typed results and exceptions you can catch.

    from jobs_core.client import JobsClient

    with JobsClient("http://127.0.0.1:8000") as api:
        created = api.create("demo", {"floors": 8, "footprint": "L"})
        job = api.wait(created.job_id, "demo", on_update=lambda j: print(j.progress, j.stage))
        png = api.image(job)

        study = api.create_study("demo", {"floors": [4, 8, 12], "roof": ["flat", "gable"]})
        done = api.wait_study(study.study_id, "demo")   # every variation's job, and a summary

`wait` follows the job's server-sent event stream (`stream`, which yields each state as the
server pushes it) and polls only a server that offers no stream.

Errors are the library's own where one fits (`NotFound` is a JobNotFound, `Conflict` a
TransitionConflict, `BadRequest` an InvalidInput), so code written against JobService keeps working.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import ValidationError

from .api.schemas import ApiJob, CreatedJob, EventList, Health, JobList
from .api.study_schemas import ApiStudy, CreatedStudy
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


class StreamNotOffered(ApiError):
    """The server answered GET /stream with something that is not an event stream (an older server,
    or a proxy in between that does not pass them on)."""


class JobFailed(ApiError):
    """`wait(raise_on_failure=True)`: the job ended failed or canceled. `job.error` says why."""

    def __init__(self, job: ApiJob) -> None:
        super().__init__(job.error or f"Job {job.job_id} ended {job.status.value}.")
        self.job = job


class StudyWaitTimeout(ApiError):
    """`wait_study` gave up after its maximum number of polls; the study goes on."""

    def __init__(self, message: str, study: ApiStudy) -> None:
        super().__init__(message)
        self.study = study


class StudyFailed(ApiError):
    """`wait_study(raise_on_failure=True)`: some variations ended failed or canceled (or have no job).
    `study.cells[i].job.error` says why each failed."""

    def __init__(self, study: ApiStudy) -> None:
        super().__init__(f"Study {study.study_id} ended {study.status}: {_summary_words(study)}.")
        self.study = study


_BY_STATUS: dict[int, type[ApiError]] = {400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict,
                                         413: BadRequest, 422: BadRequest}
#: the server sends a comment every 15 s on a stream: this long a silence is a dead connection
STREAM_SILENCE_SECONDS = 45.0


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
             raise_on_failure: bool = False, stream: bool = True) -> ApiJob:
        """Wait until the job is final, for at most about `max_attempts` x `poll_interval` seconds.

        It follows the job's stream (`stream`: each state as the server pushes it) when the server
        offers one and `stream` is true, else polls (the seed's loop, bounded as its best practices
        ask): each attempt is a GET that the server may hold up to `poll_interval` seconds
        (Prefer: wait), so a finished job is seen at once rather than at the next tick.
        `on_update` gets every state seen. WaitTimeout when the time is up (or after
        `max_attempts` polls); JobFailed on failure/cancel when `raise_on_failure`.
        """
        if max_attempts < 1:
            raise InvalidInput(f"max_attempts must be at least 1, not {max_attempts}.")
        job = self._follow(job_id, project_id, poll_interval * max_attempts, on_update) if stream else None
        if job is not None:
            return _finished(job, raise_on_failure)
        for _ in range(max_attempts):
            started = time.monotonic()
            job = self.get(job_id, project_id, wait=poll_interval)
            if on_update is not None:
                on_update(job)
            if job.status.is_final:
                return _finished(job, raise_on_failure)
            # A proxy may drop the Prefer header: keep the pace rather than spin through attempts.
            time.sleep(max(0.0, poll_interval - (time.monotonic() - started)))
        assert job is not None
        raise WaitTimeout(f"Job {job_id} is still {job.status.value} after {max_attempts} polls "
                          f"({job.progress}%, {job.stage}).", job)

    def _follow(self, job_id: str, project_id: str | None, seconds: float,
                on_update: Callable[[ApiJob], None] | None) -> ApiJob | None:
        """`wait` through the stream: the final job, or None when the server offers no stream."""
        job = None
        try:
            for job in self.stream(job_id, project_id, timeout=seconds):
                if on_update is not None:
                    on_update(job)
        except StreamNotOffered:
            return None
        except NotFound:
            self.get(job_id, project_id)  # NotFound again: the job is gone; else the route is (an older server)
            return None
        return job or self.get(job_id, project_id)

    # -- server-sent events ---------------------------------------------------------------------
    def stream(self, job_id: str, project_id: str | None = None, *, last_event_id: str | None = None,
               timeout: float | None = None, max_reconnects: int = 5) -> Iterator[ApiJob]:
        """The job's states as the server pushes them (GET /api/jobs/{jobId}/stream): the current one
        first (unless `last_event_id` names it), then one per change of status, progress or stage,
        ending with the final one.

        A dropped connection is resumed with Last-Event-ID, up to `max_reconnects` times in a row
        without an event in between (then ApiUnavailable). `timeout` bounds the whole stream:
        WaitTimeout, carrying the last state, when it passes before the job is final.
        StreamNotOffered when the server answers with something else than an event stream.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        failures, job = 0, None
        while True:
            try:
                with self._open_stream(job_id, project_id, last_event_id, deadline) as response:
                    if response.status_code == 204:
                        return  # the final state, which last_event_id names, was seen already
                    for job, event_id in _job_events(response):
                        failures, last_event_id = 0, event_id or last_event_id
                        yield job
                        if job.status.is_final:
                            return
                        _check_deadline(deadline, timeout, job)
                problem = "the server ended the stream before the job was final"  # e.g. it is restarting
            except httpx.TransportError as error:  # dropped, silent for too long, or refused
                problem = str(error) or type(error).__name__
            if deadline is not None and time.monotonic() >= deadline:
                _check_deadline(deadline, timeout, job or self.get(job_id, project_id))
            failures += 1
            if failures > max_reconnects:
                raise ApiUnavailable(f"The stream of job {job_id} broke {failures} times in a row ({problem}).")
            time.sleep(min(0.1 * 2 ** failures, 2.0))  # back off before reconnecting

    def _open_stream(self, job_id: str, project_id: str | None, last_event_id: str | None,
                     deadline: float | None) -> Any:
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if last_event_id:
            headers["Last-Event-ID"] = last_event_id
        silence = STREAM_SILENCE_SECONDS if deadline is None else \
            max(min(STREAM_SILENCE_SECONDS, deadline - time.monotonic()), 0.01)
        timeout = httpx.Timeout(self.http.timeout.connect, read=silence)
        return self.http.stream("GET", f"/api/jobs/{job_id}/stream", params=_project(project_id),
                                headers=headers, timeout=timeout)

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
        # Renders kept in a bucket answer with a redirect to a presigned URL of the bucket (httpx
        # sends no Authorization header to another origin).
        return self._call("GET", job.image_url, follow_redirects=True).content

    def health(self) -> Health:
        return self._typed(Health, self._call("GET", "/api/health"))

    # -- design studies (POST /api/studies): one job per combination of values -------------------
    def create_study(self, project_id: str, vary: dict[str, list[Any]], concept_inputs: dict[str, Any] | None = None,
                     render_type: str = "axonometric", *, title: str | None = None,
                     idempotency_key: str | None = None, webhook: str | None = None,
                     webhook_events_filter: list[str] | None = None) -> CreatedStudy:
        """Queue one job per combination of `vary`'s values (one or two brief fields, at most 36
        jobs), such as {"floors": [4, 8, 12], "roof": ["flat", "gable"]}. BadRequest, naming the
        combination, when one is not a building: then no job exists. The same idempotency_key and
        body give the same study (and finish one whose first create was cut off). `webhook`: each
        job POSTs itself there, signed, at the events of `webhook_events_filter`, as one job would."""
        body: dict[str, Any] = {"projectId": project_id, "renderType": render_type,
                                "conceptInputs": concept_inputs or {}, "vary": vary}
        for name, value in (("title", title), ("webhook", webhook), ("webhookEventsFilter", webhook_events_filter)):
            if value is not None:
                body[name] = value
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._typed(CreatedStudy, self._call("POST", "/api/studies", json=body, headers=headers))

    def study(self, study_id: str, project_id: str | None = None) -> ApiStudy:
        """The study now: each variation's job and a summary."""
        return self._typed(ApiStudy, self._call("GET", f"/api/studies/{study_id}", params=_project(project_id)),
                           "study")

    def cancel_study(self, study_id: str, project_id: str | None = None) -> ApiStudy:
        """Cancel every queued or running job of the study; finished ones stay as they are."""
        response = self._call("POST", f"/api/studies/{study_id}/cancel", params=_project(project_id))
        return self._typed(ApiStudy, response, "study")

    def retry_study(self, study_id: str, project_id: str | None = None) -> ApiStudy:
        """Queue every failed or canceled job of the study again (one alone: `retry(job_id)`)."""
        response = self._call("POST", f"/api/studies/{study_id}/retry", params=_project(project_id))
        return self._typed(ApiStudy, response, "study")

    def wait_study(self, study_id: str, project_id: str | None = None, *, poll_interval: float = 2.0,
                   max_attempts: int = 150, on_update: Callable[[ApiStudy], None] | None = None,
                   raise_on_failure: bool = False) -> ApiStudy:
        """Poll the study every `poll_interval` seconds until none of its jobs is queued or running,
        at most `max_attempts` times. `on_update` gets every state seen. StudyWaitTimeout when the
        time is up (the study goes on); StudyFailed when `raise_on_failure` and not every variation
        was rendered."""
        if max_attempts < 1:
            raise InvalidInput(f"max_attempts must be at least 1, not {max_attempts}.")
        for attempt in range(max_attempts):
            started = time.monotonic()
            study = self.study(study_id, project_id)
            if on_update is not None:
                on_update(study)
            if study.is_final:
                if raise_on_failure and study.status != "completed":
                    raise StudyFailed(study)
                return study
            if attempt + 1 < max_attempts:
                time.sleep(max(0.0, poll_interval - (time.monotonic() - started)))
        raise StudyWaitTimeout(f"Study {study_id} is still {study.status} after {max_attempts} polls "
                               f"({_summary_words(study)}).", study)

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
        raise _failure(response)

    @staticmethod
    def _typed(model: type, response: httpx.Response, key: str | None = None) -> Any:
        try:
            data = response.json()
            return model.model_validate(data[key] if key else data)
        except (ValueError, KeyError, TypeError, ValidationError):
            raise ApiError(f"The API answered {response.request.url.path} with something that is not "
                           f"a {model.__name__}.", response.status_code) from None


def _job_events(response: httpx.Response) -> Iterator[tuple[ApiJob, str | None]]:
    """(job, event id) for each `job` event of an open stream; the error when it is none."""
    path = response.request.url.path
    if not response.is_success:
        response.read()
        raise _failure(response)
    try:
        for event in EventSource(response).iter_sse():
            if event.event == "job":
                try:
                    yield ApiJob.model_validate_json(event.data), event.id or None
                except ValidationError:
                    raise ApiError(f"The API sent an event on {path} that is not a job.") from None
    except SSEError:
        raise StreamNotOffered(f"The API answered GET {path} with {response.headers.get('content-type')!r}, "
                               "not an event stream.", response.status_code) from None


def _finished(job: ApiJob, raise_on_failure: bool) -> ApiJob:
    if raise_on_failure and job.status is not JobStatus.COMPLETED:
        raise JobFailed(job)
    return job


def _check_deadline(deadline: float | None, seconds: float | None, job: ApiJob) -> None:
    if deadline is not None and time.monotonic() >= deadline and not job.status.is_final:
        raise WaitTimeout(f"Job {job.job_id} is still {job.status.value} after {seconds:g} s "
                          f"({job.progress}%, {job.stage}).", job)


def _failure(response: httpx.Response) -> ApiError:
    kind = _BY_STATUS.get(response.status_code, ApiUnavailable if response.status_code >= 500 else ApiError)
    return kind(_error_message(response), response.status_code)


def _summary_words(study: ApiStudy) -> str:
    """'4 of 6 done, 1 failed, 1 queued': the study's summary, the parts that are not 0."""
    summary = study.summary
    parts = [f"{summary.done} of {summary.total} done"]
    parts += [f"{count} {name}" for name, count in (("running", summary.running), ("queued", summary.queued),
                                                    ("failed", summary.failed), ("canceled", summary.canceled),
                                                    ("without a job", summary.missing)) if count]
    return ", ".join(parts)


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
