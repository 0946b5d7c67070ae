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

The markers under .state let workers find work without reading finished jobs: sorted(listdir(ready))
is the queue order (huey's trick), and `running/` lists what a reclaim must look at. A job's markers
follow from its status alone (`_markers`). A write makes the new status's marker first (durably),
then the job file (durably), then removes the old marker: a crash at any point leaves at worst a
marker the job file no longer agrees with, which the next reader recognises and removes; never a
pending or processing job without its marker. `python -m jobs_core repair` rebuilds the markers
from the job files, for a store damaged by hand or by a disk fault.

Only portable calls: temp files, fsync, rename, link, flock (see atomic.py). Runs on Linux and macOS.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from ..errors import InvalidInput, JobNotFound, StoreWriteError, TransitionConflict, UnreadableJob
from ..ids import ID_PATTERN, validate_id
from ..models import Concept, Event, Job, JobStatus
from .atomic import (
    StripedLocks,
    atomic_write,
    fsync_dir,
    is_temp_name,
    touch_new,
    unlink_quietly,
    write_new,
    write_or_replace,
)
from .base import Change, CopyableStore, JobPage, JobStore, Unreadable, apply_change

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


class FileJobStore(JobStore, CopyableStore):
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
        self._made: set[str] = set()
        self._project_of = ProjectsOfJobs()

    def describe(self) -> str:
        return f"files in {self.root.resolve()}"

    # -- paths (ids are validated before any path is built) ------------------------------------
    def _ensure_parent(self, path: str) -> str:
        """Create the file's project folder, on writes only: a read never makes a project appear.
        A new folder is made durable in its parent too, or a power loss could take its files."""
        parent = os.path.dirname(path)
        if parent not in self._made:
            if not os.path.isdir(parent):
                os.makedirs(parent, exist_ok=True)
                fsync_dir(os.path.dirname(parent))
            self._made.add(parent)
        return path

    def job_path(self, project_id: str, job_id: str) -> Path:
        return Path(self._job_file(project_id, job_id))

    def _job_file(self, project_id: str, job_id: str) -> str:
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
        """The index entries a job's status calls for: pending and processing jobs have one each."""
        if job.status is JobStatus.PENDING:
            return {os.path.join(self.ready_dir, f"{_ms(job.available_at):013d}.{job.job_id}.{job.project_id}")}
        if job.status is JobStatus.PROCESSING:
            return {os.path.join(self.running_dir, f"{job.job_id}.{job.project_id}")}
        return set()

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
    def _write(self, old: Job | None, new: Job, event: Event | None, durable: bool = True) -> None:
        """Write `new` over `old` (None: a create) with its markers; see the module's docstring."""
        before = self._markers(old) if old else set()
        after = self._markers(new)
        added = sorted(after - before)
        path = self._ensure_parent(self._job_file(new.project_id, new.job_id))
        try:
            self._add_markers(added)
            data = new.to_json().encode()
            if old is None:
                write_new(path, data)
            else:
                atomic_write(path, data, sync_dir=durable)
        except (FileExistsError, StoreWriteError):
            for marker in added:  # the job file kept its old version: so does the index
                unlink_quietly(marker)
            raise
        for marker in before - after:
            unlink_quietly(marker)
        if event is not None and not (old is None and event.type == "created"):
            # A creation is not logged: the job file records it, and the service tells it from there.
            self._append_event(new.project_id, event)
        if new.status is JobStatus.PENDING:
            self.notify_work()

    def _add_markers(self, markers: list[str]) -> None:
        try:
            for marker in markers:
                touch_new(marker)
            for directory in {os.path.dirname(marker) for marker in markers}:
                fsync_dir(directory)  # on disk before the job file says so
        except OSError as error:
            raise StoreWriteError(f"Could not update the queue index of {self.root}: {error.strerror}. "
                                  "Nothing was changed.") from error

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
        # No job lock: the job file takes its name with one link, which never replaces, so of two
        # creators of one jobId exactly one wins, and nobody modifies a job before it exists.
        try:
            self._write(None, job, event)
        except FileExistsError:
            raise TransitionConflict(f"Job {job.job_id} already exists.") from None
        self._project_of.remember(job.job_id, job.project_id)

    def modify(self, job_id: str, project_id: str | None, change: Change) -> Job:
        project_id = self._locate(job_id, project_id)
        with self.locks.hold(job_id):
            old = read_job_file(self._job_file(project_id, job_id))
            outcome = apply_change(change, old)
            if outcome.job is not old:
                self._write(old, outcome.job, outcome.event, outcome.durable)
        return outcome.job

    def claim_next(self, change: Change, now: datetime) -> Job | None:
        limit = _ms(now)
        for ms, job_id, project_id in self._queue():
            if ms > limit:
                return None  # in queue order: nothing further is due yet
            fd = self.locks.try_hold(job_id)
            if fd is None:
                continue  # someone else is on it (or on its lock stripe): try the next one
            try:
                claimed = self._claim_locked(ms, job_id, project_id, change)
            finally:
                self.locks.release(fd)
            if claimed is not None:
                return claimed
        return None

    def _queue(self) -> list[tuple[int, str, str]]:
        """(availableAtMs, jobId, projectId) of every ready marker, in queue order."""
        entries = []
        for name in sorted(os.listdir(self.ready_dir)):
            ms, _, rest = name.partition(".")
            job_id, _, project_id = rest.partition(".")
            if ms.isdigit() and ID_PATTERN.fullmatch(job_id) and ID_PATTERN.fullmatch(project_id):
                entries.append((int(ms), job_id, project_id))
        return entries

    def _claim_locked(self, ms: int, job_id: str, project_id: str, change: Change) -> Job | None:
        marker = os.path.join(self.ready_dir, f"{ms:013d}.{job_id}.{project_id}")
        try:
            old = read_job_file(self._job_file(project_id, job_id))
        except (JobNotFound, UnreadableJob):
            unlink_quietly(marker)
            return None
        if marker not in self._markers(old):
            unlink_quietly(marker)  # stale: claimed, canceled or rescheduled since it was written
            return None
        try:
            outcome = apply_change(change, old)
        except TransitionConflict:
            return None
        self._write(old, outcome.job, outcome.event, outcome.durable)
        return outcome.job

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
            unlink_quietly(path)
            unlink_quietly(self.image_path(project_id, job_id))
            unlink_quietly(self._event_path(project_id, job_id))
        self._project_of.forget(job_id)

    def repair_index(self) -> list[str]:
        """Make the queue index agree with the job files again: a marker for every pending and
        processing job, none that no job calls for. Returns what it fixed, in words."""
        fixes: list[str] = []
        wanted: set[str] = set()
        found, _ = self._job_files(None)
        for job_id, project_id in found:
            with self.locks.hold(job_id):
                try:
                    job = read_job_file(self._job_file(project_id, job_id))
                except (JobNotFound, UnreadableJob):
                    continue
                for marker in self._markers(job):
                    wanted.add(marker)
                    if touch_new(marker):
                        fixes.append(f"job {job_id} ({job.status.value}) was missing from the queue index")
        for directory in (self.ready_dir, self.running_dir):
            fsync_dir(directory)
            for name in os.listdir(directory):
                marker = os.path.join(directory, name)
                if marker not in wanted:
                    unlink_quietly(marker)
                    fixes.append(f"removed the stale queue entry {name}")
        return fixes

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
            job_id, _, project_id = name.partition(".")
            if not (ID_PATTERN.fullmatch(job_id) and ID_PATTERN.fullmatch(project_id)):
                continue  # not ours
            try:
                job = read_job_file(self._job_file(project_id, job_id))
            except (JobNotFound, UnreadableJob):
                job = None
            if job is not None and job.status is JobStatus.PROCESSING:
                jobs.append(job)
            else:
                unlink_quietly(self.running_dir / name)  # stale (a crash between two writes)
        return jobs

    def pending(self) -> list[tuple[datetime, str]]:
        return [(datetime.fromtimestamp(ms / 1000, UTC), job_id) for ms, job_id, _ in self._queue()]

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
        # Not fsynced: every job carries its conceptInputs, so the job file is the durable copy;
        # a power loss can at worst leave this copy unreadable, never a job.
        write_or_replace(path, concept.model_dump_json(indent=2).encode(), durable=False)

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
        # Durable before the job says completed: a completed job always has its image.
        write_or_replace(self._ensure_parent(self._image_file(project_id, job_id)), png)

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


