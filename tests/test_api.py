"""The HTTP API in process (FastAPI's TestClient) over the memory store: the store is not the
subject here (the contract suite covers every backend). What needs a real socket (a client that
times out) runs under uvicorn on 127.0.0.1; tests/test_api_serve.py runs the real processes."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace

import httpx
import pytest
from fastapi.testclient import TestClient

from jobs_core.api import ApiSettings, create_app
from jobs_core.errors import InvalidInput
from jobs_core.models import JobStatus
from jobs_core.service import JobService
from jobs_core.store import FileJobStore, MemoryJobStore
from jobs_core.worker import Worker
from tests.api_server import GATE, serve_in_thread

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEED_CREATE_KEYS = {"jobId", "conceptId", "status", "pollUrl", "processUrl"}


@dataclass
class Api:
    http: httpx.Client
    service: JobService

    def create(self, project: str = "p1", **inputs) -> dict:
        response = self.http.post("/api/jobs/render", json={"projectId": project, "renderType": "axonometric",
                                                           "conceptInputs": inputs})
        assert response.status_code == 201, response.text
        return response.json()

    def job(self, job_id: str, **params) -> dict:
        response = self.http.get(f"/api/jobs/{job_id}", params=params)
        assert response.status_code == 200, response.text
        return response.json()["job"]

    def wait_until(self, job_id: str, predicate, seconds: float = 20.0) -> dict:
        """Poll (server-held GETs) until predicate(job); bounded."""
        deadline = seconds
        while deadline > 0:
            job = self.http.get(f"/api/jobs/{job_id}", headers={"Prefer": "wait=0.2"}).json()["job"]
            if predicate(job):
                return job
            deadline -= 0.2
        raise AssertionError(f"job {job_id} never reached the expected state: {job}")


@pytest.fixture
def make_api(settings) -> Iterator:
    """make(...) -> Api: an app over one memory store (the same for every app of a test), driven in
    process; `over_http=True` serves it under uvicorn instead."""
    stack, store = ExitStack(), MemoryJobStore()

    def make(workers: int = 0, renderer: str = "axonometric", over_http: bool = False, **api_settings) -> Api:
        service = JobService(store, replace(settings, renderer=renderer))
        app = create_app(service, workers=workers, settings=ApiSettings(**api_settings), render_size=128)
        if over_http:
            http = httpx.Client(base_url=stack.enter_context(serve_in_thread(app)), timeout=30)
        else:
            http = TestClient(app)
        return Api(stack.enter_context(http), service)

    GATE.reset()
    yield make
    GATE.opened.set()  # let any render still waiting finish before the app stops
    stack.close()
    GATE.reset()


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


@pytest.fixture
def gated(make_api) -> Api:
    """No embedded workers; renders wait at GATE until the test opens it."""
    return make_api(renderer="test-gated", process_wait_seconds=0.3)


def _is_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    message = response.json()["error"]
    assert isinstance(message, str) and message.endswith(".") and "Traceback" not in message
    return message


# -- the seed's endpoints ------------------------------------------------------------------------
def test_create_answers_the_seed_fields_and_the_job_is_stored(api):
    response = api.http.post("/api/jobs/render", json={"projectId": "test-123", "renderType": "axonometric",
                                                       "conceptInputs": {"floors": 7, "footprint": "L"}})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == SEED_CREATE_KEYS | {"urls"} and body["status"] == "pending"
    assert body["pollUrl"] == f"/api/jobs/{body['jobId']}"
    assert body["processUrl"] == f"/api/jobs/{body['jobId']}/process"
    assert response.headers["location"] == f"/api/jobs/{body['jobId']}?projectId=test-123"
    stored = api.service.get(body["jobId"], "test-123")
    assert stored.concept_id == body["conceptId"] and stored.concept_inputs["floors"] == 7


def test_get_with_and_without_project_has_queue_position_and_retry_after(api):
    first, second = api.create(), api.create()
    for params in ({"projectId": "p1"}, {}):
        response = api.http.get(f"/api/jobs/{second['jobId']}", params=params)
        assert response.status_code == 200 and response.headers["retry-after"] == "1"
        job = response.json()["job"]
        assert job["jobId"] == second["jobId"] and job["status"] == "pending" and job["progress"] == 0
        assert job["queuePosition"] == 2 and job["imageUrl"] is None and job["error"] is None
    assert api.job(first["jobId"])["queuePosition"] == 1
    _is_error(api.http.get(f"/api/jobs/{first['jobId']}", params={"projectId": "other"}), 404)
    _is_error(api.http.get("/api/jobs/job_nosuchjob"), 404)


def test_process_runs_the_job_and_answers_it_completed_with_a_png(api):
    created = api.create(floors=3)
    response = api.http.post(f"/api/jobs/{created['jobId']}/process",
                             json={"projectId": "p1", "conceptInputs": {"floors": 3}})
    assert response.status_code == 200, response.text
    job = response.json()["job"]
    assert job["status"] == "completed" and job["progress"] == 100 and "queuePosition" not in job
    assert "retry-after" not in response.headers
    image = api.http.get(job["imageUrl"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(PNG_MAGIC)
    again = api.http.post(f"/api/jobs/{created['jobId']}/process", json={"projectId": "p1"})
    assert again.status_code == 200 and again.json()["job"]["finishedAt"] == job["finishedAt"]
    claims = [e for e in api.service.events(created["jobId"]) if e.type == "claimed"]
    assert len(claims) == 1


def test_process_answers_202_while_running_and_never_starts_a_second_render(gated):
    job_id = gated.create()["jobId"]
    first = gated.http.post(f"/api/jobs/{job_id}/process", json={"projectId": "p1"})
    assert first.status_code == 202 and first.headers["retry-after"] == "1"
    assert first.json()["job"]["status"] == "processing"
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: gated.http.post(f"/api/jobs/{job_id}/process"), range(4)))
    assert {a.status_code for a in answers} == {202}
    assert GATE.renders_of(job_id) == 1
    GATE.opened.set()
    assert gated.wait_until(job_id, lambda j: j["status"] == "completed")["attempts"] == 1
    assert GATE.renders_of(job_id) == 1


def test_processing_goes_on_when_the_client_disconnects(make_api):
    gated = make_api(renderer="test-gated", process_wait_seconds=0.3, over_http=True)
    job_id = gated.create()["jobId"]
    with pytest.raises(httpx.ReadTimeout):  # the seed's free-tier timeout, in miniature
        gated.http.post(f"/api/jobs/{job_id}/process", headers={"Prefer": "wait=30"}, timeout=0.5)
    gated.wait_until(job_id, lambda j: j["status"] == "processing")
    GATE.opened.set()
    job = gated.wait_until(job_id, lambda j: j["status"] == "completed")
    assert gated.http.get(job["imageUrl"]).content.startswith(PNG_MAGIC)


def test_process_calls_beyond_the_inline_limit_queue_and_still_run_here(make_api):
    api = make_api(renderer="test-gated", max_inline_renders=1, process_wait_seconds=0.1)
    ids = [api.create()["jobId"] for _ in range(3)]
    answers = [api.http.post(f"/api/jobs/{job_id}/process") for job_id in ids]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json()["job"]["status"] for a in answers] == ["processing", "pending", "pending"]
    GATE.opened.set()  # no worker threads and no further /process call: the queue drains itself
    for job_id in ids:
        assert api.wait_until(job_id, lambda j: j["status"] == "completed")["attempts"] == 1
    assert [GATE.renders_of(job_id) for job_id in ids] == [1, 1, 1]


def test_with_inline_renders_off_process_only_waits_for_separate_workers(make_api):
    api = make_api(max_inline_renders=0, process_wait_seconds=0.2)
    job_id = api.create()["jobId"]
    waiting = api.http.post(f"/api/jobs/{job_id}/process")
    assert waiting.status_code == 202 and waiting.json()["job"]["status"] == "pending"
    worker = Worker(api.service, concurrency=1, poll_seconds=0.05, render_size=128).start()  # "another host"
    try:
        done = api.http.post(f"/api/jobs/{job_id}/process", headers={"Prefer": "wait=30"})
    finally:
        worker.stop()
    assert done.status_code == 200 and done.json()["job"]["workerId"] == worker.worker_id


def test_a_retryable_failure_is_retried_here_without_workers(make_api):
    api = make_api(renderer="test-flaky", process_wait_seconds=0.1)  # backoff is 0 s in these tests
    job_id = api.create()["jobId"]
    api.http.post(f"/api/jobs/{job_id}/process")
    job = api.wait_until(job_id, lambda j: j["status"] == "completed")
    assert job["attempts"] == 2 and job["error"] is None
    events = api.http.get(f"/api/jobs/{job_id}/events").json()["events"]
    assert [e["type"] for e in events if e["type"] != "progress"] == \
        ["created", "claimed", "requeued", "claimed", "completed"]


def test_embedded_workers_render_without_a_process_call(make_api):
    api = make_api(workers=2)
    job_id = api.create(floors=2)["jobId"]
    job = api.wait_until(job_id, lambda j: j["status"] == "completed")
    assert api.http.get(job["imageUrl"]).content.startswith(PNG_MAGIC)
    health = api.http.get("/api/health").json()
    assert health == {"status": "ok", "workers": 2, "queueLength": 0}


# -- extensions ----------------------------------------------------------------------------------
def test_prefer_wait_holds_a_get_until_final_and_is_capped(make_api):
    api = make_api(renderer="test-gated", max_wait_seconds=0.4)
    job_id = api.create()["jobId"]
    held = api.http.get(f"/api/jobs/{job_id}", headers={"Prefer": "wait=100"})
    assert held.headers["preference-applied"] == "wait=0.4" and held.json()["job"]["status"] == "pending"
    assert held.headers["retry-after"] == "1"
    api.http.post(f"/api/jobs/{job_id}/process", headers={"Prefer": "wait=0"})
    answers: list[httpx.Response] = []
    waiter = threading.Thread(target=lambda: answers.append(
        api.http.get(f"/api/jobs/{job_id}", headers={"Prefer": "wait=0.4, respond-async"})))
    waiter.start()
    GATE.opened.set()
    waiter.join(10)
    final = api.wait_until(job_id, lambda j: j["status"] == "completed")
    assert answers and answers[0].status_code == 200
    ignored = api.http.get(f"/api/jobs/{job_id}", headers={"Prefer": "wait=soon"})
    assert ignored.status_code == 200 and "preference-applied" not in ignored.headers
    assert ignored.json()["job"]["finishedAt"] == final["finishedAt"]


def test_list_is_newest_first_filtered_and_paginated(api):
    ids = [api.create(project)["jobId"] for project in ("a", "b", "a", "a")]
    api.http.post(f"/api/jobs/{ids[0]}/cancel")
    page = api.http.get("/api/jobs", params={"projectId": "a"}).json()
    assert [j["jobId"] for j in page["jobs"]] == [ids[3], ids[2], ids[0]] and page["nextCursor"] is None
    assert [j.get("queuePosition") for j in page["jobs"]] == [3, 2, None]
    canceled = api.http.get("/api/jobs", params={"status": "canceled"}).json()["jobs"]
    assert [j["jobId"] for j in canceled] == [ids[0]]
    first = api.http.get("/api/jobs", params={"limit": 3}).json()
    assert [j["jobId"] for j in first["jobs"]] == ids[:0:-1] and first["nextCursor"] == ids[1]
    rest = api.http.get("/api/jobs", params={"limit": 3, "cursor": first["nextCursor"]}).json()
    assert [j["jobId"] for j in rest["jobs"]] == [ids[0]] and rest["nextCursor"] is None
    assert "limit" in _is_error(api.http.get("/api/jobs", params={"limit": 0}), 400)
    assert "status" in _is_error(api.http.get("/api/jobs", params={"status": "done"}), 400)


def test_cancel_and_retry_follow_the_state_machine(api):
    job_id = api.create()["jobId"]
    canceled = api.http.post(f"/api/jobs/{job_id}/cancel", params={"projectId": "p1"})
    assert canceled.status_code == 200 and canceled.json()["job"]["status"] == "canceled"
    assert "canceled" in _is_error(api.http.post(f"/api/jobs/{job_id}/cancel"), 409)
    retried = api.http.post(f"/api/jobs/{job_id}/retry")
    assert retried.status_code == 200 and retried.json()["job"]["status"] == "pending"
    assert retried.json()["job"]["queuePosition"] == 1
    assert "pending" in _is_error(api.http.post(f"/api/jobs/{job_id}/retry"), 409)
    types = [e["type"] for e in api.http.get(f"/api/jobs/{job_id}/events").json()["events"]]
    assert types == ["created", "canceled", "retried"]


def test_cancel_reaches_a_running_render(gated):
    job_id = gated.create()["jobId"]
    assert gated.http.post(f"/api/jobs/{job_id}/process").status_code == 202
    asked = gated.http.post(f"/api/jobs/{job_id}/cancel").json()["job"]
    assert asked["status"] == "processing" and asked["cancelRequested"] is True
    job = gated.wait_until(job_id, lambda j: j["status"] == "canceled")
    assert job["imageUrl"] is None
    _is_error(gated.http.get(f"/api/renders/p1/{job_id}.png"), 404)


def test_events_log_the_whole_run(api):
    job_id = api.create()["jobId"]
    api.http.post(f"/api/jobs/{job_id}/process")
    events = api.http.get(f"/api/jobs/{job_id}/events", params={"projectId": "p1"}).json()["events"]
    assert events[0]["type"] == "created" and events[1]["type"] == "claimed" and events[-1]["type"] == "completed"
    assert all(e["jobId"] == job_id for e in events)
    _is_error(api.http.get("/api/jobs/job_nosuchjob/events"), 404)


def test_renders_only_serve_completed_jobs_images(api):
    job_id = api.create()["jobId"]
    assert "pending" in _is_error(api.http.get(f"/api/renders/p1/{job_id}.png"), 404)
    _is_error(api.http.get(f"/api/renders/p1/{job_id}.jpg"), 404)
    _is_error(api.http.get(f"/api/renders/other/{job_id}.png"), 404)
    _is_error(api.http.get("/api/renders/p1/..png"), 400)


# -- idempotency ---------------------------------------------------------------------------------
def _create_with_key(api: Api, key: str, body: dict) -> httpx.Response:
    return api.http.post("/api/jobs/render", json=body, headers={"Idempotency-Key": key})


def test_idempotency_key_same_body_same_job_other_body_409(api):
    body = {"projectId": "p1", "conceptInputs": {"floors": 4}}
    first = _create_with_key(api, "order-42", body)
    again = _create_with_key(api, "order-42", {**body, "renderType": "axonometric"})
    assert first.status_code == again.status_code == 201
    assert again.json()["jobId"] == first.json()["jobId"] and again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert "different request body" in _is_error(
        _create_with_key(api, "order-42", {"projectId": "p1", "conceptInputs": {"floors": 5}}), 409)
    other_project = _create_with_key(api, "order-42", {**body, "projectId": "p2"})
    assert other_project.status_code == 201 and other_project.json()["jobId"] != first.json()["jobId"]
    assert len(api.http.get("/api/jobs", params={"projectId": "p1"}).json()["jobs"]) == 1
    _is_error(_create_with_key(api, "x" * 300, body), 400)


def test_concurrent_creates_with_one_key_make_one_job(api):
    body = {"projectId": "race", "conceptInputs": {"floors": 9}}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _create_with_key(api, "same-key", body), range(8)))
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["jobId"] for a in answers}) == 1
    assert len(api.service.list("race").jobs) == 1


# -- bad input and safety ------------------------------------------------------------------------
JSON = {"content-type": "application/json"}
# Each bad request, its status and its exact sentence: 400 for the path, query, headers or a body
# that is not JSON; 422 for a JSON body that is not a valid request.
ERRORS = [
    ('POST', '/api/jobs/render', {'content': b'{not json', 'headers': JSON}, 400,
     'The request body is not valid JSON (Expecting property name enclosed in double quotes).'),
    ('POST', '/api/jobs/render', {'content': b'\xc3(', 'headers': JSON}, 400,
     'The request body is not valid JSON (not UTF-8, UTF-16 or UTF-32 text).'),
    ('POST', '/api/jobs/render', {'content': b'', 'headers': JSON}, 422,
     'The request body is required: send a JSON object.'),
    ('POST', '/api/jobs/render', {'content': b'{"projectId": "p"}', 'headers': {'content-type': 'text/plain'}}, 422,
     'The request body must be a JSON object sent with Content-Type: application/json.'),
    ('POST', '/api/jobs/render', {'content': b'{"projectId": "p"}'}, 422,
     'The request body must be a JSON object sent with Content-Type: application/json.'),
    ('POST', '/api/jobs/render', {'content': b'projectId=p'}, 422,
     'The request body must be a JSON object sent with Content-Type: application/json.'),
    ('POST', '/api/jobs/render', {'json': [1, 2]}, 422,
     'The request body must be a JSON object.'),
    ('POST', '/api/jobs/render', {'json': {}}, 422,
     'projectId is required.'),
    ('POST', '/api/jobs/render', {'json': {'projectId': 7}}, 422,
     "projectId must be a valid string (got 7)."),
    ('POST', '/api/jobs/render', {'json': {'projectId': '../../etc'}}, 422,
     "projectId '../../etc' must start with a letter or a digit."),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p' * 65}}, 422,
     'projectId is 65 characters long; at most 64 are allowed.'),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p', 'conceptInputs': {'floors': 'many'}}}, 422,
     "conceptInputs.floors must be a valid integer, unable to parse string as an integer (got 'many')."),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p', 'conceptInputs': {'floors': 0}}}, 422,
     "conceptInputs.floors must be at least 1 (got 0)."),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p', 'conceptInputs': {'floors': 10000.0}}}, 422,
     "conceptInputs.floors must be at most 120 (got 10000)."),  # as typed, not as a form's float
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p', 'conceptInputs': []}}, 422,
     'conceptInputs must be a JSON object.'),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p', 'renderType': '../x'}}, 422,
     "renderType '../x' must start with a letter or a digit."),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p', 'renderType': 'oil-painting'}}, 422,
     "renderType 'oil-painting' is not one of: axonometric, exploded-axonometric, plan, elevation."),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p', 'surprise': 1}}, 422,
     "surprise is not a known field (got 1)."),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p'}, 'headers': {'Idempotency-Key': 'x' * 300}}, 400,
     'Idempotency-Key must be 1 to 255 printable ASCII characters.'),
    ('POST', '/api/jobs/render', {'json': {'projectId': 'p'}, 'headers': {'Idempotency-Key': ''}}, 400,
     'Idempotency-Key must be 1 to 255 printable ASCII characters.'),
    ('GET', '/api/jobs/job_x', {'params': {'projectId': '../..'}}, 400,
     "projectId '../..' must start with a letter or a digit."),
    ('GET', '/api/jobs/..%2F..%2Fetc%2Fpasswd', {}, 404,
     'No such endpoint: GET /api/jobs/../../etc/passwd.'),
    ('GET', '/api/jobs/.hidden', {}, 400,
     "jobId '.hidden' must start with a letter or a digit."),
    ('GET', '/api/jobs/' + 'j' * 65, {}, 400,
     'jobId is 65 characters long; at most 64 are allowed.'),
    ('GET', '/api/jobs/job_nosuchjob', {}, 404,
     'No job with id job_nosuchjob.'),
    ('POST', '/api/jobs/job_nosuchjob/process', {}, 404,
     'No job with id job_nosuchjob.'),
    ('POST', '/api/jobs/job_nosuchjob/process', {'json': {'projectId': 'a b'}}, 422,
     "projectId 'a b' may only contain letters, digits, '-' and '_'."),
    ('POST', '/api/jobs/job_nosuchjob/process', {'json': [1]}, 422,
     'The request body must be a JSON object.'),
    ('POST', '/api/jobs/job_nosuchjob/cancel', {}, 404,
     'No job with id job_nosuchjob.'),
    ('POST', '/api/jobs/job_nosuchjob/retry', {}, 404,
     'No job with id job_nosuchjob.'),
    ('GET', '/api/jobs/job_nosuchjob/events', {}, 404,
     'No job with id job_nosuchjob.'),
    ('GET', '/api/renders/..%2F..%2Fjobs/x.png', {}, 404,
     'No such endpoint: GET /api/renders/../../jobs/x.png.'),
    ('GET', '/api/renders/p1/job_nosuchjob.png', {}, 404,
     'No job with id job_nosuchjob in project p1.'),
    ('GET', '/api/renders/p1/job_x.jpg', {}, 404,
     "Renders are served as /api/renders/{projectId}/{jobId}.png, not 'job_x.jpg'."),
    ('GET', '/api/renders/p1/..png', {}, 400,
     "jobId '.' must start with a letter or a digit."),
    ('GET', '/api/renders/a%20b/job_x.png', {}, 400,
     "projectId 'a b' may only contain letters, digits, '-' and '_'."),
    ('GET', '/api/jobs', {'params': {'cursor': '../x'}}, 400,
     "cursor '../x' must start with a letter or a digit."),
    ('GET', '/api/jobs', {'params': {'limit': 'ten'}}, 400,
     "limit (query) must be a valid integer, unable to parse string as an integer (got 'ten')."),
    ('GET', '/api/jobs', {'params': {'limit': 0}}, 400,
     "limit (query) must be at least 1 (got '0')."),
    ('GET', '/api/jobs', {'params': {'status': 'done'}}, 400,
     "status (query) must be 'pending', 'processing', 'completed', 'failed' or 'canceled' (got 'done')."),
    ('PUT', '/api/jobs/render', {}, 405,
     'PUT is not allowed on /api/jobs/render.'),
    ('GET', '/api/nothing-here', {}, 404,
     'No such endpoint: GET /api/nothing-here.'),
]


@pytest.mark.parametrize(("method", "path", "request_kwargs", "status", "sentence"), ERRORS,
                         ids=[f"{m} {p[:40]} {str(k)[:40]}" for m, p, k, _, _ in ERRORS])
def test_a_bad_request_is_told_in_one_exact_sentence_and_changes_nothing(api, method, path, request_kwargs,
                                                                          status, sentence):
    before = _store_state(api.service)
    answer = api.http.request(method, path, **request_kwargs)
    assert (answer.status_code, _is_error(answer, status)) == (status, sentence)
    assert _store_state(api.service) == before


def _store_state(service: JobService) -> tuple[list[str], list[str]]:
    return [job.model_dump_json() for job in service.list().jobs], service.store.projects()


def test_a_create_body_in_any_json_form_fastapi_takes_is_taken(api):
    body = json.dumps({"projectId": "forms", "conceptInputs": {"floors": 3}})
    utf16 = api.http.post("/api/jobs/render", content=body.encode("utf-16"),
                          headers={"content-type": "application/json"})
    vendor = api.http.post("/api/jobs/render", content=body, headers={"content-type": "application/vnd.api+json"})
    assert utf16.status_code == vendor.status_code == 201
    assert [job.concept_inputs["floors"] for job in api.service.list("forms").jobs] == [3, 3]


def test_bodies_over_the_limit_are_refused_declared_or_streamed(make_api):
    api = make_api(max_body_bytes=2048)
    big = {"projectId": "p1", "conceptInputs": {"description": "x" * 4000}}
    too_large = "The request body is larger than the limit of 2048 bytes."
    assert _is_error(api.http.post("/api/jobs/render", json=big), 413) == too_large
    streamed = api.http.post("/api/jobs/render", headers={"content-type": "application/json"},
                             content=(chunk for chunk in [b'{"projectId": "p1", "conceptInputs": {"description": "',
                                                          b"x" * 4000, b'"}}']))
    assert _is_error(streamed, 413) == too_large
    assert api.service.list().jobs == []
    assert api.http.post("/api/jobs/render", json={"projectId": "p1"}).status_code == 201


def test_bearer_token_when_configured(make_api):
    api = make_api(token="s3cret")
    assert _is_error(api.http.post("/api/jobs/render", json={"projectId": "p1"}), 401) == \
        "This API needs 'Authorization: Bearer <JOBS_API_TOKEN>'."
    wrong = api.http.get("/api/jobs", headers={"Authorization": "Bearer nope"})
    assert _is_error(wrong, 401) and wrong.headers["www-authenticate"] == "Bearer"
    ok = api.http.post("/api/jobs/render", json={"projectId": "p1"}, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert api.http.get("/api/health").status_code == 200  # liveness probes carry no secrets


def test_cors_is_off_by_default_and_configurable(make_api):
    closed = make_api()
    assert "access-control-allow-origin" not in closed.http.get(
        "/api/health", headers={"Origin": "https://evil.example"}).headers
    opened = make_api(cors_origins=("https://app.example",))
    preflight = opened.http.options("/api/jobs/render", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,idempotency-key"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    created = opened.http.post("/api/jobs/render", json={"projectId": "p1"}, headers={"Origin": "https://app.example"})
    assert created.headers["access-control-allow-origin"] == "https://app.example"
    assert "Location" in created.headers["access-control-expose-headers"]
    other = opened.http.get("/api/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_stopping_the_server_hands_a_running_job_back_to_the_queue(memory_service):
    service = JobService(memory_service.store, replace(memory_service.settings, renderer="test-gated"))
    GATE.reset()
    app = create_app(service, settings=ApiSettings(process_wait_seconds=0.2))
    try:
        with TestClient(app) as http:  # leaving it runs the app's shutdown
            job_id = http.post("/api/jobs/render", json={"projectId": "p1"}).json()["jobId"]
            assert http.post(f"/api/jobs/{job_id}/process").json()["job"]["status"] == "processing"
        job = service.get(job_id)
        assert job.status is JobStatus.PENDING and job.attempts == 0 and job.worker_id is None
    finally:
        GATE.opened.set()


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("", None), ("wait=5", 5.0), ("respond-async, wait=2.5", 2.5), ('wait="3"', 3.0),
    ("WAIT=4", 4.0), ("wait=999", 60.0), ("wait=-1", None), ("wait=nan", None), ("wait=soon", None),
    ("return=minimal", None),
])
def test_prefer_wait_parsing_follows_rfc_7240(header, expected):
    from jobs_core.api.context import requested_wait

    assert requested_wait(header, cap=60.0) == expected


def test_api_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("JOBS_API_TOKEN", "abc")
    monkeypatch.setenv("JOBS_API_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("JOBS_API_MAX_INLINE_RENDERS", "0")
    monkeypatch.setenv("JOBS_API_MAX_BODY_BYTES", "1000")
    loaded = ApiSettings.from_env()
    assert loaded.token == "abc" and loaded.cors_origins == ("https://a.example", "https://b.example")
    assert loaded.max_inline_renders == 0 and loaded.max_body_bytes == 1000
    monkeypatch.setenv("JOBS_API_MAX_BODY_BYTES", "0")
    with pytest.raises(InvalidInput, match="JOBS_API_MAX_BODY_BYTES='0' must be more than 0"):
        ApiSettings.from_env()
    monkeypatch.setenv("JOBS_API_MAX_BODY_BYTES", "lots")
    with pytest.raises(InvalidInput, match="is not a number"):
        ApiSettings.from_env()


def test_queue_positions_from_one_listing_stay_right_as_the_queue_changes(memory_service):
    from jobs_core.api.positions import QueuePositions

    service = memory_service
    positions = QueuePositions(service.store, ttl=60)  # only changes to the jobs themselves refresh it
    first = service.submit({"projectId": "q"})
    assert positions.of(first) == 1
    second = service.submit({"projectId": "q"})  # created after the listing: triggers a new one
    assert positions.of(second) == 2 and positions.of_many([first, second]) == {first.job_id: 1, second.job_id: 2}
    canceled = service.cancel(first.job_id)
    assert positions.of(canceled) is None
    third = service.submit({"projectId": "q"})
    assert positions.of_many([second, third]) == {second.job_id: 1, third.job_id: 2}


def test_a_corrupt_job_file_is_a_json_409_without_the_servers_paths(settings, tmp_path):
    service = JobService(FileJobStore(tmp_path / "store"), settings)  # a file to corrupt: the file store
    job_id = service.submit({"projectId": "broken"}).job_id
    (tmp_path / "store" / "jobs" / "broken" / f"{job_id}.json").write_text('{"jobId": "half a doc')
    with TestClient(create_app(service)) as http:
        message = _is_error(http.get(f"/api/jobs/{job_id}", params={"projectId": "broken"}), 409)
        listed = http.get("/api/jobs", params={"projectId": "broken"})
    assert message == "The stored job document is unreadable; an operator must repair or delete it."
    assert str(tmp_path) not in message
    assert listed.status_code == 200 and listed.json()["jobs"] == []  # the listing skips it


def test_the_openapi_document_shows_the_create_body_and_the_idempotency_key_header(api):
    document = api.http.get("/openapi.json").json()
    create = document["paths"]["/api/jobs/render"]["post"]
    assert create["requestBody"]["required"] is True
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RenderRequest"}
    assert {"projectId", "renderType", "conceptInputs"} <= set(document["components"]["schemas"]["RenderRequest"]
                                                               ["properties"])
    [key] = [p for p in create["parameters"] if p["name"] == "Idempotency-Key"]
    assert key["in"] == "header" and key["required"] is False
    assert (key["schema"]["minLength"], key["schema"]["maxLength"]) == (1, 255)
    poll = document["paths"]["/api/jobs/{jobId}"]["get"]
    assert {p["name"] for p in poll["parameters"]} == {"jobId", "projectId", "prefer"}
