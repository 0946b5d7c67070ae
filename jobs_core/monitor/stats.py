"""What the monitor shows, computed from the index's frame: filters, headline figures, tables by
project and render type, failures by error, time series, and one page of rows.

Every function takes the frame (and `now` where time matters) and returns small results: the
browser gets these aggregates and one page of rows, never the 100,000 rows themselves.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from ..models import JobStatus
from .frame import STATUS_DTYPE

STATUS_ORDER = [status.value for status in JobStatus]
FINISHED = ["completed", "failed", "canceled"]
STUCK = "stuck"  # not a stored status: processing with a heartbeat older than the lease
# One colour per status, the same on every chart, badge and table of the monitor: the name is
# Streamlit's badge colour, the hex its chart colour.
STATUS_COLORS = {"pending": ("gray", "#a3a8b8"), "processing": ("blue", "#1c83e1"),
                 "completed": ("green", "#21c354"), "failed": ("red", "#ff4b4b"),
                 "canceled": ("orange", "#ffa421"), STUCK: ("violet", "#803df5")}
SORTS = {
    "newest first": ("created", False),
    "oldest first": ("created", True),
    "recently updated": ("updated", False),
    "longest run": ("run_time", False),
    "longest queue wait": ("queue_wait", False),
}


def stuck_mask(frame: pd.DataFrame, now: datetime, lease_seconds: float) -> pd.Series:
    """Processing jobs whose last sign of life (heartbeat, else start, else update) is older than
    the lease: the same rule as `lifecycle.is_expired`, applied to every row at once."""
    beat = frame["heartbeat"].fillna(frame["started"]).fillna(frame["updated"])
    return (frame["status"] == "processing") & (beat < pd.Timestamp(now) - pd.Timedelta(seconds=lease_seconds))


def stuck_by_worker(frame: pd.DataFrame, now: datetime, lease_seconds: float) -> pd.DataFrame:
    """The workers of stuck jobs: how many each holds and its last heartbeat on any of them."""
    stuck = frame[stuck_mask(frame, now, lease_seconds)]
    if stuck.empty:
        return pd.DataFrame({"worker": [], "jobs": [], "last_heartbeat": []})
    beat = stuck["heartbeat"].fillna(stuck["started"]).fillna(stuck["updated"])
    worker = stuck["worker"].fillna("(no worker recorded)")
    table = pd.DataFrame({"worker": worker, "beat": beat}).groupby("worker")["beat"].agg(["size", "max"])
    table = table.rename(columns={"size": "jobs", "max": "last_heartbeat"}).reset_index()
    return table.sort_values(["jobs", "worker"], ascending=[False, True]).reset_index(drop=True)


@dataclass(frozen=True)
class JobFilter:
    """The monitor's filters; empty means "all"."""

    projects: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()  # JobStatus values, and "stuck"
    render_types: tuple[str, ...] = ()
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # exclusive
    error_text: str = ""
    studies: tuple[str, ...] = ()  # design studies (jobs_core.studies) by studyId

    def apply(self, frame: pd.DataFrame, now: datetime, lease_seconds: float) -> pd.DataFrame:
        keep = np.ones(len(frame), dtype=bool)
        if self.projects:
            keep &= frame["project"].isin(self.projects).to_numpy()
        if self.render_types:
            keep &= frame["render_type"].isin(self.render_types).to_numpy()
        if self.studies:
            keep &= frame["study"].isin(self.studies).to_numpy()
        if self.statuses:
            wanted = frame["status"].isin([s for s in self.statuses if s != STUCK]).to_numpy()
            if STUCK in self.statuses:
                wanted = wanted | stuck_mask(frame, now, lease_seconds).to_numpy()
            keep &= wanted
        if self.created_from is not None:
            keep &= (frame["created"] >= pd.Timestamp(self.created_from)).to_numpy()
        if self.created_to is not None:
            keep &= (frame["created"] < pd.Timestamp(self.created_to)).to_numpy()
        text = self.error_text.strip()
        if text:
            errors = frame["error"]
            keep &= errors.notna().to_numpy()
            keep &= errors.str.contains(text, case=False, regex=False, na=False).to_numpy()
        return frame if keep.all() else frame[keep]


@dataclass(frozen=True)
class Headline:
    total: int
    pending: int
    running: int
    stuck: int
    completed: int
    failed: int
    canceled: int
    completion_rate: float | None  # completed / finished (completed + failed + canceled)
    failure_rate: float | None  # failed / finished
    run_time_p50: float | None  # seconds, completed jobs
    run_time_p95: float | None
    queue_wait_p50: float | None  # seconds from creation to the (latest) start, started jobs
    queue_wait_p95: float | None


def _quantile(values: pd.Series, q: float) -> float | None:
    values = values.dropna()
    return None if values.empty else float(values.quantile(q))


def headline(frame: pd.DataFrame, now: datetime, lease_seconds: float) -> Headline:
    counts = frame["status"].value_counts()
    count = {status: int(counts.get(status, 0)) for status in STATUS_ORDER}
    finished = sum(count[status] for status in FINISHED)
    run_times = frame.loc[frame["status"] == "completed", "run_time"]
    waits = frame["queue_wait"]
    return Headline(
        total=len(frame), pending=count["pending"], running=count["processing"],
        stuck=int(stuck_mask(frame, now, lease_seconds).sum()), completed=count["completed"],
        failed=count["failed"], canceled=count["canceled"],
        completion_rate=count["completed"] / finished if finished else None,
        failure_rate=count["failed"] / finished if finished else None,
        run_time_p50=_quantile(run_times, 0.5), run_time_p95=_quantile(run_times, 0.95),
        queue_wait_p50=_quantile(waits, 0.5), queue_wait_p95=_quantile(waits, 0.95))


def _status_codes(statuses: pd.Series) -> np.ndarray:
    """Position of each row's status in STATUS_ORDER (-1 if unknown)."""
    return pd.Categorical(statuses, dtype=STATUS_DTYPE).codes.astype(np.int64)


def by_group(frame: pd.DataFrame, column: str, now: datetime, lease_seconds: float) -> pd.DataFrame:
    """One row per value of `column` (project, render_type): jobs by status, completion rate,
    failures, stuck jobs, median run time and last activity; busiest first.

    Counted with integer codes and numpy.bincount: a pandas groupby over two text columns of
    100,000 rows takes ten times longer, and this runs on every live refresh.
    """
    groups, names = pd.factorize(frame[column], sort=True)
    width = len(names)
    status_code = _status_codes(frame["status"])
    known = status_code >= 0
    counts = np.bincount(groups[known] * len(STATUS_ORDER) + status_code[known],
                         minlength=width * len(STATUS_ORDER)).reshape(width, len(STATUS_ORDER))
    table = pd.DataFrame(counts, columns=STATUS_ORDER, index=pd.Index(names, name=column))
    table.insert(0, "total", np.bincount(groups, minlength=width))
    finished = table[FINISHED].sum(axis=1)
    table["completion_rate"] = (table["completed"] / finished).where(finished > 0)
    table["failure_rate"] = (table["failed"] / finished).where(finished > 0)
    stuck = stuck_mask(frame, now, lease_seconds).to_numpy()
    table["stuck"] = np.bincount(groups, weights=stuck, minlength=width).astype(int)
    completed = (frame["status"] == "completed").to_numpy()
    run_times = pd.Series(frame["run_time"].to_numpy()[completed])
    table["run_time_p50"] = run_times.groupby(groups[completed]).median().reindex(range(width)).to_numpy()
    updated = pd.Series(frame["updated"].to_numpy(dtype="datetime64[us]"))
    latest = updated.groupby(groups).max().reindex(range(width)).to_numpy()
    table["last_activity"] = pd.DatetimeIndex(latest).tz_localize("UTC")
    return table.sort_values(["total", "last_activity"], ascending=False)


def by_study(frame: pd.DataFrame, now: datetime, lease_seconds: float) -> pd.DataFrame:
    """`by_group` over the jobs of design studies, one row per study, with its brief's title."""
    jobs = frame[frame["study"].notna().to_numpy()]
    table = by_group(jobs, "study", now, lease_seconds)
    table.insert(0, "title", jobs.groupby("study", sort=False)["title"].first().reindex(table.index))
    return table


def failures_by_error(frame: pd.DataFrame) -> pd.DataFrame:
    """Failed jobs grouped by error message: count, projects affected, and the latest example."""
    failed = frame[(frame["status"] == "failed")]
    if failed.empty:
        return pd.DataFrame(columns=["error", "count", "projects", "latest", "latest_job", "latest_project"])
    failed = failed.assign(error=failed["error"].fillna("(no message)").astype(str))
    failed = failed.sort_values("finished", ascending=False, na_position="last")
    groups = failed.groupby("error", sort=False)
    latest = groups.head(1).set_index("error")
    table = pd.DataFrame({"count": groups.size(), "projects": groups["project"].nunique()})
    table["latest"] = latest["finished"]
    table["latest_job"] = latest["job"]
    table["latest_project"] = latest["project"]
    return table.sort_values(["count", "latest"], ascending=False).reset_index()


def time_bucket(frame: pd.DataFrame) -> str:
    """A bucket size giving a readable number of bars for the frame's span of creation times."""
    if frame.empty:
        return "1D"
    span = frame["created"].max() - frame["created"].min()
    if span <= pd.Timedelta(days=2):
        return "1h"
    if span <= pd.Timedelta(days=120):
        return "1D"
    return "7D"


def jobs_over_time(frame: pd.DataFrame, bucket: str | None = None) -> pd.DataFrame:
    """Jobs created per time bucket, one column per status (for a stacked bar chart)."""
    bucket = bucket or time_bucket(frame)
    if frame.empty:
        return pd.DataFrame(columns=STATUS_ORDER)
    when = frame["created"].dt.floor(bucket).dt.tz_localize(None).rename("created")
    table = frame.groupby([when, frame["status"]]).size().unstack(fill_value=0)
    return table.reindex(columns=STATUS_ORDER, fill_value=0)


def run_time_histogram(frame: pd.DataFrame, bins: int = 30) -> pd.DataFrame:
    """Completed jobs by run time: `bins` equal buckets up to the 99th percentile (the rest in the last)."""
    run_times = frame.loc[frame["status"] == "completed", "run_time"].dropna().to_numpy()
    if run_times.size == 0:
        return pd.DataFrame({"jobs": []}, index=pd.Index([], name="run time (s)"))
    top = max(float(np.quantile(run_times, 0.99)), 1e-3)
    counts, edges = np.histogram(np.clip(run_times, 0, top), bins=bins, range=(0, top))
    return pd.DataFrame({"jobs": counts}, index=pd.Index(np.round(edges[:-1], 1), name="run time (s)"))


def page_of(frame: pd.DataFrame, page: int, size: int, sort: str = "newest first") -> pd.DataFrame:
    """Rows of page `page` (1-based) of `size` rows, in the named order (missing values last)."""
    column, ascending = SORTS[sort]
    start = (max(page, 1) - 1) * size
    if column in ("created", "updated", "started", "finished"):
        # as integers: .to_numpy() of a tz-aware column would make 100,000 Timestamp objects
        values = frame[column].to_numpy(dtype="datetime64[us]").view(np.int64).astype(np.float64)
        values[values == np.iinfo(np.int64).min] = np.nan
    else:
        values = frame[column].to_numpy(dtype=np.float64)
    order_key = np.where(np.isnan(values), np.inf, values if ascending else -values)
    end = min(start + size, len(frame))
    if start >= end:
        return frame.iloc[0:0]
    if end < len(frame) // 4:
        # the first pages (the usual case): partition out the top `end` rows, sort only those
        top = np.argpartition(order_key, end - 1)[:end]
        positions = top[np.argsort(order_key[top], kind="stable")][start:end]
    else:
        positions = np.argsort(order_key, kind="stable")[start:end]
    return frame.iloc[positions]


def page_count(rows: int, size: int) -> int:
    return max(1, -(-rows // size))


#: the jobs table's columns, in the order a person scans them (the job id comes later)
TABLE_COLUMNS = ["title", "project", "status", "progress", "created", "updated", "render_type", "stage",
                 "attempts", "worker", "error", "started", "finished", "run_time", "queue_wait", "job",
                 "image_url"]


CSV_BATCH_ROWS = 16384  # rows converted and written at a time: memory stays flat whatever the count


def csv_chunks(frame: pd.DataFrame, batch_rows: int = CSV_BATCH_ROWS) -> Iterator[bytes]:
    """The rows as CSV (the table's columns, times in ISO-8601 UTC), a batch of rows at a time:
    the header with the first, then each batch's lines as soon as they are written. pyarrow's CSV
    writer is about four times faster than DataFrame.to_csv at 100,000 rows."""
    import pyarrow as pa
    import pyarrow.csv as pa_csv

    table = frame[TABLE_COLUMNS]
    sink = io.BytesIO()
    writer = None
    for start in range(0, max(len(table), 1), batch_rows):
        batch = _arrow_batch(table.iloc[start:start + batch_rows])
        if writer is None:
            writer = pa_csv.CSVWriter(sink, batch.schema)
        writer.write_batch(batch)
        yield sink.getvalue()
        sink.seek(0)
        sink.truncate()
    if writer is not None:
        writer.close()
    pa.default_memory_pool().release_unused()


def to_csv(frame: pd.DataFrame) -> bytes:
    """All of `csv_chunks`, for a download that needs the whole file at once (Streamlit's)."""
    return b"".join(csv_chunks(frame))


def _arrow_batch(rows: pd.DataFrame):
    import pyarrow as pa

    arrays = []
    for column in TABLE_COLUMNS:
        values = rows[column]
        if column == "status":
            arrays.append(pa.array(values.astype(str).to_numpy(dtype=object), type=pa.string()))
        else:
            arrays.append(pa.Array.from_pandas(values))
    return pa.RecordBatch.from_arrays(arrays, names=TABLE_COLUMNS)
