"""`etaSeconds` in the API's job JSON, in process (FastAPI's TestClient): learned from the store's
finished jobs of the same renderer and render type, one history shared by every poll.

The store holds completed jobs with known run times (written whole, as a store holds them), so
every estimate is an exact number. The history's clocks are the test's: its intervals pass when
the test says, and a running job has run exactly as long as the test says.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from jobs_core.api import create_app
from jobs_core.api.positions import QueuePositions
from jobs_core.eta import MIN_SAMPLES, REFRESH_SECONDS, RETRY_SECONDS, WORKERS_SECONDS, RunHistory
from jobs_core.ids import new_job_id
from jobs_core.models import Job, JobStatus, utcnow
from jobs_core.service import JobService
from jobs_core.store import JobStore
from jobs_core.store.base import WorkerInfo

PROJECT = "eta"


@dataclass
class Clock:
    """The history's two clocks: monotonic seconds for its intervals, and the wall time."""

    seconds: float = 0.0
    wall: datetime = field(default_factory=utcnow)

    def monotonic(self) -> float:
        return self.seconds

    def now(self) -> datetime:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.seconds += seconds
        self.wall += timedelta(seconds=seconds)


@dataclass
class EtaApi:
    http: TestClient
    service: JobService
    clock: Clock

    def create(self, render_type: str = "axonometric") -> str:
        response = self.http.post("/api/jobs/render", json={"projectId": PROJECT, "renderType": render_type})
        assert response.status_code == 201, response.text
        return response.json()["jobId"]

    def job(self, job_id: str) -> dict:
        response = self.http.get(f"/api/jobs/{job_id}", params={"projectId": PROJECT})
        assert response.status_code == 200, response.text
        return response.json()["job"]

    def eta(self, job_id: str) -> float | None:
        return self.job(job_id)["etaSeconds"]

    def finished(self, *seconds: float, renderer: str = "axonometric", render_type: str = "axonometric") -> None:
        for run in seconds:
            finished_job(self.service.store, renderer, render_type, run)

    def live_worker(self, name: str, *renderers: str) -> None:
        self.service.store.record_worker(WorkerInfo(name, renderers, utcnow()))


def finished_job(store: JobStore, renderer: str, render_type: str, seconds: float) -> Job:
    """A completed job whose last attempt ran exactly `seconds`."""
    end = utcnow()
    job = Job(job_id=new_job_id(), concept_id="cpt_eta", project_id=PROJECT, render_type=render_type,
              renderer=renderer, status=JobStatus.COMPLETED, progress=100, stage="done", attempts=1,
              started_at=end - timedelta(seconds=seconds), finished_at=end, updated_at=end,
              created_at=end - timedelta(seconds=seconds + 5), image_url=f"/api/renders/{PROJECT}/x.png")
    store.create(job, None)
    return job


@contextmanager
def eta_api(store: JobStore, settings) -> Iterator[EtaApi]:
    """The API over `store` (no embedded workers: jobs stay where the test puts them), its
    run-time history on the test's clocks."""
    service, clock = JobService(store, settings), Clock()
    app = create_app(service, workers=0, render_size=128)
    app.state.api.history = RunHistory(service, clock=clock.monotonic, now=clock.now)
    app.state.api.positions = QueuePositions(store, ttl=0)  # not the subject: always the queue as it is
    with TestClient(app) as http:
        yield EtaApi(http, service, clock)


@pytest.fixture
def api(memory_service) -> Iterator[EtaApi]:
    with eta_api(memory_service.store, memory_service.settings) as opened:
        yield opened


def test_eta_seconds_is_what_the_history_of_the_same_renderer_and_render_type_says(store, settings):
    with eta_api(store, settings) as api:
        api.finished(12, 20, 30.5, 41, 55)  # usually 30.5 s
        api.finished(300, 300, 300, render_type="plan")  # another render type: not counted
        api.finished(1, 1, 1, renderer="openai")  # another renderer: not counted
        first, second, third = api.create(), api.create(), api.create()
        # pending, no live worker yet: one usual run for each job up to and including this one
        assert [api.eta(job) for job in (first, second, third)] == [30.5, 61.0, 91.5]
        api.live_worker("w-1", "axonometric")
        api.live_worker("w-2", "axonometric", "openai")
        api.live_worker("w-3", "openai")  # cannot run these jobs: not counted
        api.clock.advance(WORKERS_SECONDS)
        assert api.eta(third) == 45.8  # 3 x 30.5 s shared by 2 workers: 45.75, to a tenth of a second
        running = api.service.claim(first, "w-1", PROJECT)
        api.clock.wall = running.started_at + timedelta(seconds=12.34)
        job = api.job(first)
        assert job["status"] == "processing" and job["etaSeconds"] == 18.2  # 30.5 - 12.34 = 18.16
        api.clock.wall = running.started_at + timedelta(seconds=95)
        assert api.eta(first) == 0  # past the usual time: any moment now
        assert api.eta(third) == 30.5  # second in the queue now: 2 x 30.5 s over 2 workers
        listed = {job["jobId"]: job for job in api.http.get("/api/jobs", params={"projectId": PROJECT}).json()["jobs"]}
        assert [listed[job]["etaSeconds"] for job in (first, second, third)] == [0, 15.2, 30.5]
        assert {job["etaSeconds"] for job in listed.values() if job["status"] == "completed"} == {None}


def test_final_jobs_have_a_null_eta(api):
    api.finished(10, 10, 10)
    done = finished_job(api.service.store, "axonometric", "axonometric", 10)
    assert api.job(done.job_id)["etaSeconds"] is None and "etaSeconds" in api.job(done.job_id)
    canceled = api.http.post(f"/api/jobs/{api.create()}/cancel").json()["job"]
    assert canceled["status"] == "canceled" and canceled["etaSeconds"] is None
    retried = api.http.post(f"/api/jobs/{canceled['jobId']}/retry").json()["job"]
    assert retried["status"] == "pending" and retried["etaSeconds"] == 10.0  # queued again: estimated again


def test_too_little_history_is_a_null_eta_until_there_is_enough(api):
    api.finished(*[10] * (MIN_SAMPLES - 1))
    api.finished(8, 8, 8, render_type="plan")
    waiting, plan = api.create(), api.create("plan")
    assert api.job(waiting)["etaSeconds"] is None and api.job(waiting)["queuePosition"] == 1
    assert api.eta(plan) == 16.0  # its own render type has the history; second in the queue
    api.finished(10)
    api.clock.advance(REFRESH_SECONDS)
    assert api.eta(waiting) == 10.0


def test_the_history_is_read_again_only_after_its_interval(api):
    api.finished(10, 10, 10)
    job = api.create()
    assert api.eta(job) == 10.0
    api.finished(40, 40, 40)  # the provider got slower
    api.clock.advance(REFRESH_SECONDS - 1)
    assert api.eta(job) == 10.0  # one listing serves every poll until the interval passes
    api.clock.advance(1)
    assert api.eta(job) == 25.0  # the median of 10, 10, 10, 40, 40, 40


def test_live_workers_are_read_again_only_after_their_interval(api):
    api.finished(10, 10, 10)
    api.create()
    job = api.create()
    assert api.eta(job) == 20.0
    api.live_worker("w-1", "axonometric")
    api.live_worker("w-2", "axonometric")
    assert api.eta(job) == 20.0
    api.clock.advance(WORKERS_SECONDS)
    assert api.eta(job) == 10.0


# -- a store that fails the history's reads but not the job's ------------------------------------
@pytest.fixture
def postgres_api(pg_url, settings) -> Iterator[EtaApi]:
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(pg_url)
    try:
        with eta_api(store, settings) as opened:
            yield opened
    finally:
        store.close()


@contextmanager
def broken(pg_url: str, statement: str, repair: str) -> Iterator[None]:
    """A real fault of the PostgreSQL store for as long as the block runs (a half-applied schema
    change: the job's own row still reads)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(statement)
        try:
            yield
        finally:
            conn.execute(repair)


def test_a_store_fault_while_reading_the_history_is_a_null_eta_not_an_error(postgres_api, pg_url):
    api = postgres_api
    api.finished(10, 10, 10)
    running = api.service.claim(api.create(), "w-1", PROJECT)
    api.clock.wall = running.started_at + timedelta(seconds=4)
    # the listing of completed jobs filters on `status`; reading one job by its id does not
    with broken(pg_url, "ALTER TABLE jobs RENAME COLUMN status TO status_moved",
                "ALTER TABLE jobs RENAME COLUMN status_moved TO status"):
        job = api.job(running.job_id)
    assert job["status"] == "processing" and job["etaSeconds"] is None
    assert api.eta(running.job_id) is None  # not asked again on every poll
    api.clock.advance(RETRY_SECONDS)
    assert api.eta(running.job_id) == 1.0  # asked again: 10 s usual, 4 + 5 s run


def test_a_store_fault_while_reading_the_live_workers_is_a_null_eta_for_waiting_jobs(postgres_api, pg_url):
    api = postgres_api
    api.finished(10, 10, 10)
    waiting = api.create()
    with broken(pg_url, "ALTER TABLE job_workers RENAME TO job_workers_moved",
                "ALTER TABLE job_workers_moved RENAME TO job_workers"):
        job = api.job(waiting)
    assert job["queuePosition"] == 1 and job["etaSeconds"] is None
    api.clock.advance(RETRY_SECONDS)
    assert api.eta(waiting) == 10.0


def test_the_openapi_document_describes_eta_seconds(api):
    schema = api.http.get("/openapi.json").json()["components"]["schemas"]["ApiJob"]
    eta = schema["properties"]["etaSeconds"]
    assert {"type": "number", "minimum": 0} in eta["anyOf"] and {"type": "null"} in eta["anyOf"]
    assert "null when it is final" in eta["description"]
