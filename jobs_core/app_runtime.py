"""The Streamlit app's runtime: the service, the worker pool and the monitor's index of one server
process, shared by every session and both pages.

The app makes one with `AppRuntime.start` inside `st.cache_resource` (see `pages/__init__.py`);
nothing here imports streamlit, so it runs and is tested on its own.
"""
from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from .app_settings import AppSettings
from .lifecycle import is_expired
from .models import utcnow
from .renderers import get_renderer
from .service import JobService
from .worker import Worker

if TYPE_CHECKING:
    from .monitor import JobIndex


@dataclass
class AppRuntime:
    """The service the pages use, this process's worker pool (None when disabled) and, once the
    monitor has been opened, its index of every job."""

    settings: AppSettings
    service: JobService
    worker: Worker | None
    _index: JobIndex | None = field(default=None, init=False, repr=False)
    _index_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def start(cls, settings: AppSettings) -> AppRuntime:
        """Open the store and start `settings.workers` worker threads on it (none when 0).

        InvalidInput (one sentence) for a bad JOBS_* setting or an unknown JOBS_RENDERER.
        """
        service = JobService.from_env(settings.store_location)  # a directory or a store URL
        get_renderer(service.settings.renderer)  # before any worker claims a job it cannot render
        worker = Worker(service, settings.workers).start() if settings.workers > 0 else None
        runtime = cls(settings, service, worker)
        # A server that shuts down hands its running jobs back at once instead of leaving them for
        # the lease to expire (a kill -9 still loses nothing: another worker reclaims them later).
        atexit.register(runtime.stop)
        return runtime

    @property
    def workers_running(self) -> bool:
        return self.worker is not None and self.worker.alive

    def monitor_index(self) -> JobIndex:
        """The index of every job in the store, kept current by its watcher.

        Built on first use, since building it reads every job; the lock makes sessions that open
        the monitor at the same moment wait for that one build instead of starting their own.
        A failure (e.g. a bad JOBS_MONITOR_WATCH) is raised and the next call tries again.
        """
        from .monitor import JobIndex  # imported on first use: pandas and the watcher are the monitor's alone

        with self._index_lock:
            if self._index is None:
                self._index = JobIndex.open(self.service)
            return self._index

    def stop(self) -> None:
        """Stop the index's watcher and the pool: running jobs go back to pending for the next worker."""
        atexit.unregister(self.stop)
        with self._index_lock:
            if self._index is not None:
                self._index.close()
                self._index = None
        if self.worker is not None:
            self.worker.stop()
        self.service.store.close()


def live_workers(service: JobService, now: datetime | None = None) -> dict[str, datetime]:
    """Workers seen alive through their running jobs' heartbeats: workerId -> last heartbeat.

    An idle external worker leaves no trace in the store, so this only shows workers at work.
    """
    now = now or utcnow()
    seen: dict[str, datetime] = {}
    for job in service.store.processing():
        if job.worker_id and job.heartbeat_at and not is_expired(job, service.settings.lease_seconds, now):
            seen[job.worker_id] = max(job.heartbeat_at, seen.get(job.worker_id, job.heartbeat_at))
    return seen
