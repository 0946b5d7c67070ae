"""Worker: a pool of threads that claim jobs, run renderers, heartbeat, and reclaim lost jobs.

Embeddable (the app and the API start one per process) or standalone
(`python -m jobs_core worker`). On stop, running jobs are released back to pending.

A fault of the store (a full disk, PostgreSQL out of reach) is not the job's fault: a job it
interrupts is handed back without spending its attempt (retried until the store takes it), and
the pool pauses claiming, says so once, and resumes by itself when a claim goes through again.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field

from . import metrics
from .errors import (
    STORE_FAULTS,
    JobCanceled,
    JobNotFound,
    JobsError,
    LeaseLost,
    ProviderRateLimited,
    RenderError,
    RendersUnavailable,
    TransitionConflict,
    WorkerStopping,
)
from .ids import new_id
from .lifecycle import Lease
from .models import Job, utcnow
from .renderers import RenderTask, get_renderer, renderer_names
from .retention import RetentionLoop, retention_days
from .service import JobService
from .store.base import WorkerInfo
from .webhooks_sender import WebhookSender

log = logging.getLogger("jobs_core.worker")
STORE_RETRY_SECONDS = 5.0  # how soon a job handed back for a store fault may run again
MAX_PAUSE_SECONDS = 30.0  # the longest wait between two claims while the store fails
#: Progress is written at most this often per job. A drawing reports six stages in 50 ms and a
#: person polls twice a second: writing each report would cost more than the render. A report in
#: between is only checked for a stop (lost lease, shutdown); a cancel is noticed at the next write.
PROGRESS_WRITE_SECONDS = 0.5


def runnable_renderers() -> frozenset[str]:
    """The renderers that can run in this process (an AI renderer needs its key)."""
    return frozenset(name for name in renderer_names() if get_renderer(name).configuration_problem() is None)


def default_worker_id() -> str:
    return f"{socket.gethostname()[:24]}-{os.getpid()}-{new_id('w')[-6:]}"


@dataclass
class _Running:
    lease: Lease
    lost: threading.Event = field(default_factory=threading.Event)
    #: a store fault met while reporting progress (a renderer may wrap what its callback raised)
    store_fault: JobsError | None = None


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
        #: why claiming is paused (the store fails), for logs and the app's sidebar; None when fine
        self.store_problem: str | None = None
        self._pause = poll_seconds
        #: jobs to hand back once the store takes writes again: (lease, reason)
        self._hand_backs: list[tuple[Lease, str]] = []
        #: the renderers this worker can run (set up here: keys present); it claims only their jobs
        self.renderers: frozenset[str] = runnable_renderers()
        self.claiming = False
        #: sends the store's webhook deliveries from this process too (JOBS_WEBHOOK_SENDERS threads)
        self.webhooks = WebhookSender(service.store)
        self.retention: RetentionLoop | None = None

    # -- lifecycle of the pool ---------------------------------------------------------------
    def start(self, claiming: bool = True) -> Worker:
        """Start the claim threads (unless claiming=False) and the heartbeat/reclaim thread."""
        days = retention_days() if claiming else None  # a bad JOBS_RETENTION_DAYS stops here, before any thread
        self.claiming = claiming
        self._say_alive()
        for index in range(self.concurrency if claiming else 0):
            self._spawn(self._claim_loop, f"jobs-worker-{index}")
        self._spawn(self._maintenance_loop, "jobs-maintenance")
        self.webhooks.start()
        if days is not None:  # JOBS_RETENTION_DAYS: its own thread, so a long prune delays no heartbeat
            self.retention = RetentionLoop(self.service.store, days, self.worker_id,
                                           renders=self.service.renders).start()
        return self

    def _say_alive(self) -> None:
        """Tell the store (so people, and `waiting_reason`) that this worker lives and what it can run."""
        if not self.claiming:
            return  # a pool that only heartbeats (the API's /process runs) takes nothing from the queue
        try:
            self.service.store.record_worker(WorkerInfo(self.worker_id, tuple(sorted(self.renderers)), utcnow(),
                                                        self.store_problem))
        except JobsError as error:
            log.warning("could not record this worker as alive: %s", error)

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
        if self.claiming:
            try:
                self.service.store.forget_worker(self.worker_id)
            except JobsError as error:
                log.warning("could not record this worker as stopped: %s", error)
        for thread in self._threads:
            thread.join(timeout)
        with self._guard:
            leftovers = list(self._running.values())
        for running in leftovers:
            running.lost.set()
            self._quietly(self.service.release, running.lease)
        self.webhooks.stop(timeout)
        if self.retention is not None:
            self.retention.stop()

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
                self.service.store.wait_for_work(self._pause if self.store_problem else self.poll_seconds)

    def _claim_and_run(self) -> Job | None:
        try:
            job = self.service.claim_next(self.worker_id, renderers=self.renderers)
        except STORE_FAULTS as error:
            self._store_failed(error)
            return None
        except JobsError as error:
            log.warning("claim failed: %s", error)
            return None
        self._store_works()
        if job is not None:
            self.run(job)
        return job

    def _store_failed(self, error: JobsError) -> None:
        metrics.store_error("worker", error)
        with self._guard:
            first = self.store_problem is None
            self.store_problem = str(error)
            self._pause = self.poll_seconds if first else min(self._pause * 2, MAX_PAUSE_SECONDS)
        if first:
            log.warning("claiming paused: the store is failing (%s); trying again every few seconds", error)

    def _store_works(self) -> None:
        with self._guard:
            was, self.store_problem, self._pause = self.store_problem, None, self.poll_seconds
        if was is not None:
            log.warning("the store works again: claiming resumed")

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
        last_written = [time.monotonic()]  # the claim was the last write

        def progress(percent: int, stage: str) -> None:
            if running.lost.is_set():
                raise LeaseLost(f"Job {job.job_id} was reclaimed by another worker.")
            if self._stopping.is_set():
                raise WorkerStopping("worker is shutting down")
            if time.monotonic() - last_written[0] < PROGRESS_WRITE_SECONDS:
                return
            try:
                self.service.report_progress(lease, percent, stage)
            except STORE_FAULTS as error:
                running.store_fault = error
                raise
            last_written[0] = time.monotonic()

        try:
            renderer = get_renderer(job.renderer)
            task = RenderTask(job.job_id, job.project_id, job.render_type, job.concept_inputs,
                              self.render_size)
            result = renderer.render(task, progress)
            return self.service.complete(lease, result.png, result.prompt)
        except STORE_FAULTS as error:
            return self._hand_back(lease, error)
        except Exception as error:
            if running.store_fault is not None:  # raised in our callback, whatever the renderer made of it
                return self._hand_back(lease, running.store_fault)
            return self._outcome_of(job, lease, error)

    def _outcome_of(self, job: Job, lease: Lease, error: Exception) -> Job | None:
        """What becomes of a job whose render raised `error` (not a fault of the store)."""
        if isinstance(error, JobCanceled):
            return self._quietly(self.service.confirm_cancel, lease)
        if isinstance(error, WorkerStopping):
            return self._quietly(self.service.release, lease)
        if isinstance(error, LeaseLost | TransitionConflict):
            log.info("job %s moved on without us: %s", job.job_id, error)
            return None
        if isinstance(error, ProviderRateLimited):  # before RenderError, which it is too
            log.warning("%s; pausing the %s renderer for every worker", error, job.renderer)
            return self._quietly(self.service.pause_for_provider, lease, job.renderer, error.seconds,
                                 f"the {job.renderer} provider answered too many requests")
        if isinstance(error, RenderError):
            return self._quietly(self.service.fail, lease, str(error), error.retryable)
        if isinstance(error, RendersUnavailable):  # the bucket refused the render: a later attempt may keep it
            return self._quietly(self.service.fail, lease, str(error), True)
        if isinstance(error, JobsError):
            return self._quietly(self.service.fail, lease, str(error), False)
        # a renderer bug must not kill the worker or reach the user as a trace
        log.error("renderer %s crashed on job %s:\n%s", job.renderer, job.job_id,
                  "".join(traceback.format_exception(error)))
        message = f"The {job.renderer} renderer failed unexpectedly ({type(error).__name__}: {error})."
        return self._quietly(self.service.fail, lease, message, False)

    def _hand_back(self, lease: Lease, fault: JobsError) -> Job | None:
        """The store failed under a running job: give it back unspent, to run again a little later.
        If the store cannot take even that, the maintenance thread tries again until it can."""
        reason = f"the store failed while the job ran ({fault}); it will run again"
        metrics.store_error("worker", fault)
        log.warning("job %s handed back: %s", lease.job_id, fault)
        try:
            return self.service.release(lease, reason, STORE_RETRY_SECONDS)
        except (LeaseLost, TransitionConflict):
            return None
        except JobsError:
            with self._guard:
                self._hand_backs.append((lease, reason))
            return None

    def _retry_hand_backs(self) -> None:
        with self._guard:
            waiting, self._hand_backs = self._hand_backs, []
        for lease, reason in waiting:
            try:
                self.service.release(lease, reason, STORE_RETRY_SECONDS)
            except (LeaseLost, TransitionConflict, JobNotFound):
                continue  # reclaimed, canceled or deleted meanwhile
            except JobsError:
                with self._guard:
                    self._hand_backs.append((lease, reason))

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
            self._say_alive()
            self._retry_hand_backs()
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
