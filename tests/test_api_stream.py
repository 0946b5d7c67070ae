"""GET /api/jobs/{jobId}/stream on a real uvicorn server, read with a real HTTP client (httpx).

The job changes in another process (a `python -m jobs_core worker --drain`) on the file store and
on PostgreSQL, so the stream hears of it through the store's own watch, as it would in production.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import gate_renderer  # noqa: F401  (registers the `gate` test renderer in this process too)
import httpx
import pytest
from proc_helpers import ROOT, cli_env, start_worker, wait_until, worker_log

from jobs_core.api import ApiSettings, create_app
from jobs_core.api.guard import BODY_SECONDS
from jobs_core.models import JobStatus
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from tests.api_server import free_port, serve_in_thread


@dataclass
class Event:
    """One server-sent event as it came over the wire."""

    name: str | None = None
    id: str | None = None
    data: list[str] = field(default_factory=list)

    @property
    def job(self) -> dict:
        return json.loads("\n".join(self.data))


def read_events(response: httpx.Response | Iterator[str], comments: list[str] | None = None) -> Iterator[Event]:
    """Parse text/event-stream by hand (the wire format is the subject, not a client library)."""
    event = Event()
    lines = response.iter_lines() if isinstance(response, httpx.Response) else response
    for line in lines:
        if not line:
            if event.data:
                yield event
            event = Event()
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line)
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event.name = value
            elif name == "id":
                event.id = value
            elif name == "data":
                event.data.append(value)


@dataclass
class Server:
    base: str
    app: object
    service: JobService
    http: httpx.Client

    @property
    def streams(self):
        return self.app.state.api.streams

    def create(self, **inputs) -> dict:
        response = self.http.post("/api/jobs/render", json={"projectId": "live", "conceptInputs": inputs})
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture
def serve(tmp_path: Path, settings) -> Iterator:
    """serve(service=None, token=None): a real server (create/poll only: no claim threads)."""
    servers, stores = [], []

    def start(service: JobService | None = None, token: str | None = None) -> Server:
        if service is None:
            service = JobService(FileJobStore(tmp_path / "store"), replace(settings, renderer="gate"))
            stores.append(service.store)
        app = create_app(service, workers=0, settings=ApiSettings(token=token), render_size=64)
        context = serve_in_thread(app)
        base = context.__enter__()
        http = httpx.Client(base_url=base, timeout=30)
        servers.append((context, http))
        return Server(base, app, service, http)

    yield start
    for context, http in reversed(servers):
        http.close()
        context.__exit__(None, None, None)
    for store in stores:
        store.close()


def gate_dir(tmp_path: Path) -> Path:
    gate = tmp_path / "gate"
    gate.mkdir(exist_ok=True)
    return gate


def follow_through_a_worker_process(server: Server, gate: Path, start) -> tuple[list[Event], subprocess.Popen]:
    """Stream a gate job while a separate worker process renders it; open the gate once the stream
    shows the render waiting there. Every event, and the worker."""
    created = server.create(gateDir=str(gate))
    events: list[Event] = []
    worker = None
    with server.http.stream("GET", created["urls"]["stream"]) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for event in read_events(response):
            events.append(event)
            if worker is None:  # the first event is the job as it is now: queued, nobody at work
                assert event.job["status"] == "pending"
                worker = start()
            elif event.job["progress"] == 20:
                (gate / "open").touch()
    return events, worker


def assert_rising_to_completed(server: Server, events: list[Event]) -> None:
    jobs = [event.job for event in events]
    assert {event.name for event in events} == {"job"}
    statuses = [job["status"] for job in jobs]
    assert statuses[0] == "pending" and statuses[-1] == "completed" and "processing" in statuses
    assert statuses.count("completed") == 1  # and the stream ended after it
    progress = [job["progress"] for job in jobs if job["status"] == "processing"]
    assert progress == sorted(progress) and 20 in progress, progress  # the render waits at 20 for the gate
    assert jobs[-1]["progress"] == 100
    stamps = [int(event.id.split("-")[0]) for event in events]
    assert stamps == sorted(stamps) and len(set(event.id for event in events)) == len(events)
    final = server.http.get(jobs[-1]["urls"]["get"]).json()["job"]
    assert jobs[-1] == final  # the data is the job as GET answers it


@pytest.mark.slow
def test_a_job_rendered_by_another_process_streams_rising_progress_and_ends_completed(serve, tmp_path):
    server = serve()
    gate = gate_dir(tmp_path)
    events, worker = follow_through_a_worker_process(
        server, gate, lambda: start_worker(tmp_path / "store", "--drain"))
    assert worker.wait(30) == 0, worker_log(worker)
    assert_rising_to_completed(server, events)
    assert server.streams.open_streams == 0 and server.streams.watching


@pytest.mark.slow
def test_the_same_on_postgresql(pg_url, serve, tmp_path, settings):
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(pg_url, pool_size=4)
    try:
        stream_a_postgres_job(serve(JobService(store, replace(settings, renderer="gate"))), tmp_path, pg_url)
    finally:
        store.close()


def stream_a_postgres_job(server: Server, tmp_path: Path, pg_url: str) -> None:
    gate = gate_dir(tmp_path)

    def start() -> subprocess.Popen:
        with open(tmp_path / "pg-worker.log", "w") as log:
            return subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--drain", "--poll", "0.05"],
                                    cwd=ROOT, env=cli_env(JOBS_STORE_URL=pg_url), stdout=log, stderr=subprocess.STDOUT)

    events, worker = follow_through_a_worker_process(server, gate, start)
    assert worker.wait(30) == 0, (tmp_path / "pg-worker.log").read_text()
    assert_rising_to_completed(server, events)


def first_event(server: Server, url: str, **headers: str) -> Event:
    with server.http.stream("GET", url, headers=headers) as response:
        return next(read_events(response))


def test_last_event_id_resumes_with_what_changed_since_and_nothing_else(serve):
    server = serve()
    created = server.create()
    url = created["urls"]["stream"]
    pending = first_event(server, url)
    assert pending.job["status"] == "pending"
    # Resumed while nothing changed: no event until the job changes, then that change.
    with server.http.stream("GET", url, headers={"Last-Event-ID": pending.id}) as response:
        wait_until(lambda: server.streams.open_streams == 1, what="the stream to subscribe")
        assert server.http.post(created["urls"]["cancel"]).status_code == 200
        events = list(read_events(response))
    assert [event.job["status"] for event in events] == ["canceled"]
    # Resumed from the pending state the job left: the final state, once, and the end.
    with server.http.stream("GET", url, headers={"Last-Event-ID": pending.id}) as response:
        assert [event.job["status"] for event in read_events(response)] == ["canceled"]
    # Resumed from the final state: 204, which tells a browser's EventSource to stop reconnecting.
    done = server.http.get(url, headers={"Last-Event-ID": events[0].id})
    assert done.status_code == 204 and done.content == b""
    # An id this server did not send counts as none: the current state.
    assert first_event(server, url, **{"Last-Event-ID": "nonsense"}).job["status"] == "canceled"


def test_the_stream_of_a_final_job_is_one_event_then_the_end(serve):
    server = serve()
    created = server.create()
    canceled = server.http.post(created["urls"]["cancel"]).json()["job"]
    with server.http.stream("GET", created["urls"]["stream"]) as response:
        events = list(read_events(response))
    assert len(events) == 1 and events[0].name == "job"
    assert events[0].job == server.http.get(created["urls"]["get"]).json()["job"]
    assert events[0].job["status"] == canceled["status"] == "canceled"
    assert server.streams.open_streams == 0


def test_unknown_jobs_bad_ids_and_the_token_are_json_errors_before_any_stream(serve):
    server = serve(token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    missing = server.http.get("/api/jobs/job_01M8NOSUCHJOB000000000000/stream", headers=auth)
    assert missing.status_code == 404 and "error" in missing.json()
    bad = server.http.get("/api/jobs/not.an.id/stream", headers=auth)
    assert bad.status_code == 400 and "jobId" in bad.json()["error"]
    bad_project = server.http.get("/api/jobs/job_x/stream", params={"projectId": "a/b"}, headers=auth)
    assert bad_project.status_code == 400 and "projectId" in bad_project.json()["error"]
    created = server.http.post("/api/jobs/render", json={"projectId": "live"}, headers=auth).json()
    unsigned = created["urls"]["stream"].partition("&access=")[0]
    refused = server.http.get(unsigned)
    assert refused.status_code == 401 and "JOBS_API_TOKEN" in refused.json()["error"]
    server.http.post(created["urls"]["cancel"], headers=auth)
    with server.http.stream("GET", unsigned, headers=auth) as response:
        assert [event.job["status"] for event in read_events(response)] == ["canceled"]


def test_with_a_token_the_stream_url_is_signed_for_that_job_alone_so_eventsource_can_open_it(serve):
    """A browser's EventSource cannot send Authorization: the urls.stream the API hands out (to a
    caller with the token) opens that job's stream without it, and opens nothing else."""
    server = serve(token="s3cret")
    auth = {"Authorization": "Bearer s3cret"}
    first, second = (server.http.post("/api/jobs/render", json={"projectId": "live"}, headers=auth).json()
                     for _ in range(2))
    stream_url = first["urls"]["stream"]
    assert "&access=" in stream_url
    polled = server.http.get(first["urls"]["get"], headers=auth).json()["job"]
    assert polled["urls"]["stream"] == stream_url  # the same URL from poll to poll
    server.http.post(first["urls"]["cancel"], headers=auth)
    with server.http.stream("GET", stream_url) as response:  # no Authorization
        assert response.status_code == 200
        assert [event.job["status"] for event in read_events(response)] == ["canceled"]
    access = stream_url.partition("&access=")[2]
    second_id = second["jobId"]
    for path in (f"/api/jobs/{second_id}/stream?projectId=live&access={access}",  # another job's stream
                 f"/api/jobs/{first['jobId']}?projectId=live&access={access}",  # the job itself
                 stream_url[:-2] + ("AA" if not stream_url.endswith("AA") else "BB")):  # a forged signature
        refused = server.http.get(path)
        assert refused.status_code == 401, path
    # a stale header beside a valid signature (a page that kept an old token): the signature opens it
    assert server.http.get(stream_url, headers={"Authorization": "Bearer old"}).status_code == 200


def test_create_and_read_carry_urls_beside_the_seeds_poll_and_process_urls(serve):
    server = serve()
    created = server.create()
    job_id = created["jobId"]
    assert created["pollUrl"] == f"/api/jobs/{job_id}" and created["processUrl"] == f"/api/jobs/{job_id}/process"
    urls = {"get": f"/api/jobs/{job_id}?projectId=live", "cancel": f"/api/jobs/{job_id}/cancel?projectId=live",
            "stream": f"/api/jobs/{job_id}/stream?projectId=live"}
    assert created["urls"] == urls
    assert server.http.get(urls["get"]).json()["job"]["urls"] == urls
    assert server.http.get("/api/jobs").json()["jobs"][0]["urls"] == urls
    assert server.http.post(urls["cancel"]).json()["job"]["status"] == "canceled"


def test_a_client_that_goes_away_frees_its_stream(serve):
    server = serve()
    jobs = [server.create() for _ in range(3)]
    with ExitStack() as stack:
        responses = [stack.enter_context(server.http.stream("GET", job["urls"]["stream"])) for job in jobs]
        wait_until(lambda: server.streams.open_streams == 3, what="three open streams")
        for response in responses:
            response.close()  # the connection goes, the jobs stay as they are
        wait_until(lambda: server.streams.open_streams == 0, what="the streams to be freed")


@pytest.mark.slow
def test_a_long_stream_keeps_alive_outlives_the_body_deadline_and_still_ends_with_its_job(serve):
    """Past guard.BODY_SECONDS (the request body's deadline) a stream still sends its comments and
    events, and a client that goes away then is still noticed."""
    server = serve()
    server.streams.keepalive_seconds = 0.25
    followed, dropped = server.create(), server.create()
    started = time.monotonic()
    with server.http.stream("GET", followed["urls"]["stream"]) as response, \
            server.http.stream("GET", dropped["urls"]["stream"]) as leaving:
        lines = response.iter_lines()
        assert next(read_events(lines)).job["status"] == "pending"
        comments = []
        for line in lines:  # keep-alive comments, read as they come, until the deadline is well past
            comments += [line] if line.startswith(":") else []
            if time.monotonic() - started > BODY_SECONDS + 1 and len(comments) >= 2:
                break
        assert server.streams.open_streams == 2
        leaving.close()
        wait_until(lambda: server.streams.open_streams == 1, what="the late disconnect to free its stream")
        server.http.post(followed["urls"]["cancel"])
        rest = list(read_events(lines))
    assert [event.job["status"] for event in rest] == ["canceled"]
    assert server.streams.open_streams == 0


@pytest.mark.slow
def test_stopping_the_server_ends_its_open_streams(tmp_path):
    """uvicorn waits for every open response before it exits: the streams must end on SIGTERM."""
    port = free_port()
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "jobs_core", "serve", "--port", str(port), "--workers", "0",
                                   "--jobs-dir", str(tmp_path / "store")], cwd=ROOT, env=cli_env(),
                                  stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(f"{base}/api/health"), timeout=30, what="the server to start")
        with httpx.Client(base_url=base, timeout=30) as http:
            created = http.post("/api/jobs/render", json={"projectId": "live"}).json()
            with http.stream("GET", created["urls"]["stream"]) as response:
                events = read_events(response)
                assert next(events).job["status"] == "pending"
                server.send_signal(signal.SIGTERM)
                assert list(events) == []  # it ended (the client resumes elsewhere, or later)
        assert server.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it stopped on
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
    output = (tmp_path / "serve.log").read_text()
    assert "Application shutdown complete" in output and "ERROR" not in output, output
    store = FileJobStore(tmp_path / "store")
    assert store.get(created["jobId"]).status is JobStatus.PENDING  # untouched by the stop
    store.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_a_stream_signature_expires_and_belongs_to_its_token():
    from jobs_core.api.stream_access import LIFETIME_SECONDS, access_is_valid, stream_access

    now = 1_800_000_000.0
    access = stream_access("s3cret", "job_a", now)
    assert access_is_valid("s3cret", "job_a", access, now + LIFETIME_SECONDS)  # at least an hour
    assert not access_is_valid("s3cret", "job_a", access, now + 2 * LIFETIME_SECONDS)  # at most two
    assert not access_is_valid("rotated", "job_a", access, now)  # a new token revokes it
    assert not access_is_valid("s3cret", "job_b", access, now)
    for garbage in ("", ".", "x.y", "99999999999999.abc", access.replace(".", "")):
        assert not access_is_valid("s3cret", "job_a", garbage, now)
