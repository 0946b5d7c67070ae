"""Scratch PostgreSQL stores for tests: one fresh schema per test, dropped afterwards.

The server comes from JOBS_TEST_POSTGRES_URL (set by .ci/run), else the default local one; when
neither answers, PostgreSQL tests skip with the reason, so a newcomer's test command still passes.
"""
from __future__ import annotations

import os
import secrets
from functools import cache
from urllib.parse import quote

import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("JOBS_TEST_POSTGRES_URL") or DEFAULT_URL


@cache
def unavailable_reason() -> str | None:
    """None when the test server answers, else why PostgreSQL tests skip."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -r requirements.txt)"
    try:
        with psycopg.connect(server_url(), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        source = "JOBS_TEST_POSTGRES_URL" if os.environ.get("JOBS_TEST_POSTGRES_URL") else "the default URL"
        first = (str(error).strip().splitlines() or ["no answer"])[0]
        return f"no PostgreSQL at {server_url()} ({source}): {first}; set JOBS_TEST_POSTGRES_URL to run these tests"
    return None


def require_postgres() -> str:
    """The server URL, or skip the calling test with the reason."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    return server_url()


def schema_url(schema: str, application_name: str | None = None) -> str:
    """The server URL with `schema` as search_path (and an application_name to find our sessions)."""
    base = server_url()
    url = f"{base}{'&' if '?' in base else '?'}options={quote(f'-csearch_path={schema}')}"
    if application_name:
        url += f"&application_name={quote(application_name)}"
    return url


def create_schema() -> str:
    import psycopg

    schema = f"jobs_test_{secrets.token_hex(6)}"
    with psycopg.connect(require_postgres(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def make_scratch_store(application_name: str | None = None):
    """A PostgresJobStore on a new empty schema that drops the schema when closed."""
    from jobs_core.store.postgres import PostgresJobStore

    class ScratchPostgresStore(PostgresJobStore):
        def close(self) -> None:
            super().close()
            drop_schema(self.schema)

    schema = create_schema()
    try:
        return ScratchPostgresStore(schema_url(schema, application_name), pool_size=4)
    except Exception:
        drop_schema(schema)
        raise
