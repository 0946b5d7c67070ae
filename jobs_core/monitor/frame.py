"""Job documents -> one pandas row per job, built column-wise in one go, patched in place.

Speed matters here (100,000 jobs): documents are plain dicts (the file store's straight from
`json`), never pydantic models; their fields become one numpy array per column (timestamps
parsed by one vectorised `pd.to_datetime` per column). `RowStore` keeps those arrays and patches changed rows by
position, so an update of a few jobs costs a few array copies, not a pandas drop + concat.
"""
from __future__ import annotations

import operator
from sys import intern

import numpy as np
import pandas as pd

from ..models import JobStatus

TIME_COLUMNS = ("created", "started", "finished", "updated", "heartbeat")
TEXT_COLUMNS = ("project", "job", "title", "render_type", "stage", "error", "worker", "image_url", "study")
# status is a pandas Categorical over the five states (stored as int8 codes): the monitor compares
# and counts statuses on every refresh, and codes make that ten times cheaper than text.
STATUS_DTYPE = pd.CategoricalDtype([status.value for status in JobStatus])
_STATUS_CODE = {name: code for code, name in enumerate(STATUS_DTYPE.categories)}
INT_COLUMNS = ("progress", "attempts")
TITLE = " title"  # not a document field: the brief's title (conceptInputs.title), put there by `Columns.add`
# (column, document field): the row schema of the index.
FIELDS = (("project", "projectId"), ("job", "jobId"), ("render_type", "renderType"), ("status", "status"),
          ("progress", "progress"), ("stage", "stage"), ("attempts", "attempts"), ("created", "createdAt"),
          ("started", "startedAt"), ("finished", "finishedAt"), ("updated", "updatedAt"),
          ("heartbeat", "heartbeatAt"), ("error", "error"), ("worker", "workerId"), ("image_url", "imageUrl"),
          ("title", TITLE), ("study", "studyId"))
COLUMNS = tuple(column for column, _ in FIELDS) + ("queue_wait", "run_time")
_DOC_FIELDS = tuple(field for _, field in FIELDS)
_pick = operator.itemgetter(*_DOC_FIELDS)
_REPEATED = ("projectId", "renderType", "stage", "workerId", "error", "studyId")


class Columns:
    """Accumulates job documents as rows of the index's fields; `arrays()` gives the columns.

    Each document's fields are picked in one C call (itemgetter); every CHUNK rows the pending
    rows become numpy columns (timestamps parsed then), so the documents' text is freed early
    and memory stays flat while 100,000 jobs are read.
    """

    CHUNK = 8192

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.rows: list[tuple] = []
        self.chunks: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: str, doc: dict) -> None:
        """Append one job document (the store checked its ids, status and render type)."""
        self.keys.append(key)
        inputs = doc.get("conceptInputs")
        title = inputs.get("title") if inputs.__class__ is dict else None
        doc[TITLE] = title[:200] if title.__class__ is str else None
        doc.setdefault("studyId", None)  # only a study's jobs have one: the one-call pick below stays the path
        for field in _REPEATED:
            # One shared copy of values that repeat across jobs (a project's name, a stage):
            # the document's own copies are freed with it.
            value = doc.get(field)
            if value.__class__ is str:
                doc[field] = intern(value)
        try:
            self.rows.append(_pick(doc))
        except KeyError:  # an older or hand-written document without some optional field
            self.rows.append(tuple(doc.get(field) for field in _DOC_FIELDS))
        if len(self.rows) >= self.CHUNK:
            self.chunks.append(_to_arrays(self.rows))
            self.rows = []

    def arrays(self) -> dict[str, np.ndarray]:
        """One numpy array per column (times as UTC datetime64[us], text as object)."""
        chunks = self.chunks + [_to_arrays(self.rows)]
        if len(chunks) == 1:
            return chunks[0]
        return {column: np.concatenate([chunk[column] for chunk in chunks]) for column in chunks[0]}


def _to_arrays(rows: list[tuple]) -> dict[str, np.ndarray]:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(FIELDS)
    return arrays_from_values({column: values for (column, _), values in zip(FIELDS, columns, strict=True)})


def arrays_from_values(lists: dict) -> dict[str, np.ndarray]:
    """The index's columns from each field's values as the documents hold them (one sequence per
    column of FIELDS, the title already cut to 200 characters): one rule for every way of reading."""
    arrays: dict[str, np.ndarray] = {}
    for column in TEXT_COLUMNS:
        arrays[column] = _objects(lists[column])
    for column in INT_COLUMNS:
        arrays[column] = np.array([v if v.__class__ is int else 0 for v in lists[column]], dtype=np.int64)
    code = _STATUS_CODE.get
    arrays["status"] = np.array([code(v, -1) for v in lists["status"]], dtype=np.int8)
    for column in TIME_COLUMNS:
        # Only text is a time: a number in a hand-edited document is no time (pandas would soon read it as epoch).
        texts = _objects([value if value.__class__ is str else None for value in lists[column]])
        parsed = pd.to_datetime(texts, format="ISO8601", utc=True, errors="coerce")
        arrays[column] = parsed.as_unit("us").asi8.view("M8[us]")
    # Seconds from creation to the latest start, and from that start to the end.
    second = np.timedelta64(1, "s")
    arrays["queue_wait"] = (arrays["started"] - arrays["created"]) / second
    arrays["run_time"] = (arrays["finished"] - arrays["started"]) / second
    return arrays


class RowStore:
    """The index's rows as one numpy array per column, plus where each key's row is.

    `apply` never modifies arrays a previous `frame()` handed out (it copies first): a reader
    keeps a consistent frame while the index moves on.
    """

    def __init__(self, columns: Columns) -> None:
        self.keys = _objects(columns.keys)
        self.arrays = columns.arrays()
        self.position = dict(zip(columns.keys, range(len(columns.keys)), strict=True))
        self._frame: pd.DataFrame | None = None

    @classmethod
    def from_arrays(cls, keys: list[str], arrays: dict[str, np.ndarray]) -> RowStore:
        """Rows from saved columns (the snapshot): the same arrays `Columns.arrays()` makes."""
        rows = cls.__new__(cls)
        rows.keys = _objects(keys)
        rows.arrays = {column: arrays[column] for column in COLUMNS}
        rows.position = dict(zip(keys, range(len(keys)), strict=True))
        rows._frame = None
        return rows

    def __len__(self) -> int:
        return len(self.keys)

    def apply(self, changed: Columns, removed: set[str]) -> bool:
        """Insert or replace the rows in `changed`; drop the rows of `removed`. Returns whether any
        row is now different (a job read again as it was changes nothing, copies nothing)."""
        new = changed.arrays()
        arrays = dict(self.arrays)
        keys = self.keys
        differs = False
        replace = [(source, self.position[key]) for source, key in enumerate(changed.keys) if key in self.position]
        if replace:
            sources, targets = (list(side) for side in zip(*replace, strict=True))
            # every column, the ones the lifecycle never changes too (render type, title, creation):
            # a file edited by hand may change them; an equal column is left as it is (no copy)
            for column in COLUMNS:
                values = new[column][sources]
                if _same(arrays[column][targets], values):
                    continue
                arrays[column] = arrays[column].copy()  # copy-on-write: handed-out frames stay as they were
                arrays[column][targets] = values
                differs = True
        fresh = [source for source, key in enumerate(changed.keys) if key not in self.position]
        if fresh:
            arrays = {column: np.concatenate([array, new[column][fresh]]) for column, array in arrays.items()}
            keys = np.concatenate([keys, _objects([changed.keys[source] for source in fresh])])
            self.position.update((changed.keys[source], len(self.keys) + n) for n, source in enumerate(fresh))
            differs = True
        gone = [self.position[key] for key in removed if key in self.position]
        if gone:  # rare (deleted jobs): renumber every row
            arrays = {column: np.delete(array, gone) for column, array in arrays.items()}
            keys = np.delete(keys, gone)
            self.position = dict(zip(keys.tolist(), range(len(keys)), strict=True))
            differs = True
        if differs:
            self.arrays, self.keys, self._frame = arrays, keys, None
        return differs

    def frame(self) -> pd.DataFrame:
        """A DataFrame over the current arrays (no copy), indexed by the store's keys."""
        if self._frame is None:
            data = {}
            for column in COLUMNS:
                array = self.arrays[column]
                if column in TIME_COLUMNS:
                    data[column] = pd.Series(pd.DatetimeIndex(array).tz_localize("UTC"), copy=False)
                elif column == "status":
                    data[column] = pd.Series(pd.Categorical.from_codes(array, dtype=STATUS_DTYPE, validate=False))
                else:
                    data[column] = pd.Series(array, dtype=array.dtype, copy=False)
            frame = pd.DataFrame(data, copy=False)
            frame.index = pd.Index(self.keys, dtype=object, name="key", copy=False)
            self._frame = frame
        return self._frame

    def rows(self, keys: list[str]) -> pd.DataFrame:
        """The rows of `keys` in that order (a key no longer in the index gives no row)."""
        positions = [self.position[key] for key in keys if key in self.position]
        return self.frame().iloc[positions]


def _same(old: np.ndarray, new: np.ndarray) -> bool:
    """Whether two columns' values are equal (missing values equal to missing values)."""
    if old.dtype == object:
        return bool(np.all(old == new))  # str and None compare as values
    if old.dtype.kind == "M":
        return np.array_equal(old.view(np.int64), new.view(np.int64))  # NaT is one integer
    return np.array_equal(old, new, equal_nan=old.dtype.kind == "f")


def _objects(values) -> np.ndarray:
    return np.fromiter(values, dtype=object, count=len(values))


def empty_rows() -> RowStore:
    return RowStore(Columns())
