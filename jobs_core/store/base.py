"""The store contract, stated once. Every backend (files, PostgreSQL) implements exactly this.

Stores only store: they never decide a status. State changes arrive as a `Change` function from
`jobs_core.lifecycle`, which a store applies atomically to the job as it is at that instant.
"""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from ..models import Concept, Event, Job, JobStatus

Change = Callable[[Job], "tuple[Job, Event | None]"]


@dataclass(frozen=True)
class Unreadable:
    """A file (or row) in the store that is not a readable job, and why."""

    location: str
    reason: str


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
    def claim_next(self, change: Change, now: datetime) -> Job | None:
        """Apply `change` (a claim) to the oldest pending job available at `now`; None if none.

        Exactly one caller wins each job. Must not scan finished jobs to find work.
        """

    @abstractmethod
    def processing(self) -> list[Job]:
        """Every job in processing (for reclaiming expired leases); must not scan finished jobs."""

    @abstractmethod
    def pending(self) -> list[tuple[datetime, str]]:
        """(availableAt, jobId) of every pending job, in queue order."""

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

    @abstractmethod
    def append_events(self, project_id: str, events: list[Event]) -> None:
        """Add events to a job's log exactly as they are (for copying one store into another)."""

    @abstractmethod
    def iter_concepts(self) -> Iterator[Concept]:
        """Every readable saved concept (for copying one store into another)."""

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

    def close(self) -> None:
        """Release connections, watchers and locks."""
