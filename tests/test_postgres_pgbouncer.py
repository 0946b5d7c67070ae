"""The PostgreSQL store through PgBouncer in transaction mode (Debian's pgbouncer, on 127.0.0.1).

A fixture starts its own pgbouncer on a free port, in front of the test server, with a database
entry whose server connections use a fresh schema (PgBouncer refuses the `options` startup
parameter, so the schema is set on its side). Jobs are then queued, claimed and completed through
it, with prepared statements off (JOBS_PG_PREPARED_STATEMENTS=off) and the LISTEN connection
going straight to PostgreSQL (JOBS_PG_LISTEN_URL): a worker that polls only every 30 s must
still start a job at once when it is queued.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from postgres_scratch import create_schema, drop_schema, require_postgres, schema_url

from jobs_core.errors import InvalidInput

ROOT = Path(__file__).resolve().parent.parent
PGBOUNCER = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None)
LISTEN_NAME = "jobs-pgbouncer-test-listen"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Bouncer:
    url: str  # the store URL through PgBouncer
    direct_url: str  # the same schema, straight to PostgreSQL (for LISTEN and for checking)
    admin_url: str  # PgBouncer's console
    schema: str


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_params() -> dict[str, str]:
    from psycopg.conninfo import conninfo_to_dict

    return {"host": "127.0.0.1", "port": "5432", "dbname": "postgres", "user": "postgres",
            **conninfo_to_dict(require_postgres())}


def bouncer_config(folder: Path, port: int, schema: str) -> Path:
    server = server_params()
    user = server["user"]
    (folder / "userlist.txt").write_text(f'"{user}" ""\n')
    target = f"host={server['host']} port={server['port']} dbname={server['dbname']} user={user}"
    ini = folder / "pgbouncer.ini"
    ini.write_text(f"""[databases]
jobs = {target} connect_query='SET search_path TO {schema}'

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / 'userlist.txt'}
admin_users = {user}
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
""")
    return ini


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"pgbouncer did not listen on {port} within {timeout:g} s")


@pytest.fixture
def bouncer(tmp_path: Path) -> Iterator[Bouncer]:
    if PGBOUNCER is None:
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    require_postgres()
    schema = create_schema()
    port = free_port()
    ini = bouncer_config(tmp_path, port, schema)
    # PgBouncer refuses to run as root; -u drops to an unprivileged user after reading its files.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    log = open(tmp_path / "pgbouncer.log", "wb")  # noqa: SIM115 (the child writes it)
    process = subprocess.Popen([PGBOUNCER, *user, str(ini)], stdout=log, stderr=log)
    try:
        wait_for_port(port, process)
        user_name = server_params()["user"]
        yield Bouncer(url=f"postgresql://{user_name}@127.0.0.1:{port}/jobs",
                      direct_url=schema_url(schema, LISTEN_NAME),
                      admin_url=f"postgresql://{user_name}@127.0.0.1:{port}/pgbouncer", schema=schema)
    finally:
        process.terminate()
        process.wait(10)
        log.close()
        drop_schema(schema)


@pytest.fixture
def through_bouncer(bouncer: Bouncer, monkeypatch: pytest.MonkeyPatch) -> Bouncer:
    monkeypatch.setenv("JOBS_PG_PREPARED_STATEMENTS", "off")
    monkeypatch.setenv("JOBS_PG_LISTEN_URL", bouncer.direct_url)
    return bouncer


def bouncer_transactions(bouncer: Bouncer) -> int:
    """How many transactions PgBouncer has passed to the server for the `jobs` database."""
    import psycopg

    with psycopg.connect(bouncer.admin_url, autocommit=True, prepare_threshold=None) as conn:
        cur = conn.cursor()
        cur.execute("SHOW STATS")  # the console speaks only the simple query protocol
        names = [column.name for column in cur.description]
        for row in cur.fetchall():
            if row[names.index("database")] == "jobs":
                return int(row[names.index("total_xact_count")])
    return 0


def direct_rows(bouncer: Bouncer, query: str, params: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(bouncer.direct_url, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def test_several_stores_migrate_the_same_schema_at_once_through_pgbouncer(through_bouncer: Bouncer):
    from jobs_core.store.postgres import MIGRATIONS, PostgresJobStore

    stores, errors = [], []

    def open_one() -> None:
        try:
            stores.append(PostgresJobStore(through_bouncer.url, pool_size=1))
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)
    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for store in stores:
        store.close()
    assert errors == [] and len(stores) == 4
    assert {store.schema for store in stores} == {through_bouncer.schema}  # PgBouncer's connect_query set it
    versions = direct_rows(through_bouncer, "SELECT version FROM jobs_schema_version ORDER BY version")
    assert [version for (version,) in versions] == sorted(MIGRATIONS)  # each migration applied once


def test_a_worker_runs_jobs_through_pgbouncer_and_hears_new_ones_on_its_direct_listen(
        through_bouncer: Bouncer, settings):
    from jobs_core.service import JobService
    from jobs_core.store.postgres import PostgresJobStore

    store = PostgresJobStore(through_bouncer.url, pool_size=2)
    service = JobService(store, replace(settings, renderer="noop"))
    before = bouncer_transactions(through_bouncer)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBS_STORE_URL": through_bouncer.url}
    env.pop("JOBS_DIR", None)
    # Polling every 30 s: a job that starts within seconds was announced through LISTEN.
    worker = subprocess.Popen([sys.executable, "-m", "jobs_core", "worker", "--concurrency", "4", "--poll", "30"],
                              env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: direct_rows(through_bouncer, "SELECT count(*) FROM pg_stat_activity WHERE "
                                     "application_name = %s AND query LIKE 'LISTEN%%'", (LISTEN_NAME,))[0][0] > 0,
                 20, "the worker's LISTEN connection, straight to PostgreSQL")
        # Its threads found the queue empty a moment ago and now sleep until told (or for 30 s);
        # the pause only makes sure the last of them got there (were one still claiming, it would
        # take the jobs without being told, and the test would pass without proving anything).
        time.sleep(0.5)
        job_ids = [service.submit({"projectId": f"bouncer{i % 3}"}).job_id for i in range(40)]
        wait_for(lambda: direct_rows(through_bouncer, "SELECT count(*) FROM jobs WHERE status = 'completed'")[0][0]
                 == len(job_ids), 15, "the jobs to complete (well before the 30 s poll)")
    finally:
        worker.terminate()
        output, _ = worker.communicate(timeout=30)
        store.close()
    assert worker.returncode == 0, output
    assert "prepared statement" not in output and "Traceback" not in output, output
    completions = direct_rows(through_bouncer, "SELECT doc->>'jobId' FROM job_events WHERE doc->>'type' = 'completed'")
    assert sorted(job_id for (job_id,) in completions) == sorted(job_ids)  # each exactly once
    assert direct_rows(through_bouncer, "SELECT count(*) FROM job_images")[0][0] == len(job_ids)
    assert bouncer_transactions(through_bouncer) - before >= 3 * len(job_ids)  # create, claim, complete


def test_a_wrong_prepared_statements_setting_is_refused_in_a_sentence(monkeypatch: pytest.MonkeyPatch):
    from jobs_core.store.postgres import PostgresJobStore

    monkeypatch.setenv("JOBS_PG_PREPARED_STATEMENTS", "sometimes")
    with pytest.raises(InvalidInput, match=r"^JOBS_PG_PREPARED_STATEMENTS='sometimes' must be on or off\.$"):
        PostgresJobStore("postgresql://nobody@127.0.0.1:1/none")
