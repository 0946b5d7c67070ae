"""Shared fixtures. `store` runs each test body on every backend (one contract, many stores)."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from jobs_core.config import Settings, load_settings
from jobs_core.service import JobService
from jobs_core.store import FileJobStore, JobStore, MemoryJobStore

ROOT = Path(__file__).resolve().parent.parent


def make_file_store(tmp_path: Path) -> JobStore:
    return FileJobStore(tmp_path / "jobs-store")


def make_postgres_store(tmp_path: Path) -> JobStore:
    """A fresh schema on the test server (JOBS_TEST_POSTGRES_URL); skips when there is none."""
    from postgres_scratch import make_scratch_store

    return make_scratch_store()


def make_memory_store(tmp_path: Path) -> JobStore:
    return MemoryJobStore()


# Backends the contract suite runs on: name -> factory(tmp_path) returning a fresh, empty store.
BACKENDS = {"files": make_file_store, "memory": make_memory_store, "postgres": make_postgres_store}


@pytest.fixture(params=sorted(BACKENDS))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    created = BACKENDS[request.param](tmp_path)
    yield created
    created.close()


@pytest.fixture
def memory_service(settings: Settings) -> JobService:
    """A service on a fresh in-memory store: for tests whose subject is not the store."""
    return JobService(MemoryJobStore(), settings)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return replace(load_settings(tmp_path / "jobs-store"), lease_seconds=30.0, max_attempts=3,
                   renderer="axonometric", retry_backoff_seconds=0.0, store_url=None)


@pytest.fixture
def service(store: JobStore, settings: Settings) -> JobService:
    return JobService(store, settings)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh PostgreSQL schema, dropped afterwards (skips without a server)."""
    from postgres_scratch import create_schema, drop_schema, require_postgres, schema_url

    require_postgres()
    schema = create_schema()
    yield schema_url(schema)
    drop_schema(schema)
