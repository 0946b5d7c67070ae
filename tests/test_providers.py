"""AI providers against real HTTP servers on 127.0.0.1 speaking their protocols, run as real jobs.

Each test starts a stdlib HTTP server in a thread that answers like the OpenAI images API or the
AUTOMATIC1111 txt2img API, following a script (ok, slow, 429, 500, malformed JSON, not an image,
4xx with a message), then submits a job through JobService and runs it with a real Worker on a
FileJobStore. Every case must end in a completed job or a failed job with a clear error, and the
API key must not appear anywhere in the store or in the logs.
"""
from __future__ import annotations

import base64
import email.utils
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from jobs_core.models import Job, JobStatus, utcnow
from jobs_core.renderers import get_renderer
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.worker import Worker

KEY = "sk-test-7Hq2SECRETvalue9xY"
A1111_PASSWORD = "hunter2-secret-pw"
OPENAI_PATH = "/v1/images/generations"
A1111_PATH = "/sdapi/v1/txt2img"
BRIEF = {"title": "Harbour Library", "footprint": "U", "floors": 4, "roof": "sawtooth", "seaView": "north"}


def png_bytes(colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict | None
    at: float


@dataclass
class FakeProvider:
    """What the fake server does: `script` is consumed one step per API request; the last repeats."""

    script: list[str]
    seen: list[Seen] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)  # ends slow answers at teardown
    image: bytes = field(default_factory=png_bytes)
    port: int = 0

    def next_step(self) -> str:
        api_calls = self.api_calls()
        return self.script[min(len(api_calls) - 1, len(self.script) - 1)]

    def api_calls(self) -> list[Seen]:
        return [s for s in self.seen if s.path in (OPENAI_PATH, A1111_PATH)]


def make_handler(fake: FakeProvider):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:  # noqa: N802 (stdlib name)
            fake.seen.append(Seen(self.path, dict(self.headers), None, time.monotonic()))
            if self.path == "/files/render.png":
                self._send(200, fake.image, "image/png")
            elif self.path.startswith("/sdapi/v1/progress"):  # the WebUI's progress while generating
                self._send(200, json.dumps({"progress": 0.5, "eta_relative": 1.0}).encode())
            else:
                self._send(404, b'{"error": {"message": "no such file"}}')

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            fake.seen.append(Seen(self.path, dict(self.headers), body, time.monotonic()))
            if self.path not in (OPENAI_PATH, A1111_PATH):
                self._send(404, b'{"detail": "Not Found"}')
                return
            self._answer(fake.next_step(), self.path == OPENAI_PATH)

        def _answer(self, step: str, openai: bool) -> None:
            image = base64.b64encode(fake.image).decode()
            if step == "slow":
                fake.release.wait(5.0)  # longer than the client's timeout; bounded for teardown
                step = "ok"
            if step == "generating":  # a real generation: a couple of seconds
                fake.release.wait(2.0)
                step = "ok"
            if step == "ok":
                body = {"created": 1, "data": [{"b64_json": image}]} if openai else {"images": [image], "info": "{}"}
                self._send(200, json.dumps(body).encode())
            elif step == "url":
                url = f"http://127.0.0.1:{fake.port}/files/render.png"
                self._send(200, json.dumps({"created": 1, "data": [{"url": url}]}).encode())
            elif step.startswith("429"):
                _, _, after = step.partition(":")
                self._send(429, b'{"error": {"message": "Rate limit reached"}}', headers={"Retry-After": after or "1"})
            elif step == "500":
                self._send(500, b'{"error": {"message": "The server had an error"}}')
            elif step == "badjson":
                self._send(200, b'{"data": [{"b64_json": "abc"')
            elif step == "notimage":
                text = base64.b64encode(b"<html>this is not a picture</html>").decode()
                body = {"data": [{"b64_json": text}]} if openai else {"images": [text]}
                self._send(200, json.dumps(body).encode())
            elif step == "400":
                message = "Your request was rejected as a result of our safety system."
                body = {"error": {"message": message, "type": "invalid_request_error"}} if openai \
                    else {"detail": [{"loc": ["body", "steps"], "msg": message}]}
                self._send(400 if openai else 422, json.dumps(body).encode())
            elif step == "echo-key":  # a provider that quotes the credentials it was sent
                quoted = self.headers.get("Authorization", "")
                self._send(401, json.dumps({"error": {"message": f"Incorrect API key provided: {quoted}"}}).encode())
            else:
                raise AssertionError(f"unknown step {step}")

        def _send(self, status: int, payload: bytes, content_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): that is the point of the slow step

    return Handler


@pytest.fixture
def serve() -> Iterator:
    servers: list[tuple[ThreadingHTTPServer, FakeProvider]] = []

    def start(*script: str, image: bytes | None = None) -> FakeProvider:
        fake = FakeProvider(list(script))
        if image is not None:
            fake.image = image
        server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
        server.daemon_threads = True
        server.block_on_close = False
        fake.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append((server, fake))
        return fake

    yield start
    for server, fake in servers:
        fake.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def jobs(tmp_path: Path, settings) -> Iterator[JobService]:
    store = FileJobStore(tmp_path / "jobs-store")
    yield JobService(store, replace(settings, max_attempts=2, retry_backoff_seconds=0.0, lease_seconds=30.0))
    store.close()


@pytest.fixture(autouse=True)
def provider_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_IMAGE_MODEL", "OPENAI_IMAGE_SIZE",
                 "OPENAI_RESPONSE_FORMAT", "OPENAI_TIMEOUT_SECONDS", "A1111_BASE_URL", "A1111_AUTH",
                 "A1111_TIMEOUT_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JOBS_PROVIDER_RETRIES", "2")
    monkeypatch.setenv("JOBS_PROVIDER_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("JOBS_PROVIDER_RETRY_BUDGET_SECONDS", "10")


def configure(provider: str, fake: FakeProvider | None, monkeypatch: pytest.MonkeyPatch, port: int = 0) -> None:
    port = fake.port if fake else port
    if provider == "openai":
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
        monkeypatch.setenv("OPENAI_IMAGE_MODEL", "test-image-model")
    else:
        monkeypatch.setenv("A1111_BASE_URL", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("A1111_AUTH", f"architect:{A1111_PASSWORD}")


def run_job(jobs: JobService, provider: str, render_type: str = "axonometric", timeout: float = 30.0,
            while_running=None) -> Job:
    """Submit a job and let a real Worker run it; return it once final (bounded wait)."""
    job = jobs.submit({"projectId": "harbour", "renderType": render_type, "conceptInputs": BRIEF},
                      renderer=provider)
    worker = Worker(jobs, concurrency=1, poll_seconds=0.05).start()
    try:
        deadline = time.monotonic() + timeout
        while not (job := jobs.get(job.job_id, job.project_id)).status.is_final:
            if while_running is not None:
                while_running(job)
            assert time.monotonic() < deadline, f"job still {job.status.value} ({job.stage}) after {timeout} s"
            jobs.store.wait_for_work(0.05)
    finally:
        worker.stop()
    return job


def assert_no_secret(jobs: JobService, caplog: pytest.LogCaptureFixture) -> None:
    root = Path(jobs.store.root)
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert KEY.encode() not in data and A1111_PASSWORD.encode() not in data, f"secret in {path}"
    assert KEY not in caplog.text and A1111_PASSWORD not in caplog.text


PROVIDERS = ["openai", "automatic1111"]


@pytest.fixture(autouse=True)
def all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore included: their lines must not leak keys either


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_base64_answer_completes_the_job_with_the_image_and_the_prompt(provider, serve, jobs, monkeypatch, caplog):
    fake = serve("ok")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider, "elevation")
    assert job.status is JobStatus.COMPLETED, job.error
    assert jobs.image(job) == fake.image
    assert "Harbour Library" in job.prompt and "elevation" in job.prompt and "seaView: north" in job.prompt
    (call,) = fake.api_calls()
    assert call.body["prompt"] == job.prompt
    if provider == "openai":
        assert call.headers["Authorization"] == f"Bearer {KEY}"
        assert call.body["model"] == "test-image-model" and call.body["size"] == "1024x1024"
    else:
        assert call.headers["Authorization"].startswith("Basic ")
        assert call.body["negative_prompt"] and call.body["width"] == 768
    assert_no_secret(jobs, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_prompt_is_stored_at_submit_so_a_user_sees_what_was_asked(provider, jobs, monkeypatch):
    job = jobs.submit({"projectId": "harbour", "renderType": "plan", "conceptInputs": BRIEF}, renderer=provider)
    stored = jobs.get(job.job_id, "harbour")
    assert stored.status is JobStatus.PENDING
    assert "ground floor plan" in stored.prompt and "U-shaped" in stored.prompt


def test_a_url_answer_is_downloaded_at_once_without_sending_the_key(serve, jobs, monkeypatch, caplog):
    fake = serve("url", image=jpeg_bytes())
    configure("openai", fake, monkeypatch)
    job = run_job(jobs, "openai")
    assert job.status is JobStatus.COMPLETED, job.error
    stored = jobs.image(job)
    with Image.open(io.BytesIO(stored)) as image:  # a JPEG from the provider is stored as PNG
        assert image.format == "PNG" and image.size == (64, 48)
    download = [s for s in fake.seen if s.path == "/files/render.png"]
    assert len(download) == 1 and "Authorization" not in download[0].headers
    assert_no_secret(jobs, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_slow_provider_times_out_and_the_job_fails_after_its_attempts(provider, serve, jobs, monkeypatch, caplog):
    fake = serve("slow")
    configure(provider, fake, monkeypatch)
    monkeypatch.setenv("OPENAI_TIMEOUT_SECONDS" if provider == "openai" else "A1111_TIMEOUT_SECONDS", "0.3")
    monkeypatch.setenv("JOBS_PROVIDER_RETRIES", "1")
    started = time.monotonic()
    job = run_job(jobs, provider)
    assert job.status is JobStatus.FAILED
    assert "did not answer the" in job.error and "in time" in job.error and "127.0.0.1" in job.error
    assert job.attempts == 2  # retryable: the job-level retry ran the second attempt
    assert len(fake.api_calls()) == 4  # 2 tries per attempt
    assert time.monotonic() - started < 15  # timeouts, not the server's 5 s answers
    assert_no_secret(jobs, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_429_with_retry_after_is_honoured_then_the_job_completes(provider, serve, jobs, monkeypatch, caplog):
    fake = serve("429:1", "ok")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.COMPLETED, job.error
    first, second = fake.api_calls()
    assert second.at - first.at >= 0.95  # waited for Retry-After, not just the 0.05 s backoff
    assert job.attempts == 1
    assert_no_secret(jobs, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_500_is_retried_inside_the_attempt(provider, serve, jobs, monkeypatch):
    fake = serve("500", "ok")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.COMPLETED, job.error
    assert len(fake.api_calls()) == 2 and job.attempts == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_provider_that_keeps_failing_fails_the_job_with_its_message(provider, serve, jobs, monkeypatch, caplog):
    fake = serve("500")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.FAILED
    assert "answered HTTP 500" in job.error and "The server had an error" in job.error
    assert job.attempts == 2 and len(fake.api_calls()) == 6
    assert [e.type for e in jobs.events(job.job_id, "harbour")].count("requeued") == 1
    assert_no_secret(jobs, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_malformed_json_fails_the_job_at_once_with_a_clear_error(provider, serve, jobs, monkeypatch):
    fake = serve("badjson")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert job.error.startswith(f"The {provider} provider at http://127.0.0.1:{fake.port} answered with malformed JSON")
    assert "Traceback" not in job.error


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_body_that_is_not_an_image_fails_the_job(provider, serve, jobs, monkeypatch):
    fake = serve("notimage")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.FAILED and job.attempts == 1
    assert f"The {provider} provider returned data that is not an image" in job.error
    with pytest.raises(Exception, match="has no image"):
        jobs.image(job)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_client_error_is_not_retried_and_carries_the_providers_message(provider, serve, jobs, monkeypatch):
    fake = serve("400")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.FAILED and job.attempts == 1 and len(fake.api_calls()) == 1
    assert "rejected as a result of our safety system" in job.error
    assert f"(HTTP {400 if provider == 'openai' else 422})" in job.error


@pytest.mark.parametrize("provider", PROVIDERS)
def test_credentials_quoted_back_by_the_provider_never_reach_the_job_or_the_logs(provider, serve, jobs,
                                                                                 monkeypatch, caplog):
    fake = serve("echo-key")
    configure(provider, fake, monkeypatch)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.FAILED and "HTTP 401" in job.error
    assert "[redacted]" in job.error or provider == "automatic1111"  # Basic auth is base64, not the password
    assert_no_secret(jobs, caplog)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unreachable_provider_fails_the_job_as_retryable(provider, jobs, monkeypatch, caplog):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    configure(provider, None, monkeypatch, port=port)
    job = run_job(jobs, provider)
    assert job.status is JobStatus.FAILED and job.attempts == 2
    assert "could not be reached" in job.error and "ConnectError" in job.error
    assert_no_secret(jobs, caplog)


@pytest.mark.parametrize("provider, variable", [("openai", "OPENAI_API_KEY"), ("automatic1111", "A1111_BASE_URL")])
def test_a_worker_without_the_providers_settings_leaves_the_job_for_one_that_has_them(provider, variable, jobs):
    assert get_renderer(provider).configuration_problem() == f"{variable} is not set"
    job = jobs.submit({"projectId": "harbour", "renderType": "axonometric", "conceptInputs": BRIEF},
                      renderer=provider)
    drawing = jobs.submit({"projectId": "harbour", "renderType": "axonometric", "conceptInputs": BRIEF})
    worker = Worker(jobs, concurrency=1, poll_seconds=0.05).start()
    try:
        deadline = time.monotonic() + 30
        while not jobs.get(drawing.job_id).status.is_final:  # the worker is at work, and passes ours by
            assert time.monotonic() < deadline, "the drawing job never finished"
            jobs.store.wait_for_work(0.05)
        waiting = jobs.get(job.job_id)
        assert waiting.status is JobStatus.PENDING and waiting.attempts == 0 and waiting.error is None
        assert f"can use the {provider} renderer" in jobs.waiting_reason(waiting)
    finally:
        worker.stop()


def test_a_cancel_while_paused_by_the_provider_stops_the_job_at_once(serve, jobs, monkeypatch):
    fake = serve("429:20")
    configure("openai", fake, monkeypatch)
    canceled = []

    def cancel_once_paused(job: Job) -> None:
        if job.stage == "paused by the provider" and not canceled:
            assert job.status is JobStatus.PENDING
            canceled.append(jobs.cancel(job.job_id, job.project_id))

    started = time.monotonic()
    job = run_job(jobs, "openai", while_running=cancel_once_paused)
    assert canceled and job.status is JobStatus.CANCELED
    assert time.monotonic() - started < 10  # not the 20 s Retry-After
    assert len(fake.api_calls()) == 1


def test_a_long_retry_after_pauses_the_renderer_and_keeps_the_job_queued_unspent(serve, jobs, monkeypatch):
    fake = serve("429:120", "ok")
    configure("openai", fake, monkeypatch)
    job = jobs.submit({"projectId": "harbour", "renderType": "axonometric", "conceptInputs": BRIEF},
                      renderer="openai")
    worker = Worker(jobs, concurrency=1, poll_seconds=0.05).start()
    try:
        paused = wait_for(lambda: (found := jobs.get(job.job_id)).stage == "paused by the provider" and found)
        assert paused.status is JobStatus.PENDING and paused.attempts == 0 and paused.error is None
        (pause,) = jobs.store.renderer_pauses(utcnow())
        assert pause.renderer == "openai" and 110 < (pause.until - utcnow()).total_seconds() <= 120
        assert jobs.waiting_reason(paused) == f"Paused by the provider until {pause.until:%H:%M:%S} UTC " \
            "(too many requests)."
        # the event is logged just after the job file is written
        (released,) = wait_for(lambda: [e for e in jobs.events(job.job_id, "harbour") if e.type == "released"])
        assert "answered too many requests" in released.message
        jobs.store.wait_for_work(0.3)  # a few claim passes of the worker: none takes the paused job
        assert jobs.get(job.job_id).status is JobStatus.PENDING and len(fake.api_calls()) == 1
    finally:
        worker.stop()


def wait_for(condition, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_cancel_while_the_provider_is_thinking_stops_the_job_at_once(provider, serve, jobs, monkeypatch):
    fake = serve("slow")  # answers after 5 s; the client would wait up to 20 s
    configure(provider, fake, monkeypatch)
    monkeypatch.setenv("OPENAI_TIMEOUT_SECONDS" if provider == "openai" else "A1111_TIMEOUT_SECONDS", "20")
    canceled = []

    def cancel_once_asked(job: Job) -> None:
        if job.stage == "waiting for the provider" and not canceled:
            canceled.append(time.monotonic())
            jobs.cancel(job.job_id, job.project_id)

    job = run_job(jobs, provider, while_running=cancel_once_asked)
    assert canceled and job.status is JobStatus.CANCELED
    assert time.monotonic() - canceled[0] < 3  # not the 5 s answer, nor the 20 s timeout
    assert len(fake.api_calls()) == 1


def test_automatic1111_reports_the_webuis_own_progress_while_generating(serve, jobs, monkeypatch):
    fake = serve("generating")
    configure("automatic1111", fake, monkeypatch)
    seen: list[int] = []
    job = run_job(jobs, "automatic1111", while_running=lambda job: seen.append(job.progress))
    assert job.status is JobStatus.COMPLETED, job.error
    assert 15 + round(55 * 0.5) in seen  # the WebUI said 50 %: 43 % of the job while waiting
    assert any(s.path.startswith("/sdapi/v1/progress") for s in fake.seen)


@pytest.mark.parametrize("ahead, expected", [(30, 30), (86_400 * 365 * 50, 3600)])
def test_a_retry_after_given_as_a_date_pauses_until_then_within_an_hour(serve, jobs, monkeypatch, ahead, expected):
    when = email.utils.formatdate(time.time() + ahead, usegmt=True)  # "Tue, 01 Dec 2026 15:40:57 GMT"
    fake = serve(f"429:{when}", "ok")
    configure("openai", fake, monkeypatch)
    job = jobs.submit({"projectId": "harbour", "renderType": "axonometric", "conceptInputs": BRIEF},
                      renderer="openai")
    worker = Worker(jobs, concurrency=1, poll_seconds=0.05).start()
    try:
        wait_for(lambda: jobs.get(job.job_id).stage == "paused by the provider")
        (pause,) = jobs.store.renderer_pauses(utcnow())
        assert expected - 2 <= (pause.until - utcnow()).total_seconds() <= expected + 1
    finally:
        worker.stop()
