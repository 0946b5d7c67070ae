"""The index's first build from a store that can send just the fields the index keeps (PostgreSQL:
`scan_job_fields`, postgres_scan.py), instead of every whole document through `scan_jobs`.

The rows are the ones `scan_jobs` would make (tests/test_postgres_monitor.py checks it, odd rows
included): the store sends a row as fields only when they say exactly what the document holds,
every other row whole, and both go through frame.py's one rule for turning values into columns.
Nothing is kept on disk, so there is nothing that could be stale: each start reads the table as
it is.
"""
from __future__ import annotations

import numpy as np

from ..store import JobStore, Unreadable
from .frame import FIELDS, INT_COLUMNS, TITLE, Columns, RowStore, arrays_from_values
from .snapshot import REPEATED, _shared_text, _text

TITLE_LENGTH = 200  # as Columns.add cuts it


def _fields():
    from ..store.postgres_scan import Field

    return [Field(column, ("conceptInputs", "title") if name == TITLE else (name,), integer=column in INT_COLUMNS)
            for column, name in FIELDS]


def supported(store: JobStore) -> bool:
    return callable(getattr(store, "scan_job_fields", None))


def scan(store: JobStore) -> tuple[RowStore, dict[str, Unreadable], int] | None:
    """The rows, the unreadable places and how many were read; None when the store cannot send
    fields now (the caller reads the documents)."""
    keys: list[str] = []
    chunks: list[dict[str, np.ndarray]] = []
    others = Columns()
    unreadable: dict[str, Unreadable] = {}
    read = 0
    for batch in store.scan_job_fields(_fields()):
        keys += batch.keys
        chunks.append(arrays_from_values(_values(batch.values)))
        for record in batch.others:
            if record.doc is not None:
                others.add(record.key, record.doc)
            elif record.problem is not None:
                unreadable[record.key] = Unreadable(record.location, record.problem)
        read += len(batch.keys) + len(batch.others)
    if not chunks:
        return None
    import pyarrow as pa  # imported only when used (a file store never needs it here)

    pa.default_memory_pool().release_unused()  # the batches' Arrow memory goes back to the system
    arrays = chunks[0] if len(chunks) == 1 else {column: np.concatenate([chunk[column] for chunk in chunks])
                                                 for column in chunks[0]}
    rows = RowStore.from_arrays(keys, arrays)
    if len(others):
        rows.apply(others, set())
    return rows, unreadable, read


def _values(fields: dict) -> dict[str, object]:
    """Each column's values as the documents hold them (frame.py turns them into columns)."""
    values: dict[str, object] = {}
    for column, _ in FIELDS:
        field = fields.pop(column)  # each Arrow column is freed once converted
        if column in INT_COLUMNS:  # integers of at most 18 digits, or None (which counts as 0)
            values[column] = field.cast("int64").to_pylist()
        elif column in REPEATED:
            values[column] = _shared_text(field)  # one string object per distinct value
        else:
            values[column] = _text(field)
    values["title"] = np.array([title[:TITLE_LENGTH] if title is not None else None for title in values["title"]],
                               dtype=object)
    return values
