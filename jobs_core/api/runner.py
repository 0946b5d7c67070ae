"""Running the job named by POST /api/jobs/{jobId}/process, in this process, in the background.

The render runs in its own thread under the API's Worker (which heartbeats it), so it goes on
when the HTTP client disconnects or times out — the seed's main limitation. The claim is the
store's compare-and-set, so a second /process never starts a second render.
"""
from __future__ import annotations

import logging
import threading

from ..errors import TransitionConflict
from ..models import Job, JobStatus
from ..service import JobService
from ..worker import Worker

log = logging.getLogger("jobs_core.api")


class InlineRunner:
    def __init__(self, service: JobService, worker: Worker, max_running: int) -> None:
        self.service = service
        self.worker = worker
        self._slots = threading.BoundedSemaphore(max_running)
        self._closed = threading.Event()

    def start(self, job: Job) -> Job | None:
        """Claim `job` and start rendering it: the claimed job, or None when it is not ours to run
        (not pending, claimed elsewhere first, backing off, every slot busy, or stopping)."""
        if job.status is not JobStatus.PENDING or self._closed.is_set():
            return None
        if not self._slots.acquire(blocking=False):
            return None  # busy: the job stays pending for a worker or a later /process
        try:
            claimed = self.service.claim(job.job_id, self.worker.worker_id, job.project_id)
        except TransitionConflict:
            self._slots.release()
            return None
        threading.Thread(target=self._run, args=(claimed,), name=f"jobs-process-{job.job_id}",
                         daemon=True).start()
        return claimed

    def _run(self, job: Job) -> None:
        try:
            self.worker.run(job)
        except Exception:  # Worker.run already turns render errors into a failed job; this is a bug
            log.exception("inline run of job %s crashed", job.job_id)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Start nothing more; running renders are released by Worker.stop."""
        self._closed.set()
