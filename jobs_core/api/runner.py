"""Running the jobs named by POST /api/jobs/{jobId}/process, in this process, in the background.

Each render runs in its own thread under the API's Worker (which heartbeats it), so it goes on
when the HTTP client disconnects or times out — the seed's main limitation. The claim is the
store's compare-and-set, so a second /process never starts a second render. At most
`max_running` renders run at once; further requests wait in a queue and are claimed as renders
finish, so a job whose /process arrived while every slot was busy still runs here.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict

from ..errors import JobsError
from ..models import Job, JobStatus, utcnow
from ..service import JobService
from ..worker import Worker

log = logging.getLogger("jobs_core.api")
MAX_QUEUED = 10_000  # a bound on memory; past it, jobs stay pending for workers or a later /process


class InlineRunner:
    def __init__(self, service: JobService, worker: Worker, max_running: int) -> None:
        self.service = service
        self.worker = worker
        self.max_running = max_running
        self._running = 0
        self._queued: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def start(self, job: Job) -> Job | None:
        """Claim `job` and start rendering it: the claimed job, or None when it is not started now
        (not pending, claimed elsewhere first, backing off, queued behind busy slots, or stopping)."""
        if job.status is not JobStatus.PENDING or self.max_running == 0:
            return None
        with self._lock:
            if self._closed:
                return None
            if self._running >= self.max_running:
                if len(self._queued) < MAX_QUEUED:
                    self._queued.setdefault(job.job_id, job)
                return None
            self._running += 1
        claimed = self._claim(job)
        if claimed is None:
            self._spawn(self._take_next())  # the slot passes to a queued job, or is freed
            return None
        self._spawn(claimed)
        return claimed

    def _spawn(self, job: Job | None) -> None:
        if job is not None:
            threading.Thread(target=self._run, args=(job,), name=f"jobs-process-{job.job_id}", daemon=True).start()

    def queued(self) -> int:
        with self._lock:
            return len(self._queued)

    def _claim(self, job: Job) -> Job | None:
        try:
            return self.service.claim(job.job_id, self.worker.worker_id, job.project_id)
        except JobsError:  # taken by a worker, canceled, deleted or backing off: not ours to run
            return None

    def _run(self, job: Job | None) -> None:
        while job is not None:
            try:
                self._retry_later(self.worker.run(job))
            except Exception:  # Worker.run turns render errors into a failed job; this is a bug
                log.exception("inline run of job %s crashed", job.job_id)
            job = self._take_next()

    def _retry_later(self, job: Job | None) -> None:
        """A retryable failure put the job back to pending with a backoff: run it here again once
        it is due, so a /process caller with no workers behind the API still gets its attempts."""
        if job is None or job.status is not JobStatus.PENDING:
            return
        delay = max(0.0, (job.available_at - utcnow()).total_seconds())
        timer = threading.Timer(delay, self.start, args=(job,))
        timer.daemon = True
        timer.start()

    def _take_next(self) -> Job | None:
        """Claim the next queued job for the slot the caller holds; else free the slot (None)."""
        while True:
            with self._lock:
                if self._closed or not self._queued:
                    self._running -= 1
                    return None
                _, job = self._queued.popitem(last=False)
            claimed = self._claim(job)
            if claimed is not None:
                return claimed

    def close(self) -> None:
        """Start nothing more; queued jobs stay pending in the store; running ones are released
        by Worker.stop."""
        with self._lock:
            self._closed = True
            self._queued.clear()
