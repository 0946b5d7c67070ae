"""jobs_core.client against a real uvicorn server: typed results and exceptions you can act on."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace

import pytest

from jobs_core.api import ApiSettings, create_app
from jobs_core.api.schemas import ApiJob, CreatedJob
from jobs_core.client import (
    ApiUnavailable,
    BadRequest,
    Conflict,
    JobFailed,
    JobsClient,
    NotFound,
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
        client.wait(created.job_id, poll_interval=0.05, max_attempts=3)
    assert raised.value.job.status is JobStatus.PENDING and "after 3 polls" in str(raised.value)
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
