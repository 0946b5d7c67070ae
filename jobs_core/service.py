"""JobService: the one entry point for everything that changes a job.

It validates input, picks the lifecycle rule and hands it to the store as an atomic change.
Pages, the API, the CLI and workers call this; none of them writes a job themselves.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from . import lifecycle, metrics
from .artifacts import Renders, open_renders
from .config import Settings, load_settings
from .errors import InvalidInput, JobNotFound, RendersUnavailable, TransitionConflict, UnreadableJob
from .ids import new_concept_id, new_job_id, validate_id
from .lifecycle import Lease
from .limits import LimitState, RendererLimits, RendererPause, check_renderer_names, pause_seconds
from .models import Concept, Event, Job, JobStatus, RenderRequest, StudyCell, parse_concept, parse_request, utcnow
from .png import is_whole_png
from .renderers import RenderTask, get_renderer, renderer_names
from .store import JobPage, JobStore, open_store
from .store.base import WorkerInfo

log = logging.getLogger("jobs_core.service")


@dataclass
class RepairReport:
    """What `JobService.repair` fixed, in words."""

    index_fixes: list[str] = field(default_factory=list)
    #: completed jobs whose image was missing or damaged, queued to be rendered again
    images_requeued: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.index_fixes or self.images_requeued)

    def lines(self) -> list[str]:
        return self.index_fixes + [f"job {job_id} had no whole image: queued to render again"
                                   for job_id in self.images_requeued]

    def summary(self) -> str:
        if not self.changed:
            return "Nothing to repair: the queue index and every completed job's image are whole."
        return (f"Repaired {len(self.index_fixes)} queue index entr{'y' if len(self.index_fixes) == 1 else 'ies'} "
                f"and queued {len(self.images_requeued)} job{'' if len(self.images_requeued) == 1 else 's'} "
                "whose image was missing or damaged.")


class JobService:
    def __init__(self, store: JobStore, settings: Settings | None = None, renders: Renders | None = None) -> None:
        self.store = store
        self.settings = settings or load_settings()
        #: where renders are kept: the store itself, or the bucket of JOBS_ARTIFACTS_URL
        self.renders = renders or open_renders(store)
        if self.settings.renderer_limits:  # a typo in a name would silently limit nothing
            check_renderer_names(self.settings.renderer_limits, renderer_names())
        #: what claims respect (JOBS_RENDERER_LIMITS); None without limits: nothing to count
        self.limits = RendererLimits(self.settings.renderer_limits, self.settings.lease_seconds) \
            if self.settings.renderer_limits else None

    @classmethod
    def from_env(cls, jobs_dir: str | os.PathLike | None = None) -> JobService:
        """The service on the store named by JOBS_STORE_URL, else JOBS_DIR (or `jobs_dir`)."""
        settings = load_settings(jobs_dir)
        location = settings.store_location if jobs_dir is None else str(jobs_dir)
        return cls(open_store(location), settings)

    # -- creating ----------------------------------------------------------------------------
    def submit(self, request: RenderRequest | dict, *, renderer: str | None = None,
               idempotency_key: str | None = None, job_id: str | None = None,
               study_id: str | None = None, study: StudyCell | None = None) -> Job:
        """Validate a render request and queue a job for it. Fast: a few small file writes.
        A design study (jobs_core.studies) names its jobs' ids itself, so a retried create
        finds the ones already made."""
        if not isinstance(request, RenderRequest):
            request = parse_request(request)
        chosen = get_renderer(renderer or self.settings.renderer)
        chosen.check_render_type(request.render_type)
        inputs = request.concept_inputs.model_dump()
        concept_id = request.concept_id or new_concept_id()
        job = Job(job_id=job_id or new_job_id(), concept_id=concept_id, project_id=request.project_id,
                  render_type=request.render_type, renderer=chosen.name, concept_inputs=inputs,
                  max_attempts=self.settings.max_attempts, idempotency_key=idempotency_key,
                  webhook=request.webhook, webhook_events_filter=request.webhook_events_filter,
                  study_id=study_id, study=study)
        # What an AI provider will be asked, stored up front so a user sees it while waiting.
        job.prompt = chosen.prompt(RenderTask(job.job_id, job.project_id, job.render_type, inputs))
        if request.concept_id is None:
            self.store.save_concept(Concept(concept_id=concept_id, project_id=job.project_id,
                                            concept_inputs=inputs, created_at=job.created_at))
        self.store.create(job, lifecycle.created(job))
        metrics.job_created(job)
        return job

    def resubmit(self, job_id: str, render_type: str, project_id: str | None = None) -> Job:
        """Render an existing job's concept again in another render type (same conceptId)."""
        source = self.get(job_id, project_id)
        return self.submit(RenderRequest(project_id=source.project_id, render_type=render_type,
                                         concept_inputs=parse_concept(source.concept_inputs),
                                         concept_id=source.concept_id), renderer=source.renderer)

    # -- reading -----------------------------------------------------------------------------
    def get(self, job_id: str, project_id: str | None = None) -> Job:
        return self.store.get(job_id, project_id)

    def list(self, project_id: str | None = None, status: JobStatus | str | None = None,
             limit: int | None = None, cursor: str | None = None) -> JobPage:
        if project_id is not None:
            validate_id(project_id, "projectId")
        if cursor is not None:
            validate_id(cursor, "cursor")
        if limit is not None and limit < 1:
            raise InvalidInput(f"limit must be at least 1, not {limit}.")
        return self.store.list_jobs(project_id, parse_status(status), limit, cursor)

    def queue_position(self, job: Job) -> int | None:
        """1 for the next job to be claimed; None unless the job is pending."""
        if job.status is not JobStatus.PENDING:
            return None
        queue = [job_id for _, job_id in self.store.pending()]
        return queue.index(job.job_id) + 1 if job.job_id in queue else None

    def events(self, job_id: str, project_id: str | None = None) -> list[Event]:
        events = self.store.events(job_id, project_id)
        if not events or events[0].type != "created":
            # A store may leave the creation out of the log (the file store does: the job file
            # records it, and a submit saves an inode); it is told from the job itself.
            try:
                events.insert(0, lifecycle.created(self.store.get(job_id, project_id)))
            except JobNotFound:
                pass
        return events

    def image(self, job: Job) -> bytes:
        _expect_image(job)
        return self.renders.load(job)

    def image_link(self, job: Job) -> str | None:
        """A short-lived URL of the render itself (presigned, in a bucket); None: serve `image`."""
        _expect_image(job)
        return self.renders.link(job)

    def image_stream(self, job: Job) -> Iterator[bytes] | None:
        """The render in pieces as the bucket sends them (JOBS_S3_PROXY); None: serve `image`."""
        _expect_image(job)
        return self.renders.stream(job)

    # -- user actions ------------------------------------------------------------------------
    def cancel(self, job_id: str, project_id: str | None = None) -> Job:
        job = self.store.modify(job_id, project_id, lifecycle.cancel)
        metrics.job_changed(job, None)  # counted when canceled at once (a running job stops later)
        return job

    def retry(self, job_id: str, project_id: str | None = None) -> Job:
        job = self.store.modify(job_id, project_id, lifecycle.retry)
        metrics.job_changed(job, "user")
        self.store.notify_work()
        return job

    def delete(self, job_id: str, project_id: str | None = None) -> None:
        if project_id is None:  # the renders in a bucket are found by project
            try:
                project_id = self.store.get(job_id).project_id
            except UnreadableJob:
                pass  # a corrupt document may always be deleted; its renders are then left
        self.store.delete(job_id, project_id, lifecycle.deletable)
        if project_id is None:
            return
        try:
            self.renders.forget(project_id, job_id)
        except RendersUnavailable as error:  # the job is gone; what is left in the bucket is only bytes
            log.warning("job %s deleted, its renders left in the bucket: %s", job_id, error)

    # -- worker side -------------------------------------------------------------------------
    def claim_next(self, worker_id: str, now: datetime | None = None,
                   renderers: Collection[str] | None = None) -> Job | None:
        """Claim the oldest due job (of one of `renderers`, when given: those this worker can run)."""
        now = now or utcnow()
        job = self.store.claim_next(partial(lifecycle.claim, worker_id=worker_id, now=now), now, renderers,
                                    self.limits)
        if job is not None:
            metrics.job_claimed(job)
        return job

    def claim(self, job_id: str, worker_id: str, project_id: str | None = None) -> Job:
        """Claim one named job (the API's /process, `submit --wait`). TransitionConflict if taken,
        or while its renderer is paused by its provider or at its cap (JOBS_RENDERER_LIMITS, counted
        by the store atomically with the claim, as for `claim_next`).
        """
        now = utcnow()
        pauses = LimitState(pauses={pause.renderer: pause for pause in self.store.renderer_pauses(now)})

        def claim_unless_paused(job: Job) -> lifecycle.Outcome:
            reason = pauses.reason(job.renderer)
            if reason is not None:
                raise TransitionConflict(f"Job {job.job_id} cannot start now. {reason}")
            return lifecycle.claim(job, worker_id, now)
        job = self.store.claim_named(job_id, project_id, claim_unless_paused, now, self.limits)
        metrics.job_claimed(job)
        return job

    def report_progress(self, lease: Lease, percent: int, stage: str) -> Job:
        return self.store.modify(lease.job_id, lease.project_id,
                                 partial(lifecycle.progress, lease=lease, percent=percent, stage=stage))

    def heartbeat(self, lease: Lease) -> Job:
        return self.store.modify(lease.job_id, lease.project_id, partial(lifecycle.heartbeat, lease=lease))

    def complete(self, lease: Lease, png: bytes, prompt: str | None = None) -> Job:
        if not is_whole_png(png):
            # Stores keep renders as .png, and the file store checks their ends after a power loss.
            raise InvalidInput(f"The renderer's image is not a whole PNG ({len(png)} bytes that do not "
                               "start with the PNG signature and end with its IEND chunk).")
        # The image is written first (or with the change, in one transaction): a completed job
        # always has its image. In a bucket too; imageUrl stays the API's own URL either way.
        url = f"/api/renders/{lease.project_id}/{lease.job_id}.png"
        return self._attempt_ended(self.renders.complete(self.store, lease, png, partial(
            lifecycle.complete, lease=lease, image_url=url, prompt=prompt)))

    def _attempt_ended(self, job: Job) -> Job:
        """Count the attempt's end; and when the job's renderer is capped, wake this process's idle
        claimers now, as one of them may take the freed slot (other processes find it at their next poll)."""
        metrics.attempt_ended(job)
        if self.limits is not None and self.limits.cap(job.renderer) is not None:
            self.store.notify_work()
        return job

    def fail(self, lease: Lease, message: str, retryable: bool = False) -> Job:
        job = self.store.modify(lease.job_id, lease.project_id, partial(
            lifecycle.fail, lease=lease, message=message, retryable=retryable,
            backoff_base=self.settings.retry_backoff_seconds))
        return self._attempt_ended(job)

    def confirm_cancel(self, lease: Lease) -> Job:
        return self._attempt_ended(self.store.modify(lease.job_id, lease.project_id,
                                                     partial(lifecycle.confirm_cancel, lease=lease)))

    def release(self, lease: Lease, reason: str | None = None, delay_seconds: float = 0.0) -> Job:
        """Hand a running job back without spending its attempt (shutdown, or a fault of the store)."""
        job = self.store.modify(lease.job_id, lease.project_id, partial(
            lifecycle.release, lease=lease, reason=reason, delay_seconds=delay_seconds))
        metrics.job_changed(job, None)  # counted only when a cancel was asked for (not a retry)
        return job

    def pause_for_provider(self, lease: Lease, renderer: str, retry_after: float, message: str) -> Job:
        """The provider said 429 with Retry-After: pause `renderer` fleet-wide for that long (within
        limits.MAX_PAUSE_SECONDS) and hand the job back to the queue, its attempt unspent."""
        until = utcnow() + timedelta(seconds=pause_seconds(retry_after))
        self.store.pause_renderer(RendererPause(renderer, until))
        return self.store.modify(lease.job_id, lease.project_id, partial(
            lifecycle.provider_paused, lease=lease, until=until, message=message))

    def reclaim_expired(self, now: datetime | None = None) -> list[Job]:
        """Requeue (or fail, when attempts are spent) jobs whose heartbeat is older than the lease."""
        now = now or utcnow()
        lease_seconds = self.settings.lease_seconds
        reclaimed = []
        for job in self.store.processing():
            if not lifecycle.is_expired(job, lease_seconds, now):
                continue
            try:
                reclaimed.append(self.store.modify(job.job_id, job.project_id, partial(
                    lifecycle.reclaim, lease_seconds=lease_seconds, now=now)))
            except (TransitionConflict, JobNotFound):
                continue  # it heartbeat, finished or was reclaimed by another worker meanwhile
            metrics.job_changed(reclaimed[-1], "lost_worker")
        if reclaimed:
            self.store.notify_work()
        return reclaimed

    # -- operations -------------------------------------------------------------------------------
    def repair(self) -> RepairReport:
        """Make the store whole after damage (a disk fault, files removed by hand): the store's own
        index agrees with its jobs again, and a completed job whose image is missing or not a whole
        PNG is rendered again (its attempt unspent). Safe to run twice, and while workers run."""
        report = RepairReport(index_fixes=self.store.repair_index())
        for job in self.store.iter_jobs():
            if job.status is JobStatus.COMPLETED and not self._has_whole_image(job):
                try:
                    self.store.modify(job.job_id, job.project_id, lifecycle.image_lost)
                except (TransitionConflict, JobNotFound):
                    continue  # retried, deleted or already requeued meanwhile
                report.images_requeued.append(job.job_id)
        if report.images_requeued:
            self.store.notify_work()
        return report

    def _has_whole_image(self, job: Job) -> bool:
        try:
            return is_whole_png(self.renders.load(job))
        except JobNotFound:
            return False

    # -- workers ------------------------------------------------------------------------------------
    def live_workers(self, now: datetime | None = None) -> list[WorkerInfo]:
        """Workers that said they were alive within the lease (they do so every heartbeat)."""
        now = now or utcnow()
        return self.store.workers(now - timedelta(seconds=self.settings.lease_seconds))

    def waiting_reason(self, job: Job, now: datetime | None = None) -> str | None:
        """Why a pending job cannot start, in plain words, when no live worker can run it; None
        when one can (it is simply queued) or the job is not pending."""
        if job.status is not JobStatus.PENDING:
            return None
        workers = self.live_workers(now)
        if not workers:
            return "No worker is running, so the job waits until one starts."
        if not any(job.renderer in worker.renderers for worker in workers):
            return (f"Waiting for a worker that can use the {job.renderer} renderer: it is not set up on any "
                    "running worker (ask whoever runs this service to add its key).")
        return self.limit_reason(job, now)

    def limit_reason(self, job: Job, now: datetime | None = None) -> str | None:
        """Why a pending job waits for its renderer's provider limits (a pause after a 429, or every
        slot of JOBS_RENDERER_LIMITS in use), in plain words; None when neither holds it back."""
        if job.status is not JobStatus.PENDING:
            return None
        return self.limit_state(now).reason(job.renderer)

    def limit_state(self, now: datetime | None = None) -> LimitState:
        """The pauses in force and, for capped renderers, the slots in use (live leases) at `now`."""
        now = now or utcnow()
        pauses = {pause.renderer: pause for pause in self.store.renderer_pauses(now)}
        caps = dict(self.settings.renderer_limits)
        in_use: dict[str, int] = {}
        if caps:
            for running in self.store.processing():
                if running.renderer in caps and not lifecycle.is_expired(running, self.settings.lease_seconds, now):
                    in_use[running.renderer] = in_use.get(running.renderer, 0) + 1
        return LimitState(pauses, caps, in_use)

    def has_work(self, now: datetime | None = None) -> bool:
        """Whether any job is pending or reclaimable (for `worker --drain`)."""
        now = now or utcnow()
        running = self.store.processing()  # first: a file store drops stale index entries here
        if self.store.pending():
            return True
        return any(lifecycle.is_expired(job, self.settings.lease_seconds, now) for job in running)


def _expect_image(job: Job) -> None:
    if job.status is not JobStatus.COMPLETED:
        raise JobNotFound(f"Job {job.job_id} has no image: it is {job.status.value}.")


def parse_status(status: JobStatus | str | None) -> JobStatus | None:
    if status is None or isinstance(status, JobStatus):
        return status
    try:
        return JobStatus(status)
    except ValueError:
        valid = ", ".join(s.value for s in JobStatus)
        raise InvalidInput(f"status '{status}' is not one of: {valid}.") from None
