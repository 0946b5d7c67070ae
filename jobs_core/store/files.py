"""FileJobStore: the embedded default, one JSON file per job, on the seed's layout.

    {root}/jobs/{projectId}/{jobId}.json        the job (pretty JSON; `cat` is a monitoring tool)
    {root}/concepts/{projectId}/{conceptId}.json
    {root}/renders/{projectId}/{jobId}.png
    {root}/events/{projectId}/{jobId}.jsonl
    {root}/.state/ready/{availableAtMs}.{jobId}.{projectId}   queue index: one empty file per pending job
    {root}/.state/running/{jobId}.{projectId}                one empty file per processing job
    {root}/.state/locks/NNN.lock                              striped flock files (job locks)
    {root}/.state/key-locks/NN.lock                           striped flock files (Idempotency-Keys)
    {root}/.state/idempotency/{projectId}/{sha256(key)}       jobId created with an Idempotency-Key
    {root}/.state/workers/{sha256(workerId)}.json             each worker as it last said it was alive
    {root}/.state/pauses/{sha256(renderer)}.json              a renderer paused by its provider (429)
    {root}/.state/renderer-locks/NN.lock                      striped flock files (renderer limits)
    {root}/.state/outbox/...                                  webhook deliveries (files_outbox.py)

The markers under .state let workers find work without reading finished jobs: sorted(listdir(ready))
is the queue order (huey's trick), and `running/` lists what a reclaim must look at. A job's markers
follow from its status alone (`_markers`). A write makes the new status's marker first (durably;
a claim or a release renames the marker into its new folder), then the job file (durably), then
removes the old marker: a crash at any point leaves at worst a marker the job file no longer agrees
with, which the next reader recognises and removes; never a pending or processing job without its
marker. `python -m jobs_core repair` rebuilds the markers
from the job files, for a store damaged by hand or by a disk fault.

Only portable calls: temp files, fsync, rename, link, flock (see atomic.py). Runs on Linux and macOS.
Every file in the store is untrusted (someone else may write there): folders and files are opened
without following links, only regular files are read, and documents have a size limit (folders.py).
An entry that breaks these rules is reported as unreadable with its reason, never followed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydantic import ValidationError

from ..errors import InvalidInput, JobNotFound, StoreWriteError, TransitionConflict, UnreadableJob
from ..ids import ID_PATTERN, validate_id
from ..lifecycle import is_expired
from ..limits import RendererFull, RendererLimits, RendererPause
from ..models import Concept, Event, Job, JobStatus
from ..webhooks import Delivery
from .atomic import (
    StripedLocks,
    append_line,
    atomic_write,
    fsync_dir,
    is_temp_name,
    touch_new,
    unlink_quietly,
    write_new,
    write_or_replace,
)
from .base import (
    Change,
    CopyableStore,
    JobPage,
    JobRecord,
    JobStore,
    JobWatch,
    OnChange,
    RemovableJob,
    Unreadable,
    WorkerInfo,
    apply_change,
)
from .file_watch import JobFiles
from .files_outbox import FileOutbox
from .files_retention import FileRetention, OpenFolders
from .folders import Folder, MiB, StoreFolders, UnsafeEntry, read_regular

log = logging.getLogger("jobs_core.store")

MAX_DOCUMENT_BYTES = 1 * MiB  # a job or concept document is about 1-2 KB
MAX_IMAGE_BYTES = 64 * MiB
MAX_EVENT_LOG_BYTES = 16 * MiB
READY, RUNNING, WORKERS = (".state", "ready"), (".state", "running"), (".state", "workers")
PAUSES = (".state", "pauses")
FORGET_WORKERS_AFTER = timedelta(days=1)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def parse_job(where: str, data: bytes, job_id: str | None = None, project_id: str | None = None) -> Job:
    """The job in `data`, or UnreadableJob with the reason; a document found where another job's
    file should be (a job_A.json holding job B) is unreadable too, never served as B."""
    try:
        job = Job.model_validate_json(data)  # one pass in pydantic-core: the common case
    except ValidationError:
        raise UnreadableJob(f"{where}: {_why_not_a_job(data)}") from None
    if job_id is not None and (job.job_id, job.project_id) != (job_id, project_id):
        raise UnreadableJob(f"{where}: names job {job.job_id} of project {job.project_id} but holds the "
                            f"place of job {job_id} of project {project_id}.")
    return job


def read_job_file(path: str | Path) -> Job:
    """Parse one job file by its path (its folder is trusted here; the file is not followed)."""
    folder, name = os.path.split(os.fspath(path))
    with StoreFolders(folder).open() as opened:
        return _read_job(opened, name)


def _read_job(folder: Folder, name: str, job_id: str | None = None, project_id: str | None = None) -> Job:
    try:
        data = read_regular(folder, name, MAX_DOCUMENT_BYTES)
    except FileNotFoundError:
        raise JobNotFound(f"No job file {name}.") from None
    except UnsafeEntry as error:
        raise UnreadableJob(f"{error.where}: {error.reason}.") from None
    except OSError as error:
        raise UnreadableJob(f"{folder.child(name)}: cannot be read ({error.strerror}).") from None
    return parse_job(folder.child(name), data, job_id, project_id)


def _why_not_a_job(data: bytes) -> str:
    """The reason, in words, that a file which failed validation is not a job document."""
    if not data.strip():
        return "the file is empty."
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError as error:
        return f"not valid JSON at line {error.lineno}, column {error.colno} ({error.msg.lower()})."
    except ValueError:
        return "not valid JSON (not UTF-8 text)."
    if not isinstance(parsed, dict):
        return f"holds a JSON {type(parsed).__name__}, not a job object."
    try:
        Job.model_validate(parsed)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"])
        return f"not a job document ({field}: {first['msg']})."
    return "not a job document."


class ProjectsOfJobs:
    """jobId -> projectId for jobs this process created or found, so a read without a projectId
    skips the scan of every project folder. Bounded, oldest forgotten first: a long-lived server
    creating millions of jobs must not grow with them (a forgotten job is found by the scan)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._projects: dict[str, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._projects)

    def get(self, job_id: str) -> str | None:
        return self._projects.get(job_id)

    def remember(self, job_id: str, project_id: str) -> None:
        with self._lock:
            self._projects[job_id] = project_id
            while len(self._projects) > self.capacity:
                del self._projects[next(iter(self._projects))]

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._projects.pop(job_id, None)


@dataclass
class _ClaimRules:
    """What one claim pass may take: `skipped` holds the renderers paused at `now`, and those
    found at their cap during the pass (their later jobs wait too; other renderers' jobs go on)."""

    renderers: Collection[str] | None
    limits: RendererLimits | None
    now: datetime
    skipped: set[str]


class FileJobStore(FileRetention, JobStore, CopyableStore):
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.folders = StoreFolders(self.root)
        self.jobs_dir = self.root / "jobs"
        self._file_views = JobFiles(self.jobs_dir, ID_PATTERN, is_temp_name, MAX_DOCUMENT_BYTES)
        for parts in (("jobs",), ("concepts",), ("renders",), ("events",), READY, RUNNING, WORKERS, PAUSES):
            try:
                with self.folders.open(*parts, create=True):
                    pass
            except UnsafeEntry as error:
                raise StoreWriteError(f"Cannot use the store in {self.root}: {error}.") from None
        self.locks = StripedLocks(self.folders, (".state", "locks"))
        # Separate lock files: a key lock is held while the job lock is taken, and two flocks on
        # one file from one process would deadlock.
        self.key_locks = StripedLocks(self.folders, (".state", "key-locks"), stripes=64)
        # Taken with a job lock held (a limited claim), never the other way round.
        self.renderer_locks = StripedLocks(self.folders, (".state", "renderer-locks"), stripes=16)
        self._project_of = ProjectsOfJobs()
        try:
            self.outbox = FileOutbox(self.folders)
        except UnsafeEntry as error:
            raise StoreWriteError(f"Cannot use the store in {self.root}: {error}.") from None

    def describe(self) -> str:
        return f"files in {self.root.resolve()}"

    # -- where things are (ids are validated before any name is built) ----------------------------
    def _open(self, kind: str, project_id: str, create: bool = False):  # -> ContextManager[Folder]
        return self.folders.open(kind, validate_id(project_id, "projectId"), create=create)

    def job_path(self, project_id: str, job_id: str) -> Path:
        return self.jobs_dir / validate_id(project_id, "projectId") / f"{validate_id(job_id, 'jobId')}.json"

    def image_path(self, project_id: str, job_id: str) -> Path:
        return self.root / "renders" / validate_id(project_id, "projectId") / f"{validate_id(job_id, 'jobId')}.png"

    def _markers(self, job: Job) -> set[tuple[tuple[str, str], str]]:
        """The index entries a job's status calls for: pending and processing jobs have one each."""
        if job.status is JobStatus.PENDING:
            return {(READY, f"{_ms(job.available_at):013d}.{job.job_id}.{job.project_id}")}
        if job.status is JobStatus.PROCESSING:
            return {(RUNNING, f"{job.job_id}.{job.project_id}")}
        return set()

    def _unmark(self, markers: set[tuple[tuple[str, str], str]]) -> None:
        for parts, name in markers:
            with self.folders.open(*parts) as folder:
                unlink_quietly(folder, name)

    def _locate(self, job_id: str, project_id: str | None) -> str:
        validate_id(job_id, "jobId")
        if project_id is not None:
            return validate_id(project_id, "projectId")
        known = self._project_of.get(job_id)
        if known is not None:
            return known
        for project in self._project_names():
            try:
                with self._open("jobs", project) as folder:
                    os.stat(f"{job_id}.json", dir_fd=folder.fd, follow_symlinks=False)
            except OSError:
                continue
            self._project_of.remember(job_id, project)
            return project
        raise JobNotFound(f"No job with id {job_id}.")

    # -- writes ----------------------------------------------------------------------------------
    def _write(self, old: Job | None, new: Job, event: Event | None, durable: bool = True,
               deliveries: tuple[Delivery, ...] = ()) -> None:
        """Write `new` over `old` (None: a create) with its markers and webhook deliveries, both
        before the job file; see the module's docstring."""
        before = self._markers(old) if old else set()
        after = self._markers(new)
        added, removed = after - before, before - after
        moved = len(added) == len(removed) == 1  # a claim or a release: the marker moves folders
        staged = self.outbox.stage(deliveries, durable) if deliveries else []
        try:
            if moved:
                self._move_marker(next(iter(removed)), next(iter(added)))
            else:
                self._add_markers(added)
            data = new.to_json().encode()
            with self._open("jobs", new.project_id, create=True) as folder:
                if old is None:
                    write_new(folder, f"{new.job_id}.json", data)
                else:
                    atomic_write(folder, f"{new.job_id}.json", data, sync_dir=durable)
        except (FileExistsError, StoreWriteError, UnsafeEntry) as error:
            self._undo_markers(added, removed if moved else set())  # the job file kept its old version
            self.outbox.unstage(staged)
            if isinstance(error, UnsafeEntry):
                raise StoreWriteError(f"Could not write job {new.job_id}: {error}. Nothing was changed.") from None
            raise
        if not moved:
            self._unmark(removed)
        if event is not None and not (old is None and event.type == "created"):
            # A creation is not logged: the job file records it, and the service tells it from there.
            self._append_event(new.project_id, event)
        if staged:
            self.notify_deliveries()

    def _add_markers(self, markers: set[tuple[tuple[str, str], str]]) -> None:
        try:
            for parts, name in markers:
                with self.folders.open(*parts) as folder:
                    touch_new(folder, name)
                    fsync_dir(folder)  # on disk before the job file says so
        except OSError as error:
            raise StoreWriteError(f"Could not update the queue index of {self.root}: {error}. "
                                  "Nothing was changed.") from error

    def _move_marker(self, source: tuple[tuple[str, str], str], target: tuple[tuple[str, str], str]) -> None:
        """Rename a marker into its new folder (no new file to allocate), durably there before the
        job file changes. A power loss may leave the old name too: a stale marker, dropped by readers."""
        (source_parts, source_name), (target_parts, target_name) = source, target
        try:
            with self.folders.open(*source_parts) as origin, self.folders.open(*target_parts) as folder:
                try:
                    os.rename(source_name, target_name, src_dir_fd=origin.fd, dst_dir_fd=folder.fd)
                except FileNotFoundError:
                    touch_new(folder, target_name)  # the old marker was missing (a damaged index)
                fsync_dir(folder)
        except OSError as error:
            raise StoreWriteError(f"Could not update the queue index of {self.root}: {error}. "
                                  "Nothing was changed.") from error

    def _undo_markers(self, added: set[tuple[tuple[str, str], str]],
                      moved_from: set[tuple[tuple[str, str], str]]) -> None:
        """After a failed job write: the index goes back to what the unchanged job file calls for."""
        try:
            self._add_markers(moved_from)
        except StoreWriteError as error:
            log.error("%s; run `python -m jobs_core repair` once the store works again", error)
        self._unmark(added)

    def _append_event(self, project_id: str, event: Event) -> None:
        try:
            with self._open("events", project_id, create=True) as folder:
                append_line(folder, f"{event.job_id}.jsonl", (event.model_dump_json() + "\n").encode())
        except OSError as error:
            # The transition is already durable in the job file (the truth); raising now would
            # report a change that happened as one that failed. The log line is lost, not the job.
            log.warning("could not log an event of job %s: %s; the job file is up to date", event.job_id, error)

    def create(self, job: Job, event: Event | None) -> None:
        if job.idempotency_key is None:
            return self._create(job, event)
        digest = hashlib.sha256(job.idempotency_key.encode()).hexdigest()
        with self.key_locks.hold(digest):
            existing = self.find_by_idempotency_key(job.project_id, job.idempotency_key)
            if existing is not None:
                raise TransitionConflict(
                    f"Idempotency-Key already used by job {existing.job_id} in project {job.project_id}.")
            # Marker first: a crash before the job is written leaves a marker naming a missing
            # job, which find_by_idempotency_key treats as unused.
            with self.folders.open(".state", "idempotency", validate_id(job.project_id), create=True) as folder:
                atomic_write(folder, digest, job.job_id.encode())
            self._create(job, event)

    def find_by_idempotency_key(self, project_id: str, key: str) -> Job | None:
        """O(1): the marker names the job; a marker whose job is gone (deleted, crash) is unused."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        try:
            with self.folders.open(".state", "idempotency", validate_id(project_id)) as folder:
                job_id = read_regular(folder, digest, 64).decode()
            job = self.get(job_id, project_id)
        except (OSError, UnicodeDecodeError, InvalidInput, JobNotFound, UnreadableJob):
            return None
        return job if job.idempotency_key == key else None

    def _create(self, job: Job, event: Event | None) -> None:
        # Under the job lock: the queue marker exists before the job file does, and a claimer or
        # a maintenance pass that met the marker in between would take it for a stale one. They
        # look at a marker's job only under its lock, so they see the job whole or not at all.
        validate_id(job.project_id, "projectId")
        with self.locks.hold(validate_id(job.job_id, "jobId")):
            try:
                self._write(None, job, event)
            except FileExistsError:
                raise TransitionConflict(f"Job {job.job_id} already exists.") from None
        self._project_of.remember(job.job_id, job.project_id)
        self._notify_if_pending(job)

    def modify(self, job_id: str, project_id: str | None, change: Change) -> Job:
        project_id = self._locate(job_id, project_id)
        with self.locks.hold(job_id):
            old = self._get(job_id, project_id)
            outcome = apply_change(change, old)
            if outcome.job is not old:
                self._write(old, outcome.job, outcome.event, outcome.durable, outcome.deliveries)
        if outcome.job is not old:
            self._notify_if_pending(outcome.job)
        return outcome.job

    def _notify_if_pending(self, job: Job) -> None:
        # After the job's lock is released: a claimer woken while the writer still held it would
        # skip the job (claims never wait for a lock) and sleep a whole poll interval.
        if job.status is JobStatus.PENDING:
            self.notify_work()

    def claim_next(self, change: Change, now: datetime, renderers: Collection[str] | None = None,
                   limits: RendererLimits | None = None) -> Job | None:
        limit = _ms(now)
        rules = _ClaimRules(renderers, limits, now, {pause.renderer for pause in self.renderer_pauses(now)})
        for ms, job_id, project_id in self._queue():
            if ms > limit:
                return None  # in queue order: nothing further is due yet
            fd = self.locks.try_hold(job_id)
            if fd is None:
                continue  # someone else is on it (or on its lock stripe): try the next one
            try:
                claimed = self._claim_locked(ms, job_id, project_id, change, rules)
            finally:
                self.locks.release(fd)
            if claimed is not None:
                return claimed
        return None

    def _queue(self) -> list[tuple[int, str, str]]:
        """(availableAtMs, jobId, projectId) of every ready marker, in queue order."""
        with self.folders.open(*READY) as folder:
            names = os.listdir(folder.fd)
        entries = []
        for name in sorted(names):
            ms, _, rest = name.partition(".")
            job_id, _, project_id = rest.partition(".")
            if ms.isdigit() and ID_PATTERN.fullmatch(job_id) and ID_PATTERN.fullmatch(project_id):
                entries.append((int(ms), job_id, project_id))
        return entries

    def _claim_locked(self, ms: int, job_id: str, project_id: str, change: Change,
                      rules: _ClaimRules) -> Job | None:
        marker = (READY, f"{ms:013d}.{job_id}.{project_id}")
        try:
            old = self._get(job_id, project_id)
        except (JobNotFound, UnreadableJob):
            self._unmark({marker})
            return None
        if marker not in self._markers(old):
            self._unmark({marker})  # stale: claimed, canceled or rescheduled since it was written
            return None
        if rules.renderers is not None and old.renderer not in rules.renderers:
            return None  # left for a worker that can run it
        if old.renderer in rules.skipped:
            return None  # paused by its provider, or found full earlier in this pass
        try:
            return self._claim(old, change, rules.now, rules.limits)
        except RendererFull:
            rules.skipped.add(old.renderer)
        except TransitionConflict:
            pass
        return None

    def claim_named(self, job_id: str, project_id: str | None, change: Change, now: datetime,
                    limits: RendererLimits | None = None) -> Job:
        project_id = self._locate(job_id, project_id)
        with self.locks.hold(job_id):
            return self._claim(self._get(job_id, project_id), change, now, limits)

    def _claim(self, old: Job, change: Change, now: datetime, limits: RendererLimits | None) -> Job:
        """Apply the claim `change` to `old` (its job lock held) and write it; RendererFull when its
        renderer is at its cap. Counting and claiming under the renderer's lock: two claimers cannot
        both see the last free slot. Lock order is job lock, then renderer lock; nothing holding a
        renderer lock waits for a job lock (the count reads without locks), so they cannot deadlock."""
        outcome = apply_change(change, old)
        cap = limits.cap(old.renderer) if limits else None
        if cap is None:
            self._write(old, outcome.job, outcome.event, outcome.durable, outcome.deliveries)
            return outcome.job
        with self.renderer_locks.hold(old.renderer):
            if (in_use := self._holding_slots(old.renderer, limits, now)) >= cap:
                raise RendererFull(old.job_id, old.renderer, in_use, cap)
            self._write(old, outcome.job, outcome.event, outcome.durable, outcome.deliveries)
        return outcome.job

    def _holding_slots(self, renderer: str, limits: RendererLimits, now: datetime) -> int:
        """Jobs of `renderer` in processing whose lease is alive. Every claim of this renderer
        wrote its job file before releasing the renderer lock, so none is missed; a job leaving
        processing meanwhile may or may not be counted, which only delays a claim to the next pass."""
        with self.folders.open(*RUNNING) as folder:
            names = os.listdir(folder.fd)
        holding = 0
        for name in names:
            job_id, _, project_id = name.partition(".")
            if not (ID_PATTERN.fullmatch(job_id) and ID_PATTERN.fullmatch(project_id)):
                continue  # not ours
            job = self._job_calling_for(job_id, project_id, (RUNNING, name))
            if job is not None and job.renderer == renderer and not is_expired(job, limits.lease_seconds, now):
                holding += 1
        return holding

    # -- provider pauses: one small file per paused renderer ---------------------------------------
    @staticmethod
    def _pause_file(renderer: str) -> str:
        # Renderer names come from plugins too: the file is named by a digest, the name is inside.
        return hashlib.sha256(renderer.encode()).hexdigest()[:32] + ".json"

    def pause_renderer(self, pause: RendererPause) -> None:
        document = json.dumps({"renderer": pause.renderer, "until": pause.until.isoformat(),
                               "reason": pause.reason}).encode()
        with self.renderer_locks.hold(pause.renderer):  # read, compare and write as one step
            current = self._read_pauses().get(pause.renderer)
            if current is not None and current.until >= pause.until:
                return
            with self.folders.open(*PAUSES) as folder:
                atomic_write(folder, self._pause_file(pause.renderer), document)

    def renderer_pauses(self, now: datetime) -> list[RendererPause]:
        return sorted((pause for pause in self._read_pauses().values() if pause.until > now),
                      key=lambda pause: pause.renderer)

    def _read_pauses(self) -> dict[str, RendererPause]:
        """Every pause file, ended or not. A file that is not a pause is ignored: a pause only
        delays claims, so a foreign or torn file must not stop (or start) anything."""
        found = {}
        with self.folders.open(*PAUSES) as folder:
            for name in os.listdir(folder.fd):
                if is_temp_name(name):
                    continue
                try:
                    data = json.loads(read_regular(folder, name, 64 * 1024))
                    pause = RendererPause(str(data["renderer"]), datetime.fromisoformat(data["until"]),
                                          str(data["reason"])[:200])
                except (OSError, ValueError, KeyError, TypeError):
                    continue
                if name == self._pause_file(pause.renderer) and pause.until.tzinfo is not None:
                    found[pause.renderer] = pause
        return found

    def delete(self, job_id: str, project_id: str | None, check: Callable[[Job], None]) -> None:
        project_id = self._locate(job_id, project_id)
        with self.locks.hold(job_id):
            try:
                job = self._get(job_id, project_id)
            except UnreadableJob:
                job = None  # a corrupt job file may always be deleted
            if job is not None:
                check(job)
                self._unmark(self._markers(job))
            try:
                with self._open("jobs", project_id) as folder:
                    unlink_quietly(folder, f"{job_id}.json")  # first: the job is gone, then the rest
            except FileNotFoundError:
                pass
            with OpenFolders(self.folders) as opened:
                self._remove_leftovers(opened, [RemovableJob(project_id, job_id, "", job and job.idempotency_key)])
            self.outbox.drop({job_id})
        self._project_of.forget(job_id)

    # -- the webhook outbox (files_outbox.py) --------------------------------------------------------
    def enqueue_deliveries(self, deliveries: list[Delivery]) -> None:
        if self.outbox.stage(deliveries):
            self.notify_deliveries()

    def claim_delivery(self, now: datetime, lease_seconds: float) -> Delivery | None:
        return self.outbox.claim(now, lease_seconds)

    def finish_delivery(self, delivery: Delivery) -> bool:
        return self.outbox.finish(delivery)

    def retry_delivery(self, delivery: Delivery) -> bool:
        return self.outbox.retry(delivery)

    def deliveries(self) -> list[Delivery]:
        return self.outbox.all()

    def webhook_secret(self, candidate: str) -> str:
        return self.outbox.secret(candidate)

    # -- views over every job (the monitor): file_watch.py reads the files fast and watches jobs/ --
    def record_key(self, project_id: str, job_id: str) -> str:
        return self._file_views.key(project_id, job_id)

    def scan_jobs(self) -> Iterator[JobRecord]:
        return self._file_views.scan()

    def read_record(self, key: str) -> JobRecord:
        return self._file_views.read(key)

    def watch_jobs(self, on_change: OnChange, *, poll_seconds: float = 2.0, mode: str = "auto") -> JobWatch:
        return self._file_views.watch(on_change, poll_seconds=poll_seconds, mode=mode)

    # -- workers ---------------------------------------------------------------------------------
    @staticmethod
    def _worker_file(worker_id: str) -> str:
        # Worker ids carry host names (dots and all): the file is named by a digest, the id is inside.
        return hashlib.sha256(worker_id.encode()).hexdigest()[:32] + ".json"

    def record_worker(self, info: WorkerInfo) -> None:
        document = json.dumps({"workerId": info.worker_id, "renderers": list(info.renderers),
                               "seenAt": info.seen_at.isoformat(), "problem": info.problem}).encode()
        with self.folders.open(*WORKERS) as folder:
            atomic_write(folder, self._worker_file(info.worker_id), document, durable=False)

    def workers(self, seen_since: datetime) -> list[WorkerInfo]:
        found = []
        with self.folders.open(*WORKERS) as folder:
            for name in sorted(os.listdir(folder.fd)):
                if is_temp_name(name):
                    continue
                try:
                    data = json.loads(read_regular(folder, name, 64 * 1024))
                    info = WorkerInfo(str(data["workerId"]), tuple(map(str, data["renderers"])),
                                      datetime.fromisoformat(data["seenAt"]), data.get("problem"))
                except (OSError, ValueError, KeyError, TypeError):
                    continue  # not ours, or torn: a live worker rewrites its entry in seconds
                if info.seen_at < seen_since - FORGET_WORKERS_AFTER:
                    unlink_quietly(folder, name)  # long gone without saying goodbye (killed)
                elif info.seen_at >= seen_since:
                    found.append(info)
        return sorted(found, key=lambda info: info.worker_id)

    def forget_worker(self, worker_id: str) -> None:
        with self.folders.open(*WORKERS) as folder:
            unlink_quietly(folder, self._worker_file(worker_id))

    def repair_index(self) -> list[str]:
        """Make the queue index agree with the job files again: a marker for every pending and
        processing job, none that no job calls for; finish removals a crash interrupted (retention).
        Returns what it fixed, in words."""
        fixes: list[str] = []
        finished = self.finish_interrupted_removals()
        if finished.other_bytes:
            fixes.append(f"removed {finished.other_bytes} bytes an interrupted prune left of jobs already gone")
        wanted: set[tuple[tuple[str, str], str]] = set()
        found, _ = self._job_files(None)
        for job_id, project_id in found:
            with self.locks.hold(job_id):
                try:
                    job = self._get(job_id, project_id)
                except (JobNotFound, UnreadableJob):
                    continue
                for parts, name in self._markers(job):
                    wanted.add((parts, name))
                    with self.folders.open(*parts) as folder:
                        if touch_new(folder, name):
                            fixes.append(f"job {job_id} ({job.status.value}) was missing from the queue index")
        for parts in (READY, RUNNING):
            with self.folders.open(*parts) as folder:
                fsync_dir(folder)
                names = os.listdir(folder.fd)
            for name in names:
                if (parts, name) in wanted:
                    continue
                job_id, project_id = self._ids_of_marker(parts, name)
                if job_id is None or self._job_of_marker(job_id, project_id, (parts, name)) is None:
                    if job_id is None:
                        self._unmark({(parts, name)})
                    fixes.append(f"removed the stale queue entry {name}")
        return fixes

    @staticmethod
    def _ids_of_marker(parts: tuple[str, str], name: str) -> tuple[str | None, str]:
        rest = name.partition(".")[2] if parts == READY else name
        job_id, _, project_id = rest.partition(".")
        if ID_PATTERN.fullmatch(job_id) and ID_PATTERN.fullmatch(project_id):
            return job_id, project_id
        return None, ""

    # -- reads -----------------------------------------------------------------------------------
    def _get(self, job_id: str, project_id: str) -> Job:
        try:
            with self._open("jobs", project_id) as folder:
                return _read_job(folder, f"{job_id}.json", job_id, project_id)
        except FileNotFoundError:  # no such project folder
            raise JobNotFound(f"No job file {job_id}.json.") from None
        except UnsafeEntry as error:
            raise UnreadableJob(f"{error}.") from None

    def get(self, job_id: str, project_id: str | None = None) -> Job:
        project_id = self._locate(job_id, project_id)
        try:
            return self._get(job_id, project_id)
        except JobNotFound:
            raise JobNotFound(f"No job with id {job_id} in project {project_id}.") from None

    def processing(self) -> list[Job]:
        with self.folders.open(*RUNNING) as folder:
            names = sorted(os.listdir(folder.fd))
        jobs = []
        for name in names:
            job_id, _, project_id = name.partition(".")
            if not (ID_PATTERN.fullmatch(job_id) and ID_PATTERN.fullmatch(project_id)):
                continue  # not ours
            job = self._job_of_marker(job_id, project_id, (RUNNING, name))
            if job is not None and job.status is JobStatus.PROCESSING:
                jobs.append(job)
        return jobs

    def _job_of_marker(self, job_id: str, project_id: str, marker: tuple[tuple[str, str], str]) -> Job | None:
        """The job a marker names, or None after removing the marker if the job does not call for
        it (a crash between two writes). A write in flight holds the job's lock, and is waited for:
        the marker it just made is not stale."""
        job = self._job_calling_for(job_id, project_id, marker)
        if job is not None:
            return job
        with self.locks.hold(job_id):
            job = self._job_calling_for(job_id, project_id, marker)
            if job is None:
                self._unmark({marker})
            return job

    def _job_calling_for(self, job_id: str, project_id: str, marker: tuple[tuple[str, str], str]) -> Job | None:
        try:
            job = self._get(job_id, project_id)
        except (JobNotFound, UnreadableJob):
            return None
        return job if marker in self._markers(job) else None

    def pending(self) -> list[tuple[datetime, str]]:
        return [(datetime.fromtimestamp(ms / 1000, UTC), job_id) for ms, job_id, _ in self._queue()]

    def active_counts(self) -> tuple[int, int]:
        # The markers, not the jobs (one listing each, not a read per running job): a marker that a
        # crash left stale counts until the next reclaim pass (`processing`) removes it.
        with self.folders.open(*RUNNING) as folder:
            names = [name.partition(".") for name in os.listdir(folder.fd)]
        running = sum(1 for job_id, _, project_id in names
                      if ID_PATTERN.fullmatch(job_id) and ID_PATTERN.fullmatch(project_id))
        return len(self._queue()), running

    def _project_names(self) -> list[str]:
        with self.folders.open("jobs") as folder, os.scandir(folder.fd) as entries:
            return sorted(entry.name for entry in entries
                          if entry.is_dir(follow_symlinks=False) and ID_PATTERN.fullmatch(entry.name))

    def projects(self) -> list[str]:
        return self._project_names()

    def _job_files(self, project_id: str | None) -> tuple[list[tuple[str, str]], list[Unreadable]]:
        """(jobId, projectId) of every job-looking file, plus entries that cannot be jobs."""
        found: list[tuple[str, str]] = []
        foreign: list[Unreadable] = []
        if project_id is not None:
            projects = [validate_id(project_id, "projectId")]
        else:
            projects = []
            with self.folders.open("jobs") as folder, os.scandir(folder.fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and ID_PATTERN.fullmatch(entry.name):
                        projects.append(entry.name)
                    elif not is_temp_name(entry.name):
                        reason = "a symbolic link" if entry.is_symlink() else "not a project folder"
                        foreign.append(Unreadable(str(self.jobs_dir / entry.name), reason))
        for project in projects:
            try:
                with self._open("jobs", project) as folder:
                    names = os.listdir(folder.fd)
            except FileNotFoundError:
                continue
            except UnsafeEntry as error:
                foreign.append(Unreadable(error.where, error.reason))
                continue
            for name in names:
                stem, dot, suffix = name.rpartition(".")
                if dot and suffix == "json" and ID_PATTERN.fullmatch(stem):
                    found.append((stem, project))
                elif not is_temp_name(name):
                    foreign.append(Unreadable(str(self.jobs_dir / project / name), "not a job file"))
        return found, foreign

    def list_jobs(self, project_id: str | None = None, status: JobStatus | None = None,
                  limit: int | None = None, cursor: str | None = None) -> JobPage:
        found, unreadable = self._job_files(project_id)
        found.sort(reverse=True)
        page = JobPage(jobs=[], unreadable=unreadable)
        for job_id, project in found:
            if cursor is not None and job_id >= cursor:
                continue
            if limit is not None and len(page.jobs) >= limit:
                page.next_cursor = page.jobs[-1].job_id
                break
            try:
                job = self._get(job_id, project)
            except JobNotFound:
                continue  # deleted while we listed
            except UnreadableJob as error:
                page.unreadable.append(Unreadable(str(self.job_path(project, job_id)),
                                                  str(error).split(": ", 1)[-1].rstrip(".")))
                continue
            if status is None or job.status is status:
                page.jobs.append(job)
        return page

    # -- concepts, images, events --------------------------------------------------------------
    def save_concept(self, concept: Concept) -> None:
        # Not fsynced: every job carries its conceptInputs, so the job file is the durable copy;
        # a power loss can at worst leave this copy unreadable, never a job.
        name = f"{validate_id(concept.concept_id, 'conceptId')}.json"
        with self._open("concepts", concept.project_id, create=True) as folder:
            write_or_replace(folder, name,
                             concept.model_dump_json(indent=2).encode(), durable=False)

    def load_concept(self, project_id: str, concept_id: str) -> Concept:
        name = f"{validate_id(concept_id, 'conceptId')}.json"
        try:
            with self._open("concepts", project_id) as folder:
                return Concept.model_validate_json(read_regular(folder, name, MAX_DOCUMENT_BYTES))
        except FileNotFoundError:
            raise JobNotFound(f"No concept {concept_id} in project {project_id}.") from None
        except UnsafeEntry as error:
            raise UnreadableJob(f"{error}.") from None
        except ValidationError:
            raise UnreadableJob(f"concept {concept_id} of project {project_id}: not a concept document.") from None

    def iter_concepts(self) -> Iterator[Concept]:
        with self.folders.open("concepts") as top, os.scandir(top.fd) as entries:
            projects = sorted(entry.name for entry in entries
                              if entry.is_dir(follow_symlinks=False) and ID_PATTERN.fullmatch(entry.name))
        for project in projects:
            try:
                with self._open("concepts", project) as folder:
                    names = sorted(os.listdir(folder.fd))
            except OSError:
                continue
            for name in names:
                stem, _, suffix = name.rpartition(".")
                if suffix != "json" or not ID_PATTERN.fullmatch(stem):
                    continue
                try:
                    yield self.load_concept(project, stem)
                except (JobNotFound, UnreadableJob):
                    continue  # a foreign file is not a concept

    def save_image(self, project_id: str, job_id: str, png: bytes) -> None:
        # Durable before the job says completed: a completed job always has its image.
        name = f"{validate_id(job_id, 'jobId')}.png"
        with self._open("renders", project_id, create=True) as folder:
            write_or_replace(folder, name, png)

    def load_image(self, project_id: str, job_id: str) -> bytes:
        name = f"{validate_id(job_id, 'jobId')}.png"
        try:
            with self._open("renders", project_id) as folder:
                return read_regular(folder, name, MAX_IMAGE_BYTES)
        except FileNotFoundError:
            raise JobNotFound(f"No image for job {job_id} in project {project_id}.") from None
        except UnsafeEntry as error:
            raise UnreadableJob(f"{error}.") from None

    def events(self, job_id: str, project_id: str | None = None) -> list[Event]:
        project_id = self._locate(job_id, project_id)
        try:
            with self._open("events", project_id) as folder:
                data = read_regular(folder, f"{job_id}.jsonl", MAX_EVENT_LOG_BYTES)
        except FileNotFoundError:
            return []
        except UnsafeEntry as error:
            raise UnreadableJob(f"{error}.") from None
        events = []
        for line in data.splitlines():
            try:
                events.append(Event.model_validate_json(line))
            except ValidationError:
                continue  # a torn last line after a power loss: the job file is the truth
        return events

    def append_events(self, project_id: str, events: list[Event]) -> None:
        for event in events:
            self._append_event(validate_id(project_id, "projectId"), event)

    def sweep_temp_files(self, older_than_seconds: float = 300) -> int:
        """Remove temp files left by a process killed mid-write (they never look like jobs)."""
        removed = 0
        cutoff = time.time() - older_than_seconds
        for directory, _, names in os.walk(self.root):  # os.walk does not follow links
            for name in names:
                if not is_temp_name(name):
                    continue
                path = os.path.join(directory, name)
                try:
                    stale = os.lstat(path).st_mtime < cutoff
                except FileNotFoundError:
                    continue  # another process's write in flight, renamed into place since the listing
                if stale:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        continue
                    removed += 1
        return removed
