"""Job stores: the contract (`JobStore`) and its backends, chosen by a URL or a directory."""
from __future__ import annotations

import os

from .base import Change, JobPage, JobStore, Unreadable
from .files import FileJobStore


def open_store(location: str | os.PathLike) -> JobStore:
    """`postgresql://...` opens the PostgreSQL store; anything else is a jobs directory."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresJobStore  # imported only when asked for: psycopg is optional

        return PostgresJobStore(text)
    return FileJobStore(text)


__all__ = ["Change", "FileJobStore", "JobPage", "JobStore", "Unreadable", "open_store"]
