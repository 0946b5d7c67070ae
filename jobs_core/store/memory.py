"""MemoryJobStore: the store contract in one process's memory, for tests and throwaway demos.

Like huey's MemoryStorage and procrastinate's in-memory connector: the same named operations as the
real backends, passing the same contract suite and stateful model, so tests whose subject is not
the store run fast and deterministically on it. One lock serialises every operation, which makes
each one atomic by construction. Jobs are kept as their JSON documents, so what a caller reads is
always a fresh copy, validated on the way out as the other backends' documents are.

`open_store("memory://NAME")` gives every caller in the process the same store for NAME (an app
and the test driving it share one); `memory://` alone gives a new, private one.
"""
from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Collection, Iterator
from dataclasses import replace
from datetime import datetime, timedelta

from ..errors import JobNotFound, TransitionConflict
from ..ids import validate_id
from ..lifecycle import is_expired
from ..limits import RendererFull, RendererLimits, RendererPause
from ..models import Concept, Event, Job, JobStatus
from ..webhooks import Delivery
from .base import (
    Change,
    CopyableStore,
    JobPage,
    JobStore,
    OnChange,
    RemovableJob,
    Removal,
    Removed,
    StoreSize,
    WorkerInfo,
    apply_change,
)

_named: dict[str, MemoryJobStore] = {}
_named_lock = threading.Lock()


def memory_store(name: str) -> MemoryJobStore:
    """The process-wide store called `name`, made on first use ("" = always a new one)."""
    if not name:
        return MemoryJobStore()
    with _named_lock:
        return _named.setdefault(name, MemoryJobStore(name))


class _Watch:
    polling = False

    def __init__(self, store: MemoryJobStore, on_change: OnChange) -> None:
        self.store, self.on_change = store, on_change

    def describe(self) -> str:
        return "the store reports each change as it is made"

    def close(self) -> None:
        with self.store._lock:
            if self in self.store._watches:
                self.store._watches.remove(self)


class MemoryJobStore(JobStore, CopyableStore):
    wakes_across_processes = True  # there are no other processes: every writer wakes the workers

    def __init__(self, name: str = "") -> None:
        self.name = name
        self._lock = threading.RLock()
        self._jobs: dict[str, str] = {}  # jobId -> document
        self._keys: dict[tuple[str, str], str] = {}  # (projectId, Idempotency-Key) -> jobId
        self._concepts: dict[tuple[str, str], str] = {}
        self._images: dict[tuple[str, str], bytes] = {}
        self._events: dict[str, list[str]] = {}
        self._watches: list[_Watch] = []
        self._workers: dict[str, WorkerInfo] = {}
        self._outbox: dict[str, Delivery] = {}  # id -> delivery (its `claim` set while claimed)
        self._claimed_until: dict[str, datetime] = {}
        self._secret: str | None = None
        self._pauses: dict[str, RendererPause] = {}
        self._pruned_at: datetime | None = None

    def describe(self) -> str:
        return f"memory store {self.name!r}" if self.name else "a private memory store"

    # -- writes ----------------------------------------------------------------------------------
    def _put(self, new: Job, event: Event | None, deliveries: tuple[Delivery, ...] = ()) -> None:
        self._jobs[new.job_id] = new.model_dump_json()
        if event is not None:
            self._events.setdefault(new.job_id, []).append(event.model_dump_json())
        if deliveries:
            self.enqueue_deliveries(list(deliveries))
        if new.status is JobStatus.PENDING:
            self.notify_work()
        self._tell({self.record_key(new.project_id, new.job_id)})

    def _tell(self, keys: set[str]) -> None:
        for watch in list(self._watches):
            watch.on_change(keys)

    def create(self, job: Job, event: Event | None) -> None:
        validate_id(job.project_id, "projectId")
        validate_id(job.job_id, "jobId")
        with self._lock:
            if job.job_id in self._jobs:
                raise TransitionConflict(f"Job {job.job_id} already exists.")
            if job.idempotency_key is not None:
                key = (job.project_id, job.idempotency_key)
                if key in self._keys and self._keys[key] in self._jobs:
                    raise TransitionConflict(f"Idempotency-Key already used by job {self._keys[key]} "
                                             f"in project {job.project_id}.")
                self._keys[key] = job.job_id
            self._put(job, event)

    def modify(self, job_id: str, project_id: str | None, change: Change) -> Job:
        with self._lock:
            old = self.get(job_id, project_id)
            outcome = apply_change(change, old)
            if outcome.job is not old:
                self._put(outcome.job, outcome.event, outcome.deliveries)
            return outcome.job

    def claim_next(self, change: Change, now: datetime, renderers: Collection[str] | None = None,
                   limits: RendererLimits | None = None) -> Job | None:
        with self._lock:
            skipped = {pause.renderer for pause in self.renderer_pauses(now)}
            for _, job_id in self.pending():
                job = self._load(job_id)
                if job.available_at > now:
                    return None  # in queue order: nothing further is due yet
                if (renderers is not None and job.renderer not in renderers) or job.renderer in skipped:
                    continue
                try:
                    return self._claim(job, change, now, limits)
                except RendererFull:
                    skipped.add(job.renderer)  # full: its later jobs wait too, others go on
                except TransitionConflict:
                    continue
        return None

    def claim_named(self, job_id: str, project_id: str | None, change: Change, now: datetime,
                    limits: RendererLimits | None = None) -> Job:
        with self._lock:
            return self._claim(self.get(job_id, project_id), change, now, limits)

    def _claim(self, old: Job, change: Change, now: datetime, limits: RendererLimits | None) -> Job:
        """Apply the claim `change` to `old` (under the store's lock), unless its renderer is at its cap."""
        outcome = apply_change(change, old)
        cap = limits.cap(old.renderer) if limits else None
        if cap is not None and (in_use := self._holding_slots(old.renderer, limits, now)) >= cap:
            raise RendererFull(old.job_id, old.renderer, in_use, cap)
        self._put(outcome.job, outcome.event, outcome.deliveries)
        return outcome.job

    def _holding_slots(self, renderer: str, limits: RendererLimits, now: datetime) -> int:
        return sum(1 for job in self.processing()
                   if job.renderer == renderer and not is_expired(job, limits.lease_seconds, now))

    def pause_renderer(self, pause: RendererPause) -> None:
        with self._lock:
            current = self._pauses.get(pause.renderer)
            if current is None or current.until < pause.until:
                self._pauses[pause.renderer] = pause

    def renderer_pauses(self, now: datetime) -> list[RendererPause]:
        with self._lock:
            return sorted((pause for pause in self._pauses.values() if pause.until > now),
                          key=lambda pause: pause.renderer)

    def delete(self, job_id: str, project_id: str | None, check: Callable[[Job], None]) -> None:
        with self._lock:
            job = self.get(job_id, project_id)
            check(job)
            self._remove(job)

    def _remove(self, job: Job, dry_run: bool = False) -> Removed:
        """Remove one job whole (one step under the store's lock); what it took."""
        image = self._images.get((job.project_id, job.job_id))
        deliveries = [d for d in self._outbox.values() if d.key == job.job_id]
        size = (len(self._jobs[job.job_id]) + len(image or b"")
                + sum(len(line) for line in self._events.get(job.job_id, []))
                + sum(len(d.to_json()) for d in deliveries))
        if not dry_run:
            del self._jobs[job.job_id]
            self._images.pop((job.project_id, job.job_id), None)
            self._events.pop(job.job_id, None)
            for delivery in deliveries:
                self._outbox.pop(delivery.id, None)
                self._claimed_until.pop(delivery.id, None)
            self._tell({self.record_key(job.project_id, job.job_id)})
        return Removed(job.job_id, job.project_id, job.status, size, image is not None)

    def remove_jobs(self, jobs: list[RemovableJob], check: Callable[[Job], None],
                    concepts: Collection[tuple[str, str]] = (), *, dry_run: bool = False) -> Removal:
        removal, kept = Removal(), set()
        with self._lock:
            for target in jobs:
                try:
                    job = self.get(target.job_id, target.project_id)
                    check(job)
                except (JobNotFound, TransitionConflict):
                    kept.add((target.project_id, target.concept_id))
                    continue
                removal.jobs.append(self._remove(job, dry_run))
            for key in set(concepts) - kept:
                if key in self._concepts:
                    removal.concepts += 1
                    removal.other_bytes += len(self._concepts[key])
                    if not dry_run:
                        del self._concepts[key]
        return removal

    def store_size(self) -> StoreSize:
        with self._lock:
            size = sum(map(len, self._jobs.values())) + sum(map(len, self._images.values()))
            size += sum(len(line) for lines in self._events.values() for line in lines)
            size += sum(map(len, self._concepts.values())) + sum(len(d.to_json()) for d in self._outbox.values())
            return StoreSize(len(self._jobs), len(self._images), size)

    def claim_prune_turn(self, now: datetime, every: timedelta) -> bool:
        with self._lock:
            if self._pruned_at is not None and now - self._pruned_at < every:
                return False
            self._pruned_at = now
            return True

    def last_pruned_at(self) -> datetime | None:
        return self._pruned_at

    # -- reads -----------------------------------------------------------------------------------
    def _load(self, job_id: str) -> Job:
        return Job.model_validate_json(self._jobs[job_id])

    def get(self, job_id: str, project_id: str | None = None) -> Job:
        validate_id(job_id, "jobId")
        if project_id is not None:
            validate_id(project_id, "projectId")
        with self._lock:
            if job_id in self._jobs:
                job = self._load(job_id)
                if project_id is None or job.project_id == project_id:
                    return job
        where = "" if project_id is None else f" in project {project_id}"
        raise JobNotFound(f"No job with id {job_id}{where}.")

    def _all(self) -> list[Job]:
        with self._lock:
            return [self._load(job_id) for job_id in self._jobs]

    def processing(self) -> list[Job]:
        return [job for job in self._all() if job.status is JobStatus.PROCESSING]

    def pending(self) -> list[tuple[datetime, str]]:
        return sorted((job.available_at, job.job_id) for job in self._all() if job.status is JobStatus.PENDING)

    def list_jobs(self, project_id: str | None = None, status: JobStatus | None = None,
                  limit: int | None = None, cursor: str | None = None) -> JobPage:
        if project_id is not None:
            validate_id(project_id, "projectId")
        chosen = sorted((job for job in self._all()
                         if (project_id is None or job.project_id == project_id)
                         and (status is None or job.status is status)
                         and (cursor is None or job.job_id < cursor)),
                        key=lambda job: job.job_id, reverse=True)
        if limit is not None and len(chosen) > limit:
            return JobPage(jobs=chosen[:limit], next_cursor=chosen[limit - 1].job_id)
        return JobPage(jobs=chosen)

    def projects(self) -> list[str]:
        return sorted({job.project_id for job in self._all()})

    def jobs_updated_since(self, since: datetime | None) -> list[Job]:
        return [job for job in self._all() if since is None or job.updated_at > since]

    def find_by_idempotency_key(self, project_id: str, key: str) -> Job | None:
        with self._lock:
            job_id = self._keys.get((project_id, key))
            if job_id is None or job_id not in self._jobs:
                return None
            job = self._load(job_id)
        return job if job.project_id == project_id and job.idempotency_key == key else None

    def watch_jobs(self, on_change: OnChange, *, poll_seconds: float = 2.0, mode: str = "auto") -> _Watch:
        watch = _Watch(self, on_change)
        with self._lock:
            self._watches.append(watch)
        return watch

    def record_worker(self, info: WorkerInfo) -> None:
        with self._lock:
            self._workers[info.worker_id] = info

    def workers(self, seen_since: datetime) -> list[WorkerInfo]:
        with self._lock:
            return sorted((info for info in self._workers.values() if info.seen_at >= seen_since),
                          key=lambda info: info.worker_id)

    def forget_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    # -- the webhook outbox ------------------------------------------------------------------------
    def enqueue_deliveries(self, deliveries: list[Delivery]) -> None:
        with self._lock:
            for delivery in deliveries:
                self._outbox.setdefault(delivery.id, replace(delivery, claim=None))
        self.notify_deliveries()

    def claim_delivery(self, now: datetime, lease_seconds: float) -> Delivery | None:
        with self._lock:
            for delivery in self._first_of_each_key():
                held = delivery.claim is not None and self._claimed_until[delivery.id] > now
                if held or delivery.next_at > now:
                    continue
                claimed = replace(delivery, claim=secrets.token_hex(8))
                self._outbox[delivery.id] = claimed
                self._claimed_until[delivery.id] = now + timedelta(seconds=lease_seconds)
                return claimed
        return None

    def _first_of_each_key(self) -> list[Delivery]:
        first: dict[str, Delivery] = {}
        for delivery in self._outbox.values():
            if delivery.key not in first or delivery.order < first[delivery.key].order:
                first[delivery.key] = delivery
        return sorted(first.values(), key=lambda delivery: delivery.next_at)

    def _holds(self, delivery: Delivery) -> bool:
        current = self._outbox.get(delivery.id)
        return current is not None and delivery.claim is not None and current.claim == delivery.claim

    def finish_delivery(self, delivery: Delivery) -> bool:
        with self._lock:
            if not self._holds(delivery):
                return False
            del self._outbox[delivery.id]
            self._claimed_until.pop(delivery.id, None)
            return True

    def retry_delivery(self, delivery: Delivery) -> bool:
        with self._lock:
            if not self._holds(delivery):
                return False
            self._outbox[delivery.id] = replace(delivery, claim=None)
            self._claimed_until.pop(delivery.id, None)
            return True

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return sorted(self._outbox.values(), key=lambda delivery: (delivery.key, delivery.order))

    def webhook_secret(self, candidate: str) -> str:
        with self._lock:
            if self._secret is None:
                self._secret = candidate
            return self._secret

    # -- concepts, images, events --------------------------------------------------------------
    def save_concept(self, concept: Concept) -> None:
        validate_id(concept.project_id, "projectId")
        validate_id(concept.concept_id, "conceptId")
        with self._lock:
            self._concepts[(concept.project_id, concept.concept_id)] = concept.model_dump_json()

    def load_concept(self, project_id: str, concept_id: str) -> Concept:
        key = (validate_id(project_id, "projectId"), validate_id(concept_id, "conceptId"))
        with self._lock:
            if key not in self._concepts:
                raise JobNotFound(f"No concept {concept_id} in project {project_id}.")
            return Concept.model_validate_json(self._concepts[key])

    def iter_concepts(self) -> Iterator[Concept]:
        with self._lock:
            documents = [self._concepts[key] for key in sorted(self._concepts)]
        return iter([Concept.model_validate_json(document) for document in documents])

    def save_image(self, project_id: str, job_id: str, png: bytes) -> None:
        key = (validate_id(project_id, "projectId"), validate_id(job_id, "jobId"))
        with self._lock:
            self._images[key] = bytes(png)

    def save_image_and_modify(self, project_id: str, job_id: str, png: bytes, change: Change) -> Job:
        """Both or neither, as in one transaction: a refused change leaves no image behind."""
        with self._lock:
            key = (validate_id(project_id, "projectId"), validate_id(job_id, "jobId"))
            before = self._images.get(key)
            self._images[key] = bytes(png)
            try:
                return self.modify(job_id, project_id, change)
            except BaseException:
                if before is None:
                    self._images.pop(key, None)
                else:
                    self._images[key] = before
                raise

    def load_image(self, project_id: str, job_id: str) -> bytes:
        key = (validate_id(project_id, "projectId"), validate_id(job_id, "jobId"))
        with self._lock:
            if key not in self._images:
                raise JobNotFound(f"No image for job {job_id} in project {project_id}.")
            return self._images[key]

    def events(self, job_id: str, project_id: str | None = None) -> list[Event]:
        with self._lock:
            self.get(job_id, project_id)
            lines = list(self._events.get(job_id, []))
        return [Event.model_validate_json(line) for line in lines]

    def append_events(self, project_id: str, events: list[Event]) -> None:
        validate_id(project_id, "projectId")
        with self._lock:
            for event in events:
                self._events.setdefault(event.job_id, []).append(event.model_dump_json())
