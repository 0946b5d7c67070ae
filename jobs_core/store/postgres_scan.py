"""Some fields of every job row in one COPY, parsed by pyarrow: the monitor's first build on PostgreSQL.

`scan_jobs` hands over each whole document, and decoding 100,000 of them in Python (psycopg's
rows, then json.loads) takes 5-7 s; the monitor needs only some fifteen fields of each. Here
PostgreSQL extracts them (`doc #>> path`) and sends them as CSV through COPY, which pyarrow parses
in C: some 0.5-1 s for 100,000 jobs, about the time of a bare SELECT of the documents.

The answer must be the one `scan_jobs` gives, row for row, whatever a row holds (rows are
untrusted: anyone with the database can write one). So a row is sent as fields only when its
document has the plain shape the fields can say exactly: an object whose jobId is the row's job
id, every text field a string or null (or absent), every integer field an integer of at most 18
digits (or null, or absent). Any other row is sent whole (`doc::text`) and read the way
`scan_jobs` reads it. It is one statement, so one snapshot of the table: every row as of one moment.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from ..errors import StoreUnavailable
from .base import JobRecord

if TYPE_CHECKING:
    import pyarrow as pa

    from .postgres import PostgresJobStore

BATCH_ROWS = 16384  # rows parsed at a time (some 5 MB of CSV)
INTEGER_PATTERN = "^-?[0-9]{1,18}$"  # what json.loads makes an int that fits in int64


@dataclass(frozen=True)
class Field:
    """A field of the job document: its name in the answer, its path (("conceptInputs", "title")),
    and whether it is an integer (else text)."""

    name: str
    path: tuple[str, ...]
    integer: bool = False


@dataclass
class FieldScan:
    #: the store's keys (`record_key`) of the rows sent as fields, in the order of `values`
    keys: list[str]
    #: for each field, its text in those rows (None where the document has null or nothing)
    values: dict[str, pa.ChunkedArray]
    #: every other row, read whole as `scan_jobs` reads it
    others: list[JobRecord]


def _at(field: Field, operator: str) -> sql.Composable:
    """`doc -> 'key'` (twice as fast as `#>` with a one-key path) or `doc #> '{a,b}'`; `->>`, `#>>` for text."""
    if len(field.path) == 1:
        return sql.SQL("doc {} {}").format(sql.SQL(operator), sql.Literal(field.path[0]))
    return sql.SQL("doc {} {}").format(sql.SQL(operator.replace("-", "#")), sql.Literal(list(field.path)))


def _plain(field: Field) -> sql.Composable:
    """The condition that the document's value at the field's path can be said exactly as text."""
    value = _at(field, "->")
    kind = sql.SQL("coalesce(jsonb_typeof({}), 'null')").format(value)
    if not field.integer:
        return sql.SQL("{} IN ('string', 'null')").format(kind)
    return sql.SQL("({kind} = 'null' OR ({kind} = 'number' AND {text} ~ {pattern}))").format(
        kind=kind, text=_at(field, "->>"), pattern=sql.Literal(INTEGER_PATTERN))


def _statement(fields: Sequence[Field]) -> sql.Composed:
    plain = sql.SQL(" AND ").join([
        sql.SQL("jsonb_typeof(doc) = 'object'"), sql.SQL("jsonb_typeof(doc -> 'jobId') = 'string'"),
        sql.SQL("doc ->> 'jobId' = job_id"), *(_plain(field) for field in fields)])
    texts = sql.SQL(", ").join(_at(field, "->>") for field in fields)  # of a row sent whole: not used
    # the condition appears once (evaluated once per row); NULL (a missing jobId) means "not plain"
    return sql.SQL("COPY (SELECT project_id, job_id, CASE WHEN coalesce({plain}, false) THEN NULL ELSE doc::text END, "
                   "{texts} FROM jobs) TO STDOUT (FORMAT csv)").format(texts=texts, plain=plain)


def scan_fields(store: PostgresJobStore, fields: Sequence[Field]) -> Iterator[FieldScan]:
    """The fields of every job (see the module's docstring), BATCH_ROWS rows at a time (the caller's
    memory stays flat while 100,000 rows arrive); nothing when the connection's encoding is not
    UTF-8 (pyarrow reads UTF-8 only: the caller uses `scan_jobs` then)."""
    import pyarrow as pa

    try:
        with store.pool.connection(timeout=store.connect_timeout) as conn, conn.cursor() as cur:
            if conn.info.encoding != "utf-8":
                return
            out, rows = pa.BufferOutputStream(), 0
            with cur.copy(_statement(fields)) as copy:
                for chunk in copy:  # COPY sends one row per chunk
                    out.write(chunk)
                    rows += 1
                    if rows == BATCH_ROWS:
                        yield _parse(store, fields, out.getvalue())
                        out, rows = pa.BufferOutputStream(), 0
            yield _parse(store, fields, out.getvalue())
    except psycopg.OperationalError as error:
        from .postgres import _first_line  # postgres.py imports this module when first asked

        raise StoreUnavailable(f"PostgreSQL at {store._where()} is unavailable: {_first_line(error)}") from None


def _parse(store: PostgresJobStore, fields: Sequence[Field], data: pa.Buffer) -> FieldScan:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pa_csv

    names = ["project_id", "job_id", "doc", *(field.name for field in fields)]
    if not data.size:
        empty = pa.chunked_array([], type=pa.string())
        return FieldScan([], {field.name: empty for field in fields}, [])
    table = pa_csv.read_csv(
        data, read_options=pa_csv.ReadOptions(column_names=names),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        # COPY's CSV: NULL is an empty unquoted field, an empty text is ""
        convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                              strings_can_be_null=True, quoted_strings_can_be_null=False))
    del data
    others: list[JobRecord] = []
    whole = pc.is_valid(table.column("doc"))
    if pc.any(whole).as_py():  # rare: rows written by hand (the table is copied only then)
        others = [store._row_record(project_id, job_id, text) for project_id, job_id, text in
                  zip(*(table.filter(whole).column(name).to_pylist() for name in names[:3]), strict=True)]
        table = table.filter(pc.invert(whole))
    keys = [store.record_key(project_id, job_id) for project_id, job_id in
            zip(table.column("project_id").to_pylist(), table.column("job_id").to_pylist(), strict=True)]
    return FieldScan(keys, {field.name: table.column(field.name) for field in fields}, others)
