"""Everything the monitor shows for one set of filters, computed once and shared.

A live page asks again every few seconds, from every open browser session; when no job changed
the answer is the same, so `ViewCache` keeps it: keyed on the filters, valid while the index's
version is the same and until the first moment the answer would change by the clock alone (a
running job's heartbeat passing the lease). A refresh when nothing changed is then a dictionary
lookup, not 200 ms of pandas. The alerts (of the whole store, whatever the filters) are kept
apart, with their own moments (a finished job leaving the one-hour window, a job stuck for twice
the lease): they change by the clock far more often than the view, and cost far less to redo.
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
    by_study: pd.DataFrame  # design studies: completion like a project's
    failures: pd.DataFrame
    bucket: str
    over_time: pd.DataFrame
    histogram: pd.DataFrame
    stuck_workers: pd.DataFrame
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


@dataclass
class Alerts:
    """The alerts of the whole store as of `computed_at`."""

    alerts: list[alerts.Alert]
    computed_at: datetime
    valid_until: datetime
    version: int


def compute_view(frame: pd.DataFrame, view_filter: stats.JobFilter, now: datetime, lease_seconds: float,
                 version: int = 0) -> View:
    rows = view_filter.apply(frame, now, lease_seconds)
    bucket = stats.time_bucket(rows)
    counts = rows["status"].value_counts()
    return View(
        rows=rows, headline=stats.headline(rows, now, lease_seconds),
        by_project=stats.by_group(rows, "project", now, lease_seconds),
        by_render_type=stats.by_group(rows, "render_type", now, lease_seconds),
        by_study=stats.by_study(rows, now, lease_seconds),
        failures=stats.failures_by_error(rows), bucket=bucket, over_time=stats.jobs_over_time(rows, bucket),
        histogram=stats.run_time_histogram(rows), stuck_workers=stats.stuck_by_worker(rows, now, lease_seconds),
        status_counts={status: int(counts.get(status, 0)) for status in stats.STATUS_ORDER},
        computed_at=now, valid_until=changes_by_clock(frame, now, lease_seconds), version=version)


def compute_alerts(frame: pd.DataFrame, now: datetime, lease_seconds: float, threshold: float,
                   version: int = 0) -> Alerts:
    found = alerts.current_alerts(frame, now, lease_seconds, threshold)
    return Alerts(found, now, changes_by_clock(frame, now, lease_seconds, for_alerts=True), version)


def changes_by_clock(frame: pd.DataFrame, now: datetime, lease_seconds: float, for_alerts: bool = False) -> datetime:
    """The first moment after `now` at which the view would differ with no job changing (a
    running job becomes stuck: the lease); for the alerts, the moment they would (a job stuck for
    twice the lease, a finished job leaving the last hour)."""
    moments = [pd.Timestamp(now) + MAX_AGE]
    running = frame[frame["status"] == "processing"]
    if len(running):
        beat = running["heartbeat"].fillna(running["started"]).fillna(running["updated"])
        flips = beat + pd.Timedelta(seconds=lease_seconds * (2 if for_alerts else 1))
        ahead = flips[flips > pd.Timestamp(now)]
        if len(ahead):
            moments.append(ahead.min())
    if for_alerts:
        leaving = frame["finished"] + alerts.WINDOW
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
        self._views: OrderedDict[stats.JobFilter, View] = OrderedDict()
        self._alerts: dict[float, Alerts] = {}
        self._lock = threading.Lock()

    def alerts(self, now: datetime, threshold: float) -> list[alerts.Alert]:
        """The alerts of the whole store now (at `threshold` for the failure rate)."""
        frame = self.index.frame()
        version = self.index.version
        with self._lock:
            found = self._alerts.get(threshold)
            if found is not None and found.version == version and found.computed_at <= now < found.valid_until:
                return found.alerts
        computed = compute_alerts(frame, now, self.index.lease_seconds, threshold, version)
        with self._lock:
            if len(self._alerts) > 8:
                self._alerts.clear()
            self._alerts[threshold] = computed
        return computed.alerts

    def get(self, view_filter: stats.JobFilter, now: datetime) -> View:
        frame = self.index.frame()  # applies the changes the watch reported (bumps the version)
        version = self.index.version
        key = view_filter
        with self._lock:
            found = self._views.get(key)
            if found is not None and found.version == version and found.computed_at <= now < found.valid_until:
                self._views.move_to_end(key)
                self.hits += 1
                return found
        view = compute_view(frame, view_filter, now, self.index.lease_seconds, version)
        with self._lock:
            self.misses += 1
            self._views[key] = view
            self._views.move_to_end(key)
            while len(self._views) > self.size:
                self._views.popitem(last=False)
        return view


__all__ = ["Alerts", "View", "ViewCache", "compute_alerts", "compute_view", "changes_by_clock"]
