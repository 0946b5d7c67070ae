"""The store contract, stated once. Every backend (files, PostgreSQL, memory) implements exactly this.

Stores only store: they never decide a status. State changes arrive as a `Change` function from
`jobs_core.lifecycle`, which a store applies atomically to the job as it is at that instant; the
`Outcome` it returns also says how durable the write must be.

Three parts:
- `JobStore`: what the app, the API and workers use (create, read, change, claim, images, events);
- its views for readers of every job (`scan_jobs`, `read_record`, `watch_jobs`: the monitor);
- `CopyableStore`: the few extra calls only `migrate` needs.
"""
from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ..errors import InvalidInput, JobNotFound, JobsError, UnreadableJob
from ..lifecycle import Outcome
from ..limits import RendererLimits, RendererPause
from ..models import Concept, Event, Job, JobStatus
from ..webhooks import Delivery, with_deliveries

Change = Callable[[Job], "Outcome | tuple[Job, Event | None]"]
OnChange = Callable[[set[str]], None]
log = logging.getLogger("jobs_core.store")


def apply_change(change: Change, job: Job) -> Outcome:
    """Run `change` on `job`; a plain (job, event) pair is a durable outcome. The outcome carries
    the webhook deliveries the change makes due, which the store writes with the job."""
    return with_deliveries(job, Outcome(*change(job)))


@dataclass(frozen=True)
class Unreadable:
    """A file (or row) in the store that is not a readable job, and why."""

    location: str
    reason: str


@dataclass(frozen=True)
class JobRecord:
    """What the store holds at one place where a job may be, for views over every job.

    `key` is the backend's own name for the place (stable; `JobStore.record_key` gives a job's);
    `doc` the job document as JSON data (camelCase, as `Job.public()` writes it) when readable;
    `problem` why the place does not hold a readable job. Neither: nothing is there (any more).
    """

    key: str
    location: str
    doc: dict | None = None
    problem: str | None = None

    @property
    def gone(self) -> bool:
        return self.doc is None and self.problem is None


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as it last said it was alive: which renderers it can run, and any trouble it has."""

    worker_id: str
    renderers: tuple[str, ...]
    seen_at: datetime
    problem: str | None = None


@dataclass(frozen=True)
class RemovableJob:
    """A job to remove (retention), with what never changes in it: the store re-reads the job
    itself, under its lock, before removing it."""

    project_id: str
    job_id: str
    concept_id: str
    idempotency_key: str | None = None

    @classmethod
    def of(cls, job: Job) -> RemovableJob:
        return cls(job.project_id, job.job_id, job.concept_id, job.idempotency_key)


@dataclass(frozen=True)
class Removed:
    """One job removed whole (or, in a dry run, that would be): its status then, the bytes its
    document, render, events and webhook deliveries took, and whether it had a render."""

    job_id: str
    project_id: str
    status: JobStatus
    bytes_freed: int
    had_render: bool


@dataclass
class Removal:
    """What one `remove_jobs` call removed (or would remove); `other_bytes`: the concepts', and
    what an interrupted removal had left of jobs already gone."""

    jobs: list[Removed] = field(default_factory=list)
    concepts: int = 0
    other_bytes: int = 0


@dataclass(frozen=True)
class StoreSize:
    """How much the store holds: jobs, renders, and the bytes of everything (documents, renders,
    events, concepts, webhook deliveries)."""

    jobs: int
    renders: int
    bytes: int


class JobWatch(Protocol):
    """A running watch started by `JobStore.watch_jobs`."""

    #: True when changes are found by asking again (polling) rather than by being told
    polling: bool

    def describe(self) -> str:
        """One sentence for people: how changes are learnt ("a file watcher ...")."""

    def close(self) -> None: ...


@dataclass
class JobPage:
    """One page of a listing, newest first. `next_cursor` continues it; None at the end."""

    jobs: list[Job]
    unreadable: list[Unreadable] = field(default_factory=list)
    next_cursor: str | None = None


class JobStore(ABC):
    """Where jobs, concepts, images and event logs live."""

    #: whether `wait_for_work` is woken by other processes (else it is a polling fallback)
    wakes_across_processes: bool = False

    @abstractmethod
    def describe(self) -> str:
        """Where the store is, for people ("files in /srv/.jobs")."""

    @abstractmethod
    def create(self, job: Job, event: Event | None) -> None:
        """Insert a new job. The job must not exist yet (ids are unique)."""

    @abstractmethod
    def get(self, job_id: str, project_id: str | None = None) -> Job:
        """The job as it is now. Raises JobNotFound, or UnreadableJob for a corrupt document."""

    @abstractmethod
    def modify(self, job_id: str, project_id: str | None, change: Change) -> Job:
        """Atomically: read the job, apply `change`, write the result and log its event.

        This is the compare-and-set primitive: the change function raises (TransitionConflict,
        LeaseLost, JobCanceled) when the job is not as the caller expected, and then nothing is
        written. Concurrent modifications of one job are serialised across threads and processes.
        """

    @abstractmethod
    def claim_next(self, change: Change, now: datetime, renderers: Collection[str] | None = None,
                   limits: RendererLimits | None = None) -> Job | None:
        """Apply `change` (a claim) to the oldest pending job available at `now`; None if none.

        With `renderers`, only a job whose renderer is one of them: a worker never takes a job it
        cannot run (an AI renderer whose key it lacks), leaving it for one that can.
        Never a job whose renderer is paused at `now` (`pause_renderer`). With `limits`, never a job
        whose renderer already has `limits.cap(renderer)` jobs in processing with a live lease,
        counted atomically with the claim across processes and hosts (two claimers cannot both
        take the last slot). Jobs of other renderers are claimed meanwhile (no head-of-line wait).
        Exactly one caller wins each job. Must not scan finished jobs to find work.
        """

    @abstractmethod
    def claim_named(self, job_id: str, project_id: str | None, change: Change, now: datetime,
                    limits: RendererLimits | None = None) -> Job:
        """`modify` for a claim of one named job (the API's /process, `submit --wait`): with
        `limits`, the renderer's cap is counted as `claim_next` counts it, atomically with the
        claim, so named claims and `claim_next` together never pass it; RendererFull at the cap.
        """

    # -- provider pauses (a 429 with Retry-After), shared by every worker of the store ----------
    @abstractmethod
    def pause_renderer(self, pause: RendererPause) -> None:
        """Pause claims of `pause.renderer` until `pause.until`; a pause already in force that
        ends later is kept (two workers meeting one provider's 429 never shorten its wait)."""

    @abstractmethod
    def renderer_pauses(self, now: datetime) -> list[RendererPause]:
        """The pauses still in force at `now`, by renderer."""

    @abstractmethod
    def processing(self) -> list[Job]:
        """Every job in processing (for reclaiming expired leases); must not scan finished jobs."""

    @abstractmethod
    def pending(self) -> list[tuple[datetime, str]]:
        """(availableAt, jobId) of every pending job, in queue order."""

    def active_counts(self) -> tuple[int, int]:
        """(pending, processing): how many jobs wait and run, for gauges read often (metrics).
        This default lists them; a backend may count its index instead of reading each job."""
        return len(self.pending()), len(self.processing())

    @abstractmethod
    def list_jobs(self, project_id: str | None = None, status: JobStatus | None = None,
                  limit: int | None = None, cursor: str | None = None) -> JobPage:
        """Jobs newest first (by jobId), optionally one project / one status, paginated."""

    @abstractmethod
    def projects(self) -> list[str]:
        """Every project id with at least one job."""

    @abstractmethod
    def delete(self, job_id: str, project_id: str | None, check: Callable[[Job], None]) -> None:
        """Remove a job with its image and events, if `check(job)` does not raise."""

    # -- retention (jobs_core.retention decides what goes; the store removes it) ------------------
    @abstractmethod
    def remove_jobs(self, jobs: list[RemovableJob], check: Callable[[Job], None],
                    concepts: Collection[tuple[str, str]] = (), *, dry_run: bool = False) -> Removal:
        """Remove each job whole (document, render, events, webhook deliveries) if `check(job)`,
        on the job as it is now, does not raise; then each (projectId, conceptId) of `concepts`
        unless a job of `jobs` that uses it was kept. A dry run removes nothing and tells what
        would go. A crash (kill -9) at any moment leaves every job whole or gone; what a crash
        left of a gone job is removed by the next call or by `repair_index`."""

    @abstractmethod
    def store_size(self) -> StoreSize:
        """Jobs, renders and bytes held now (for the monitor: it asks at most once a minute)."""

    @abstractmethod
    def claim_prune_turn(self, now: datetime, every: timedelta) -> bool:
        """True for exactly one caller per `every`, across processes and hosts: that caller prunes
        (the store records `now` as when it last did); False when another did within `every`."""

    @abstractmethod
    def last_pruned_at(self) -> datetime | None:
        """When a worker last took its turn to prune (None: never)."""

    @abstractmethod
    def save_concept(self, concept: Concept) -> None: ...

    @abstractmethod
    def load_concept(self, project_id: str, concept_id: str) -> Concept: ...

    @abstractmethod
    def save_image(self, project_id: str, job_id: str, png: bytes) -> None: ...

    @abstractmethod
    def load_image(self, project_id: str, job_id: str) -> bytes: ...

    def save_image_and_modify(self, project_id: str, job_id: str, png: bytes, change: Change) -> Job:
        """Save the job's image, then `modify` it (a completion: a completed job always has its image).

        This default makes two writes, the image first; a backend may do both in one transaction,
        in which case a refused change leaves no image behind either.
        """
        self.save_image(project_id, job_id, png)
        return self.modify(job_id, project_id, change)

    @abstractmethod
    def events(self, job_id: str, project_id: str | None = None) -> list[Event]:
        """The job's event log, oldest first."""

    # -- workers, as they say they are alive (what can run, for people and for "why is it waiting") --
    @abstractmethod
    def record_worker(self, info: WorkerInfo) -> None:
        """Record that a worker is alive (called every few seconds); not a durable write."""

    @abstractmethod
    def workers(self, seen_since: datetime) -> list[WorkerInfo]:
        """Workers seen alive since `seen_since`, by id. Long-silent entries may be dropped."""

    @abstractmethod
    def forget_worker(self, worker_id: str) -> None:
        """A worker that stopped cleanly."""

    def repair_index(self) -> list[str]:
        """Make the backend's own indexes agree with its jobs again; what was fixed, in words.

        Only a store that keeps an index beside its documents (the file store's queue markers)
        has anything to do here; a database keeps its indexes itself.
        """
        return []

    # -- views over every job (the monitor) ----------------------------------------------------
    def record_key(self, project_id: str, job_id: str) -> str:
        """The key under which `scan_jobs` and `watch_jobs` name this job."""
        return f"{project_id}/{job_id}"

    def scan_jobs(self) -> Iterator[JobRecord]:
        """Every job document, and every place that should hold one but is unreadable (with why).

        This default reads page by page through `list_jobs`; backends may read faster.
        """
        cursor = None
        while True:
            page = self.list_jobs(limit=1000, cursor=cursor)
            for bad in page.unreadable:
                yield JobRecord(key=bad.location, location=bad.location, problem=bad.reason)
            for job in page.jobs:
                yield self._record(job)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def read_record(self, key: str) -> JobRecord:
        """The place `key` as it is now (after a change was reported)."""
        project_id, _, job_id = key.partition("/")
        try:
            return self._record(self.get(job_id, project_id))
        except JobNotFound:
            return JobRecord(key=key, location=self._location(key))
        except (UnreadableJob, InvalidInput) as error:  # an unavailable store raises: read it again later
            return JobRecord(key=key, location=self._location(key), problem=str(error))

    def watch_jobs(self, on_change: OnChange, *, poll_seconds: float = 2.0, mode: str = "auto") -> JobWatch:
        """Call `on_change(keys)` from a background thread whenever jobs change, in any process.

        mode "poll" asks a backend not to rely on notifications (a network file system, where a
        watcher hears nothing of other hosts' writes) but to look again every `poll_seconds`.

        This default asks `jobs_updated_since` every `poll_seconds` (deletions are not seen: a
        reader learns of them when `read_record` finds the place empty). Backends that can be
        told of changes (a file watcher, LISTEN/NOTIFY, their own writes) override it.
        """
        return _UpdatedSincePoller(self, on_change, poll_seconds)

    def _record(self, job: Job) -> JobRecord:
        key = self.record_key(job.project_id, job.job_id)
        return JobRecord(key=key, location=self._location(key), doc=job.public())

    def _location(self, key: str) -> str:
        return f"{self.describe()}: {key}"

    def iter_jobs(self) -> Iterator[Job]:
        """Every readable job (all pages)."""
        cursor = None
        while True:
            page = self.list_jobs(limit=1000, cursor=cursor)
            yield from page.jobs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def jobs_updated_since(self, since: datetime | None) -> list[Job]:
        """Jobs whose updatedAt is later than `since` (every job when None), for incremental views.

        This default reads everything; backends with an index on updatedAt override it.
        """
        return [job for job in self.iter_jobs() if since is None or job.updated_at > since]

    def find_by_idempotency_key(self, project_id: str, key: str) -> Job | None:
        """The job of `project_id` created with this Idempotency-Key, or None.

        This default scans the project's jobs. Backends override it with an index; to make
        "same key, one job" race-free, `create` must also refuse a second job with the same
        (projectId, idempotencyKey) by raising TransitionConflict.
        """
        cursor = None
        while True:
            page = self.list_jobs(project_id, limit=1000, cursor=cursor)
            for job in page.jobs:
                if job.idempotency_key == key:
                    return job
            if page.next_cursor is None:
                return None
            cursor = page.next_cursor

    def _wake_event(self) -> threading.Event:
        return self.__dict__.setdefault("_wake", threading.Event())

    def notify_work(self) -> None:
        """Wake this process's idle workers: a job became available."""
        self._wake_event().set()

    def wait_for_work(self, timeout: float) -> None:
        """Block until `notify_work` or `timeout`: other processes' work is found at the next poll
        unless the backend wakes across processes (PostgreSQL's LISTEN/NOTIFY)."""
        event = self._wake_event()
        event.wait(timeout)
        event.clear()

    # -- the webhook outbox (jobs_core.webhooks decides what is in it; senders empty it) -------
    # Deliveries arrive with the change that makes them due (`Outcome.deliveries`, written in the
    # same atomic write as the job) or, for alerts, through `enqueue_deliveries`. A sender claims
    # one, sends it, then finishes or retries it; a claim expires after its lease, so a sender that
    # died leaves its delivery to another. Of one key (a job), only the first delivery is claimable.
    @abstractmethod
    def enqueue_deliveries(self, deliveries: list[Delivery]) -> None:
        """Add deliveries that no job change carries (alerts), durably."""

    @abstractmethod
    def claim_delivery(self, now: datetime, lease_seconds: float) -> Delivery | None:
        """The next due delivery (the first of its key), claimed for `lease_seconds`; None if none."""

    @abstractmethod
    def finish_delivery(self, delivery: Delivery) -> bool:
        """Remove a claimed delivery (sent, or given up); False if its claim was lost meanwhile."""

    @abstractmethod
    def retry_delivery(self, delivery: Delivery) -> bool:
        """Put a claimed delivery back as it is now (attempts, next_at, last_error); False if its
        claim was lost meanwhile."""

    @abstractmethod
    def deliveries(self) -> list[Delivery]:
        """Every delivery in the outbox, claimed ones too, by key and order."""

    @abstractmethod
    def webhook_secret(self, candidate: str) -> str:
        """The store's signing secret: `candidate` if none was stored yet, else the stored one.
        Atomic: processes racing with different candidates all get the one that won."""

    def _delivery_event(self) -> threading.Event:
        return self.__dict__.setdefault("_deliveries_due", threading.Event())

    def notify_deliveries(self) -> None:
        """Wake this process's idle webhook senders: a delivery was queued."""
        self._delivery_event().set()

    def wait_for_deliveries(self, timeout: float) -> None:
        event = self._delivery_event()
        event.wait(timeout)
        event.clear()

    def close(self) -> None:
        """Release connections, watchers and locks."""


class CopyableStore(ABC):
    """What `migrate` needs beyond `JobStore`: copying one store into another, exactly."""

    @abstractmethod
    def append_events(self, project_id: str, events: list[Event]) -> None:
        """Add events to a job's log exactly as they are."""

    @abstractmethod
    def iter_concepts(self) -> Iterator[Concept]:
        """Every readable saved concept."""


class _UpdatedSincePoller:
    """`watch_jobs` for any store: ask for jobs updated since the newest change seen."""

    polling = True
    #: ask again from a little before the newest change seen: a transaction that committed late
    #: carries an updatedAt older than rows already seen. Reporting a job twice is harmless.
    overlap = timedelta(seconds=5)

    def __init__(self, store: JobStore, on_change: OnChange, poll_seconds: float) -> None:
        self.store, self.on_change, self.poll_seconds = store, on_change, poll_seconds
        self.newest: datetime | None = None
        self._stop = threading.Event()
        self.poll_once()  # from now on every change is seen
        self._thread = threading.Thread(target=self._run, name="jobs-watch-poll", daemon=True)
        self._thread.start()

    def describe(self) -> str:
        return f"the store is asked for changed jobs every {self.poll_seconds:g} s"

    def poll_once(self) -> set[str]:
        since = None if self.newest is None else self.newest - self.overlap
        jobs = self.store.jobs_updated_since(since)
        if jobs:
            self.newest = max(self.newest or jobs[0].updated_at, *(job.updated_at for job in jobs))
        return {self.store.record_key(job.project_id, job.job_id) for job in jobs}

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                keys = self.poll_once()
            except JobsError as error:  # the store is briefly unavailable: try again next time
                log.warning("could not read changed jobs: %s", error)
                continue
            if keys:
                self.on_change(keys)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
