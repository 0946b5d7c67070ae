"""Worker: a pool of threads that claim jobs, run renderers, heartbeat, and reclaim lost jobs.

Embeddable (the app and the API start one per process) or standalone
(`python -m jobs_core worker`). On stop, running jobs are released back to pending.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from dataclasses import dataclass, field

from .errors import JobCanceled, JobsError, LeaseLost, RenderError, TransitionConflict, WorkerStopping
from .ids import new_id
from .lifecycle import Lease
from .models import Job
from .renderers import RenderTask, get_renderer
from .service import JobService

log = logging.getLogger("jobs_core.worker")


def default_worker_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{new_id('w')[-6:]}"


@dataclass
class _Running:
    lease: Lease
    lost: threading.Event = field(default_factory=threading.Event)


class Worker:
    def __init__(self, service: JobService, concurrency: int = 1, worker_id: str | None = None,
                 poll_seconds: float = 0.5, render_size: int | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}.")
        self.service = service
        self.concurrency = concurrency
        self.worker_id = worker_id or default_worker_id()
        self.poll_seconds = poll_seconds
        self.render_size = render_size  # None: each renderer applies JOBS_RENDER_SIZE and its own bounds
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running: dict[str, _Running] = {}
        self._guard = threading.Lock()
        self._busy = 0  # threads between "about to claim" and "done running": drain waits for 0
        self.processed = 0

    # -- lifecycle of the pool ---------------------------------------------------------------
    def start(self, claiming: bool = True) -> Worker:
        """Start the claim threads (unless claiming=False) and the heartbeat/reclaim thread."""
        for index in range(self.concurrency if claiming else 0):
            self._spawn(self._claim_loop, f"jobs-worker-{index}")
        self._spawn(self._maintenance_loop, "jobs-maintenance")
        return self

    def _spawn(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    @property
    def alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads) and not self._stopping.is_set()

    def running_jobs(self) -> list[str]:
        with self._guard:
            return list(self._running)

    def idle(self) -> bool:
        """No thread is claiming or running a job right now."""
        with self._guard:
            return self._busy == 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; running renders stop at their next progress report and are released.

        A render that does not report within `timeout` is released anyway; if it finishes later,
        its completion is refused because the lease moved on.
        """
        self._stopping.set()
        self.service.store.notify_work()
        for thread in self._threads:
            thread.join(timeout)
        with self._guard:
            leftovers = list(self._running.values())
        for running in leftovers:
            running.lost.set()
            self._quietly(self.service.release, running.lease)

    # -- claiming and running ----------------------------------------------------------------
    def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            with self._guard:
                self._busy += 1
            try:
                job = self._claim_and_run()
            finally:
                with self._guard:
                    self._busy -= 1
            if job is None:
                self.service.store.wait_for_work(self.poll_seconds)

    def _claim_and_run(self) -> Job | None:
        try:
            job = self.service.claim_next(self.worker_id)
        except JobsError as error:
            log.warning("claim failed: %s", error)
            return None
        if job is not None:
            self.run(job)
        return job

    def run(self, job: Job) -> Job | None:
        """Run a job this worker has claimed, to completion, failure, cancel or release."""
        running = _Running(Lease.of(job))
        with self._guard:
            self._running[job.job_id] = running
        try:
            return self._execute(job, running)
        finally:
            with self._guard:
                self._running.pop(job.job_id, None)
            self.processed += 1

    def _execute(self, job: Job, running: _Running) -> Job | None:
        lease = running.lease

        def progress(percent: int, stage: str) -> None:
            if running.lost.is_set():
                raise LeaseLost(f"Job {job.job_id} was reclaimed by another worker.")
            if self._stopping.is_set():
                raise WorkerStopping("worker is shutting down")
            self.service.report_progress(lease, percent, stage)

        try:
            renderer = get_renderer(job.renderer)
            task = RenderTask(job.job_id, job.project_id, job.render_type, job.concept_inputs,
                              self.render_size)
            result = renderer.render(task, progress)
            return self.service.complete(lease, result.png, result.prompt)
        except JobCanceled:
            return self._quietly(self.service.confirm_cancel, lease)
        except WorkerStopping:
            return self._quietly(self.service.release, lease)
        except (LeaseLost, TransitionConflict) as error:
            log.info("job %s moved on without us: %s", job.job_id, error)
            return None
        except RenderError as error:
            return self._quietly(self.service.fail, lease, str(error), error.retryable)
        except JobsError as error:
            return self._quietly(self.service.fail, lease, str(error), False)
        except Exception as error:  # a renderer bug must not kill the worker or reach the user as a trace
            log.error("renderer %s crashed on job %s:\n%s", job.renderer, job.job_id, traceback.format_exc())
            message = f"The {job.renderer} renderer failed unexpectedly ({type(error).__name__}: {error})."
            return self._quietly(self.service.fail, lease, message, False)

    def _quietly(self, action, *args) -> Job | None:
        try:
            return action(*args)
        except (LeaseLost, TransitionConflict) as error:
            log.info("%s: %s", action.__name__, error)
        except JobsError as error:
            log.warning("%s failed: %s", action.__name__, error)
        return None

    # -- heartbeats and reclaiming -----------------------------------------------------------
    def _maintenance_loop(self) -> None:
        interval = self.service.settings.heartbeat_seconds
        while not self._stopping.wait(interval):
            self._heartbeat_all()
            try:
                for job in self.service.reclaim_expired():
                    log.warning("reclaimed job %s (%s): %s", job.job_id, job.status.value, job.error)
            except JobsError as error:
                log.warning("reclaim failed: %s", error)

    def _heartbeat_all(self) -> None:
        with self._guard:
            running = list(self._running.values())
        for item in running:
            try:
                self.service.heartbeat(item.lease)
            except (LeaseLost, TransitionConflict):
                item.lost.set()  # the renderer stops at its next progress report
            except JobsError as error:
                log.warning("heartbeat failed for %s: %s", item.lease.job_id, error)
