"""Provider limits across the fleet (issue 19, part 4), on every store backend.

JOBS_RENDERER_LIMITS caps a renderer's running jobs at claim time (the store counts, atomically
with the claim, the renderer's jobs in processing whose lease is alive): with several threads and
several processes claiming at once, never more than the cap; jobs of other renderers are claimed
meanwhile. A provider's 429 with Retry-After pauses the renderer's claims for every worker until
the pause ends. The end-to-end test runs two real worker processes against a stand-in OpenAI
server on 127.0.0.1 that answers 429 with Retry-After once.
"""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image
from proc_helpers import ROOT, cli_env, run_cli, wait_until

from jobs_core.errors import InvalidInput, TransitionConflict
from jobs_core.lifecycle import Lease
from jobs_core.limits import MAX_PAUSE_SECONDS, RendererPause, parse_renderer_limits
from jobs_core.models import JobStatus, utcnow
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import FileJobStore, JobStore
from jobs_core.store.base import WorkerInfo

TESTS = Path(__file__).resolve().parent


def limited(service: JobService, **caps: int) -> JobService:
    """The same store, with JOBS_RENDERER_LIMITS set to `caps`."""
    return JobService(service.store, replace(service.settings, renderer_limits=caps))


def submit(service: JobService, renderer: str, project: str = "p1"):
    return service.submit({"projectId": project, "renderType": "axonometric"}, renderer=renderer)


def store_location(store: JobStore) -> str | None:
    """Where another process opens the same store; None for the memory store (one process only)."""
    if isinstance(store, FileJobStore):
        return str(store.root)
    if hasattr(store, "schema"):
        from postgres_scratch import schema_url

        return schema_url(store.schema)
    return None


# -- the cap ------------------------------------------------------------------------------------------
def test_a_full_renderer_waits_while_jobs_of_other_renderers_are_claimed(service):
    jobs = limited(service, noop=2)
    first, second, third = (submit(jobs, "noop") for _ in range(3))
    drawing = submit(jobs, "axonometric")  # queued after the three
    claims = [jobs.claim_next("w1") for _ in range(3)]
    assert [job.job_id for job in claims] == [first.job_id, second.job_id, drawing.job_id]
    assert jobs.claim_next("w1") is None
    waiting = jobs.get(third.job_id)
    assert waiting.status is JobStatus.PENDING
    assert jobs.limit_reason(waiting) == "Waiting for a free noop slot (2 of 2 in use)."
    jobs.complete(Lease.of(claims[0]), _tiny_png())
    assert jobs.limit_reason(waiting) is None
    assert jobs.claim_next("w1").job_id == third.job_id


def test_without_limits_the_same_queue_is_claimed_whole(service):
    # The peer of the test above: the cap, not the queue, held the third job back.
    for _ in range(3):
        submit(service, "noop")
    assert all(service.claim_next("w1") is not None for _ in range(3))


def test_a_slot_held_by_a_silent_worker_frees_when_its_lease_ends(service):
    jobs = limited(service, noop=1)
    held, waiting = submit(jobs, "noop"), submit(jobs, "noop")
    now = utcnow()
    assert jobs.claim_next("dead", now=now).job_id == held.job_id
    assert jobs.claim_next("w2", now=now + timedelta(seconds=jobs.settings.lease_seconds - 1)) is None
    later = now + timedelta(seconds=jobs.settings.lease_seconds + 1)  # no heartbeat since: the lease is over
    assert jobs.claim_next("w2", now=later).job_id == waiting.job_id


def test_no_two_threads_take_the_last_slot(service):
    jobs = limited(service, noop=3)
    for _ in range(24):
        submit(jobs, "noop")
    start = threading.Barrier(8)
    claimed: list[str] = []

    def claim_all() -> None:
        start.wait()
        while (job := jobs.claim_next(threading.current_thread().name)) is not None:
            claimed.append(job.job_id)

    threads = [threading.Thread(target=claim_all, name=f"t{index}") for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(claimed) == 3 and len(set(claimed)) == 3
    assert len([job for job in jobs.store.processing() if job.renderer == "noop"]) == 3


def run_together(command: list[str], count: int) -> list[str]:
    """Start `count` claimer processes, let them go at once when all say "ready", and give each
    one's output after it (each must exit 0)."""
    claimers = [subprocess.Popen([sys.executable, *command], cwd=ROOT, env=cli_env(), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(count)]
    for claimer in claimers:
        assert claimer.stdout.readline().strip() == "ready"
    for claimer in claimers:
        claimer.stdin.write("go\n")
        claimer.stdin.flush()
    outputs = [claimer.communicate(timeout=120)[0] for claimer in claimers]
    assert all(claimer.returncode == 0 for claimer in claimers)
    return outputs


def test_no_two_processes_take_the_last_slot(service):
    location = store_location(service.store)
    if location is None:
        pytest.skip("the memory store lives in one process")
    for index in range(12):
        submit(service, "noop", project=f"p{index % 3}")
        submit(service, "axonometric", project=f"p{index % 3}")
    outputs = run_together([str(TESTS / "limit_claimer.py"), location, "noop=2,axonometric=3"], 3)
    claimed = [json.loads(line) for output in outputs for line in output.splitlines()]
    by_renderer = {name: [c["jobId"] for c in claimed if c["renderer"] == name] for name in ("noop", "axonometric")}
    assert len(by_renderer["noop"]) == 2 and len(by_renderer["axonometric"]) == 3
    assert len({c["jobId"] for c in claimed}) == 5


# -- pauses -------------------------------------------------------------------------------------------
def test_a_paused_renderer_is_skipped_until_its_pause_ends(service):
    paused, drawing = submit(service, "noop"), submit(service, "axonometric")
    now = utcnow()
    until = now + timedelta(seconds=60)
    service.store.pause_renderer(RendererPause("noop", until))
    assert service.claim_next("w1", now=now).job_id == drawing.job_id
    assert service.claim_next("w1", now=now) is None
    assert service.limit_reason(service.get(paused.job_id), now) == \
        f"Paused by the provider until {until:%H:%M:%S} UTC (too many requests)."
    after = until + timedelta(seconds=1)
    assert service.limit_reason(service.get(paused.job_id), after) is None
    assert service.claim_next("w1", now=after).job_id == paused.job_id


def test_a_shorter_pause_never_cuts_a_longer_one(store):
    now = utcnow()
    store.pause_renderer(RendererPause("openai", now + timedelta(seconds=60)))
    store.pause_renderer(RendererPause("openai", now + timedelta(seconds=10)))  # another worker's, shorter
    store.pause_renderer(RendererPause("automatic1111", now + timedelta(seconds=5)))
    assert [(p.renderer, p.until) for p in store.renderer_pauses(now)] == [
        ("automatic1111", now + timedelta(seconds=5)), ("openai", now + timedelta(seconds=60))]
    store.pause_renderer(RendererPause("openai", now + timedelta(seconds=120)))
    assert [p.until for p in store.renderer_pauses(now + timedelta(seconds=30))] == [now + timedelta(seconds=120)]


@pytest.mark.parametrize("retry_after, expected", [(30, 30), (0, 1), (86_400 * 7, MAX_PAUSE_SECONDS),
                                                   (float("inf"), MAX_PAUSE_SECONDS)])
def test_a_429_hands_the_job_back_unspent_and_pauses_its_renderer(service, retry_after, expected):
    job = submit(service, "noop")
    lease = Lease.of(service.claim_next("w1"))
    before = utcnow()
    back = service.pause_for_provider(lease, "noop", retry_after, "the noop provider answered too many requests")
    assert back.status is JobStatus.PENDING and back.attempts == 0 and back.stage == "paused by the provider"
    (pause,) = service.store.renderer_pauses(utcnow())
    assert pause.renderer == "noop" and back.available_at == pause.until > job.available_at
    assert expected - 1 <= (pause.until - before).total_seconds() <= expected + 1
    assert service.claim_next("w2") is None


def test_a_foreign_file_among_the_pauses_is_ignored(tmp_path, settings):
    store = FileJobStore(tmp_path / "store")
    pauses = tmp_path / "store" / ".state" / "pauses"
    (pauses / "notes.json").write_text('{"renderer": "noop", "until": "2999-01-01T00:00:00+00:00", "reason": "x"}')
    (pauses / "garbage.json").write_bytes(b"\xff\x00{")
    service = JobService(store, settings)
    job = submit(service, "noop")
    assert store.renderer_pauses(utcnow()) == []  # not the file a pause of noop is kept in
    assert service.claim_next("w1").job_id == job.job_id


# -- configuration ------------------------------------------------------------------------------------
def test_limits_parse_from_the_environment_form():
    assert parse_renderer_limits(" openai=4, automatic1111=1 ,") == {"openai": 4, "automatic1111": 1}
    assert parse_renderer_limits("") == {}


@pytest.mark.parametrize("raw, message", [
    ("openai=x", "JOBS_RENDERER_LIMITS gives openai the limit 'x', which is not a whole number."),
    ("openai=0", "JOBS_RENDERER_LIMITS gives openai the limit 0; a limit must be at least 1 "
                 "(leave the renderer out to run it without a limit)."),
    ("openai=-2", "JOBS_RENDERER_LIMITS gives openai the limit '-2', which is not a whole number."),
    ("openai", "JOBS_RENDERER_LIMITS has 'openai'; write each limit as renderer=number, for example "
               "openai=4,automatic1111=1."),
    ("openai=1,openai=2", "JOBS_RENDERER_LIMITS names openai twice."),
])
def test_a_bad_limit_is_refused_with_one_sentence(raw, message):
    with pytest.raises(InvalidInput) as refused:
        parse_renderer_limits(raw)
    assert str(refused.value) == message


def test_a_limit_on_an_unknown_renderer_is_refused_at_start(memory_service):
    with pytest.raises(InvalidInput, match=r"names the renderer .opneai., which does not exist; choose among: .*"):
        limited(memory_service, opneai=4)


@pytest.mark.parametrize("raw, says", [("openai=x", "not a whole number"), ("dalle=2", "does not exist")])
def test_the_command_line_says_what_is_wrong_with_the_limits_in_one_line(tmp_path, raw, says):
    result = run_cli("list", jobs_dir=tmp_path / "store", env=cli_env(JOBS_RENDERER_LIMITS=raw))
    assert result.returncode == 2
    assert result.stderr.startswith("error: JOBS_RENDERER_LIMITS") and says in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


# -- end to end: two worker processes, a stand-in provider that answers 429 once --------------------
RETRY_AFTER = 2
CAP = 2
JOBS = 6


class StandInProvider:
    """An OpenAI images endpoint on 127.0.0.1: the first request gets 429 with Retry-After, every
    later one an image after a short think (what a provider does); it records when each request
    came and how many were in flight at once."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.guard = threading.Lock()
        self.done = threading.Event()  # set at teardown: ends a think at once
        buffer = io.BytesIO()
        Image.new("RGB", (32, 24), (20, 120, 90)).save(buffer, "PNG")
        self.image = base64.b64encode(buffer.getvalue()).decode()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (stdlib name)
                self.rfile.read(int(self.headers.get("content-length") or 0))
                with provider.guard:
                    provider.starts.append(time.monotonic())
                    first = len(provider.starts) == 1
                    provider.in_flight += 1
                    provider.most_in_flight = max(provider.most_in_flight, provider.in_flight)
                try:
                    if first:
                        self._send(429, {"error": {"message": "Rate limit reached"}}, {"Retry-After": str(RETRY_AFTER)})
                        return
                    provider.done.wait(0.4)  # the provider generating: requests overlap meanwhile
                    self._send(200, {"created": 1, "data": [{"b64_json": provider.image}]})
                finally:
                    with provider.guard:
                        provider.in_flight -= 1

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def close(self) -> None:
        self.done.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider():
    stand_in = StandInProvider()
    yield stand_in
    stand_in.close()


def start_worker(location: str, provider: StandInProvider, log_path: Path) -> subprocess.Popen:
    env = cli_env(JOBS_RENDERER_LIMITS=f"openai={CAP}", JOBS_LEASE_SECONDS="10", OPENAI_API_KEY="sk-test-limits",
                  OPENAI_BASE_URL=provider.url, OPENAI_IMAGE_MODEL="test-image-model", JOBS_PG_POOL_SIZE="3")
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--jobs-dir", location,
                                 "--concurrency", "3", "--poll", "0.05"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("backend", ["files", "postgres"])
def test_two_workers_keep_the_cap_and_wait_out_a_429_together(backend, provider, tmp_path, settings, request):
    if backend == "files":
        store: JobStore = FileJobStore(tmp_path / "store")
    else:
        from postgres_scratch import make_scratch_store

        store = make_scratch_store()
    request.addfinalizer(store.close)
    location = store_location(store)
    service = JobService(store, settings)
    workers = [start_worker(location, provider, tmp_path / f"worker-{index}.log") for index in range(2)]
    try:
        # both processes ready to claim before the jobs arrive: they compete for every slot
        wait_until(lambda: len(service.live_workers()) == 2, timeout=30, what="both workers to start")
        job_ids = [submit(service, "openai", project=f"p{index % 2}").job_id for index in range(JOBS)]
        wait_until(lambda: all(service.get(job_id).status.is_final for job_id in job_ids), timeout=60,
                   what="every job to finish")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(30)
    logs = "".join((tmp_path / f"worker-{index}.log").read_text() for index in range(2))
    jobs = [service.get(job_id) for job_id in job_ids]
    assert all(job.status is JobStatus.COMPLETED for job in jobs), [(j.status, j.error) for j in jobs]
    assert all(job.attempts == 1 for job in jobs)  # the 429 spent no attempt
    assert provider.most_in_flight <= CAP  # 6 threads in 2 processes, never more than the cap at once
    assert len(provider.starts) == JOBS + 1  # the refused request, then one per job
    refused_at = provider.starts[0]
    # Requests already claimed when the 429 came may still go out a moment later; after that,
    # no worker of either process asks until the pause is over.
    quiet = [start for start in provider.starts[1:] if refused_at + 0.5 < start < refused_at + RETRY_AFTER - 0.2]
    assert quiet == [], f"requests during the pause at +{[round(s - refused_at, 2) for s in quiet]} s"
    assert any(start >= refused_at + RETRY_AFTER - 0.2 for start in provider.starts[1:])
    assert "pausing the openai renderer for every worker" in logs
    paused = [job for job in jobs if any(e.type == "released" and "too many requests" in (e.message or "")
                                         for e in service.events(job.job_id))]
    assert len(paused) == 1


# -- where a waiting job is shown: the render page, the API, the command line -----------------------
def a_full_and_a_paused_renderer(service: JobService) -> tuple[str, str, datetime]:
    """A live worker that runs noop and axonometric; noop at its cap of 1, axonometric paused by its
    provider: (the waiting noop job, the waiting axonometric job, the pause's end)."""
    service.store.record_worker(WorkerInfo("w-live", ("axonometric", "noop"), utcnow()))
    running, full = submit(service, "noop", "demo"), submit(service, "noop", "demo")
    assert service.claim_next("w-live", renderers={"noop"}).job_id == running.job_id
    until = utcnow() + timedelta(minutes=5)
    service.store.pause_renderer(RendererPause("axonometric", until))
    return full.job_id, submit(service, "axonometric", "demo").job_id, until


@pytest.fixture
def app_service(monkeypatch: pytest.MonkeyPatch) -> Iterator[JobService]:
    import streamlit as st

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    monkeypatch.setenv("JOBS_STORE_URL", f"memory://limits-{time.monotonic_ns()}")
    monkeypatch.setenv("JOBS_RENDERER_LIMITS", "noop=1")
    monkeypatch.delenv("JOBS_DIR", raising=False)
    yield JobService.from_env()
    st.cache_resource.clear()


def test_the_render_page_says_why_a_job_waits_for_its_provider(app_service):
    from streamlit.testing.v1 import AppTest

    full, paused, until = a_full_and_a_paused_renderer(app_service)
    for job_id, expected in ((full, "Waiting for a free noop slot (1 of 1 in use)."),
                             (paused, f"Paused by the provider until {until:%H:%M:%S} UTC (too many requests).")):
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        app.query_params["project"], app.query_params["job"] = "demo", job_id
        app.run()
        assert not app.exception
        assert expected in [info.value for info in app.info]


def test_the_api_and_the_command_line_say_why_a_job_waits_for_its_provider(tmp_path, settings):
    from fastapi.testclient import TestClient

    from jobs_core.api import create_app

    service = JobService(FileJobStore(tmp_path / "store"), replace(settings, renderer_limits={"noop": 1}))
    full, paused, until = a_full_and_a_paused_renderer(service)
    with TestClient(create_app(service, workers=0)) as http:
        answers = {job_id: http.get(f"/api/jobs/{job_id}").json()["job"] for job_id in (full, paused)}
    assert answers[full]["waitingReason"] == "Waiting for a free noop slot (1 of 1 in use)."
    assert answers[paused]["waitingReason"] == f"Paused by the provider until {until:%H:%M:%S} UTC (too many requests)."
    assert answers[full]["queuePosition"] == 1 and answers[paused]["queuePosition"] == 2
    status = run_cli("status", full, jobs_dir=tmp_path / "store", env=cli_env(JOBS_RENDERER_LIMITS="noop=1"))
    assert status.returncode == 0 and "Waiting for a free noop slot (1 of 1 in use)." in status.stderr


def test_a_named_claim_respects_the_cap_and_the_pause_too(service):
    # The API's /process and `submit --wait` claim a named job instead of the next one.
    jobs = limited(service, noop=1)
    running, waiting, drawing = submit(jobs, "noop"), submit(jobs, "noop"), submit(jobs, "axonometric")
    jobs.claim(running.job_id, "w1")
    with pytest.raises(TransitionConflict, match=r"cannot start now\. Waiting for a free noop slot \(1 of 1 in use\)"):
        jobs.claim(waiting.job_id, "w2")
    jobs.store.pause_renderer(RendererPause("axonometric", utcnow() + timedelta(minutes=1)))
    with pytest.raises(TransitionConflict, match=r"cannot start now\. Paused by the provider until"):
        jobs.claim(drawing.job_id, "w2")
    assert jobs.get(waiting.job_id).status is jobs.get(drawing.job_id).status is JobStatus.PENDING


def race_for_one_slot(jobs: JobService, named: list[str]) -> list:
    """Named claims of each of `named` and one claim_next, all at once: the jobs they claimed."""
    start = threading.Barrier(len(named) + 1)
    claimed: list = []

    def claim_by_name(job_id: str) -> None:
        start.wait()
        try:
            claimed.append(jobs.claim(job_id, "named"))
        except TransitionConflict:
            pass  # the slot was taken first

    def claim_the_next() -> None:
        start.wait()
        if (job := jobs.claim_next("next")) is not None:
            claimed.append(job)

    threads = [threading.Thread(target=claim_by_name, args=(job_id,)) for job_id in named]
    threads.append(threading.Thread(target=claim_the_next))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return claimed


def test_named_claims_racing_claim_next_never_pass_the_cap(service):
    # Each round, six named claims (each on its own job) and one claim_next race for one free slot;
    # the winner then completes, freeing the slot for the next round.
    jobs = limited(service, noop=1)
    for _ in range(12):
        claimed = race_for_one_slot(jobs, [submit(jobs, "noop").job_id for _ in range(6)])
        assert len(claimed) == 1, f"{len(claimed)} jobs of noop run at once; the cap is 1"
        assert [job.job_id for job in jobs.store.processing()] == [claimed[0].job_id]
        jobs.complete(Lease.of(claimed[0]), _tiny_png())


def test_named_claims_in_several_processes_never_pass_the_cap(service):
    # Three processes, each with one claim_next and two named claimers, race for one noop slot
    # thirty times (each claim completes its job at once, freeing the slot for the next race).
    location = store_location(service.store)
    if location is None:
        pytest.skip("the memory store lives in one process")
    for index in range(30):
        submit(service, "noop", project=f"p{index % 3}")
    outputs = run_together([str(TESTS / "named_claimer.py"), location, "noop"], 3)
    claims = [json.loads(line) for output in outputs for line in output.splitlines()]
    assert len(claims) == 30 and len({claim["jobId"] for claim in claims}) == 30
    assert max(claim["running"] for claim in claims) == 1, "more noop jobs ran at once than its cap of 1"
