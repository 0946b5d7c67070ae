"""Signed webhooks, end to end: real receivers on 127.0.0.1 that verify every delivery with the
`standardwebhooks` package as a receiver would, real workers (threads and processes), every backend.

Retries use a short backoff set through the environment (JOBS_WEBHOOK_BACKOFF_SECONDS), never
sleeps: tests wait for what they expect to happen (the outbox to empty, a request to arrive).
"""
from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from proc_helpers import cli_env, run_cli, start_worker, wait_until
from standardwebhooks import Webhook

from jobs_core.api import ApiSettings, create_app
from jobs_core.lifecycle import Outcome
from jobs_core.models import JobStatus, utcnow
from jobs_core.monitor.alerts import Alert, AlertLog
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.webhooks import WebhookSettings, deliveries_for, due_events
from jobs_core.webhooks_sender import WebhookSender, alert_sinks, send_once, signing_secret
from jobs_core.webhooks_targets import resolve_target, target_problem
from jobs_core.worker import Worker
from tests.api_server import free_port, serve_in_thread


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    answered: int

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def doc(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with `answers` in turn
    (then 200). `verify(secret)` checks every recorded signature with standardwebhooks."""

    port: int = 0
    answers: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    code = receiver.answers.pop(0) if receiver.answers else 200
                    receiver.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body, code))
                self.send_response(code)
                if 300 <= code < 400:
                    self.send_header("location", f"http://127.0.0.1:{receiver.port}/elsewhere")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def verify(self, secret: str) -> list[dict]:
        """Every delivery's document, each one's signature checked as a receiver checks it."""
        return [Webhook(secret).verify(item.body, item.headers) for item in self.snapshot()]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def fast_retries(monkeypatch) -> None:
    monkeypatch.setenv("JOBS_WEBHOOK_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("JOBS_WEBHOOK_POLL_SECONDS", "0.05")


def hook(url: str, events: list[str] | None = None) -> dict:
    """The webhook fields of a create request."""
    return {"webhook": url, "webhookEventsFilter": events}


def webhook_events(service: JobService, job_id: str) -> list:
    return [event for event in service.events(job_id) if event.type == "webhook"]


# -- the API: create with a webhook, start and completed arrive signed, in order ---------------------
def test_start_and_completed_arrive_signed_in_order_with_the_job_as_get_returns_it(service, receiver, fast_retries):
    app = create_app(service, workers=1, settings=ApiSettings())
    with serve_in_thread(app) as base, httpx.Client(base_url=base) as http:
        created = http.post("/api/jobs/render", json={"projectId": "p1", "conceptInputs": {"floors": 3},
                                                      "webhook": receiver.url})
        assert created.status_code == 201, created.text
        job_id = created.json()["jobId"]
        wait_until(lambda: len(receiver.snapshot()) >= 2 and not service.store.deliveries(), what="two deliveries")
        secret = http.get("/api/webhooks/default/secret").json()["key"]
        polled = http.get(f"/api/jobs/{job_id}").json()["job"]
    docs = receiver.verify(secret)  # raises unless every signature is good
    assert [doc["status"] for doc in docs] == ["processing", "completed"]
    assert [doc["jobId"] for doc in docs] == [job_id, job_id]
    assert docs[1] == polled  # the body is the job as GET answers it under `job`
    assert len({item.id for item in receiver.snapshot()}) == 2
    attempts = webhook_events(service, job_id)
    assert [(event.model_extra["webhookEvent"], event.model_extra["statusCode"]) for event in attempts] \
        == [("start", 200), ("completed", 200)]


def test_filter_completed_only_and_failed_jobs_count_as_completed(memory_service, receiver, fast_retries):
    import gate_renderer  # noqa: F401  (registers `broken`)

    memory_service.submit({"projectId": "p1", **hook(receiver.url, ["completed"])}, renderer="broken")
    worker = Worker(memory_service, poll_seconds=0.05).start()
    try:
        wait_until(lambda: receiver.snapshot() and not memory_service.store.deliveries(), what="the delivery")
    finally:
        worker.stop()
    docs = receiver.verify(signing_secret(memory_service.store))
    assert [doc["status"] for doc in docs] == ["failed"]


# -- retries ------------------------------------------------------------------------------------------
def test_receiver_failing_twice_then_ok_gets_it_three_times_with_one_id_and_nothing_after(
        memory_service, receiver, fast_retries):
    receiver.answers = [500, 503]
    job = memory_service.submit({"projectId": "p1", **hook(receiver.url, ["completed"])})
    worker = Worker(memory_service, poll_seconds=0.05).start()
    try:
        wait_until(lambda: len(webhook_events(memory_service, job.job_id)) == 3
                   and not memory_service.store.deliveries(),
                   what="three attempts and an empty outbox")
    finally:
        worker.stop()
    received = receiver.snapshot()
    assert [item.answered for item in received] == [500, 503, 200]
    assert len({item.id for item in received}) == 1
    receiver.verify(signing_secret(memory_service.store))
    codes = [event.model_extra["statusCode"] for event in webhook_events(memory_service, job.job_id)]
    assert codes == [500, 503, 200]
    assert memory_service.store.deliveries() == []  # nothing left that could be sent again


def test_a_redirect_is_a_failure_and_is_not_followed(memory_service, receiver, monkeypatch, fast_retries):
    monkeypatch.setenv("JOBS_WEBHOOK_MAX_ATTEMPTS", "2")
    receiver.answers = [302, 302]
    job = memory_service.submit({"projectId": "p1", **hook(receiver.url, ["completed"])})
    worker = Worker(memory_service, poll_seconds=0.05).start()
    try:
        wait_until(lambda: len(webhook_events(memory_service, job.job_id)) == 2
                   and not memory_service.store.deliveries(),
                   what="two attempts, then giving up")
    finally:
        worker.stop()
    assert [item.headers.get("webhook-id") for item in receiver.snapshot()] == [receiver.snapshot()[0].id] * 2
    last = webhook_events(memory_service, job.job_id)[-1]
    assert last.model_extra["statusCode"] == 302 and "given up" in last.message


@pytest.fixture(params=["files", "postgres"])
def store_every_process_opens(request, tmp_path) -> Iterator[tuple[dict[str, str], JobService]]:
    """The environment that points a process at a fresh store (a folder, or a PostgreSQL schema
    through JOBS_STORE_URL alone), and the test's own service on that store."""
    if request.param == "files":
        service = JobService(FileJobStore(tmp_path / "store"))
        yield {}, service
    else:
        from jobs_core.store.postgres import PostgresJobStore

        pg_url = request.getfixturevalue("pg_url")
        service = JobService(PostgresJobStore(pg_url))
        yield {"JOBS_STORE_URL": pg_url}, service
    service.store.close()


def test_a_receiver_down_while_every_process_restarts_still_gets_the_delivery(tmp_path, store_every_process_opens):
    store_env, service = store_every_process_opens
    by_env = bool(store_env)
    jobs_dir, port = tmp_path / "store", free_port()
    url = f"http://127.0.0.1:{port}/hook"
    env = cli_env(JOBS_WEBHOOK_BACKOFF_SECONDS="0.05", JOBS_WEBHOOK_MAX_ATTEMPTS="40",
                  JOBS_WEBHOOK_POLL_SECONDS="0.05", **store_env)
    submitted = run_cli("submit", "--project-id", "p1", "--webhook", url, "--inputs", '{"floors": 2}',
                        jobs_dir=None if by_env else jobs_dir, env=env)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    first = start_worker(jobs_dir, env=env, by_env=by_env)
    try:
        wait_until(lambda: service.get(job_id).status is JobStatus.COMPLETED
                   and len(webhook_events(service, job_id)) >= 2, what="failed attempts while the receiver is down")
    finally:
        first.terminate()
        first.wait(20)
    assert service.get(job_id).status is JobStatus.COMPLETED
    assert [d.event for d in service.store.deliveries()] == ["start", "completed"]  # both wait, in order
    with Receiver(port=port) as receiver:
        second = start_worker(jobs_dir, env=env, by_env=by_env)
        try:
            wait_until(lambda: not service.store.deliveries() and len(receiver.snapshot()) >= 2,
                       timeout=60, what="the deliveries after the restart")
        finally:
            second.terminate()
            second.wait(20)
    docs = receiver.verify(signing_secret(service.store))
    assert [doc["status"] for doc in docs] == ["processing", "completed"]


# -- many jobs, several workers ------------------------------------------------------------------------
def assert_each_completed_once(receiver: Receiver, secret: str, job_ids: list[str]) -> None:
    docs = receiver.verify(secret)
    ids_of = defaultdict(set)
    for item, doc in zip(receiver.snapshot(), docs, strict=True):
        if doc["status"] == "completed":
            ids_of[doc["jobId"]].add(item.id)
    assert set(ids_of) == set(job_ids)
    assert all(len(ids) == 1 for ids in ids_of.values()), "a job's completion was delivered under two ids"


@pytest.mark.slow
def test_500_jobs_on_3_worker_processes_each_completed_delivered_under_one_id(tmp_path, receiver):
    jobs_dir = tmp_path / "store"
    service = JobService(FileJobStore(jobs_dir))
    job_ids = []
    for index in range(500):
        job = service.submit({"projectId": f"p{index % 3}", "conceptInputs": {"floors": 2},
                              **hook(receiver.url, ["completed"])}, renderer="noop")
        job_ids.append(job.job_id)
    env = cli_env(JOBS_WEBHOOK_POLL_SECONDS="0.05", JOBS_WEBHOOK_SENDERS="3")
    workers = [start_worker(jobs_dir, "--concurrency", "2", env=env) for _ in range(3)]
    try:
        wait_until(lambda: len({json.loads(item.body)["jobId"] for item in receiver.snapshot()}) == 500
                   and not service.store.deliveries(), timeout=180, what="500 completed deliveries")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(20)
    assert_each_completed_once(receiver, signing_secret(service.store), job_ids)


@pytest.mark.slow
def test_500_jobs_on_3_workers_on_postgres_each_completed_delivered_under_one_id(pg_url, receiver, settings):
    from jobs_core.store.postgres import PostgresJobStore

    services = [JobService(PostgresJobStore(pg_url), settings) for _ in range(4)]  # 3 workers, 1 client
    client = services[3]
    job_ids = []
    for index in range(500):
        job = client.submit({"projectId": f"p{index % 3}", **hook(receiver.url, ["completed"])}, renderer="noop")
        job_ids.append(job.job_id)
    workers = [Worker(service, concurrency=2, poll_seconds=0.05).start() for service in services[:3]]
    try:
        wait_until(lambda: len({json.loads(item.body)["jobId"] for item in receiver.snapshot()}) == 500
                   and not client.store.deliveries(), timeout=180, what="500 completed deliveries")
        secret = signing_secret(services[0].store)
    finally:
        for worker in workers:
            worker.stop()
        for service in services:
            service.store.close()
    assert_each_completed_once(receiver, secret, job_ids)


# -- safe targets -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "words"), [
    ("ftp://example.com/hook", "only http and https"),
    ("http://user:secret@example.com/hook", "user name or password"),
    ("http://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("http://169.254.7.7/hook", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ("http://0.0.0.0/", "not an address"),
    ("http://2852039166/latest/meta-data", "cloud metadata"),  # 169.254.169.254 as one number
    ("http://0251.0376.0251.0376/", "cloud metadata"),  # and in octal: getaddrinfo reads both
    ("http://169.254.1/", "link-local"),
    ("http://0/", "not an address"),
    ("http://example.com:99999/", "not a valid URL"),
    ("not a url", "spaces"),
])
def test_refused_webhook_urls_are_a_422_with_a_sentence_and_no_job(memory_service, url, words):
    app = create_app(memory_service, settings=ApiSettings())
    with serve_in_thread(app) as base:
        answer = httpx.post(f"{base}/api/jobs/render", json={"projectId": "p1", "webhook": url})
    assert answer.status_code == 422
    assert words in answer.json()["error"] and answer.json()["error"].startswith("webhook:")
    assert memory_service.list().jobs == []


def test_loopback_and_named_hosts_are_allowed_and_an_allow_list_narrows(monkeypatch):
    for url in ("http://127.0.0.1:8080/hook", "http://localhost/hook", "https://[::1]/x", "https://example.com/h"):
        assert target_problem(url) is None, url
    assert resolve_target("http://localhost:9/hook").address in ("127.0.0.1", "::1")
    monkeypatch.setenv("JOBS_WEBHOOK_ALLOWED_HOSTS", "hooks.example.com, *.internal.example")
    assert target_problem("https://hooks.example.com/x") is None
    assert target_problem("https://a.internal.example/x") is None
    assert "not one of the allowed webhook hosts" in target_problem("http://127.0.0.1/hook")


def test_a_stored_webhook_to_a_refused_address_is_refused_for_good_at_send(memory_service, receiver):
    """The store is untrusted: a job document someone rewrote to name the metadata service (in a
    spelling only the system resolver reads as an address) is refused when sent, never retried."""
    job = memory_service.submit({"projectId": "p1", **hook(receiver.url, ["completed"])})
    rewritten = job.model_copy(update={"webhook": "http://2852039166/latest/meta-data"})
    [delivery] = deliveries_for(rewritten, rewritten.model_copy(update={"status": JobStatus.CANCELED}))
    result = send_once(delivery, signing_secret(memory_service.store), WebhookSettings(timeout_seconds=1.0))
    assert result.final and result.status_code is None
    assert result.error == "the target is not allowed: 2852039166 is a cloud metadata address"
    assert receiver.snapshot() == []


def test_an_unknown_event_in_the_filter_is_a_422(memory_service):
    app = create_app(memory_service, settings=ApiSettings())
    with serve_in_thread(app) as base:
        answer = httpx.post(f"{base}/api/jobs/render", json={"projectId": "p1", "webhook": "http://127.0.0.1/h",
                                                             "webhookEventsFilter": ["start", "finished"]})
    assert answer.status_code == 422 and "webhookEventsFilter" in answer.json()["error"]


# -- the secret ---------------------------------------------------------------------------------------
def test_the_secret_endpoint_is_behind_the_token_and_every_process_of_a_store_agrees(tmp_path, monkeypatch):
    monkeypatch.delenv("JOBS_WEBHOOK_SECRET", raising=False)
    service = JobService(FileJobStore(tmp_path / "store"))
    app = create_app(service, settings=ApiSettings(token="t0ken"))
    with serve_in_thread(app) as base:
        assert httpx.get(f"{base}/api/webhooks/default/secret").status_code == 401
        answer = httpx.get(f"{base}/api/webhooks/default/secret", headers={"Authorization": "Bearer t0ken"})
    key = answer.json()["key"]
    assert answer.status_code == 200 and key.startswith("whsec_")
    assert signing_secret(FileJobStore(tmp_path / "store")) == key  # another process, the same store
    Webhook(key)  # a key standardwebhooks accepts
    monkeypatch.setenv("JOBS_WEBHOOK_SECRET", "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY")
    assert signing_secret(service.store) == "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"


# -- the monitor's alerts -----------------------------------------------------------------------------
def test_alerts_go_out_signed_through_the_same_outbox(memory_service, receiver, fast_retries):
    alerts = AlertLog(sinks=alert_sinks(memory_service.store, receiver.url))
    alerts.update([Alert("stuck", "2 jobs have not reported for longer than the lease.")])
    worker = Worker(memory_service, poll_seconds=0.05).start()
    try:
        wait_until(lambda: receiver.snapshot() and not memory_service.store.deliveries(), what="the alert")
    finally:
        worker.stop()
    [doc] = receiver.verify(signing_secret(memory_service.store))
    assert doc["type"] == "alert" and doc["kind"] == "stuck" and "lease" in doc["message"]


# -- which changes are events --------------------------------------------------------------------------
def test_progress_is_an_event_at_most_once_a_second_of_the_clock(memory_service):
    job = memory_service.submit({"projectId": "p1", **hook("http://127.0.0.1/h", ["start", "progress", "completed"])})
    claimed = memory_service.claim_next("w1")
    start = claimed.updated_at.replace(microsecond=100_000)
    same_second = claimed.model_copy(update={"progress": 30, "updated_at": start})
    later_that_second = same_second.model_copy(update={"progress": 40, "updated_at": start + timedelta(seconds=0.5)})
    next_second = later_that_second.model_copy(update={"progress": 50, "updated_at": start + timedelta(seconds=1)})
    assert due_events(same_second, later_that_second) == []
    assert due_events(later_that_second, next_second) == ["progress"]
    assert due_events(job, claimed) == ["start"]
    assert due_events(next_second, next_second.model_copy(update={"status": JobStatus.COMPLETED})) == ["completed"]


def test_a_delivery_for_a_change_that_never_landed_waits_then_is_dropped_unsent(service, receiver):
    """What a crash leaves on the file store between a delivery's file and the job's: a `start` for
    a claim the store never recorded. It is held back while the write could be on its way, then
    dropped; the receiver never hears of a start that did not happen."""
    past = utcnow() - timedelta(seconds=60)
    job = service.submit({"projectId": "p1", **hook(receiver.url, ["start", "completed"])})
    job = service.store.modify(job.job_id, job.project_id,
                               lambda stored: Outcome(stored.model_copy(update={"updated_at": past}), None))
    sender = WebhookSender(service.store, WebhookSettings(timeout_seconds=1.0, senders=0))  # a lease of 8 s

    def lost_claim(at):
        claimed = job.model_copy(update={"status": JobStatus.PROCESSING, "attempts": 1, "started_at": at,
                                          "updated_at": at, "worker_id": "w-crashed"})
        return deliveries_for(job, claimed)

    service.store.enqueue_deliveries(list(lost_claim(utcnow())))  # just written: may still land
    assert sender.run_once() and receiver.snapshot() == []
    [waiting] = service.store.deliveries()
    assert waiting.attempts == 0 and waiting.next_at > utcnow()  # not an attempt: held back a moment

    service.store.enqueue_deliveries(list(lost_claim(past + timedelta(seconds=30))))  # older than the lease
    assert sender.run_once() and receiver.snapshot() == []
    assert [delivery.id for delivery in service.store.deliveries()] == [waiting.id]  # the old one dropped
    assert service.get(job.job_id).status is JobStatus.PENDING
