"""FileJobStore: the embedded default, one JSON file per job, on the seed's layout.

    {root}/jobs/{projectId}/{jobId}.json        the job (pretty JSON; `cat` is a monitoring tool)
    {root}/concepts/{projectId}/{conceptId}.json
    {root}/renders/{projectId}/{jobId}.png
    {root}/events/{projectId}/{jobId}.jsonl
    {root}/.state/ready/{availableAtMs}.{jobId}.{projectId}   queue index of pending and processing jobs
    {root}/.state/running/{jobId}.{projectId}                hint: which of those are processing
    {root}/.state/locks/NNN.lock                              striped flock files
    {root}/.state/idempotency/{projectId}/{sha256(key)}       jobId created with an Idempotency-Key
    {root}/.state/index-boot                                  boot id the queue index is whole for
    {root}/.state/spares/{owner}.{n}                          replaced job versions, reused (spares.py)

The .state markers let workers find work without reading finished jobs: sorted(listdir(ready))
is the queue order (huey's trick). A ready marker is a hard link to the job file (a directory
entry, not a new inode), made before the job file takes its new version and removed after it, so
a crash leaves at worst a stale marker, which the next reader recognises and drops. Its folder is
not fsynced while the machine runs: only a power loss can lose it, and a store opened after a
restart of the machine rebuilds missing markers from the job files first (`.state/index-boot`
records the boot the index is whole for). It stays while the job is processing (a claim does not
change availableAt), so a claim costs no marker write; the running hint beside it can always be
rebuilt too: it is created after the job file says processing and removed before it says
anything else, a claimer that finds a processing job without a hint recreates it, and
`processing()` drops hints whose job is not processing.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from .. import lifecycle
from ..errors import InvalidInput, JobNotFound, StoreWriteError, TransitionConflict, UnreadableJob
from ..ids import ID_PATTERN, validate_id
from ..models import Concept, Event, Job, JobStatus
from ..png import is_whole_png
from .atomic import StripedLocks, atomic_write, fsync_dir, is_temp_name, link_quietly, unlink_quietly, write_new
from .base import Change, JobPage, JobStore, Unreadable
from .spares import Spares

log = logging.getLogger("jobs_core.store")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def read_job_file(path: str | Path) -> Job:
    """Parse one job file, raising UnreadableJob with the reason when it is not a job document."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise JobNotFound(f"No job file {os.path.basename(path)}.") from None
    except OSError as error:
        raise UnreadableJob(f"{path}: cannot be read ({error.strerror}).") from None
    try:
        return Job.model_validate_json(data)  # one pass in pydantic-core: the common case
    except ValidationError:
        pass
    raise UnreadableJob(f"{path}: {_why_not_a_job(data)}")


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


def _boot_id() -> str | None:
    try:
        return _read_text(Path("/proc/sys/kernel/random/boot_id"))
    except OSError:
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def _whole_png(path: str) -> bool:
    """Whether the file starts and ends as a PNG does: what a power loss can leave is empty or cut."""
    try:
        with open(path, "rb") as file:
            return is_whole_png(file.read())
    except OSError:
        return False


def _write_or_replace(path: str, data: bytes, durable: bool) -> None:
    """A new file the cheap way; the rare second version (a render done again) replaces the first."""
    try:
        write_new(path, data, durable=durable)
    except FileExistsError:
        atomic_write(path, data, durable=durable)


def _only_progress(old: Job | None, new: Job) -> bool:
    """Whether a write only moves progress, stage or heartbeat of a running attempt.

    Such writes skip the directory fsync (the file's own data is still fsynced): after a power
    loss the previous version may come back, which only loses the latest progress. Every
    transition (status, owner, attempt, cancel request) stays fully durable.
    """
    return (old is not None and old.status is new.status is JobStatus.PROCESSING
            and old.worker_id == new.worker_id and old.attempts == new.attempts
            and old.cancel_requested == new.cancel_requested)


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


class QueueSnapshot:
    """Queue order from one sorted listing of .state/ready, reused across claims while it is exact.

    Listing and sorting the folder costs O(queue length) per claim (tens of ms with thousands of
    queued jobs). Every marker is named by its availableAt, and new markers are written with the
    clock at that moment (submit, retry, release, requeue; a backoff only adds to it), so a marker
    created after the listing sorts after every entry that was already due when the listing was
    taken. Those entries can therefore be handed out from the snapshot in order; the first entry
    at or after the listing instant, or the end of the list, triggers a fresh listing. Entries
    claimed meanwhile by other processes are skipped by the caller (their marker is gone).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names: list[str] = []
        self.position = 0
        self.listed_at_ms = -1  # nothing is trusted until the first listing
        self.guard = threading.Lock()  # worker threads share one store object

    def forget(self) -> None:
        with self.guard:
            self.listed_at_ms = -1

    def due(self, limit_ms: int) -> Iterator[str]:
        """Marker names whose availableAt <= limit_ms, in queue order, listing at most once afresh."""
        fresh = False
        while True:
            with self.guard:
                name, fresh = self._pick(limit_ms, fresh)
            if name is None:
                return
            yield name

    def _pick(self, limit_ms: int, fresh: bool) -> tuple[str | None, bool]:
        while True:
            if self.position >= len(self.names):
                if fresh:
                    return None, fresh
                self._relist()
                fresh = True
                continue
            name = self.names[self.position]
            ms = int(name.split(".", 1)[0])
            if ms >= self.listed_at_ms and not fresh:
                self._relist()  # a newer marker may sort before this one: look again
                fresh = True
                continue
            if ms > limit_ms:
                return None, fresh  # sorted by availability: nothing further is due yet
            self.position += 1
            return name, fresh

    def _relist(self) -> None:
        self.listed_at_ms = _ms(datetime.now(UTC))  # before listing: markers made during it are newer
        self.names = sorted(os.listdir(self.directory))
        self.position = 0


class FileJobStore(JobStore):
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir_str = str(self.jobs_dir)
        self.events_dir_str = str(self.root / "events")
        self.renders_dir_str = str(self.root / "renders")
        self.concepts_dir_str = str(self.root / "concepts")
        self.state_dir = self.root / ".state"
        self.ready_dir = self.state_dir / "ready"
        self.running_dir = self.state_dir / "running"
        for directory in (self.jobs_dir, self.root / "concepts", self.root / "renders",
                          self.root / "events", self.ready_dir, self.running_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.locks = StripedLocks(self.state_dir / "locks")
        # Separate lock files: a key lock is held while the job lock is taken, and two flocks on
        # one file from one process would deadlock.
        self.key_locks = StripedLocks(self.state_dir / "key-locks", stripes=64)
        self._made: set[str | Path] = set()
        self._project_of = ProjectsOfJobs()
        self._queue = QueueSnapshot(self.ready_dir)
        self._spares = Spares(str(self.state_dir / "spares"))
        # Entries a restart can check and rebuild: queue markers and renders. Fsynced until the
        # index is known whole for this boot (a rebuild writes them durably).
        self._sync_rebuildable = True
        self._sync_rebuildable = not self._index_survived_since_boot()

    def describe(self) -> str:
        return f"files in {self.root.resolve()}"

    def close(self) -> None:
        self._spares.close()

    # -- the queue index across power losses -----------------------------------------------------
    def _index_survived_since_boot(self) -> bool:
        """Whether ready markers may skip their folder fsync, rebuilding the index first if needed.

        Markers only go missing when the machine stops without flushing its page cache (a power
        loss or a kernel crash); a killed process loses nothing that was written. So the index is
        trusted for as long as the machine has not restarted since it was last known whole: its
        boot id is recorded in .state/index-boot, and a store opened under another boot id
        rebuilds the markers from the job files (which are always durable) before any claim.
        That saves a submit the fsync of .state/ready (and a completion those of its render: see
        save_image). Where the boot id cannot be read (not Linux) or the store cannot be
        written, both stay fsynced instead.
        """
        boot_id = _boot_id()
        if boot_id is None:
            return False
        record = self.state_dir / "index-boot"
        try:
            if _read_text(record) == boot_id:
                return True
            with open(self.state_dir / "index-rebuild.lock", "a") as guard:  # one rebuilder at a time
                fcntl.flock(guard, fcntl.LOCK_EX)
                if _read_text(record) == boot_id:
                    return True  # another process rebuilt it while we waited
                # Renders finished since the record was written may have lost their folder entry;
                # with no record (a new store, or one from an older version) none was left unsynced.
                since = datetime.fromtimestamp(record.stat().st_mtime, UTC) if record.exists() else None
                self.rebuild_queue_index(images_since=since)
                atomic_write(record, boot_id.encode())
        except OSError as error:  # e.g. a store we may read but not write
            log.warning("queue markers of %s stay fsynced: %s", self.root, error.strerror)
            return False
        return True

    def rebuild_queue_index(self, images_since: datetime | None = None) -> int:
        """Make the index whole again after a restart: returns how many jobs it was missing.

        Every pending or processing job gets its ready marker back (durably), and a job completed
        after `images_since` whose image is gone or cut short (renders are not fsynced while the
        machine runs) goes back to the queue to be rendered again.
        """
        repaired = 0
        found, _ = self._job_files(None)
        for job_id, project_id in found:
            path = self._job_file(project_id, job_id)
            try:
                job = read_job_file(path)
            except (JobNotFound, UnreadableJob):
                continue
            if (images_since is not None and job.status is JobStatus.COMPLETED and job.finished_at is not None
                    and job.finished_at >= images_since
                    and not _whole_png(self._image_file(project_id, job_id))):
                with self.locks.hold(job_id):
                    self._write(job, *lifecycle.image_lost(job))
                repaired += 1
                continue
            for marker in self._markers(job):
                if not os.path.exists(marker):
                    link_quietly(path, marker)
                    repaired += 1
        fsync_dir(self.ready_dir)
        if repaired:
            log.warning("repaired the queue index of %s for %d jobs after a restart of the machine",
                        self.root, repaired)
        self._queue.forget()
        return repaired

    # -- paths (ids are validated before any path is built) ------------------------------------
    def _dir(self, kind: str, project_id: str) -> Path:
        return self.root / kind / validate_id(project_id, "projectId")

    def _ensure_parent(self, path: str | Path) -> str | Path:
        """Create the file's project folder, on writes only: a read never makes a project appear."""
        parent = os.path.dirname(path)
        if parent not in self._made:
            os.makedirs(parent, exist_ok=True)
            self._made.add(parent)
        return path

    def job_path(self, project_id: str, job_id: str) -> Path:
        return Path(self._job_file(project_id, job_id))

    def _job_file(self, project_id: str, job_id: str) -> str:
        # Strings, not Paths, on the hot path: pathlib's parsing costs more than the rest of a claim.
        return os.path.join(self.jobs_dir_str, validate_id(project_id, "projectId"),
                            validate_id(job_id, "jobId") + ".json")

    def image_path(self, project_id: str, job_id: str) -> Path:
        return Path(self._image_file(project_id, job_id))

    def _image_file(self, project_id: str, job_id: str) -> str:
        return os.path.join(self.renders_dir_str, validate_id(project_id, "projectId"),
                            validate_id(job_id, "jobId") + ".png")

    def _event_path(self, project_id: str, job_id: str) -> Path:
        return Path(self._event_file(project_id, job_id))

    def _event_file(self, project_id: str, job_id: str) -> str:
        return os.path.join(self.events_dir_str, validate_id(project_id, "projectId"),
                            validate_id(job_id, "jobId") + ".jsonl")

    def _markers(self, job: Job) -> set[str]:
        """The job's durable queue marker: pending and processing jobs have one, final jobs none."""
        if job.status in (JobStatus.PENDING, JobStatus.PROCESSING):
            return {os.path.join(self.ready_dir, f"{_ms(job.available_at):013d}.{job.job_id}.{job.project_id}")}
        return set()

    def _hint(self, job_id: str, project_id: str) -> str:
        return os.path.join(self.running_dir, f"{job_id}.{project_id}")

    def _touch_hint(self, job: Job) -> None:
        # A hard link to the job file, not a new empty file: no inode to allocate. Only a hint:
        # if it cannot be made, the job is still found through its ready marker.
        if not link_quietly(self._job_file(job.project_id, job.job_id), self._hint(job.job_id, job.project_id)):
            log.warning("could not write the running hint of %s", job.job_id)

    def _locate(self, job_id: str, project_id: str | None) -> str:
        validate_id(job_id, "jobId")
        if project_id is not None:
            return validate_id(project_id, "projectId")
        known = self._project_of.get(job_id)
        if known is not None:
            return known
        for entry in os.scandir(self.jobs_dir):
            if entry.is_dir() and os.path.exists(os.path.join(entry.path, f"{job_id}.json")):
                self._project_of.remember(job_id, entry.name)
                return entry.name
        raise JobNotFound(f"No job with id {job_id}.")

    # -- writes ----------------------------------------------------------------------------------
    def _write(self, old: Job | None, new: Job, event: Event | None) -> None:
        before = self._markers(old) if old else set()
        after = self._markers(new)
        added = after - before
        running_before = old is not None and old.status is JobStatus.PROCESSING
        running_after = new.status is JobStatus.PROCESSING
        if running_before and not running_after:
            unlink_quietly(self._hint(old.job_id, old.project_id))  # before: never a hint on a non-processing job
        try:
            # New markers are links to the new file, made durable before it replaces the old one:
            # a crash leaves at worst a stale marker, never a lost job.
            path, data = self._ensure_parent(self._job_file(new.project_id, new.job_id)), new.to_json().encode()
            if old is None:
                write_new(path, data, links=sorted(added), sync_links=self._sync_rebuildable)
            else:
                atomic_write(path, data, sync_dir=not _only_progress(old, new), links=sorted(added),
                             sync_links=self._sync_rebuildable, spares=self._spares)
        except StoreWriteError:
            for marker in added:  # the job file kept its old version: drop the index entries for the new one
                unlink_quietly(marker)
            if running_before and not running_after:
                self._touch_hint(old)  # still processing after all
            raise
        if running_after and not running_before:
            self._touch_hint(new)  # after: the job file already says processing
        for marker in before - after:
            unlink_quietly(marker)
        if event is not None and not (old is None and event.type == "created"):
            # A creation is not logged: the job file records it, and events() tells it from there.
            # That keeps a submit to the job file and its marker (the log costs an inode).
            self._append_event(new.project_id, event)
        if new.status is JobStatus.PENDING:
            self.notify_work()

    def _append_event(self, project_id: str, event: Event) -> None:
        line = event.model_dump_json() + "\n"
        # One write() with O_APPEND: lines from concurrent writers never interleave.
        path = self._ensure_parent(self._event_file(project_id, event.job_id))
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as error:
            # The transition is already durable in the job file (the truth); raising now would
            # report a change that happened as one that failed. The log line is lost, not the job.
            log.warning("could not append to %s: %s; the job file is up to date", path, error.strerror)

    def create(self, job: Job, event: Event | None) -> None:
        if job.idempotency_key is None:
            return self._create(job, event)
        marker = self._key_marker(job.project_id, job.idempotency_key)
        with self.key_locks.hold(marker.name):
            existing = self.find_by_idempotency_key(job.project_id, job.idempotency_key)
            if existing is not None:
                raise TransitionConflict(
                    f"Idempotency-Key already used by job {existing.job_id} in project {job.project_id}.")
            marker.parent.mkdir(parents=True, exist_ok=True)
            # Marker first: a crash before the job is written leaves a marker naming a missing
            # job, which find_by_idempotency_key treats as unused.
            atomic_write(marker, job.job_id.encode())
            self._create(job, event)

    def _key_marker(self, project_id: str, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.state_dir / "idempotency" / validate_id(project_id, "projectId") / digest

    def find_by_idempotency_key(self, project_id: str, key: str) -> Job | None:
        """O(1): the marker names the job; a marker whose job is gone (deleted, crash) is unused."""
        try:
            job_id = self._key_marker(project_id, key).read_text()
            job = self.get(job_id, project_id)
        except (FileNotFoundError, InvalidInput, JobNotFound, UnreadableJob):
            return None
        return job if job.idempotency_key == key else None

    def _create(self, job: Job, event: Event | None) -> None:
        # No job lock: write_new gives the file its name with one link, which never replaces, so
        # of two creators of one jobId exactly one wins, and nobody modifies a job before it exists.
        try:
            self._write(None, job, event)
        except FileExistsError:
            raise TransitionConflict(f"Job {job.job_id} already exists.") from None
        self._project_of.remember(job.job_id, job.project_id)

    def modify(self, job_id: str, project_id: str | None, change: Change) -> Job:
        project_id = self._locate(job_id, project_id)
        with self.locks.hold(job_id):
            old = read_job_file(self._job_file(project_id, job_id))
            new, event = change(old)
            if new is not old:
                self._write(old, new, event)
        return new

    def claim_next(self, change: Change, now: datetime) -> Job | None:
        limit = _ms(now)
        for name in self._queue.due(limit):
            marker = os.path.join(self.ready_dir, name)
            _, job_id, project_id = name.split(".", 2)
            if os.path.exists(self._hint(job_id, project_id)) or not os.path.exists(marker):
                continue  # processing, or claimed, canceled or rescheduled since the queue was listed
            fd = self.locks.try_hold(job_id)
            if fd is None:
                # Someone else is on it (or on its lock stripe). Not relisting here keeps a claim O(1)
                # under contention; if that job stays unclaimed, the next listing shows it again.
                continue  # someone else is on it (or on its lock stripe): try the next one
            try:
                claimed = self._claim_locked(marker, job_id, project_id, change)
            finally:
                self.locks.release(fd)
            if claimed is not None:
                return claimed
        return None

    def _claim_locked(self, marker: str, job_id: str, project_id: str, change: Change) -> Job | None:
        try:
            old = read_job_file(self._job_file(project_id, job_id))
        except (JobNotFound, UnreadableJob):
            unlink_quietly(marker)
            return None
        if marker not in self._markers(old):
            unlink_quietly(marker)  # stale: claimed, canceled or rescheduled since it was written
            return None
        if old.status is JobStatus.PROCESSING:
            self._touch_hint(old)  # its hint was lost (a crash or power loss): rebuild it
            return None
        try:
            new, event = change(old)
        except TransitionConflict:
            return None
        self._write(old, new, event)
        return new

    def delete(self, job_id: str, project_id: str | None, check: Callable[[Job], None]) -> None:
        project_id = self._locate(job_id, project_id)
        with self.locks.hold(job_id):
            path = self.job_path(project_id, job_id)
            try:
                job = read_job_file(path)
            except UnreadableJob:
                job = None  # a corrupt job file may always be deleted
            if job is not None:
                check(job)
                for marker in self._markers(job):
                    unlink_quietly(marker)
            unlink_quietly(self._hint(job_id, project_id))
            unlink_quietly(path)
            unlink_quietly(self.image_path(project_id, job_id))
            unlink_quietly(self._event_path(project_id, job_id))
        self._project_of.forget(job_id)

    # -- reads -----------------------------------------------------------------------------------
    def get(self, job_id: str, project_id: str | None = None) -> Job:
        project_id = self._locate(job_id, project_id)
        try:
            return read_job_file(self._job_file(project_id, job_id))
        except JobNotFound:
            raise JobNotFound(f"No job with id {job_id} in project {project_id}.") from None

    def processing(self) -> list[Job]:
        jobs = []
        for name in sorted(os.listdir(self.running_dir)):
            job_id, project_id = name.split(".", 1)
            try:
                job = read_job_file(self.job_path(project_id, job_id))
            except (JobNotFound, UnreadableJob):
                unlink_quietly(self.running_dir / name)
                continue
            if job.status is JobStatus.PROCESSING:
                jobs.append(job)
            else:
                unlink_quietly(self.running_dir / name)  # stale hint (a crash between two writes)
        return jobs

    def pending(self) -> list[tuple[datetime, str]]:
        running = set(os.listdir(self.running_dir))
        queue = []
        for name in sorted(os.listdir(self.ready_dir)):
            ms, job_id, project_id = name.split(".", 2)
            if f"{job_id}.{project_id}" not in running:
                queue.append((datetime.fromtimestamp(int(ms) / 1000, UTC), job_id))
        return queue

    def projects(self) -> list[str]:
        return sorted(entry.name for entry in os.scandir(self.jobs_dir)
                      if entry.is_dir() and ID_PATTERN.fullmatch(entry.name))

    def _job_files(self, project_id: str | None) -> tuple[list[tuple[str, str]], list[Unreadable]]:
        """(jobId, projectId) of every job-looking file, plus files that cannot be jobs."""
        found: list[tuple[str, str]] = []
        foreign: list[Unreadable] = []
        if project_id is not None:
            projects = [validate_id(project_id, "projectId")]
        else:
            projects = []
            for entry in os.scandir(self.jobs_dir):
                if entry.is_dir() and ID_PATTERN.fullmatch(entry.name):
                    projects.append(entry.name)
                elif not is_temp_name(entry.name):
                    foreign.append(Unreadable(entry.path, "not a project folder"))
        for project in projects:
            try:
                names = os.listdir(self.jobs_dir / project)
            except FileNotFoundError:
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
            path = self.jobs_dir / project / f"{job_id}.json"
            try:
                job = read_job_file(path)
            except JobNotFound:
                continue  # deleted while we listed
            except UnreadableJob as error:
                page.unreadable.append(Unreadable(str(path), str(error).split(": ", 1)[-1]))
                continue
            if status is None or job.status is status:
                page.jobs.append(job)
        return page

    # -- concepts, images, events --------------------------------------------------------------
    def _concept_file(self, project_id: str, concept_id: str) -> str:
        return os.path.join(self.concepts_dir_str, validate_id(project_id, "projectId"),
                            validate_id(concept_id, "conceptId") + ".json")

    def save_concept(self, concept: Concept) -> None:
        path = self._ensure_parent(self._concept_file(concept.project_id, concept.concept_id))
        # Not fsynced: every job carries its conceptInputs, so the job file is the durable copy.
        _write_or_replace(path, concept.model_dump_json(indent=2).encode(), durable=False)

    def load_concept(self, project_id: str, concept_id: str) -> Concept:
        path = self._concept_file(project_id, concept_id)
        try:
            with open(path, "rb") as file:
                return Concept.model_validate_json(file.read())
        except FileNotFoundError:
            raise JobNotFound(f"No concept {concept_id} in project {project_id}.") from None
        except ValidationError:
            raise UnreadableJob(f"{path}: not a concept document.") from None

    def iter_concepts(self) -> Iterator[Concept]:
        for path in sorted((self.root / "concepts").glob("*/*.json")):
            try:
                yield Concept.model_validate_json(path.read_bytes())
            except (OSError, ValidationError):
                continue  # a foreign file is not a concept

    def save_image(self, project_id: str, job_id: str, png: bytes) -> None:
        # Not fsynced while the index is trusted: only a power loss can lose or truncate a render
        # written before the job's own fsynced write, and the check after a restart finds it
        # (missing, or without its PNG end) and renders the job again.
        _write_or_replace(self._ensure_parent(self._image_file(project_id, job_id)), png,
                          durable=self._sync_rebuildable)

    def load_image(self, project_id: str, job_id: str) -> bytes:
        try:
            return self.image_path(project_id, job_id).read_bytes()
        except FileNotFoundError:
            raise JobNotFound(f"No image for job {job_id} in project {project_id}.") from None

    def events(self, job_id: str, project_id: str | None = None) -> list[Event]:
        project_id = self._locate(job_id, project_id)
        try:
            lines = self._event_path(project_id, job_id).read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
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
        cutoff = datetime.now().timestamp() - older_than_seconds
        for directory, _, names in os.walk(self.root):
            for name in names:
                if not is_temp_name(name):
                    continue
                path = os.path.join(directory, name)
                try:
                    stale = os.path.getmtime(path) < cutoff
                except FileNotFoundError:
                    continue  # another process's write in flight, renamed into place since the listing
                if stale:
                    unlink_quietly(path)
                    removed += 1
        return removed


