"""jobs_core.client against a real uvicorn server: typed results and exceptions you can act on."""
from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace

import pytest
from fastapi.responses import HTMLResponse, JSONResponse
from proc_helpers import wait_until

from jobs_core.api import ApiSettings, create_app
from jobs_core.api.schemas import ApiJob, CreatedJob
from jobs_core.api.study_schemas import ApiStudy, CreatedStudy
from jobs_core.client import (
    ApiUnavailable,
    BadRequest,
    Conflict,
    JobFailed,
    JobsClient,
    NotFound,
    StreamNotOffered,
    StudyFailed,
    StudyWaitTimeout,
    Unauthorized,
    WaitTimeout,
)
from jobs_core.errors import InvalidInput, JobNotFound, TransitionConflict
from jobs_core.models import JobStatus
from jobs_core.service import JobService
from tests.api_server import GATE, free_port, serve_in_thread


@pytest.fixture
def make_client(memory_service) -> Iterator:
    """Servers over one memory store (the store is not the subject); uvicorn in a thread, since the
    client is an HTTP client."""
    stack, store, settings = ExitStack(), memory_service.store, memory_service.settings

    def make(renderer: str = "axonometric", workers: int = 0, server_token: str | None = None,
             **client_kw) -> JobsClient:
        service = JobService(store, replace(settings, renderer=renderer))
        app = create_app(service, workers=workers,
                         settings=ApiSettings(token=server_token, process_wait_seconds=0.3),
                         render_size=128)
        base = stack.enter_context(serve_in_thread(app))
        return stack.enter_context(JobsClient(base, **client_kw))

    GATE.reset()
    yield make
    GATE.opened.set()
    stack.close()


def test_create_process_get_and_image(make_client):
    client = make_client()
    created = client.create("demo", {"floors": 4, "footprint": "L"})
    assert isinstance(created, CreatedJob) and created.status is JobStatus.PENDING
    assert created.poll_url == f"/api/jobs/{created.job_id}"
    pending = client.get(created.job_id, "demo")
    assert isinstance(pending, ApiJob) and pending.queue_position == 1
    assert pending.concept_inputs["footprint"] == "L"
    done = client.process(created.job_id, "demo", wait=20)
    assert done.status is JobStatus.COMPLETED and done.progress == 100 and done.queue_position is None
    assert client.image(done).startswith(b"\x89PNG")
    assert [e.type for e in client.events(done.job_id)][:2] == ["created", "claimed"]


def test_wait_polls_until_final_and_reports_progress(make_client):
    client = make_client(workers=1)
    created = client.create("demo", {"floors": 2})
    seen: list[JobStatus] = []
    job = client.wait(created.job_id, "demo", poll_interval=0.5, max_attempts=40,
                      on_update=lambda j: seen.append(j.status))
    assert job.status is JobStatus.COMPLETED and seen[-1] is JobStatus.COMPLETED


def test_wait_gives_up_after_max_attempts_and_the_job_goes_on(make_client):
    client = make_client()  # no workers and no /process call: the job stays pending
    created = client.create("demo")
    with pytest.raises(WaitTimeout) as raised:
        client.wait(created.job_id, poll_interval=0.05, max_attempts=3, stream=False)
    assert raised.value.job.status is JobStatus.PENDING and "after 3 polls" in str(raised.value)
    with pytest.raises(WaitTimeout) as streamed:  # through the stream: the same time, about
        client.wait(created.job_id, poll_interval=0.05, max_attempts=3)
    assert streamed.value.job.status is JobStatus.PENDING and "after 0.15 s" in str(streamed.value)
    with pytest.raises(InvalidInput):
        client.wait(created.job_id, max_attempts=0)


def test_cancel_retry_list_and_failure(make_client):
    client = make_client(renderer="test-gated")
    first, second = client.create("a"), client.create("a")
    canceled = client.cancel(first.job_id, "a")
    assert canceled.status is JobStatus.CANCELED
    with pytest.raises(JobFailed) as failed:
        client.wait(first.job_id, poll_interval=0.05, max_attempts=2, raise_on_failure=True)
    assert failed.value.job.status is JobStatus.CANCELED
    assert client.retry(first.job_id).status is JobStatus.PENDING
    page = client.list("a", limit=1)
    assert [j.job_id for j in page.jobs] == [second.job_id] and page.next_cursor == second.job_id
    rest = client.list("a", limit=1, cursor=page.next_cursor)
    assert [j.job_id for j in rest.jobs] == [first.job_id]
    assert client.list(status=JobStatus.CANCELED).jobs == []
    running = client.process(second.job_id, wait=0)
    assert running.status is JobStatus.PROCESSING  # 202 still gives the job
    GATE.opened.set()
    assert client.wait(second.job_id, poll_interval=0.5, max_attempts=40).status is JobStatus.COMPLETED


def test_errors_are_typed_and_carry_the_servers_sentence(make_client):
    client = make_client()
    with pytest.raises(NotFound) as missing:
        client.get("job_nosuchjob")
    assert isinstance(missing.value, JobNotFound) and missing.value.status == 404
    with pytest.raises(BadRequest) as bad:
        client.create("../etc")
    assert isinstance(bad.value, InvalidInput) and "projectId '../etc'" in str(bad.value)
    created = client.create("p", idempotency_key="k1")
    assert client.create("p", idempotency_key="k1").job_id == created.job_id
    with pytest.raises(Conflict) as conflict:
        client.create("p", {"floors": 9}, idempotency_key="k1")
    assert isinstance(conflict.value, TransitionConflict)
    with pytest.raises(Conflict):
        client.retry(created.job_id)
    with pytest.raises(NotFound):
        client.image(client.get(created.job_id))


def test_token_and_unreachable_server(make_client):
    with pytest.raises(Unauthorized) as refused:
        make_client(server_token="t0k3n").list()
    assert "JOBS_API_TOKEN" in str(refused.value) and refused.value.status == 401
    assert make_client(server_token="t0k3n", token="t0k3n").list().jobs == []
    with JobsClient(f"http://127.0.0.1:{free_port()}", timeout=2) as nobody, pytest.raises(ApiUnavailable) as down:
        nobody.health()
    assert "Cannot reach" in str(down.value)


# -- design studies ----------------------------------------------------------------------------
VARY = {"floors": [4, 8], "roof": ["flat", "gable"]}


def test_a_study_is_created_waited_for_and_read_typed(make_client):
    client = make_client(workers=2)
    created = client.create_study("demo", VARY, {"title": "Harbour Library"}, idempotency_key="press-1")
    assert isinstance(created, CreatedStudy) and len(created.job_ids) == 4
    assert created.poll_url == f"/api/studies/{created.study_id}?projectId=demo"
    again = client.create_study("demo", VARY, {"title": "Harbour Library"}, idempotency_key="press-1")
    assert again == created  # the same key and body: the same study, no job twice
    assert len(client.list("demo").jobs) == 4
    seen: list[ApiStudy] = []
    done = client.wait_study(created.study_id, "demo", poll_interval=0.1, max_attempts=300, on_update=seen.append,
                             raise_on_failure=True)
    assert isinstance(done, ApiStudy) and done.status == "completed" and done.progress == 100
    assert done.summary.done == 4 and done.title == "Harbour Library: variations"
    assert [cell.values for cell in done.cells] == [{"floors": f, "roof": r} for f in (4, 8) for r in ("flat", "gable")]
    assert [cell.job_id for cell in done.cells] == created.job_ids
    assert client.image(done.cells[3].job).startswith(b"\x89PNG")
    assert seen[-1] == done and all(isinstance(state, ApiStudy) for state in seen)
    assert client.study(created.study_id) == done  # the project is optional


def test_cancel_retry_and_waiting_on_a_study(make_client):
    client = make_client()  # no workers: the jobs stay queued until canceled
    created = client.create_study("demo", VARY, title="Roofs and heights")
    with pytest.raises(StudyWaitTimeout) as waited:
        client.wait_study(created.study_id, poll_interval=0.05, max_attempts=3)
    assert waited.value.study.summary.queued == 4 and "still running after 3 polls (0 of 4 done, 4 queued)" in str(
        waited.value)
    canceled = client.cancel_study(created.study_id, "demo")
    assert canceled.status == "canceled" and canceled.summary.canceled == 4 and canceled.is_final
    with pytest.raises(StudyFailed) as failed:
        client.wait_study(created.study_id, poll_interval=0.05, raise_on_failure=True)
    assert failed.value.study.status == "canceled" and "ended canceled: 0 of 4 done, 4 canceled" in str(failed.value)
    assert client.wait_study(created.study_id).status == "canceled"  # without raise_on_failure: the study
    retried = client.retry_study(created.study_id)
    assert retried.status == "running" and retried.summary.queued == 4 and retried.title == "Roofs and heights"


def test_study_errors_are_typed_and_carry_the_servers_sentence(make_client):
    client = make_client()
    with pytest.raises(BadRequest) as refused:
        client.create_study("demo", {"width": [24, 6], "floors": [2]}, {"footprint": "courtyard"})
    assert isinstance(refused.value, InvalidInput) and refused.value.status == 422
    assert str(refused.value).startswith("The variation width 6, floors 2 cannot be drawn")
    assert client.list("demo").jobs == []  # refused whole: no job was made
    with pytest.raises(NotFound) as missing:
        client.study("study_01M8S0000000000000000NONE")
    assert isinstance(missing.value, JobNotFound) and "No study with id" in str(missing.value)
    with pytest.raises(NotFound):
        client.cancel_study("study_01M8S0000000000000000NONE")
    client.create_study("demo", VARY, idempotency_key="k1")
    with pytest.raises(Conflict) as reused:
        client.create_study("demo", {"floors": [4, 8]}, idempotency_key="k1")
    assert isinstance(reused.value, TransitionConflict) and "different request body" in str(reused.value)
    with pytest.raises(InvalidInput):
        client.wait_study("study_01M8S0000000000000000NONE", max_attempts=0)
    with pytest.raises(BadRequest, match="^webhook: only http and https URLs are allowed, not ftp.$"):
        client.create_study("demo", VARY, webhook="ftp://example.com/hook")
    hooked = client.create_study("demo", {"roof": ["flat"]}, webhook="http://127.0.0.1:9/hook",
                                 webhook_events_filter=["completed"])
    job = client.study(hooked.study_id).cells[0].job
    assert job.webhook == "http://127.0.0.1:9/hook" and job.webhook_events_filter == ["completed"]


# -- stream(): the job's states pushed by the server ------------------------------------------
@pytest.fixture
def streaming(memory_service) -> Iterator:
    """streaming(renderer, workers, wrap=None) -> (base URL, app): a server over one memory store."""
    stack = ExitStack()

    def make(renderer: str = "test-gated", workers: int = 1, wrap=None):
        service = JobService(memory_service.store, replace(memory_service.settings, renderer=renderer))
        app = create_app(service, workers=workers, settings=ApiSettings(process_wait_seconds=0.3), render_size=128)
        return stack.enter_context(serve_in_thread(wrap(app) if wrap else app)), app

    GATE.reset()
    yield make
    GATE.opened.set()
    stack.close()


def test_stream_yields_each_state_until_the_final_one(streaming):
    base, app = streaming()
    with JobsClient(base) as client:
        created = client.create("demo", {"floors": 3})
        states = []
        for job in client.stream(created.job_id, "demo"):
            states.append(job)
            if job.stage == "waiting at the gate":  # the render is held there: the stream showed it
                GATE.opened.set()
    assert states[0].status in (JobStatus.PENDING, JobStatus.PROCESSING)
    assert states[-1].status is JobStatus.COMPLETED and states[-1].image_url and states[-1].urls is not None
    assert "waiting at the gate" in [job.stage for job in states]
    progress = [job.progress for job in states if job.status is JobStatus.PROCESSING]
    assert progress == sorted(progress)
    assert [job.status for job in states].count(JobStatus.COMPLETED) == 1
    assert app.state.api.streams.open_streams == 0


def test_wait_follows_the_stream_when_the_server_offers_one(streaming):
    base, app = streaming()
    hub = app.state.api.streams
    open_while_updating: list[int] = []

    def on_update(job: ApiJob) -> None:
        open_while_updating.append(hub.open_streams)
        if job.stage == "waiting at the gate":
            GATE.opened.set()

    with JobsClient(base) as client:
        created = client.create("demo")
        job = client.wait(created.job_id, "demo", poll_interval=0.5, max_attempts=60, on_update=on_update)
    assert job.status is JobStatus.COMPLETED
    assert open_while_updating[0] == 1  # the states came through a stream, not from polls


def without_streams(app):
    """The app as an older server would answer: no stream route."""
    async def older_server(scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/stream"):
            response = JSONResponse({"error": f"No such endpoint: GET {scope['path']}."}, status_code=404)
            return await response(scope, receive, send)
        await app(scope, receive, send)

    return older_server


def a_page_for_streams(app):
    """The app behind a proxy that answers the stream route with a page of its own."""
    async def proxied(scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/stream"):
            return await HTMLResponse("<html>Please sign in</html>")(scope, receive, send)
        await app(scope, receive, send)

    return proxied


def test_wait_polls_a_server_without_streams(streaming):
    base, app = streaming(renderer="axonometric", wrap=without_streams)
    with JobsClient(base) as client:
        created = client.create("demo", {"floors": 2})
        seen: list[JobStatus] = []
        job = client.wait(created.job_id, "demo", poll_interval=0.5, max_attempts=60,
                          on_update=lambda j: seen.append(j.status))
        assert job.status is JobStatus.COMPLETED and seen[-1] is JobStatus.COMPLETED
        with pytest.raises(NotFound):
            next(client.stream(created.job_id, "demo"))
        with pytest.raises(NotFound):  # a job that is not there is still NotFound, not a fallback
            client.wait("job_01M8NOSUCHJOB000000000000", poll_interval=0.1, max_attempts=2)


def test_stream_errors_are_typed(streaming):
    base, _ = streaming(workers=0)
    with JobsClient(base) as client:
        with pytest.raises(NotFound):
            next(client.stream("job_01M8NOSUCHJOB000000000000"))
        with pytest.raises(BadRequest):
            next(client.stream("not.an.id"))
        created = client.create("demo")
        with pytest.raises(WaitTimeout) as late:
            list(client.stream(created.job_id, timeout=0.3))
        assert late.value.job.status is JobStatus.PENDING
        client.cancel(created.job_id)  # not left for the next server's worker
    base, _ = streaming(renderer="axonometric", wrap=a_page_for_streams)
    with JobsClient(base) as client:
        created = client.create("demo")
        with pytest.raises(StreamNotOffered):
            next(client.stream(created.job_id))
        assert client.wait(created.job_id, poll_interval=0.5, max_attempts=60).status is JobStatus.COMPLETED  # polled


class CuttableProxy:
    """A TCP proxy in front of a server: the test cuts its open connections, as a network drop would."""

    def __init__(self, upstream: str) -> None:
        self.upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return  # closed
            far = socket.create_connection(self.upstream)
            with self._lock:
                self._open += [near, far]
            threading.Thread(target=self._pump, args=(near, far, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(far, near, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests:
                    self.requests.append(data)
                target.sendall(data)
        except OSError:
            pass
        for end in (source, target):
            _shut(end)

    def cut(self) -> None:
        with self._lock:
            ends, self._open = self._open, []
        for end in ends:
            _shut(end)

    def close(self) -> None:
        self.listener.close()
        self.cut()


def _shut(end: socket.socket) -> None:
    try:
        end.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    end.close()


def test_stream_resumes_after_a_dropped_connection_with_last_event_id(streaming):
    base, app = streaming(workers=0)  # nobody renders: the job waits until it is canceled
    hub, proxy = app.state.api.streams, CuttableProxy(base)

    def cancel_once_resumed() -> None:
        wait_until(lambda: any(b"last-event-id:" in request.lower() for request in proxy.requests),
                   what="the client to reconnect with Last-Event-ID")
        wait_until(lambda: hub.open_streams == 1, what="the resumed stream")
        app.state.api.service.cancel(created.job_id)

    with JobsClient(proxy.url) as client:
        created = client.create("demo")
        states = []
        for job in client.stream(created.job_id, "demo"):
            states.append(job.status)
            if len(states) == 1:
                proxy.cut()
                threading.Thread(target=cancel_once_resumed, daemon=True).start()
    proxy.close()
    # the pending state was not sent again on the resumed connection: only what changed since
    assert states == [JobStatus.PENDING, JobStatus.CANCELED]
