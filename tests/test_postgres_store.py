"""What only the PostgreSQL store does: schema migration, cross-process wake-ups and change feed,
surviving dropped connections, unreadable rows, the updatedAt index, images in files.

The shared contract runs on PostgreSQL in test_store_contract.py; these are the extras, on the
real server of this machine (skipped with the reason when there is none).
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from postgres_scratch import create_schema, drop_schema, require_postgres, schema_url

from jobs_core import lifecycle
from jobs_core.errors import JobCanceled, LeaseLost, TransitionConflict, UnreadableJob
from jobs_core.lifecycle import Lease
from jobs_core.models import JobStatus, utcnow
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.usefixtures("postgres_server")


@pytest.fixture
def postgres_server() -> str:
    return require_postgres()


@pytest.fixture
def schema() -> Iterator[str]:
    name = create_schema()
    yield name
    drop_schema(name)


@pytest.fixture
def app_name() -> str:
    """A unique application_name: lets a test find (and kill) only its own sessions."""
    return f"jobs-test-{secrets.token_hex(4)}"


@pytest.fixture
def pg_store(schema: str, app_name: str):
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(schema_url(schema, app_name), pool_size=4)
    yield store
    store.close()


@pytest.fixture
def pg_service(pg_store, settings) -> JobService:
    return JobService(pg_store, settings)


def admin(query: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(require_postgres(), autocommit=True) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def kill_sessions(app_name: str, query: str | None = None) -> int:
    """Terminate this test's server sessions (optionally only those whose last query is LIKE
    `query`), as a crash would."""
    sql = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           "WHERE application_name = %s AND pid <> pg_backend_pid()")
    params: tuple = (app_name,)
    if query:
        sql += " AND query LIKE %s"
        params += (query,)
    return len(admin(sql, params))


def run_cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "JOBS_STORE_URL": url, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "jobs_core", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=ROOT)


def wait_until(condition, timeout: float = 20.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def submit(service: JobService, project: str = "p1"):
    return service.submit({"projectId": project, "renderType": "axonometric"})


# -- schema migration ------------------------------------------------------------------------------
def test_concurrent_starters_migrate_once(schema: str):
    from jobs_core.store.postgres import PostgresJobStore

    def start(_: int) -> str:
        store = PostgresJobStore(schema_url(schema), pool_size=1)
        store.close()
        return store.schema

    with ThreadPoolExecutor(6) as pool:
        assert set(pool.map(start, range(6))) == {schema}
    from jobs_core.store.postgres import MIGRATIONS

    rows = admin(f"SELECT version FROM {schema}.jobs_schema_version ORDER BY version")
    assert rows == [(version,) for version in sorted(MIGRATIONS)]  # each applied exactly once
    tables = {row[0] for row in admin("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}
    assert {"jobs", "job_events", "job_concepts", "job_images", "job_workers", "jobs_schema_version"} <= tables


def test_unreachable_server_missing_schema_or_bad_setting_is_one_clear_line(monkeypatch):
    done = subprocess.run([sys.executable, "-m", "jobs_core", "list"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, env={**os.environ, "JOBS_STORE_URL": schema_url("no_tables_made_here"),
                                         "JOBS_PG_POOL_SIZE": "many", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2
    assert done.stderr == "error: JOBS_PG_POOL_SIZE='many' must be a whole number of connections, at least 1.\n"
    for url, expected in (("postgresql://postgres@127.0.0.1:1/nowhere", "Cannot use PostgreSQL at 127.0.0.1:1/nowhere"),
                          (schema_url("no_such_schema_here"), "schema named by search_path")):
        done = run_cli(url, "list")
        assert done.returncode == 1
        assert done.stderr.startswith("error: ") and expected in done.stderr
        assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


# -- LISTEN/NOTIFY ---------------------------------------------------------------------------------
def test_a_job_submitted_by_another_process_wakes_idle_waiters(pg_store, schema: str):
    pg_store.wait_for_work(5)  # returns once the listener is connected
    woke_after: list[float] = []

    def idle_worker() -> None:
        started = time.monotonic()
        pg_store.wait_for_work(60)
        woke_after.append(time.monotonic() - started)

    waiter = threading.Thread(target=idle_worker)
    waiter.start()
    done = run_cli(schema_url(schema), "submit", "--project-id", "elsewhere")
    assert done.returncode == 0, done.stderr
    waiter.join(60)
    # Woken by NOTIFY, not by its 60 s timeout.
    assert woke_after and woke_after[0] < 30
    assert pg_store.pending()[0][1] == done.stdout.strip()


def test_a_dropped_listen_connection_is_replaced(pg_store, schema: str, app_name: str):
    pg_store.wait_for_work(5)
    assert kill_sessions(app_name, query="LISTEN%") == 1
    started = time.monotonic()
    pg_store.wait_for_work(30)  # the new listener wakes us: something may have been missed meanwhile
    assert time.monotonic() - started < 20
    woke_after: list[float] = []
    waiter = threading.Thread(target=lambda: (pg_store.wait_for_work(60), woke_after.append(time.monotonic())))
    started = time.monotonic()
    waiter.start()
    assert run_cli(schema_url(schema), "submit", "--project-id", "after-reconnect").returncode == 0
    waiter.join(60)
    assert woke_after and woke_after[0] - started < 30  # woken by NOTIFY on the new connection


def test_changes_from_other_processes_reach_change_callbacks(pg_store, schema: str):
    seen: list[tuple[str, str, str]] = []
    pg_store.on_change(lambda project, job, status: seen.append((project, job, status)))
    pg_store.wait_for_work(5)
    job_id = run_cli(schema_url(schema), "submit", "--project-id", "live").stdout.strip()
    JobService(pg_store).cancel(job_id)  # and one change from this process
    assert wait_until(lambda: ("live", job_id, "canceled") in seen)
    assert ("live", job_id, "pending") in seen


def test_jobs_updated_since_returns_only_later_changes(pg_service):
    first, second = submit(pg_service), submit(pg_service)
    mark = pg_service.get(second.job_id).updated_at
    canceled = pg_service.cancel(first.job_id)
    assert [j.job_id for j in pg_service.store.jobs_updated_since(mark)] == [first.job_id]
    assert pg_service.store.jobs_updated_since(canceled.updated_at) == []
    assert {j.job_id for j in pg_service.store.jobs_updated_since(None)} == {first.job_id, second.job_id}


# -- dropped connections ---------------------------------------------------------------------------
def test_idle_connections_killed_between_calls_are_replaced(pg_service, app_name: str):
    job = submit(pg_service)
    assert pg_service.get(job.job_id).status is JobStatus.PENDING
    assert kill_sessions(app_name) >= 1
    assert pg_service.cancel(job.job_id).status is JobStatus.CANCELED
    assert [e.type for e in pg_service.events(job.job_id)] == ["created", "canceled"]


def test_connection_dropped_inside_a_transition_is_retried_and_applied_once(pg_service, app_name: str):
    job = submit(pg_service)
    calls: list[str] = []

    def cancel_after_losing_the_connection(current):
        calls.append(current.status.value)
        if len(calls) == 1:  # the row is locked by our open transaction: kill that session
            assert kill_sessions(app_name, query="%FOR UPDATE") == 1
        return lifecycle.cancel(current)

    result = pg_service.store.modify(job.job_id, None, cancel_after_losing_the_connection)
    assert calls == ["pending", "pending"]  # the first attempt never committed; the retry saw the truth
    assert result.status is JobStatus.CANCELED
    assert [e.type for e in pg_service.events(job.job_id)] == ["created", "canceled"]


def test_connection_lost_at_commit_then_retried_without_double_apply(pg_service, schema: str):
    job = submit(pg_service)
    # A deferred trigger kills the session during its first COMMIT (sequences ignore rollbacks).
    admin(f"""
        CREATE SEQUENCE {schema}.commits_seen;
        CREATE FUNCTION {schema}.die_at_first_commit() RETURNS trigger AS $$
        BEGIN
            IF nextval('{schema}.commits_seen') = 1 THEN PERFORM pg_terminate_backend(pg_backend_pid()); END IF;
            RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE CONSTRAINT TRIGGER die_at_first_commit AFTER UPDATE ON {schema}.jobs
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {schema}.die_at_first_commit();
    """)
    lease = Lease.of(pg_service.claim_next("w1"))
    assert admin(f"SELECT last_value FROM {schema}.commits_seen") == [(2,)]  # died once, then committed
    assert pg_service.get(job.job_id).worker_id == "w1" and lease.attempt == 1
    assert [e.type for e in pg_service.events(job.job_id)] == ["created", "claimed"]


class CuttableProxy:
    """A real TCP proxy in front of the server that can lose a COMMIT's answer or vanish."""

    COMMIT_DONE = b"C\x00\x00\x00\x0bCOMMIT\x00"  # CommandComplete("COMMIT") on the wire

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lose_next_commit_answer = threading.Event()
        self.refusing = threading.Event()  # cut: new connections are hung up at once
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing.is_set():
                _hang_up(client)
                continue
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_server: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_server and self.COMMIT_DONE in data and self.lose_next_commit_answer.is_set():
                    self.lose_next_commit_answer.clear()
                    break  # the server committed; the client never hears it
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            _hang_up(end)

    def vanish(self) -> None:
        _hang_up(self.listener)
        self.cut()

    def cut(self) -> None:
        """The server is out of reach until `restore`: every connection dropped, new ones hung up."""
        self.refusing.set()
        for end in self.sockets:
            _hang_up(end)
        self.sockets = []

    def restore(self) -> None:
        self.refusing.clear()


def _hang_up(end: socket.socket) -> None:
    try:
        end.shutdown(socket.SHUT_RDWR)  # wakes the other pump blocked in recv (close alone does not)
    except OSError:
        pass
    end.close()


@pytest.fixture
def proxied(schema: str, settings):
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from jobs_core.store.postgres import PostgresJobStore

    server = conninfo_to_dict(require_postgres())
    proxy = CuttableProxy(server.get("host", "127.0.0.1"), int(server.get("port", 5432)))
    url = make_conninfo(schema_url(schema), host="127.0.0.1", port=str(proxy.port))
    store = PostgresJobStore(url, pool_size=2, retry_seconds=1.0, connect_timeout=2)
    yield proxy, JobService(store, settings)
    proxy.vanish()
    store.close()


def test_commit_applied_but_its_answer_lost_is_not_applied_twice(proxied):
    proxy, service = proxied
    job = submit(service)
    changes: list[str] = []

    def claim(current):
        changes.append(current.job_id)
        return lifecycle.claim(current, "w1")

    proxy.lose_next_commit_answer.set()
    claimed = service.store.claim_next(claim, utcnow())
    assert not proxy.lose_next_commit_answer.is_set()  # the answer really was lost
    assert claimed is not None and claimed.job_id == job.job_id and changes == [job.job_id]
    assert service.get(job.job_id).worker_id == "w1"
    assert [e.type for e in service.events(job.job_id)] == ["created", "claimed"]


def test_server_gone_for_good_raises_and_writes_nothing(proxied, schema: str):
    from jobs_core.store.postgres import StoreUnavailable

    proxy, service = proxied
    job = submit(service)
    proxy.vanish()
    with pytest.raises(StoreUnavailable, match="is unavailable"):
        service.cancel(job.job_id)
    assert admin(f"SELECT status FROM {schema}.jobs") == [("pending",)]


def test_a_worker_hands_its_job_back_when_postgresql_goes_away_and_runs_it_once_it_returns(proxied, schema,
                                                                                          tmp_path, caplog):
    import gate_renderer  # noqa: F401  (registers the gate renderer)
    from proc_helpers import wait_until

    from jobs_core.worker import Worker

    proxy, service = proxied
    service.settings = replace(service.settings, lease_seconds=3.0)
    gate = tmp_path / "gate"
    gate.mkdir()
    job = service.submit({"projectId": "p1", "conceptInputs": {"gateDir": str(gate), "quiet": True}}, renderer="gate")
    worker = Worker(service, poll_seconds=0.05).start()
    try:
        wait_until(lambda: (gate / "started").exists(), what="the render to start")
        proxy.cut()
        (gate / "open").touch()  # the render ends while the database is out of reach
        wait_until(lambda: worker.store_problem, what="the worker to pause claiming")
        status = admin(f"SELECT status, doc->>'attempts' FROM {schema}.jobs")
        assert status == [("processing", "1")]  # not failed: nothing could be written at all
        proxy.restore()
        wait_until(lambda: admin(f"SELECT status FROM {schema}.jobs") == [("completed",)],
                   timeout=60, what="the job to run again once the database is back")
        assert worker.store_problem is None
        # Handed back unspent, or, if its lease ran out first, requeued by the reclaim: never failed.
        events = [e.type for e in service.events(job.job_id)]
        assert "failed" not in events and events[-1] == "completed"
        assert events.count("released") + events.count("requeued") == 1
        assert "claiming paused" in caplog.text and "claiming resumed" in caplog.text
    finally:
        worker.stop()


# -- a worker's changes: one compare-and-set on the document it last wrote ------------------------
@pytest.fixture
def other_service(schema: str, settings) -> Iterator[JobService]:
    """A second store on the same schema: another process's view of the jobs."""
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(schema_url(schema), pool_size=2)
    yield JobService(store, settings)
    store.close()


def test_a_leased_job_changed_by_another_process_is_decided_on_the_row(pg_service, other_service):
    job = submit(pg_service)
    lease = Lease.of(pg_service.claim_next("w1"))
    assert pg_service.report_progress(lease, 10, "drawing").progress == 10
    other_service.cancel(job.job_id)  # the row moves on behind the worker's store
    with pytest.raises(JobCanceled):
        pg_service.report_progress(lease, 20, "drawing")
    assert pg_service.get(job.job_id).progress == 10
    assert pg_service.confirm_cancel(lease).status is JobStatus.CANCELED
    assert [e.type for e in pg_service.events(job.job_id)] == [
        "created", "claimed", "progress", "cancel-requested", "canceled"]


def test_a_refused_completion_writes_no_image(pg_service, other_service, schema: str):
    job = submit(pg_service)
    stale = Lease.of(pg_service.claim_next("w1"))
    later = utcnow() + timedelta(hours=1)  # w1's lease has expired by then: another worker takes over
    assert [j.job_id for j in other_service.reclaim_expired(now=later)] == [job.job_id]
    lease = Lease.of(other_service.claim_next("w2", now=later))
    with pytest.raises(LeaseLost):
        pg_service.complete(stale, _tiny_png())
    assert admin(f"SELECT count(*) FROM {schema}.job_images") == [(0,)]
    assert pg_service.get(job.job_id).worker_id == "w2"
    assert other_service.complete(lease, _tiny_png()).status is JobStatus.COMPLETED
    assert pg_service.image(pg_service.get(job.job_id)) == _tiny_png()
    assert [e.type for e in pg_service.events(job.job_id)] == [
        "created", "claimed", "requeued", "claimed", "completed"]


# -- rows that are not jobs; images as files -------------------------------------------------------
def test_unreadable_row_is_reported_and_can_be_deleted(pg_service, schema: str):
    good, bad = submit(pg_service), submit(pg_service)
    admin(f"UPDATE {schema}.jobs SET doc = '{{\"jobId\": 5}}' WHERE job_id = %s", (bad.job_id,))
    with pytest.raises(UnreadableJob, match=f"jobs row {bad.job_id}: not a job document"):
        pg_service.get(bad.job_id)
    page = pg_service.list()
    assert [j.job_id for j in page.jobs] == [good.job_id]
    assert [u.location for u in page.unreadable] == [f"jobs row {bad.job_id}"]
    pg_service.delete(bad.job_id)
    assert pg_service.list().unreadable == []


def test_images_can_live_in_an_artifacts_directory(schema: str, tmp_path: Path, settings):
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(schema_url(schema), pool_size=2, artifacts_dir=tmp_path / "artifacts")
    try:
        service = JobService(store, settings)
        job = submit(service)
        service.complete(Lease.of(service.claim_next("w1")), _tiny_png())
        assert (tmp_path / "artifacts" / "renders" / "p1" / f"{job.job_id}.png").read_bytes() == _tiny_png()
        assert admin(f"SELECT count(*) FROM {schema}.job_images") == [(0,)]
        assert service.image(service.get(job.job_id)) == _tiny_png()
        service.delete(job.job_id)
        assert not (tmp_path / "artifacts" / "renders" / "p1" / f"{job.job_id}.png").exists()
    finally:
        store.close()


def test_one_job_per_idempotency_key_and_project(pg_service):
    first = pg_service.submit({"projectId": "p1"}, idempotency_key="brief-42")
    with pytest.raises(TransitionConflict, match="already has a job with Idempotency-Key 'brief-42'"):
        pg_service.submit({"projectId": "p1"}, idempotency_key="brief-42")
    other = pg_service.submit({"projectId": "p2"}, idempotency_key="brief-42")
    assert pg_service.store.find_by_idempotency_key("p1", "brief-42").job_id == first.job_id
    assert pg_service.store.find_by_idempotency_key("p2", "brief-42").job_id == other.job_id
    assert pg_service.store.find_by_idempotency_key("p1", "brief-43") is None
    assert len(pg_service.list("p1").jobs) == 1


def test_the_api_answers_503_with_retry_after_while_postgresql_is_out_of_reach(proxied):
    import time

    from fastapi.testclient import TestClient

    from jobs_core.api.app import create_app

    proxy, service = proxied
    job = submit(service)
    with TestClient(create_app(service)) as http:
        proxy.cut()
        started = time.monotonic()
        answer = http.get(f"/api/jobs/{job.job_id}")
        health = http.get("/api/health")
        print(f"\n503 after {time.monotonic() - started:.2f} s for a poll and a health check")
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert answer.json()["error"] == "The job store is unavailable for the moment; try again in a few seconds."
        assert health.status_code == 503 and health.json()["status"] == "store unavailable"
        proxy.restore()
        from proc_helpers import wait_until

        wait_until(lambda: http.get(f"/api/jobs/{job.job_id}").status_code == 200, timeout=30,
                   what="the API to answer again once PostgreSQL is back (the pool reconnects with backoff)")
