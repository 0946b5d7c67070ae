"""Prometheus metrics: every metric the product exposes, one small function per event, and the
registry a scrape reads (`GET /metrics` on the API, `worker --metrics-port` on workers).

Counters and histograms count what happened in this process (jobs created, attempts ended, webhook
deliveries, store errors). With PROMETHEUS_MULTIPROC_DIR set, prometheus-client keeps them in files
in that folder, and a scrape of any process sums every process that writes there (`serve
--processes N` sets one up itself); without it, each process shows its own series and Prometheus
sums the targets. The gauges (queue length, running jobs) are not counted here but read from the
store at scrape time, so they are right whichever process or host changed the jobs.

Recording never breaks the change it records: a failure (a multiprocess folder removed under a
running process) is logged once and the job goes on.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from .errors import InvalidInput, JobsError, StoreUnavailable, StoreWriteError
from .models import Job, JobStatus

log = logging.getLogger("jobs_core.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The library's default buckets stop at 10 s; an AI render takes up to minutes.
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
QUEUE_BUCKETS = (0.01, *RUN_BUCKETS, 1800, 3600)  # a backlog waits longer than any one render
#: how long a scrape's reading of the store serves the next scrapes (several Prometheus servers,
#: a dashboard's refresh): the gauges cost one store read per this many seconds per process
GAUGE_CACHE_SECONDS = 2.0

disable_created_metrics()  # a `_created` timestamp beside every series doubles a scrape for nothing

JOB_LABELS = ("renderer", "render_type")
CREATED = Counter("jobs_created", "Jobs created.", JOB_LABELS, registry=None)
COMPLETED = Counter("jobs_completed", "Jobs completed (an image was made).", JOB_LABELS, registry=None)
FAILED = Counter("jobs_failed", "Jobs failed for good (an error that no retry helps, or attempts spent).",
                 JOB_LABELS, registry=None)
CANCELED = Counter("jobs_canceled", "Jobs canceled.", JOB_LABELS, registry=None)
RETRIED = Counter("jobs_retried", "Jobs queued again: reason=error (a temporary failure, attempts left), "
                  "lost_worker (its worker stopped heartbeating) or user (retried by a person).",
                  (*JOB_LABELS, "reason"), registry=None)
RUN_SECONDS = Histogram("jobs_run_seconds", "How long an attempt ran, from its claim to its end; outcome is the "
                        "job's status after it (completed, failed, canceled) or retried.",
                        (*JOB_LABELS, "outcome"), buckets=RUN_BUCKETS, registry=None)
QUEUE_WAIT_SECONDS = Histogram("jobs_queue_wait_seconds", "How long a job waited in the queue, from when it could "
                               "run (created, or due again) to its claim.", JOB_LABELS, buckets=QUEUE_BUCKETS,
                               registry=None)
WEBHOOK_DELIVERIES = Counter("jobs_webhook_deliveries", "Webhook delivery attempts by outcome: delivered, "
                             "retrying (failed, tried again later), given_up (failed, no tries left), dropped "
                             "(the change it described was never stored).", ("outcome",), registry=None)
STORE_ERRORS = Counter("jobs_store_errors", "Store calls that failed: kind=unavailable (cannot be reached), "
                       "write (cannot write: a full disk, no permission) or other; component is the part that "
                       "met it (api, worker, webhooks, metrics).", ("component", "kind"), registry=None)
EVENT_METRICS = (CREATED, COMPLETED, FAILED, CANCELED, RETRIED, RUN_SECONDS, QUEUE_WAIT_SECONDS,
                 WEBHOOK_DELIVERIES, STORE_ERRORS)
_FINAL_COUNTERS = {JobStatus.COMPLETED: COMPLETED, JobStatus.FAILED: FAILED, JobStatus.CANCELED: CANCELED}

F = TypeVar("F", bound=Callable[..., None])
_warned = threading.Event()


def _never_raises(record: F) -> F:
    @functools.wraps(record)
    def safely(*args, **kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception as error:  # a metric must never fail the job change it counts
            if not _warned.is_set():
                _warned.set()
                log.warning("metrics could not be recorded (%s: %s); jobs are not affected", type(error).__name__,
                            error)
    return safely  # type: ignore[return-value]


# -- events ---------------------------------------------------------------------------------------
@_never_raises
def job_created(job: Job) -> None:
    CREATED.labels(job.renderer, job.render_type).inc()


@_never_raises
def job_claimed(job: Job) -> None:
    """A worker claimed the job: its wait in the queue ended."""
    if job.started_at is not None:
        waited = (job.started_at - job.available_at).total_seconds()
        QUEUE_WAIT_SECONDS.labels(job.renderer, job.render_type).observe(max(waited, 0.0))


@_never_raises
def attempt_ended(job: Job) -> None:
    """A worker's attempt ended (completed, failed, canceled, or back to the queue after a
    temporary error): its run time, and what became of the job."""
    if job.started_at is not None:
        outcome = "retried" if job.status is JobStatus.PENDING else job.status.value
        RUN_SECONDS.labels(job.renderer, job.render_type, outcome).observe(
            max((job.updated_at - job.started_at).total_seconds(), 0.0))
    _count_outcome(job, "error")


@_never_raises
def job_changed(job: Job, requeue_reason: str | None) -> None:
    """A change outside a worker's attempt (a person's cancel or retry, a lost worker's job taken
    back, a job handed back at shutdown): counted by what became of the job. A job back in the
    queue counts as retried only with a reason (a hand-back at shutdown is not a retry)."""
    _count_outcome(job, requeue_reason)


def _count_outcome(job: Job, requeue_reason: str | None) -> None:
    counter = _FINAL_COUNTERS.get(job.status)
    if counter is not None:
        counter.labels(job.renderer, job.render_type).inc()
    elif job.status is JobStatus.PENDING and requeue_reason is not None:
        RETRIED.labels(job.renderer, job.render_type, requeue_reason).inc()


@_never_raises
def webhook_attempt(delivered: bool, will_retry: bool) -> None:
    WEBHOOK_DELIVERIES.labels("delivered" if delivered else "retrying" if will_retry else "given_up").inc()


@_never_raises
def webhook_dropped() -> None:
    WEBHOOK_DELIVERIES.labels("dropped").inc()


@_never_raises
def store_error(component: str, error: BaseException) -> None:
    kind = ("unavailable" if isinstance(error, StoreUnavailable)
            else "write" if isinstance(error, StoreWriteError) else "other")
    STORE_ERRORS.labels(component, kind).inc()


# -- scraping -------------------------------------------------------------------------------------
class StoreGauges:
    """Queue length and running jobs, read from the store when scraped (at most once every
    `cache_seconds` per process), and whether the store answered."""

    def __init__(self, store, cache_seconds: float = GAUGE_CACHE_SECONDS) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._read_at = -float("inf")
        self._reading: tuple[int, int] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # one store read for scrapes that arrive together
            if time.monotonic() - self._read_at >= self.cache_seconds:
                self._reading = self._read_store()
                self._read_at = time.monotonic()
            reading = self._reading
        yield GaugeMetricFamily("jobs_store_up", "1 when the store answered the last reading of the gauges, "
                                "else 0 (jobs_queue_length and jobs_running are then left out).",
                                value=0 if reading is None else 1)
        if reading is None:
            return
        queued, running = reading
        yield GaugeMetricFamily("jobs_queue_length", "Pending jobs in the store (waiting for a worker, or "
                                "for their retry time), across every process and host.", value=queued)
        yield GaugeMetricFamily("jobs_running", "Jobs being rendered now, across every process and host.",
                                value=running)

    def _read_store(self) -> tuple[int, int] | None:
        try:
            return self.store.active_counts()  # counted from the store's index: no job is read
        except JobsError as error:
            store_error("metrics", error)
            log.warning("metrics: the store could not be read for the gauges: %s", error)
            return None


def multiprocess_dir() -> str | None:
    """The folder of multiprocess mode, checked; None when this process counts on its own."""
    if MULTIPROC_ENV not in os.environ:  # prometheus-client goes multiprocess on the name alone
        return None
    path = os.environ[MULTIPROC_ENV]
    if not os.path.isdir(path) or not os.access(path, os.W_OK | os.X_OK):
        raise InvalidInput(f"{MULTIPROC_ENV}={path!r} is not a folder this process can write to: create it "
                           "(empty) before starting the processes that share it, or unset it.")
    return path


def scrape_registry(store, cache_seconds: float = GAUGE_CACHE_SECONDS) -> CollectorRegistry:
    """What a scrape of this process shows: the counted metrics (every process's that shares the
    multiprocess folder, else this process's) and the store's gauges (read at most every
    `cache_seconds`)."""
    registry = CollectorRegistry()
    # The gauges first: a store error met reading them is then in this scrape's counters already.
    registry.register(StoreGauges(store, cache_seconds))
    if multiprocess_dir() is not None:
        multiprocess.MultiProcessCollector(registry)
    else:
        for metric in EVENT_METRICS:
            registry.register(metric)
    return registry


def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """(body, content type) of a scrape: Prometheus' text format, or OpenMetrics when asked for."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


@contextlib.contextmanager
def shared_counting(processes: int) -> Iterator[None]:
    """Around `serve --processes N`: the server processes count into one multiprocess folder, so a
    scrape of any of them shows the whole. Without PROMETHEUS_MULTIPROC_DIR, a fresh temporary
    folder for this run (removed after); a folder the user set is used as it is (it may be shared
    with workers on this host; the library asks that it be emptied before they all start)."""
    if processes < 2 or multiprocess_dir() is not None:
        yield
        return
    path = tempfile.mkdtemp(prefix="jobs-metrics-")
    os.environ[MULTIPROC_ENV] = path  # inherited by the server processes, which start afresh
    try:
        yield
    finally:
        del os.environ[MULTIPROC_ENV]
        shutil.rmtree(path, ignore_errors=True)
