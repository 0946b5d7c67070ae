"""Alerts a team lead does not have to watch for: a high failure rate over the last hour, and jobs
stuck for longer than the lease.

`current_alerts(frame, now, ...)` computes them from the index's frame (pure); `AlertLog` (one per
index, so one per server process) logs each alert once when it starts and once when it clears,
however many sessions look, and hands each new alert to its `sinks`: the seam where webhook
delivery plugs in (the webhooks issue) without the monitor knowing how it is sent.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from ..errors import InvalidInput
from .stats import stuck_mask

log = logging.getLogger("jobs_core.monitor.alerts")
FAILURE_RATE_ENV = "JOBS_ALERT_FAILURE_RATE"
DEFAULT_FAILURE_RATE = 0.20
MIN_FINISHED = 10  # a rate over fewer finished jobs says little
WINDOW = pd.Timedelta(hours=1)


@dataclass(frozen=True)
class Alert:
    kind: str  # "failure-rate" or "stuck"
    message: str  # one sentence for people (the banner, the log, a webhook's text)


def failure_rate_threshold(environ: dict[str, str] | None = None) -> float:
    """JOBS_ALERT_FAILURE_RATE as a fraction: "20%", "20" or "0.2" (default 20%)."""
    raw = (environ if environ is not None else os.environ).get(FAILURE_RATE_ENV, "").strip()
    if not raw:
        return DEFAULT_FAILURE_RATE
    text = raw[:-1].strip() if raw.endswith("%") else raw
    try:
        value = float(text)
    except ValueError:
        raise InvalidInput(f"{FAILURE_RATE_ENV}={raw!r} must be a percentage such as 20% or a fraction "
                           "such as 0.2.") from None
    if raw.endswith("%") or value > 1:
        value /= 100
    if not 0 < value <= 1 or value != value:
        raise InvalidInput(f"{FAILURE_RATE_ENV}={raw!r} must be above 0% and at most 100%.")
    return value


def failure_alert(frame: pd.DataFrame, now: datetime, threshold: float,
                  min_finished: int = MIN_FINISHED) -> Alert | None:
    """Jobs that finished in the last hour: alert when more than `threshold` of them failed for good.

    A failed attempt with attempts left goes back to pending, so status "failed" already means
    "after its last attempt".
    """
    since = pd.Timestamp(now) - WINDOW
    recent = frame[(frame["finished"] >= since) & frame["status"].isin(["completed", "failed", "canceled"])]
    finished = len(recent)
    if finished < min_finished:
        return None
    failed = int((recent["status"] == "failed").sum())
    rate = failed / finished
    if rate <= threshold:
        return None
    return Alert("failure-rate", f"{rate:.0%} of the jobs that finished in the last hour failed ({failed:,} of "
                                 f"{finished:,}; the alert threshold is {threshold:.0%}).")


def stuck_alert(frame: pd.DataFrame, now: datetime, lease_seconds: float) -> Alert | None:
    """Jobs stuck for longer than the lease: no heartbeat for over twice the lease."""
    long_stuck = frame[stuck_mask(frame, now, 2 * lease_seconds)]
    if long_stuck.empty:
        return None
    workers = sorted({str(worker) for worker in long_stuck["worker"].dropna()})
    named = ", ".join(workers[:5]) + (f" and {len(workers) - 5} more" if len(workers) > 5 else "")
    return Alert("stuck", f"{len(long_stuck):,} job{'s have' if len(long_stuck) != 1 else ' has'} been stuck for "
                          f"longer than the lease ({lease_seconds:g} s): no heartbeat from worker"
                          f"{'s' if len(workers) != 1 else ''} {named or 'unknown'}.")


def current_alerts(frame: pd.DataFrame, now: datetime, lease_seconds: float, threshold: float) -> list[Alert]:
    found = [failure_alert(frame, now, threshold), stuck_alert(frame, now, lease_seconds)]
    return [alert for alert in found if alert is not None]


Sink = Callable[[Alert], None]


@dataclass
class AlertLog:
    """Which alerts are active; logs (and hands to `sinks`) each one once as it starts and clears."""

    sinks: list[Sink] = field(default_factory=list)
    _active: dict[str, Alert] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, alerts: list[Alert]) -> list[Alert]:
        """Record the alerts seen now; returns those that just started."""
        now_active = {alert.kind: alert for alert in alerts}
        with self._lock:
            started = [alert for kind, alert in now_active.items() if kind not in self._active]
            cleared = [alert for kind, alert in self._active.items() if kind not in now_active]
            self._active = now_active
        for alert in started:
            log.warning("alert: %s", alert.message)
            for sink in self.sinks:
                try:
                    sink(alert)
                except Exception:  # one failing delivery never stops the monitor
                    log.exception("could not deliver the alert %r", alert.kind)
        for alert in cleared:
            log.info("alert cleared: %s", alert.kind)
        return started

    def active(self) -> list[Alert]:
        with self._lock:
            return list(self._active.values())
