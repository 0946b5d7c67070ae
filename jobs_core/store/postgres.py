"""PostgresJobStore: the same contract on PostgreSQL, for workers on many hosts.

    jobs          one row per job: the document as JSONB plus the columns we query
    job_events    the event log, oldest first by id
    job_concepts  saved briefs
    job_images    rendered PNGs (unless an artifacts directory is configured)
    webhook_outbox  webhook deliveries waiting to be sent (written with the change that makes them due)

Every change runs in one transaction on the row read with SELECT ... FOR UPDATE (or, to claim, on
the oldest due pending row picked with FOR UPDATE SKIP LOCKED on a partial index), so a change
function that raises rolls everything back. A job this process holds the lease of (it claimed it)
is changed in one statement instead: the change is applied to the document this process last
committed, and the row is written only if it still holds exactly that document (compare-and-set);
otherwise the change runs again the first way, on the row as it is. After commits, NOTIFY (in
batches) wakes idle workers in every process (a job is pending) and tells live views what changed
(`on_change`).

The schema of the URL's search_path is used (`?options=-csearch_path%3Dmyschema`), which lets
several stores share one database.

Behind PgBouncer in transaction mode (README): JOBS_PG_PREPARED_STATEMENTS=off, and LISTEN, which
needs a session of its own, goes straight to PostgreSQL at JOBS_PG_LISTEN_URL.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool
from pydantic import ValidationError

from ..errors import InvalidInput, JobNotFound, StoreUnavailable, TransitionConflict, UnreadableJob
from ..ids import validate_id
from ..limits import RendererFull, RendererLimits, RendererPause
from ..models import Concept, ConceptInputs, Event, Job, JobStatus
from ..webhooks import Delivery
from .atomic import unlink_quietly, write_or_replace
from .base import (
    Change,
    CopyableStore,
    JobPage,
    JobRecord,
    JobStore,
    JobWatch,
    OnChange,
    RemovableJob,
    Removal,
    Removed,
    StoreSize,
    Unreadable,
    WorkerInfo,
    apply_change,
)
from .folders import MiB, StoreFolders, UnsafeEntry, read_regular

if TYPE_CHECKING:
    from .postgres_scan import Field, FieldScan

log = logging.getLogger("jobs_core.store.postgres")
T = TypeVar("T")

MIGRATION_LOCK = 7_310_001  # pg_advisory_xact_lock key: concurrent starters migrate one at a time
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE IF NOT EXISTS jobs (
        job_id          text PRIMARY KEY,
        project_id      text NOT NULL,
        status          text NOT NULL,
        available_at    timestamptz NOT NULL,
        updated_at      timestamptz NOT NULL,
        heartbeat_at    timestamptz,
        worker_id       text,
        idempotency_key text,
        doc             jsonb NOT NULL
    );
    CREATE INDEX IF NOT EXISTS jobs_pending_queue ON jobs (available_at, job_id) WHERE status = 'pending';
    CREATE INDEX IF NOT EXISTS jobs_processing ON jobs (heartbeat_at) WHERE status = 'processing';
    CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project_id, job_id);
    CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, job_id);
    CREATE INDEX IF NOT EXISTS jobs_by_update ON jobs (updated_at);
    CREATE UNIQUE INDEX IF NOT EXISTS jobs_by_idempotency_key ON jobs (project_id, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE TABLE IF NOT EXISTS job_events (
        id          bigserial PRIMARY KEY,
        job_id      text NOT NULL,
        project_id  text NOT NULL,
        doc         jsonb NOT NULL
    );
    CREATE INDEX IF NOT EXISTS job_events_by_job ON job_events (job_id, id);
    CREATE TABLE IF NOT EXISTS job_concepts (
        project_id  text NOT NULL,
        concept_id  text NOT NULL,
        doc         jsonb NOT NULL,
        PRIMARY KEY (project_id, concept_id)
    );
    CREATE TABLE IF NOT EXISTS job_images (
        project_id  text NOT NULL,
        job_id      text NOT NULL,
        png         bytea NOT NULL,
        PRIMARY KEY (project_id, job_id)
    );
    """,
    2: """
    CREATE TABLE IF NOT EXISTS job_workers (
        worker_id   text PRIMARY KEY,
        seen_at     timestamptz NOT NULL,
        renderers   text[] NOT NULL,
        problem     text
    );
    """,
    3: """
    CREATE TABLE IF NOT EXISTS webhook_outbox (
        id          text PRIMARY KEY,
        key         text NOT NULL,
        ordering    bigint NOT NULL,
        next_at     timestamptz NOT NULL,
        attempts    int NOT NULL DEFAULT 0,
        claim       text,
        doc         jsonb NOT NULL
    );
    CREATE INDEX IF NOT EXISTS webhook_outbox_due ON webhook_outbox (next_at);
    CREATE INDEX IF NOT EXISTS webhook_outbox_by_key ON webhook_outbox (key, ordering);
    CREATE TABLE IF NOT EXISTS webhook_settings (
        name        text PRIMARY KEY,
        value       text NOT NULL
    );
    """,
    4: """
    CREATE TABLE IF NOT EXISTS job_retention (
        name        text PRIMARY KEY,
        last_run_at timestamptz NOT NULL
    );
    """,
    5: """
    CREATE TABLE IF NOT EXISTS renderer_pauses (
        renderer     text PRIMARY KEY,
        paused_until timestamptz NOT NULL,
        reason       text NOT NULL
    );
    """,
}
FORGET_WORKERS_AFTER = timedelta(days=1)

# Seconds between two batches of notifications from one store: the first change after a quiet
# spell is announced at once, a burst's changes at most this much later.
ANNOUNCE_INTERVAL = 0.02

# A peer that vanishes without closing (a host powered off) is noticed in ~25 s, not hours;
# used unless the URL sets its own.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "10", "keepalives_interval": "5", "keepalives_count": "3"}

# One round trip writes the job and logs its event; the last column turns synchronous_commit off
# for this transaction when the change is not a transition (see _durable).
_WRITE_TAIL = """
    , logged AS (INSERT INTO job_events (job_id, project_id, doc)
                 SELECT %(job_id)s, %(project_id)s, e.doc FROM (SELECT %(event)s::jsonb AS doc) e
                 WHERE e.doc IS NOT NULL)
    SELECT set_config('synchronous_commit', %(sync)s, true)
"""
_INSERT_JOB = """
    WITH written AS (
        INSERT INTO jobs (job_id, project_id, status, available_at, updated_at, heartbeat_at, worker_id,
                          idempotency_key, doc)
        VALUES (%(job_id)s, %(project_id)s, %(status)s, %(available_at)s, %(updated_at)s, %(heartbeat_at)s,
                %(worker_id)s, %(idempotency_key)s, %(doc)s::jsonb))""" + _WRITE_TAIL
# The update is a compare-and-set when `old_doc` is given: the row is written only if its document
# is still the one the change function was applied to (see PostgresJobStore._swap); the event and
# the image (a completion's) are written only with the row. Returns 1 when the row was written.
_UPDATE_JOB = """
    WITH written AS (
        UPDATE jobs SET status = %(status)s, available_at = %(available_at)s, updated_at = %(updated_at)s,
                        heartbeat_at = %(heartbeat_at)s, worker_id = %(worker_id)s,
                        idempotency_key = %(idempotency_key)s, doc = %(doc)s::jsonb
        WHERE job_id = %(job_id)s AND project_id = %(project_id)s
          AND (%(old_doc)s::jsonb IS NULL OR doc = %(old_doc)s::jsonb)
        RETURNING job_id),
    logged AS (INSERT INTO job_events (job_id, project_id, doc)
               SELECT w.job_id, %(project_id)s, %(event)s::jsonb FROM written w WHERE %(event)s::jsonb IS NOT NULL),
    imaged AS (INSERT INTO job_images (project_id, job_id, png)
               SELECT %(project_id)s, w.job_id, %(png)s::bytea FROM written w WHERE %(png)s::bytea IS NOT NULL
               ON CONFLICT (project_id, job_id) DO UPDATE SET png = EXCLUDED.png),
    queued AS (INSERT INTO webhook_outbox (id, key, ordering, next_at, doc)
               SELECT d->>'id', d->>'key', (d->>'order')::bigint, (d->>'next_at')::timestamptz, d
               FROM written w, jsonb_array_elements(%(deliveries)s::jsonb) d
               ON CONFLICT (id) DO NOTHING)
    SELECT count(*), set_config('synchronous_commit', %(sync)s, true) FROM written
"""
# Retention: each statement deletes one kind of row of the jobs named by %s (an array), returning
# (job_id, bytes) so a prune can say what it freed.
_REMOVE_JOB_ROWS = (
    "DELETE FROM jobs WHERE job_id = ANY(%s) RETURNING job_id, pg_column_size(jobs.*)",
    "DELETE FROM job_events WHERE job_id = ANY(%s) RETURNING job_id, pg_column_size(job_events.*)",
    "DELETE FROM job_images WHERE job_id = ANY(%s) RETURNING job_id, octet_length(png)",
    "DELETE FROM webhook_outbox WHERE key = ANY(%s) RETURNING key, pg_column_size(webhook_outbox.*)",
)
_MEASURE_JOB_ROWS = """
    SELECT id, sum(size) FROM (
        SELECT job_id AS id, pg_column_size(jobs.*) AS size FROM jobs WHERE job_id = ANY(%(ids)s)
        UNION ALL SELECT job_id, pg_column_size(job_events.*) FROM job_events WHERE job_id = ANY(%(ids)s)
        UNION ALL SELECT job_id, octet_length(png) FROM job_images WHERE job_id = ANY(%(ids)s)
        UNION ALL SELECT key, pg_column_size(webhook_outbox.*) FROM webhook_outbox WHERE key = ANY(%(ids)s)
    ) sizes GROUP BY id"""
_DOOMED_CONCEPTS = "(project_id, concept_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
_DELETE_CONCEPTS = (f"WITH gone AS (DELETE FROM job_concepts WHERE {_DOOMED_CONCEPTS} "
                    "RETURNING pg_column_size(job_concepts.*) AS size) SELECT count(*), sum(size) FROM gone")
_MEASURE_CONCEPTS = f"SELECT count(*), sum(pg_column_size(job_concepts.*)) FROM job_concepts WHERE {_DOOMED_CONCEPTS}"
# How many leased jobs' documents a store remembers for compare-and-set (a few per worker thread).
_LEASED_MEMORY = 1024
MAX_IMAGE_BYTES = 64 * MiB
_INSERT_EVENT = "INSERT INTO job_events (job_id, project_id, doc) VALUES (%s, %s, %s::jsonb)"
_INSERT_DELIVERY = ("INSERT INTO webhook_outbox (id, key, ordering, next_at, attempts, doc) "
                    "VALUES (%s, %s, %s, %s, %s, %s::jsonb) ON CONFLICT (id) DO NOTHING")
# The first delivery of its key that is due, claimed by moving next_at to the end of the lease
# (a claim whose sender died becomes due again); SKIP LOCKED: concurrent senders take others.
_CLAIM_DELIVERY = """
    WITH next AS (
        SELECT o.id FROM webhook_outbox o
        WHERE o.next_at <= %(now)s
          AND NOT EXISTS (SELECT 1 FROM webhook_outbox e WHERE e.key = o.key AND e.ordering < o.ordering)
        ORDER BY o.next_at LIMIT 1 FOR UPDATE OF o SKIP LOCKED)
    UPDATE webhook_outbox w SET claim = %(claim)s, next_at = %(lease)s FROM next WHERE w.id = next.id
    RETURNING w.doc::text, w.attempts
"""


# The oldest due job a claimer may take: of its renderers, none paused by its provider and none
# found at its cap by this claim (`full`). SKIP LOCKED: concurrent claimers take different jobs.
_CLAIM_SELECT = """
    SELECT job_id, doc::text FROM jobs j WHERE status = 'pending' AND available_at <= %(now)s
      AND (%(allowed)s::text[] IS NULL OR doc->>'renderer' = ANY(%(allowed)s::text[]))
      AND NOT coalesce(doc->>'renderer' = ANY(%(full)s::text[] || ARRAY(
          SELECT c.renderer FROM unnest(%(capped)s::text[], %(caps)s::int[]) AS c(renderer, cap)
          WHERE c.cap <= (SELECT count(*) FROM jobs r WHERE r.status = 'processing'
                          AND r.heartbeat_at >= %(alive)s AND r.doc->>'renderer' = c.renderer))), false)
      AND NOT EXISTS (SELECT 1 FROM renderer_pauses p
                      WHERE p.renderer = j.doc->>'renderer' AND p.paused_until > %(now)s)
    ORDER BY available_at, job_id LIMIT 1 FOR UPDATE SKIP LOCKED
"""
# A renderer's slots are counted under a transaction-level advisory lock of that renderer (in the
# store's schema), held until the claim commits: two claimers cannot both take the last slot, and
# the next one's count (a fresh snapshot after the lock is granted) sees the committed claim.
# Works through PgBouncer in transaction mode, as the lock lives and dies with the transaction.
_LIMITS_LOCK_SPACE = 0x4A4C  # the first key of our advisory locks ("JL"): apart from other users'
_HOLDING_SLOTS = """
    SELECT count(*) FROM jobs WHERE status = 'processing' AND heartbeat_at >= %s AND doc->>'renderer' = %s
"""


class _CommitUncertain(Exception):
    """The connection dropped during COMMIT: the transaction may or may not have been applied."""


_BRIEF_ORDER = {field.alias or name: index for index, (name, field) in enumerate(ConceptInputs.model_fields.items())}


def _in_brief_order(inputs: dict[str, Any]) -> dict[str, Any]:
    """JSONB keeps keys sorted by length; give the brief back in the order it was written, so a
    job read from here is the same document, byte for byte, as the one stored (and migrated)."""
    return dict(sorted(inputs.items(), key=lambda item: _BRIEF_ORDER.get(item[0], len(_BRIEF_ORDER))))


def _parse_job(job_id: str, text: str) -> Job:
    try:
        job = Job.model_validate_json(text)
        job.concept_inputs = _in_brief_order(job.concept_inputs)
        return job
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        raise UnreadableJob(f"jobs row {job_id}: not a job document ({field}: {first['msg']}).") from None


def _parse_concept(text: str) -> Concept:
    concept = Concept.model_validate_json(text)
    concept.concept_inputs = _in_brief_order(concept.concept_inputs)
    return concept


def _channel(kind: str, schema: str) -> str:
    """A NOTIFY channel per schema (channels are database-wide; schemas may be many stores)."""
    digest = hashlib.sha1(schema.encode()).hexdigest()[:12]
    return f"jobs_{kind}_{digest}"


class PostgresJobStore(JobStore, CopyableStore):
    wakes_across_processes = True

    def __init__(self, url: str, *, pool_size: int | None = None,
                 artifacts_dir: str | os.PathLike | None = None, retry_seconds: float = 4.0,
                 connect_timeout: float = 3.0) -> None:
        self.url = url
        #: how long one call keeps trying through dropped connections before StoreUnavailable:
        #: short, so an API request answers 503 within seconds and a worker pauses, not hangs
        self.retry_seconds = retry_seconds
        self.connect_timeout = connect_timeout
        defaults = {**KEEPALIVES, "connect_timeout": str(max(int(connect_timeout), 1))}
        self.connect_kwargs: dict[str, Any] = {key: value for key, value in defaults.items()
                                               if key not in self._params()}
        if not _prepared_statements_setting():  # behind PgBouncer in transaction mode (README)
            self.connect_kwargs["prepare_threshold"] = None
        #: LISTEN holds a session, so it needs a direct connection even when `url` is a pooler's
        self.listen_url = os.environ.get("JOBS_PG_LISTEN_URL") or url
        artifacts = artifacts_dir or os.environ.get("JOBS_ARTIFACTS_DIR") or None
        self.artifacts_dir = Path(artifacts) if artifacts else None
        size = pool_size or _pool_size_setting()
        self.schema = self._migrate(connect_timeout)
        self.pool = ConnectionPool(url, kwargs={**self.connect_kwargs, "autocommit": True}, min_size=1,
                                   max_size=size, open=False, timeout=connect_timeout, name="jobs_core")
        self.pool.open(wait=False)
        self.work_channel = _channel("work", self.schema)
        self.change_channel = _channel("change", self.schema)
        self._closing = threading.Event()
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._change_callbacks: list[Callable[[str, str, str], None]] = []
        self._listening_changes = threading.Event()
        self._announcements: list[tuple[str, str]] = []
        self._announce_ready = threading.Condition()
        self._announcer: threading.Thread | None = None
        self._work_announced = False  # the pending batch already wakes idle workers
        self._leased: dict[str, str] = {}  # job id -> document last committed, for `_swap`
        self._leased_lock = threading.Lock()

    # -- connection handling -----------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        try:
            return conninfo_to_dict(self.url)
        except psycopg.Error:
            return {}

    def _where(self) -> str:
        """host:port/database, never the password."""
        params = self._params()
        if not params:
            return "an unparsable URL"
        return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"

    def describe(self) -> str:
        schema = getattr(self, "schema", "?")
        return f"PostgreSQL at {self._where()} (schema {schema})"

    def _migrate(self, connect_timeout: float) -> str:
        """Create or upgrade the tables on a first, direct connection (which also fails fast with
        a clear message when the server is unreachable). Idempotent; an advisory lock makes
        concurrent starters take turns."""
        try:
            with psycopg.connect(self.url, **self.connect_kwargs) as conn:
                with conn.transaction(), conn.cursor() as cur:
                    return _apply_migrations(cur)
        except psycopg.OperationalError as error:
            raise StoreUnavailable(f"Cannot use PostgreSQL at {self._where()}: {_first_line(error)}") from None
        except psycopg.ProgrammingError as error:
            raise InvalidInput(f"The store URL is not a valid PostgreSQL URL: {_first_line(error)}") from None

    def _transact(self, work: Callable[[psycopg.Cursor], T],
                  applied: Callable[[psycopg.Cursor, T], bool] | None = None, *, writes: bool = True) -> T:
        """Run `work` in one transaction; retry it on a dropped connection.

        A transition either commits or raises: when the connection drops after the writes were
        sent, the outcome is checked on a fresh connection with `applied` (when given) before
        retrying. Exceptions raised by `work` itself roll back and propagate at once.
        """
        delay = 0.05
        deadline = time.monotonic() + self.retry_seconds
        while True:
            try:
                return self._once(work, writes, wait=max(deadline - time.monotonic(), 0.1))
            except _CommitUncertain as uncertain:
                result, error = uncertain.args
                if applied is not None and self._check_applied(applied, result):
                    return result
                last = error
            except psycopg.OperationalError as error:
                last = error
            if time.monotonic() + delay >= deadline:
                raise StoreUnavailable(f"PostgreSQL at {self._where()} is unavailable: {_first_line(last)}")
            log.warning("PostgreSQL connection problem (%s); retrying", _first_line(last))
            time.sleep(delay)  # a backoff between reconnection attempts, bounded by the deadline
            delay = min(delay * 2, 1.0)

    def _once(self, work: Callable[[psycopg.Cursor], T], writes: bool, wait: float | None = None) -> T:
        """One attempt. Pool connections are in autocommit, so a read is one round trip. Writes
        run between BEGIN and COMMIT in pipeline mode: statements whose results are not needed
        travel with the next ones, so a modify is two round trips (BEGIN with the locking read;
        the write with COMMIT)."""
        with self.pool.connection(timeout=min(wait or self.connect_timeout, self.connect_timeout)) as conn:
            if not writes:
                with conn.cursor() as cur:
                    return work(cur)
            sent = False
            try:
                with conn.pipeline(), conn.cursor() as cur:
                    cur.execute("BEGIN", prepare=False)
                    result = work(cur)
                    sent = True
                    cur.execute("COMMIT", prepare=False)
            except psycopg.OperationalError as error:
                _roll_back(conn)
                if sent:  # the writes went out; whether COMMIT took effect is unknown
                    raise _CommitUncertain(result, error) from error
                raise
            except BaseException:
                _roll_back(conn)  # the change refused (or a write failed): nothing is written
                raise
        return result

    def _check_applied(self, applied: Callable[[psycopg.Cursor, T], bool], result: T) -> bool:
        try:
            return self._once(lambda cur: applied(cur, result), writes=False)
        except (psycopg.OperationalError, _CommitUncertain):
            return False  # cannot tell yet: the retry's change function sees the truth and decides

    def _read(self, query: str | sql.Composed, params: Any = ()) -> list[tuple]:
        return self._transact(lambda cur: cur.execute(query, params).fetchall(), writes=False)

    # -- notifications -------------------------------------------------------------------------
    def _announce(self, project_id: str, job_id: str, status: str) -> None:
        """NOTIFY, after the commit, that a job changed (and, when it is pending, that work is due).

        Not inside the change's transaction: PostgreSQL serialises the commits of notifying
        transactions, fsync included, which would make workers take turns at every commit. Sent
        from a background thread in batches, off the worker's path, at most one batch per
        ANNOUNCE_INTERVAL (every NOTIFY wakes every listening session of the database, so a busy
        worker must not send one per change). Best effort: a lost notification costs an idle
        worker one poll interval, never a job.
        """
        with self._announce_ready:
            if self._announcer is None:
                self._announcer = threading.Thread(target=self._announce_loop, name="jobs-pg-notify", daemon=True)
                self._announcer.start()
                # A short-lived process (`submit`) must still send what it announced before exiting.
                atexit.register(_flush_at_exit, weakref.ref(self))
            self._announcements.append((self.change_channel, f"{project_id} {job_id} {status}"))
            if status == JobStatus.PENDING.value and not self._work_announced:
                self._announcements.append((self.work_channel, job_id))  # one per batch wakes them all
                self._work_announced = True
            self._announce_ready.notify()

    def _announce_loop(self) -> None:
        while True:
            with self._announce_ready:
                while not self._announcements and not self._closing.is_set():
                    self._announce_ready.wait()
                batch, self._announcements = self._announcements, []
                self._work_announced = False
            if not batch:
                return  # closing, and everything was sent
            try:
                with self.pool.connection() as conn:
                    conn.execute("SELECT pg_notify(channel, payload) FROM unnest(%s::text[], %s::text[]) "
                                 "WITH ORDINALITY AS n(channel, payload, position) ORDER BY position",
                                 [[channel for channel, _ in batch], [payload for _, payload in batch]])
            except psycopg.Error as error:
                log.warning("could not send %d notifications (%s); listeners will poll", len(batch),
                            _first_line(error))
            # What is announced meanwhile goes in the next batch; closing sends it at once.
            self._closing.wait(ANNOUNCE_INTERVAL)

    def _announced(self, job: Job | None) -> Job | None:
        if job is not None:
            self._announce(job.project_id, job.job_id, job.status.value)
            if job.webhook:  # committed: a delivery it made due can go now (others find it at their poll)
                self.notify_deliveries()
        return job

    def _ensure_listener(self) -> None:
        with self._listener_lock:
            if self._listener is None and not self._closing.is_set():
                self._listener = threading.Thread(target=self._listen_loop, name="jobs-pg-listen", daemon=True)
                self._listener.start()

    def _listen_loop(self) -> None:
        """LISTEN on a dedicated connection; reconnect when it drops. Changes are listened to only
        once someone registered `on_change` (workers need only the work channel)."""
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.listen_url, autocommit=True, **self.connect_kwargs) as conn:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.work_channel)))
                    self.notify_work()  # anything queued while we were not listening is due now
                    hearing_changes = False
                    while not self._closing.is_set():
                        if self._change_callbacks and not hearing_changes:
                            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.change_channel)))
                            hearing_changes = True
                            self._listening_changes.set()
                        for note in conn.notifies(timeout=0.5):
                            self._dispatch(note.channel, note.payload)
            except psycopg.OperationalError as error:
                self._listening_changes.clear()
                log.warning("LISTEN connection lost (%s); reconnecting", _first_line(error))
                self._closing.wait(0.5)

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == self.work_channel:
            self.notify_work()
            return
        project_id, job_id, status = (payload.split(" ") + ["", "", ""])[:3]
        for callback in list(self._change_callbacks):
            try:
                callback(project_id, job_id, status)
            except Exception:  # a monitor's bug must not stop the listener
                log.exception("change callback failed")

    def on_change(self, callback: Callable[[str, str, str], None]) -> Callable[[], None]:
        """Call `callback(project_id, job_id, status)` (in a background thread) after every change
        committed by any process, for live views. Returns the function that stops the calls."""
        self._change_callbacks.append(callback)
        self._ensure_listener()
        self._listening_changes.wait(10)  # changes committed after this call are delivered

        def stop() -> None:
            if callback in self._change_callbacks:
                self._change_callbacks.remove(callback)
        return stop

    def scan_jobs(self) -> Iterator[JobRecord]:
        """Every job document, streamed from a server-side cursor and decoded as plain JSON (the
        monitor's first build at 100,000 jobs; the contract's default would validate each one)."""
        with self.pool.connection(timeout=self.connect_timeout) as conn, conn.transaction():
            with conn.cursor(name="jobs_scan") as cur:
                cur.itersize = 2000
                cur.execute("SELECT project_id, job_id, doc::text FROM jobs")
                for project_id, job_id, text in cur:
                    yield self._row_record(project_id, job_id, text)

    def _row_record(self, project_id: str, job_id: str, text: str) -> JobRecord:
        """One row's document as `scan_jobs` gives it (plain JSON, or the reason it is no job)."""
        key = self.record_key(project_id, job_id)
        try:
            doc = json.loads(text)
        except ValueError:
            return JobRecord(key=key, location=self._location(key), problem="not valid JSON")
        if not isinstance(doc, dict) or doc.get("jobId") != job_id:
            return JobRecord(key=key, location=self._location(key), problem="not a job document")
        inputs = doc.get("conceptInputs") or {}
        # a row edited by hand may hold anything there: only a brief (an object) has an order
        doc["conceptInputs"] = _in_brief_order(inputs) if isinstance(inputs, dict) else inputs
        return JobRecord(key=key, location=self._location(key), doc=doc)

    def scan_job_fields(self, fields: Collection[Field]) -> Iterator[FieldScan]:
        """Some fields of every job in one COPY, parsed by pyarrow, in batches (postgres_scan.py):
        the monitor's first build, some five times faster than decoding every document (`scan_jobs`)."""
        from .postgres_scan import scan_fields

        return scan_fields(self, fields)

    def watch_jobs(self, on_change: OnChange, *, poll_seconds: float = 2.0, mode: str = "auto") -> JobWatch:
        """Notifications as changes commit, plus a safety poll (postgres_watch.py)."""
        from .postgres_watch import PostgresJobWatch  # it builds on this class

        return PostgresJobWatch(self, on_change, poll_seconds=poll_seconds, mode=mode)

    def wait_for_work(self, timeout: float) -> None:
        self._ensure_listener()
        super().wait_for_work(timeout)

    def _stop_threads(self) -> None:
        """Send what is left to announce, then stop the background threads."""
        with self._announce_ready:
            self._closing.set()
            self._announce_ready.notify()
        for thread in (self._announcer, self._listener):
            if thread is not None:
                thread.join(5)

    def close(self) -> None:
        self._stop_threads()
        self.pool.close()

    # -- writes ----------------------------------------------------------------------------------
    def _write(self, cur: psycopg.Cursor, statement: str, new: Job, event: Event | None, durable: bool = True,
               old_doc: str | None = None, png: bytes | None = None, deliveries: tuple[Delivery, ...] = ()) -> str:
        """Send the write of `new` (with its event, its webhook deliveries, and an image when given);
        the document written."""
        doc = new.model_dump_json()
        params = {
            "job_id": new.job_id, "project_id": new.project_id, "status": new.status.value,
            "available_at": new.available_at, "updated_at": new.updated_at, "heartbeat_at": new.heartbeat_at,
            "worker_id": new.worker_id, "idempotency_key": new.idempotency_key, "doc": doc,
            "event": event.model_dump_json() if event is not None else None,
            # a write that is not durable (progress) is committed asynchronously: a crash of the
            # server may forget the last fraction of a second of progress, never a transition
            "sync": "on" if durable else "off"}
        if statement is _UPDATE_JOB:
            params["old_doc"], params["png"] = old_doc, png
            params["deliveries"] = ("[" + ",".join(d.to_json() for d in deliveries) + "]") if deliveries else None
        cur.execute(statement, params, prepare=True)
        return doc

    def _remember(self, job: Job, doc: str) -> None:
        """Keep the document just committed for a job this process leases (processing), so its
        next change can be one compare-and-set statement (`_swap`); forget it otherwise."""
        with self._leased_lock:
            self._leased.pop(job.job_id, None)
            if job.status is JobStatus.PROCESSING:
                if len(self._leased) >= _LEASED_MEMORY:
                    del self._leased[next(iter(self._leased))]
                self._leased[job.job_id] = doc

    def _forget(self, job_id: str) -> None:
        with self._leased_lock:
            self._leased.pop(job_id, None)

    def _swap(self, job_id: str, project_id: str | None, change: Change, png: bytes | None) -> Job | None:
        """Apply `change` in one statement to the document this process last committed for the job,
        writing only if the row still holds exactly that document (compare-and-set, in autocommit:
        one round trip, no lock held across round trips). None when it cannot tell: the job is not
        remembered, the row moved on, or the change refused the remembered version; the caller then
        applies the change under a row lock to the row as it is (which decides a refusal)."""
        with self._leased_lock:
            remembered = self._leased.get(job_id)
        if remembered is None:
            return None
        old = Job.model_validate_json(remembered)  # written by us from a job in brief order: no reordering
        if project_id is not None and old.project_id != project_id:
            return None
        try:
            new, event, durable, deliveries = apply_change(change, old)
        except Exception:  # refused, maybe only because the remembered version is stale
            return None
        if new is old:
            return None
        doc: list[str] = []

        def work(cur: psycopg.Cursor) -> bool:
            doc.append(self._write(cur, _UPDATE_JOB, new, event, durable, old_doc=remembered, png=png,
                                   deliveries=deliveries))
            return cur.fetchone()[0] == 1
        try:
            swapped = self._once(work, writes=False)  # one statement: its own (implicit) transaction
        except psycopg.OperationalError:  # sent, but whether it was applied is unknown: the row tells
            swapped = self._check_applied(self._is_written, new)
        if not swapped:
            self._forget(job_id)
            return None
        self._remember(new, doc[-1])
        return new

    def _is_written(self, cur: psycopg.Cursor, job: Job | None) -> bool:
        """Whether the row holds exactly `job` (to learn the outcome of an interrupted COMMIT)."""
        if job is None:
            return True
        row = cur.execute("SELECT doc::text FROM jobs WHERE job_id = %s", [job.job_id]).fetchone()
        return row is not None and _parse_job(job.job_id, row[0]) == job

    def create(self, job: Job, event: Event | None) -> None:
        validate_id(job.project_id, "projectId")
        validate_id(job.job_id, "jobId")

        def work(cur: psycopg.Cursor) -> Job:
            self._write(cur, _INSERT_JOB, job, event)
            return job
        try:
            self._announced(self._transact(work, self._is_written))
        except psycopg.errors.UniqueViolation as error:  # raised at COMMIT: pipelined statements report there
            if error.diag.constraint_name == "jobs_by_idempotency_key":
                raise TransitionConflict(f"Project {job.project_id} already has a job with Idempotency-Key "
                                         f"'{job.idempotency_key}'.") from None
            raise TransitionConflict(f"Job {job.job_id} already exists.") from None

    def _lock_job(self, cur: psycopg.Cursor, job_id: str, project_id: str | None) -> Job:
        validate_id(job_id, "jobId")
        if project_id is None:
            row = cur.execute("SELECT doc::text FROM jobs WHERE job_id = %s FOR UPDATE", [job_id],
                              prepare=True).fetchone()
            if row is None:
                raise JobNotFound(f"No job with id {job_id}.")
        else:
            validate_id(project_id, "projectId")
            row = cur.execute("SELECT doc::text FROM jobs WHERE job_id = %s AND project_id = %s FOR UPDATE",
                              [job_id, project_id], prepare=True).fetchone()
            if row is None:
                raise JobNotFound(f"No job with id {job_id} in project {project_id}.")
        return _parse_job(job_id, row[0])

    def modify(self, job_id: str, project_id: str | None, change: Change) -> Job:
        return self._modify(job_id, project_id, change, None)

    def save_image_and_modify(self, project_id: str, job_id: str, png: bytes, change: Change) -> Job:
        """The image is written with the change, in its transaction (none is left if it refuses)."""
        validate_id(project_id, "projectId")
        validate_id(job_id, "jobId")
        if self.artifacts_dir is not None:
            return super().save_image_and_modify(project_id, job_id, png, change)
        return self._modify(job_id, project_id, change, png)

    def _modify(self, job_id: str, project_id: str | None, change: Change, png: bytes | None) -> Job:
        swapped = self._swap(job_id, project_id, change, png)
        if swapped is not None:
            return self._announced(swapped)
        written: list[str] = []

        def work(cur: psycopg.Cursor) -> Job:
            written.clear()  # a retried attempt: only what the last one wrote is committed
            old = self._lock_job(cur, job_id, project_id)
            new, event, durable, deliveries = apply_change(change, old)
            if new is not old or png is not None:
                written.append(self._write(cur, _UPDATE_JOB, new, event, durable, png=png, deliveries=deliveries))
            return new
        new = self._transact(work, self._is_written)
        if written:
            self._remember(new, written[-1])
        return self._announced(new)

    def claim_next(self, change: Change, now: datetime, renderers: Collection[str] | None = None,
                   limits: RendererLimits | None = None) -> Job | None:
        written: list[str] = []
        allowed = None if renderers is None else sorted(renderers)
        full: list[str] = []
        capped = sorted(limits.caps) if limits else []
        # Renderers at their cap are passed over by the query itself (counted without their lock:
        # a hint that saves a second transaction; the claim counts again under the lock).
        caps = {"capped": capped, "caps": [limits.caps[name] for name in capped] if limits else [],
                "alive": limits.alive_since(now) if limits else now}

        def work(cur: psycopg.Cursor) -> Job | None:
            written.clear()  # a retried attempt: only what the last one wrote is committed
            row = cur.execute(_CLAIM_SELECT, {"now": now, "allowed": allowed, "full": full, **caps},
                              prepare=True).fetchone()
            if row is None:
                return None
            try:
                return self._claim(cur, _parse_job(row[0], row[1]), change, now, limits, written)
            except RendererFull:
                raise  # to the loop below
            except TransitionConflict:
                return None
        while True:
            try:
                new = self._transact(work, self._is_written)
                break
            except RendererFull as found:
                # A new transaction (its row and renderer locks released), so a claim holds at most
                # one renderer lock at a time and two claims cannot wait for each other's.
                full.append(found.renderer)
        if new is not None:
            self._remember(new, written[-1])
        return self._announced(new)

    def claim_named(self, job_id: str, project_id: str | None, change: Change, now: datetime,
                    limits: RendererLimits | None = None) -> Job:
        """Under the job's row lock, never `_swap`: the cap is counted in the claim's transaction."""
        written: list[str] = []

        def work(cur: psycopg.Cursor) -> Job:
            written.clear()  # a retried attempt: only what the last one wrote is committed
            return self._claim(cur, self._lock_job(cur, job_id, project_id), change, now, limits, written)
        new = self._transact(work, self._is_written)
        self._remember(new, written[-1])
        return self._announced(new)

    def _claim(self, cur: psycopg.Cursor, old: Job, change: Change, now: datetime,
               limits: RendererLimits | None, written: list[str]) -> Job:
        """Apply the claim `change` to `old` (its row locked) and write it; RendererFull when its
        renderer is at its cap."""
        new, event, durable, deliveries = apply_change(change, old)
        cap = limits.cap(old.renderer) if limits else None
        if cap is not None:
            self._take_slot(cur, old, cap, limits.alive_since(now))
        written.append(self._write(cur, _UPDATE_JOB, new, event, durable, deliveries=deliveries))
        return new

    def _take_slot(self, cur: psycopg.Cursor, job: Job, cap: int, alive_since: datetime) -> None:
        """Lock the slots of the job's renderer for this transaction; RendererFull when none is free."""
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
                    [_LIMITS_LOCK_SPACE, f"{self.schema}/{job.renderer}"], prepare=True)
        holding = cur.execute(_HOLDING_SLOTS, [alive_since, job.renderer], prepare=True).fetchone()[0]
        if holding >= cap:
            raise RendererFull(job.job_id, job.renderer, holding, cap)

    def pause_renderer(self, pause: RendererPause) -> None:
        self._transact(lambda cur: cur.execute(
            "INSERT INTO renderer_pauses (renderer, paused_until, reason) VALUES (%s, %s, %s) "
            "ON CONFLICT (renderer) DO UPDATE SET paused_until = EXCLUDED.paused_until, reason = EXCLUDED.reason "
            "WHERE renderer_pauses.paused_until < EXCLUDED.paused_until",
            [pause.renderer, pause.until, pause.reason]))

    def renderer_pauses(self, now: datetime) -> list[RendererPause]:
        rows = self._read("SELECT renderer, paused_until, reason FROM renderer_pauses WHERE paused_until > %s "
                          "ORDER BY renderer", [now])
        return [RendererPause(renderer, until, reason) for renderer, until, reason in rows]

    def delete(self, job_id: str, project_id: str | None, check: Callable[[Job], None]) -> None:
        def work(cur: psycopg.Cursor) -> str:
            try:
                job = self._lock_job(cur, job_id, project_id)
            except UnreadableJob:
                job = None  # a corrupt row may always be deleted
            if job is not None:
                check(job)
            project = cur.execute("SELECT project_id FROM jobs WHERE job_id = %s", [job_id]).fetchone()[0]
            self._delete_rows(cur, [job_id])
            return project
        project = self._transact(work)
        self._after_removal([(project, job_id)])

    def _delete_rows(self, cur: psycopg.Cursor, job_ids: list[str]) -> dict[str, int]:
        """Delete the jobs' rows, events, images and webhook deliveries: job id -> bytes freed."""
        freed = dict.fromkeys(job_ids, 0)
        for statement in _REMOVE_JOB_ROWS:
            for job_id, size in cur.execute(statement, [job_ids]).fetchall():
                freed[job_id] += size or 0
        return freed

    def _after_removal(self, removed: list[tuple[str, str]]) -> None:
        """After the commit: forget, announce, and unlink renders kept in the artifacts directory (a
        crash before this leaves a file no job names, never a job without its render)."""
        for project, job_id in removed:
            self._forget(job_id)
            self._announce(project, job_id, "deleted")
            if self.artifacts_dir is not None:
                try:
                    with StoreFolders(self.artifacts_dir).open("renders", project) as folder:
                        unlink_quietly(folder, f"{job_id}.png")
                except FileNotFoundError:
                    pass

    # -- retention ---------------------------------------------------------------------------------
    def remove_jobs(self, jobs: list[RemovableJob], check: Callable[[Job], None],
                    concepts: Collection[tuple[str, str]] = (), *, dry_run: bool = False) -> Removal:
        """One transaction for the batch: the rows are locked, checked, and deleted together."""
        if not jobs:
            return Removal()
        ids = [validate_id(target.job_id, "jobId") for target in jobs]

        def work(cur: psycopg.Cursor) -> Removal:
            rows = cur.execute("SELECT job_id, doc::text, (SELECT count(*) FROM job_images i WHERE "
                               "i.project_id = j.project_id AND i.job_id = j.job_id) FROM jobs j "
                               "WHERE job_id = ANY(%s) ORDER BY job_id FOR UPDATE", [ids]).fetchall()
            statuses: dict[str, tuple[Job, bool]] = {}
            for job_id, text, images in rows:
                try:
                    job = _parse_job(job_id, text)
                    check(job)
                except (UnreadableJob, TransitionConflict):
                    continue
                statuses[job_id] = (job, bool(images))
            if dry_run:
                freed = dict(cur.execute(_MEASURE_JOB_ROWS, {"ids": list(statuses)}).fetchall())
            else:
                freed = self._delete_rows(cur, list(statuses))
            removal = Removal([Removed(job_id, job.project_id, job.status, int(freed.get(job_id) or 0), imaged)
                               for job_id, (job, imaged) in statuses.items()])
            kept = {(t.project_id, t.concept_id) for t in jobs if t.job_id not in statuses}
            doomed = sorted(set(concepts) - kept)
            if doomed:
                statement = _MEASURE_CONCEPTS if dry_run else _DELETE_CONCEPTS
                count, size = cur.execute(statement, [[p for p, _ in doomed], [c for _, c in doomed]]).fetchone()
                removal.concepts, removal.other_bytes = count, int(size or 0)
            return removal
        removal = self._transact(work)
        if not dry_run:
            self._after_removal([(removed.project_id, removed.job_id) for removed in removal.jobs])
        return removal

    def store_size(self) -> StoreSize:
        (jobs, renders, size), = self._read(
            "SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_images), "
            "(SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            " WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
            " AND c.relname IN ('jobs', 'job_events', 'job_concepts', 'job_images', 'webhook_outbox'))")
        return StoreSize(jobs, renders, int(size or 0))

    def claim_prune_turn(self, now: datetime, every: timedelta) -> bool:
        """An upsert that writes only when the last prune is older than `every`: of racing
        callers on any host, the row lock lets exactly one through."""
        return bool(self._transact(lambda cur: cur.execute(
            "INSERT INTO job_retention (name, last_run_at) VALUES ('prune', %s) ON CONFLICT (name) DO UPDATE "
            "SET last_run_at = EXCLUDED.last_run_at WHERE job_retention.last_run_at <= %s RETURNING name",
            [now, now - every]).fetchall()))

    def last_pruned_at(self) -> datetime | None:
        rows = self._read("SELECT last_run_at FROM job_retention WHERE name = 'prune'")
        return rows[0][0] if rows else None

    # -- reads -----------------------------------------------------------------------------------
    def get(self, job_id: str, project_id: str | None = None) -> Job:
        validate_id(job_id, "jobId")
        if project_id is None:
            rows = self._read("SELECT doc::text FROM jobs WHERE job_id = %s", [job_id])
            if not rows:
                raise JobNotFound(f"No job with id {job_id}.")
        else:
            validate_id(project_id, "projectId")
            rows = self._read("SELECT doc::text FROM jobs WHERE job_id = %s AND project_id = %s",
                              [job_id, project_id])
            if not rows:
                raise JobNotFound(f"No job with id {job_id} in project {project_id}.")
        return _parse_job(job_id, rows[0][0])

    def _jobs(self, rows: list[tuple]) -> list[Job]:
        """Parse (job_id, doc) rows, skipping unreadable ones (they show up in list_jobs)."""
        jobs = []
        for job_id, text in rows:
            try:
                jobs.append(_parse_job(job_id, text))
            except UnreadableJob as error:
                log.warning("%s", error)
        return jobs

    def processing(self) -> list[Job]:
        return self._jobs(self._read(
            "SELECT job_id, doc::text FROM jobs WHERE status = 'processing' ORDER BY job_id"))

    def active_counts(self) -> tuple[int, int]:
        [(pending, processing)] = self._read(
            "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'processing') "
            "FROM jobs WHERE status IN ('pending', 'processing')")
        return pending, processing

    def pending(self) -> list[tuple[datetime, str]]:
        rows = self._read("SELECT available_at, job_id FROM jobs WHERE status = 'pending' "
                          "ORDER BY available_at, job_id")
        return [(available_at, job_id) for available_at, job_id in rows]

    def projects(self) -> list[str]:
        # A loose index scan: one index probe per project, not a read of every job.
        return [row[0] for row in self._read("""
            WITH RECURSIVE project AS (
                (SELECT project_id FROM jobs ORDER BY project_id LIMIT 1)
                UNION ALL
                SELECT (SELECT j.project_id FROM jobs j WHERE j.project_id > project.project_id
                        ORDER BY j.project_id LIMIT 1)
                FROM project WHERE project.project_id IS NOT NULL)
            SELECT project_id FROM project WHERE project_id IS NOT NULL""")]

    def list_jobs(self, project_id: str | None = None, status: JobStatus | None = None,
                  limit: int | None = None, cursor: str | None = None) -> JobPage:
        where, params = [], []
        for column, value in (("project_id", project_id), ("status", status and status.value)):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if project_id is not None:
            validate_id(project_id, "projectId")
        if cursor is not None:
            where.append("job_id < %s")
            params.append(cursor)
        query = "SELECT job_id, doc::text FROM jobs"
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY job_id DESC"
        if limit is not None:
            query += " LIMIT %s"
            params.append(limit + 1)
        rows = self._read(query, params)
        page = JobPage(jobs=[])
        if limit is not None and len(rows) > limit:
            rows = rows[:limit]
            page.next_cursor = rows[-1][0]
        for job_id, text in rows:
            try:
                page.jobs.append(_parse_job(job_id, text))
            except UnreadableJob as error:
                page.unreadable.append(Unreadable(f"jobs row {job_id}", str(error).split(": ", 1)[-1]))
        return page

    def jobs_updated_since(self, since: datetime | None) -> list[Job]:
        """Jobs changed after `since`, oldest change first, from the updated_at index."""
        if since is None:
            return self._jobs(self._read("SELECT job_id, doc::text FROM jobs ORDER BY updated_at"))
        return self._jobs(self._read(
            "SELECT job_id, doc::text FROM jobs WHERE updated_at > %s ORDER BY updated_at", [since]))

    def find_by_idempotency_key(self, project_id: str, key: str) -> Job | None:
        """The job of `project_id` created with this Idempotency-Key, or None (unique index)."""
        validate_id(project_id, "projectId")
        rows = self._read("SELECT job_id, doc::text FROM jobs WHERE project_id = %s AND idempotency_key = %s",
                          [project_id, key])
        return _parse_job(rows[0][0], rows[0][1]) if rows else None

    # -- concepts, images, events --------------------------------------------------------------
    def save_concept(self, concept: Concept) -> None:
        validate_id(concept.project_id, "projectId")
        validate_id(concept.concept_id, "conceptId")
        self._transact(lambda cur: _before_a_durable_write(cur).execute(
            "INSERT INTO job_concepts (project_id, concept_id, doc) VALUES (%s, %s, %s::jsonb) "
            "ON CONFLICT (project_id, concept_id) DO UPDATE SET doc = EXCLUDED.doc",
            [concept.project_id, concept.concept_id, concept.model_dump_json()]))

    def load_concept(self, project_id: str, concept_id: str) -> Concept:
        validate_id(project_id, "projectId")
        validate_id(concept_id, "conceptId")
        rows = self._read("SELECT doc::text FROM job_concepts WHERE project_id = %s AND concept_id = %s",
                          [project_id, concept_id])
        if not rows:
            raise JobNotFound(f"No concept {concept_id} in project {project_id}.")
        try:
            return _parse_concept(rows[0][0])
        except ValidationError:
            raise UnreadableJob(f"job_concepts row {project_id}/{concept_id}: not a concept document.") from None

    def iter_concepts(self) -> Iterator[Concept]:
        for project_id, concept_id, text in self._read(
                "SELECT project_id, concept_id, doc::text FROM job_concepts ORDER BY project_id, concept_id"):
            try:
                yield _parse_concept(text)
            except ValidationError:
                log.warning("job_concepts row %s/%s is not a concept document", project_id, concept_id)

    def save_image(self, project_id: str, job_id: str, png: bytes) -> None:
        validate_id(project_id, "projectId")
        validate_id(job_id, "jobId")
        if self.artifacts_dir is not None:
            with StoreFolders(self.artifacts_dir).open("renders", project_id, create=True) as folder:
                write_or_replace(folder, f"{job_id}.png", png)
            return
        self._transact(lambda cur: _before_a_durable_write(cur).execute(
            "INSERT INTO job_images (project_id, job_id, png) VALUES (%s, %s, %s) "
            "ON CONFLICT (project_id, job_id) DO UPDATE SET png = EXCLUDED.png", [project_id, job_id, png]))

    def load_image(self, project_id: str, job_id: str) -> bytes:
        validate_id(project_id, "projectId")
        validate_id(job_id, "jobId")
        if self.artifacts_dir is not None:
            try:
                with StoreFolders(self.artifacts_dir).open("renders", project_id) as folder:
                    return read_regular(folder, f"{job_id}.png", MAX_IMAGE_BYTES)
            except FileNotFoundError:
                raise JobNotFound(f"No image for job {job_id} in project {project_id}.") from None
            except UnsafeEntry as error:
                raise UnreadableJob(f"{error}.") from None
        rows = self._read("SELECT png FROM job_images WHERE project_id = %s AND job_id = %s", [project_id, job_id])
        if not rows:
            raise JobNotFound(f"No image for job {job_id} in project {project_id}.")
        return bytes(rows[0][0])

    # -- workers ---------------------------------------------------------------------------------
    def record_worker(self, info: WorkerInfo) -> None:
        def work(cur: psycopg.Cursor) -> None:
            cur.execute("SELECT set_config('synchronous_commit', 'off', true)")  # a heartbeat, not a transition
            cur.execute("INSERT INTO job_workers (worker_id, seen_at, renderers, problem) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (worker_id) DO UPDATE SET seen_at = EXCLUDED.seen_at, "
                        "renderers = EXCLUDED.renderers, problem = EXCLUDED.problem",
                        [info.worker_id, info.seen_at, list(info.renderers), info.problem])
        self._transact(work)

    def workers(self, seen_since: datetime) -> list[WorkerInfo]:
        def work(cur: psycopg.Cursor) -> list[tuple]:
            cur.execute("DELETE FROM job_workers WHERE seen_at < %s", [seen_since - FORGET_WORKERS_AFTER])
            return cur.execute("SELECT worker_id, renderers, seen_at, problem FROM job_workers "
                               "WHERE seen_at >= %s ORDER BY worker_id", [seen_since]).fetchall()
        return [WorkerInfo(worker_id, tuple(renderers), seen_at, problem)
                for worker_id, renderers, seen_at, problem in self._transact(work)]

    def forget_worker(self, worker_id: str) -> None:
        self._transact(lambda cur: cur.execute("DELETE FROM job_workers WHERE worker_id = %s", [worker_id]))

    def events(self, job_id: str, project_id: str | None = None) -> list[Event]:
        validate_id(job_id, "jobId")
        if project_id is None:
            rows = self._read("SELECT doc::text FROM job_events WHERE job_id = %s ORDER BY id", [job_id])
        else:
            validate_id(project_id, "projectId")
            rows = self._read("SELECT doc::text FROM job_events WHERE job_id = %s AND project_id = %s ORDER BY id",
                              [job_id, project_id])
        events = []
        for (text,) in rows:
            try:
                events.append(Event.model_validate_json(text))
            except ValidationError:
                continue  # same rule as the file store: the job row is the truth
        return events

    # -- the webhook outbox ------------------------------------------------------------------------
    def enqueue_deliveries(self, deliveries: list[Delivery]) -> None:
        def work(cur: psycopg.Cursor) -> None:
            cur.executemany(_INSERT_DELIVERY, [[d.id, d.key, d.order, d.next_at, d.attempts, d.to_json()]
                                               for d in deliveries])
        self._transact(work)
        self.notify_deliveries()

    def claim_delivery(self, now: datetime, lease_seconds: float) -> Delivery | None:
        claim = secrets.token_hex(8)
        params = {"now": now, "claim": claim, "lease": now + timedelta(seconds=lease_seconds)}
        rows = self._transact(lambda cur: cur.execute(_CLAIM_DELIVERY, params, prepare=True).fetchall())
        if not rows:
            return None
        text, attempts = rows[0]
        return replace(Delivery.from_json(text, claim=claim), attempts=attempts)

    def finish_delivery(self, delivery: Delivery) -> bool:
        return bool(self._transact(lambda cur: cur.execute(  # RETURNING: rowcount is not known in a pipeline
            "DELETE FROM webhook_outbox WHERE id = %s AND claim = %s RETURNING id",
            [delivery.id, delivery.claim]).fetchall()))

    def retry_delivery(self, delivery: Delivery) -> bool:
        return bool(self._transact(lambda cur: cur.execute(
            "UPDATE webhook_outbox SET claim = NULL, next_at = %s, attempts = %s, doc = %s::jsonb "
            "WHERE id = %s AND claim = %s RETURNING id",
            [delivery.next_at, delivery.attempts, replace(delivery, claim=None).to_json(), delivery.id,
             delivery.claim]).fetchall()))

    def deliveries(self) -> list[Delivery]:
        rows = self._read("SELECT doc::text, attempts, claim FROM webhook_outbox ORDER BY key, ordering")
        return [replace(Delivery.from_json(text, claim=claim), attempts=attempts) for text, attempts, claim in rows]

    def webhook_secret(self, candidate: str) -> str:
        def work(cur: psycopg.Cursor) -> str:
            cur.execute("INSERT INTO webhook_settings (name, value) VALUES ('secret', %s) ON CONFLICT DO NOTHING",
                        [candidate])
            return cur.execute("SELECT value FROM webhook_settings WHERE name = 'secret'").fetchone()[0]
        return self._transact(work)

    def append_events(self, project_id: str, events: list[Event]) -> None:
        """Add events to a job's log as they are (copying a store), in one transaction."""
        validate_id(project_id, "projectId")

        def work(cur: psycopg.Cursor) -> None:
            cur.executemany(_INSERT_EVENT, [[e.job_id, project_id, e.model_dump_json()] for e in events])
        self._transact(work)


def _apply_migrations(cur: psycopg.Cursor) -> str:
    schema = cur.execute("SELECT current_schema()").fetchone()[0]
    if schema is None:
        raise StoreUnavailable("The schema named by search_path in the store URL does not exist; "
                               "create it first (CREATE SCHEMA name).")
    cur.execute("SELECT pg_advisory_xact_lock(%s)", [MIGRATION_LOCK])
    cur.execute("CREATE TABLE IF NOT EXISTS jobs_schema_version ("
                "version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
    # Every migration not yet applied, not only those above the highest: a schema made by a build
    # that had a later one but not an earlier one still gets both.
    applied = {row[0] for row in cur.execute("SELECT version FROM jobs_schema_version").fetchall()}
    for version in sorted(MIGRATIONS):
        if version not in applied:
            cur.execute(MIGRATIONS[version])
            cur.execute("INSERT INTO jobs_schema_version (version) VALUES (%s)", [version])
    return schema


def _before_a_durable_write(cur: psycopg.Cursor) -> psycopg.Cursor:
    """Commit this transaction without waiting for the disk: it is always followed by a durable
    write that needs it (an image before `complete`, a concept before `create`), whose flush of
    the log makes this one durable too. A server crash in between loses nothing: the job was not
    completed (or created) yet."""
    return cur.execute("SET LOCAL synchronous_commit TO off")


def _flush_at_exit(store_ref: weakref.ref[PostgresJobStore]) -> None:
    store = store_ref()
    if store is not None and not store.pool.closed:
        store._stop_threads()


def _pool_size_setting() -> int:
    raw = os.environ.get("JOBS_PG_POOL_SIZE") or "8"
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidInput(f"JOBS_PG_POOL_SIZE={raw!r} must be a whole number of connections, at least 1.")
    return int(raw)


def _prepared_statements_setting() -> bool:
    """JOBS_PG_PREPARED_STATEMENTS: on (the default) or off, which a transaction-mode pooler needs
    (a statement prepared on one server connection is unknown on the next)."""
    raw = (os.environ.get("JOBS_PG_PREPARED_STATEMENTS") or "on").strip().lower()
    if raw not in ("on", "off"):
        raise InvalidInput(f"JOBS_PG_PREPARED_STATEMENTS={raw!r} must be on or off.")
    return raw == "on"


def _roll_back(conn: psycopg.Connection) -> None:
    """End a failed transaction so the connection goes back to the pool clean (if it still works)."""
    if conn.closed or conn.broken or conn.info.transaction_status == TransactionStatus.IDLE:
        return
    try:
        conn.execute("ROLLBACK")
    except psycopg.Error:
        pass  # the pool discards a connection it cannot reset


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]
