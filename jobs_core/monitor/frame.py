"""Job documents -> one pandas row per job, built column-wise in one go.

Speed matters here (100,000 jobs): documents are plain dicts from `json.loads`, never pydantic
models; each field is appended to its own list and the DataFrame is made once from the lists,
with the timestamps parsed by one vectorised `pd.to_datetime` per column.
"""
from __future__ import annotations

import operator
from typing import Any

import numpy as np
import pandas as pd

from ..models import JobStatus

STATUSES = frozenset(status.value for status in JobStatus)
TIME_COLUMNS = ("created", "started", "finished", "updated", "heartbeat")
TEXT_COLUMNS = ("project", "job", "render_type", "status", "stage", "error", "worker", "image_url")
INT_COLUMNS = ("progress", "attempts")
# (column, document field): the row schema of the index.
FIELDS = (("project", "projectId"), ("job", "jobId"), ("render_type", "renderType"), ("status", "status"),
          ("progress", "progress"), ("stage", "stage"), ("attempts", "attempts"), ("created", "createdAt"),
          ("started", "startedAt"), ("finished", "finishedAt"), ("updated", "updatedAt"),
          ("heartbeat", "heartbeatAt"), ("error", "error"), ("worker", "workerId"), ("image_url", "imageUrl"))
COLUMNS = tuple(column for column, _ in FIELDS) + ("queue_wait", "run_time")
_DOC_FIELDS = tuple(field for _, field in FIELDS)
_pick = operator.itemgetter(*_DOC_FIELDS)


def problem(doc: Any) -> str | None:
    """Why a parsed document cannot be indexed as a job, or None when it can."""
    if not isinstance(doc, dict):
        return f"holds a JSON {type(doc).__name__}, not a job object"
    for field in ("jobId", "projectId", "renderType"):
        if not isinstance(doc.get(field), str):
            return f"not a job document ({field} is missing or not text)"
    if doc.get("status") not in STATUSES:
        return f"not a job document (status {doc.get('status')!r} is unknown)"
    return None


class Columns:
    """Accumulates job documents as rows of the index's fields; `frame()` makes the DataFrame.

    Each document's fields are picked in one C call (itemgetter) and the rows are transposed into
    columns with zip: per job this costs about as much as a dict lookup, next to a file read.
    """

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.rows: list[tuple] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, doc: dict) -> None:
        """Append one job document (already checked by `problem`)."""
        self.keys.append(key)
        try:
            self.rows.append(_pick(doc))
        except KeyError:  # an older or hand-written document without some optional field
            self.rows.append(tuple(doc.get(field) for field in _DOC_FIELDS))

    def frame(self) -> pd.DataFrame:
        index = pd.Index(_objects(self.keys), dtype=object, name="key")
        columns = list(zip(*self.rows, strict=True)) if self.rows else [()] * len(FIELDS)
        lists = {column: values for (column, _), values in zip(FIELDS, columns, strict=True)}
        data: dict[str, pd.Series] = {}
        for column in TEXT_COLUMNS:
            # object, not pandas' default str dtype: pointer copies, cheap to build and to patch
            data[column] = pd.Series(_objects(lists[column]), index=index, dtype=object)
        for column in INT_COLUMNS:
            values = [v if v.__class__ is int else 0 for v in lists[column]]
            data[column] = pd.Series(np.array(values, dtype=np.int64), index=index)
        for column in TIME_COLUMNS:
            parsed = pd.to_datetime(_objects(lists[column]), format="ISO8601", utc=True, errors="coerce")
            data[column] = pd.Series(parsed.as_unit("us"), index=index)
        # Seconds from creation to the latest start, and from that start to the end.
        data["queue_wait"] = (data["started"] - data["created"]).dt.total_seconds()
        data["run_time"] = (data["finished"] - data["started"]).dt.total_seconds()
        return pd.DataFrame({column: data[column] for column in COLUMNS}, index=index)


def _objects(values) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


def empty_frame() -> pd.DataFrame:
    return Columns().frame()
