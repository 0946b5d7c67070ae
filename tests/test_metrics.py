"""Prometheus metrics, scraped as Prometheus does: a real HTTP client (httpx) against a real API
server (in a thread, and `serve --processes 2` as processes) and a real worker process's
`--metrics-port`, every answer parsed with prometheus-client's own parser."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from proc_helpers import ROOT, cli_env, run_cli, start_worker, wait_until, worker_log
from prometheus_client.parser import text_string_to_metric_families
from test_faults import fill, tiny_disk  # noqa: F401  (a real full disk: a tmpfs of 512 KiB)
from test_webhooks import Receiver

from jobs_core.api import ApiSettings, create_app
from jobs_core.errors import RenderError
from jobs_core.models import JobStatus
from jobs_core.renderers import ProgressFn, Renderer, RenderResult, RenderTask, register
from jobs_core.renderers.axonometric import RENDER_TYPES
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.worker import Worker
from tests.api_server import free_port, serve_in_thread

TOKEN = "metrics-test-token"


class MetricsRenderer(Renderer):
    """A PNG at once, or a non-retryable failure when the brief says `"fail": true`. Only this
    module's tests use it, so its series in this process's counters are theirs alone."""

    name = "test-metrics"
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        progress(50, "drawing")
        if task.concept_inputs.get("fail"):
            raise RenderError("the brief asked to fail")
        return RenderResult(png=_tiny_png())


register(MetricsRenderer.name, MetricsRenderer)


class Scrape:
    """One scrape, parsed by prometheus-client: every sample by (name, labels)."""

    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset], float] = {}
        self.types: dict[str, str] = {}
        self.buckets: dict[str, set[str]] = defaultdict(set)
        for family in text_string_to_metric_families(text):
            self.types[family.name] = family.type
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
                if sample.name.endswith("_bucket"):
                    self.buckets[sample.name.removesuffix("_bucket")].add(sample.labels["le"])

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels (0 when absent: a counter never incremented)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample of `name` whose labels include these."""
        wanted = set(labels.items())
        return sum(value for (sample, found), value in self.samples.items() if sample == name and wanted <= found)


def scrape(url: str, token: str | None = None) -> Scrape:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def create(http: httpx.Client, **inputs) -> str:
    response = http.post("/api/jobs/render", json={"projectId": "metrics", "renderType": "plan",
                                                   "conceptInputs": inputs})
    assert response.status_code == 201, response.text
    return response.json()["jobId"]


# -- the API ----------------------------------------------------------------------------------------
def test_the_api_counts_jobs_by_renderer_and_render_type_and_reads_the_gauges_from_the_store(tmp_path, settings):
    service = JobService(FileJobStore(tmp_path / "store"), replace(settings, renderer="test-metrics"))
    job = {"renderer": "test-metrics", "render_type": "plan"}
    with serve_in_thread(create_app(service, settings=ApiSettings())) as base, \
            httpx.Client(base_url=base, timeout=10) as http:
        ids = [create(http), create(http), create(http, fail=True), create(http)]
        assert http.post(f"/api/jobs/{ids[3]}/cancel").json()["job"]["status"] == "canceled"
        queued = scrape(f"{base}/metrics")  # the first scrape: the gauges' first reading of the store
        assert http.post(f"/api/jobs/{ids[3]}/retry").status_code == 200
        worker = Worker(service, poll_seconds=0.05).start()
        try:
            wait_until(lambda: all(service.get(job_id).status.is_final for job_id in ids), what="every job final")
        finally:
            worker.stop()
        # the gauges are read from the store, at most every 2 s: wait for a reading after the work
        after = wait_until(lambda: (found := scrape(f"{base}/metrics")).value("jobs_queue_length") == 0 and found,
                           what="a queue length of 0")
    assert [service.get(job_id).status for job_id in ids] == [JobStatus.COMPLETED] * 2 + [JobStatus.FAILED,
                                                                                         JobStatus.COMPLETED]
    assert queued.value("jobs_created_total", **job) == 4 and queued.value("jobs_canceled_total", **job) == 1
    assert queued.value("jobs_queue_length") == 3 and queued.value("jobs_running") == 0
    assert queued.value("jobs_store_up") == 1
    assert after.value("jobs_created_total", **job) == 4
    assert after.value("jobs_completed_total", **job) == 3  # the canceled one, retried, completed too
    assert after.value("jobs_failed_total", **job) == 1
    assert after.value("jobs_canceled_total", **job) == 1
    assert after.value("jobs_retried_total", **job, reason="user") == 1
    assert after.total("jobs_retried_total", **job) == 1
    assert after.value("jobs_queue_wait_seconds_count", **job) == 4  # one claim each
    assert after.value("jobs_run_seconds_count", **job, outcome="completed") == 3
    assert after.value("jobs_run_seconds_count", **job, outcome="failed") == 1
    assert after.value("jobs_run_seconds_bucket", **job, outcome="completed", le="+Inf") == 3
    assert 0 < after.value("jobs_run_seconds_sum", **job, outcome="completed") < 30
    for histogram in ("jobs_run_seconds", "jobs_queue_wait_seconds"):
        assert after.types[histogram] == "histogram"
        assert {"10.0", "60.0", "300.0", "600.0", "+Inf"} <= after.buckets[histogram]  # long AI renders fit
    assert after.types["jobs_created"] == "counter" and after.types["jobs_queue_length"] == "gauge"


def test_metrics_are_behind_the_token_when_one_is_set(memory_service):
    app = create_app(memory_service, settings=ApiSettings(token=TOKEN))
    with serve_in_thread(app) as base:
        missing = httpx.get(f"{base}/metrics")
        wrong = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer not-it"})
        assert missing.status_code == wrong.status_code == 401
        assert missing.json() == {"error": "This API needs 'Authorization: Bearer <JOBS_API_TOKEN>'."}
        assert "jobs_" not in missing.text + wrong.text
        assert scrape(f"{base}/metrics", TOKEN).value("jobs_store_up") == 1
        assert httpx.get(f"{base}/api/health").status_code == 200  # health stays open


def test_openmetrics_is_served_when_asked_for(memory_service):
    with serve_in_thread(create_app(memory_service, settings=ApiSettings())) as base:
        response = httpx.get(f"{base}/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_webhook_deliveries_are_counted_by_outcome(memory_service, monkeypatch):
    monkeypatch.setenv("JOBS_WEBHOOK_BACKOFF_SECONDS", "0.05")
    monkeypatch.setenv("JOBS_WEBHOOK_POLL_SECONDS", "0.05")
    monkeypatch.setenv("JOBS_WEBHOOK_MAX_ATTEMPTS", "2")
    with Receiver(answers=[500, 500]) as receiver, \
            serve_in_thread(create_app(memory_service, settings=ApiSettings())) as base:
        before = scrape(f"{base}/metrics")
        hook = {"webhook": receiver.url, "webhookEventsFilter": ["completed"]}
        memory_service.submit({"projectId": "p1", **hook}, renderer="noop")
        worker = Worker(memory_service, poll_seconds=0.05).start()
        try:
            wait_until(lambda: len(receiver.snapshot()) == 2 and not memory_service.store.deliveries(),
                       what="two failed attempts, then giving up")
            memory_service.submit({"projectId": "p1", **hook}, renderer="noop")  # this one gets a 200
            wait_until(lambda: len(receiver.snapshot()) == 3 and not memory_service.store.deliveries(),
                       what="the third delivery")
        finally:
            worker.stop()
        after = scrape(f"{base}/metrics")
    outcomes = {outcome: after.value("jobs_webhook_deliveries_total", outcome=outcome)
                - before.value("jobs_webhook_deliveries_total", outcome=outcome)
                for outcome in ("delivered", "retrying", "given_up", "dropped")}
    assert outcomes == {"delivered": 1, "retrying": 1, "given_up": 1, "dropped": 0}


def test_store_errors_are_counted_where_they_are_met(tiny_disk, settings):  # noqa: F811 (the fixture)
    service = JobService(FileJobStore(tiny_disk / "store"), replace(settings, renderer="axonometric"))
    service.submit({"projectId": "p1"})
    claimed = service.claim_next("w1")
    with serve_in_thread(create_app(service, settings=ApiSettings())) as base, \
            httpx.Client(base_url=base) as http:
        before = scrape(f"{base}/metrics")
        filler = fill(tiny_disk)
        refused = http.post("/api/jobs/render", json={"projectId": "p1", "conceptInputs": {"description": "x" * 1500}})
        assert refused.status_code == 503
        # the drawing cannot be saved, nor the job handed back: it stays running, for the worker to retry
        assert Worker(service).run(claimed) is None and service.get(claimed.job_id).status is JobStatus.PROCESSING
        after = scrape(f"{base}/metrics")
        filler.unlink()

    def errors(found: Scrape, component: str) -> float:
        return found.value("jobs_store_errors_total", component=component, kind="write")
    assert errors(after, "api") - errors(before, "api") == 1
    assert errors(after, "worker") - errors(before, "worker") == 1  # the render could not be saved
    assert after.value("jobs_store_up") == 1  # reading still works on a full disk


def test_a_scrape_while_the_store_is_out_of_reach_says_so_and_counts_the_errors(pg_url, settings):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from test_postgres_store import CuttableProxy  # a real TCP proxy in front of PostgreSQL

    from jobs_core.store.postgres import PostgresJobStore

    server = conninfo_to_dict(pg_url)
    proxy = CuttableProxy(server.get("host", "127.0.0.1"), int(server.get("port", 5432)))
    store = PostgresJobStore(make_conninfo(pg_url, host="127.0.0.1", port=str(proxy.port)), pool_size=2,
                             retry_seconds=1.0, connect_timeout=2)
    service = JobService(store, settings)
    service.submit({"projectId": "p1"})
    try:
        with serve_in_thread(create_app(service, settings=ApiSettings())) as base:
            up = scrape(f"{base}/metrics")
            proxy.cut()
            assert httpx.get(f"{base}/api/health", timeout=30).status_code == 503
            down = wait_until(lambda: (found := scrape(f"{base}/metrics")).value("jobs_store_up") == 0 and found,
                              what="a scrape after the store went away")
            proxy.restore()
            back = wait_until(lambda: (found := scrape(f"{base}/metrics")).value("jobs_store_up") == 1 and found,
                              what="a scrape after the store came back")
    finally:
        proxy.vanish()
        store.close()

    def errors(found: Scrape, component: str) -> float:
        return found.value("jobs_store_errors_total", component=component, kind="unavailable")
    assert up.value("jobs_store_up") == 1 and up.value("jobs_queue_length") == 1
    assert ("jobs_queue_length", frozenset()) not in down.samples  # unknown, not a made-up 0
    assert errors(down, "api") - errors(up, "api") == 1  # the health check's 503
    assert errors(down, "metrics") - errors(up, "metrics") == 1  # the gauges' reading
    assert back.value("jobs_queue_length") == 1


def test_every_store_counts_its_pending_and_running_jobs_for_the_gauges(service):
    assert service.store.active_counts() == (0, 0)
    ids = [service.submit({"projectId": "p1"}).job_id for _ in range(4)]
    service.claim_next("w1")
    service.claim_next("w1")
    service.cancel(ids[3])
    assert service.store.active_counts() == (1, 2)
    assert service.store.active_counts() == (len(service.store.pending()), len(service.store.processing()))


# -- a worker process ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_worker_process_serves_its_metrics_on_its_metrics_port_behind_the_token(tmp_path, settings):
    import gate_renderer  # noqa: F401  (registers `broken` here too, to submit its jobs)

    jobs_dir = tmp_path / "store"
    service = JobService(FileJobStore(jobs_dir), settings)
    ids = [service.submit({"projectId": "p1"}, renderer=renderer).job_id for renderer in ("noop", "noop", "broken")]
    port = free_port()
    process = start_worker(jobs_dir, "--metrics-port", str(port), env=cli_env(JOBS_API_TOKEN=TOKEN))
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        wait_until(lambda: all(service.get(job_id).status.is_final for job_id in ids), what="every job final")
        found = scrape(url, TOKEN)
        refused = httpx.get(url)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    assert process.returncode == 0, worker_log(process)
    assert refused.status_code == 401 and "jobs_" not in refused.text
    assert found.value("jobs_completed_total", renderer="noop", render_type="axonometric") == 2
    assert found.value("jobs_failed_total", renderer="broken", render_type="axonometric") == 1
    assert found.total("jobs_completed_total") == 2 and found.total("jobs_failed_total") == 1
    assert found.total("jobs_created_total") == 0  # created in this test's process, not the worker's
    assert found.value("jobs_run_seconds_count", renderer="noop", render_type="axonometric", outcome="completed") == 2
    assert found.total("jobs_queue_wait_seconds_count") == 3
    assert "600.0" in found.buckets["jobs_run_seconds"]
    assert found.value("jobs_queue_length") == 0 and found.value("jobs_running") == 0
    assert f"metrics on http://127.0.0.1:{port}/metrics" in worker_log(process)


@pytest.mark.slow
def test_workers_sharing_a_multiprocess_folder_show_their_total_on_one_port(tmp_path, settings):
    import gate_renderer  # noqa: F401  (registers `gate` here too, to submit its jobs)

    jobs_dir, gate, folder = tmp_path / "store", tmp_path / "gate", tmp_path / "prom"
    gate.mkdir()
    folder.mkdir()
    service = JobService(FileJobStore(jobs_dir), settings)
    ids = [service.submit({"projectId": "p1", "conceptInputs": {"gateDir": str(gate)}}, renderer="gate").job_id
           for _ in range(2)]
    port = free_port()
    env = cli_env(PROMETHEUS_MULTIPROC_DIR=str(folder))
    workers = [start_worker(jobs_dir, "--metrics-port", str(port), env=env), start_worker(jobs_dir, env=env)]
    try:
        # each worker holds one job at the gate (one job each, concurrency 1): both will count one
        wait_until(lambda: (gate / "started").exists()
                   and len({line.split()[0] for line in (gate / "started").read_text().splitlines()}) == 2,
                   what="each worker to start a job")
        (gate / "open").touch()
        wait_until(lambda: all(service.get(job_id).status.is_final for job_id in ids), what="both jobs final")
        found = scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        for process in workers:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
    assert [process.returncode for process in workers] == [0, 0], [worker_log(process) for process in workers]
    assert found.value("jobs_completed_total", renderer="gate", render_type="axonometric") == 2
    assert found.value("jobs_queue_wait_seconds_count", renderer="gate", render_type="axonometric") == 2
    assert len(_counting_pids(folder)) == 2


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (["--metrics-port", "70000"], "--metrics-port must be between 1 and 65535, not 70000."),
    (["--metrics-port", "0"], "--metrics-port must be between 1 and 65535, not 0."),
    (["--metrics-host", "0.0.0.0"], "--metrics-host needs --metrics-port: say which port to serve metrics on."),
    (["--metrics-port", "9", "--metrics-host", "192.0.2.1"], "--metrics-host '192.0.2.1' is not an address of "
                                                              "this machine"),
])
def test_bad_metrics_options_get_one_line_and_no_job_is_touched(tmp_path, args, message):
    result = run_cli("worker", "--drain", *args, jobs_dir=tmp_path / "store")
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_metrics_port_in_use_gets_one_line(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("worker", "--drain", "--metrics-port", str(port), jobs_dir=tmp_path / "store")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --metrics-port {port} is already in use on 127.0.0.1: pick another port."


@pytest.mark.slow
def test_a_missing_multiprocess_folder_gets_one_line(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_cli("worker", "--drain", "--metrics-port", str(free_port()), jobs_dir=tmp_path / "store",
                     env=cli_env(PROMETHEUS_MULTIPROC_DIR=str(missing)))
    assert result.returncode == 2 and f"PROMETHEUS_MULTIPROC_DIR='{missing}' is not a folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- several processes ---------------------------------------------------------------------------------
def _serve(jobs_dir: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "jobs_core", "serve", "--port", str(port), "--jobs-dir",
                                str(jobs_dir), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {process.communicate()[0]}")
        try:
            return httpx.get(f"{base}/api/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False
    wait_until(up, timeout=30, what="serve to start")
    return process, base


def _counting_pids(folder: Path) -> set[str]:
    """The processes that counted into a multiprocess folder (prometheus-client: counter_{pid}.db)."""
    return {path.stem.removeprefix("counter_") for path in folder.glob("counter_*.db")}


@pytest.mark.slow
@pytest.mark.parametrize("own_folder", [True, False], ids=["PROMETHEUS_MULTIPROC_DIR", "set-up-by-serve"])
def test_one_scrape_of_serve_processes_2_counts_the_creates_of_both(tmp_path, own_folder):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = cli_env(TMPDIR=str(temp))
    if own_folder:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
        (tmp_path / "prom").mkdir()
    process, base = _serve(tmp_path / "store", env, "--processes", "2", "--workers", "0")
    try:
        folder = tmp_path / "prom" if own_folder else wait_until(lambda: next(temp.glob("jobs-metrics-*"), None),
                                                                  what="serve's metrics folder")
        created = 0
        # Until both server processes have counted a create (each connection goes to either one).
        while len(_counting_pids(folder)) < 2:
            with httpx.Client(base_url=base, timeout=10) as http:  # a new connection each time
                create(http)
            created += 1
            assert created < 300, "one server process took every connection"
        found = scrape(f"{base}/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert found.value("jobs_created_total", renderer="axonometric", render_type="plan") == created
    assert found.value("jobs_queue_length") == created  # read from the store, not summed over processes
    assert "Traceback" not in output
    assert folder.exists() is own_folder  # serve's own folder is removed with it; the user's is left
