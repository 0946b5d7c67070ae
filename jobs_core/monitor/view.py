"""Everything the monitor shows for one set of filters, computed once and shared.

A live page asks again every few seconds, from every open browser session; when no job changed
the answer is the same, so `ViewCache` keeps it: keyed on the filters, valid while the index's
version is the same and until the first moment the answer would change by the clock alone (a
running job's heartbeat passing the lease, a finished job leaving the alert's one-hour window).
A refresh when nothing changed is then a dictionary lookup, not 200 ms of pandas.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pandas as pd

from . import alerts, stats

if TYPE_CHECKING:
    from .index import JobIndex

MAX_AGE = timedelta(seconds=60)  # recomputed at least this often whatever else (cheap insurance)


@dataclass
class View:
    """The figures, tables and charts of one filtered view, as of `computed_at`."""

    rows: pd.DataFrame  # the filtered jobs (one row each)
    headline: stats.Headline
    by_project: pd.DataFrame
    by_render_type: pd.DataFrame
    failures: pd.DataFrame
    bucket: str
    over_time: pd.DataFrame
    histogram: pd.DataFrame
    stuck_workers: pd.DataFrame
    alerts: list[alerts.Alert]
    status_counts: dict[str, int]
    computed_at: datetime
    valid_until: datetime
    version: int
    _pages: dict[tuple[str, int, int], pd.DataFrame] = field(default_factory=dict, repr=False)

    def page(self, number: int, size: int, sort: str) -> pd.DataFrame:
        key = (sort, size, number)
        if key not in self._pages:
            if len(self._pages) > 16:
                self._pages.clear()
            self._pages[key] = stats.page_of(self.rows, number, size, sort)
        return self._pages[key]


def compute_view(frame: pd.DataFrame, view_filter: stats.JobFilter, now: datetime, lease_seconds: float,
                 threshold: float, version: int = 0) -> View:
    rows = view_filter.apply(frame, now, lease_seconds)
    bucket = stats.time_bucket(rows)
    counts = rows["status"].value_counts()
    return View(
        rows=rows, headline=stats.headline(rows, now, lease_seconds),
        by_project=stats.by_group(rows, "project", now, lease_seconds),
        by_render_type=stats.by_group(rows, "render_type", now, lease_seconds),
        failures=stats.failures_by_error(rows), bucket=bucket, over_time=stats.jobs_over_time(rows, bucket),
        histogram=stats.run_time_histogram(rows), stuck_workers=stats.stuck_by_worker(rows, now, lease_seconds),
        alerts=alerts.current_alerts(frame, now, lease_seconds, threshold),  # alerts: the whole store
        status_counts={status: int(counts.get(status, 0)) for status in stats.STATUS_ORDER},
        computed_at=now, valid_until=changes_by_clock(frame, now, lease_seconds), version=version)


def changes_by_clock(frame: pd.DataFrame, now: datetime, lease_seconds: float) -> datetime:
    """The first moment after `now` at which the view would differ with no job changing: a
    running job becomes stuck (lease) or long stuck (twice the lease, the alert), or a finished
    job leaves the last hour (the failure-rate alert)."""
    moments = [pd.Timestamp(now) + MAX_AGE]
    running = frame[frame["status"] == "processing"]
    if len(running):
        beat = running["heartbeat"].fillna(running["started"]).fillna(running["updated"])
        for lease in (lease_seconds, 2 * lease_seconds):
            flips = beat + pd.Timedelta(seconds=lease)
            ahead = flips[flips > pd.Timestamp(now)]
            if len(ahead):
                moments.append(ahead.min())
    finished = frame["finished"]
    leaving = finished + alerts.WINDOW
    ahead = leaving[leaving > pd.Timestamp(now)]
    if len(ahead):
        moments.append(ahead.min())
    return min(moments).to_pydatetime()


class ViewCache:
    """Views by filter, for one index (one per server process, shared by every session)."""

    def __init__(self, index: JobIndex, size: int = 32) -> None:
        self.index = index
        self.size = size
        self.hits = 0
        self.misses = 0
        self._views: OrderedDict[tuple, View] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, view_filter: stats.JobFilter, now: datetime, threshold: float) -> View:
        frame = self.index.frame()  # applies the changes the watch reported (bumps the version)
        version = self.index.version
        key = (view_filter, threshold)
        with self._lock:
            found = self._views.get(key)
            if found is not None and found.version == version and found.computed_at <= now < found.valid_until:
                self._views.move_to_end(key)
                self.hits += 1
                return found
        view = compute_view(frame, view_filter, now, self.index.lease_seconds, threshold, version)
        with self._lock:
            self.misses += 1
            self._views[key] = view
            self._views.move_to_end(key)
            while len(self._views) > self.size:
                self._views.popitem(last=False)
        return view


__all__ = ["View", "ViewCache", "compute_view", "changes_by_clock"]
