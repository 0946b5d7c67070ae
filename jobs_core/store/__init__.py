"""Job stores: the contract (`JobStore`) and its backends, chosen by a URL or a directory."""
from __future__ import annotations

import os

from ..errors import InvalidInput
from .base import Change, CopyableStore, JobPage, JobRecord, JobStore, Unreadable
from .files import FileJobStore
from .memory import MemoryJobStore, memory_store

MEMORY_SCHEME = "memory://"


def open_store(location: str | os.PathLike) -> JobStore:
    """`postgresql://...` opens the PostgreSQL store, `memory://NAME` the process's memory store
    NAME (for tests and throwaway demos); anything else is a jobs directory."""
    text = str(location)
    if text.startswith(MEMORY_SCHEME):
        return memory_store(text.removeprefix(MEMORY_SCHEME))
    if "://" in text and not text.startswith(("postgresql://", "postgres://")):
        scheme = text.split("://", 1)[0]
        raise InvalidInput(f"The store URL scheme '{scheme}://' is not known: use postgresql://, memory:// "
                           "or a directory.")
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresJobStore  # imported only when asked for: psycopg is optional

        return PostgresJobStore(text)
    return FileJobStore(text)


__all__ = ["Change", "CopyableStore", "FileJobStore", "JobPage", "JobRecord", "JobStore", "MemoryJobStore",
           "Unreadable", "memory_store", "open_store"]
