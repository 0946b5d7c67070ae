"""Where the index's rows come from, and how it learns that some of them changed.

- `FileJobSource` reads the file store's job files directly (plain `json.loads`, no pydantic),
  keyed by their path under `jobs/` ("project/jobId.json").
- `JobsWatcher` is a watchdog observer on `jobs/` that reports the keys of changed files; when it
  cannot start (inotify limits, a network file system) `SignaturePoller` compares file signatures
  (inode, mtime_ns, size) every few seconds instead.
- `StoreFeedSource` serves any other JobStore (PostgreSQL) through `jobs_updated_since`.
"""
from __future__ import annotations

import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import NamedTuple

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from ..errors import JobNotFound, JobsError
from ..ids import ID_PATTERN
from ..models import Job
from ..store.atomic import is_temp_name
from ..store.base import JobStore
from .frame import STATUSES, problem

Signature = tuple[int, int, int]  # (inode, mtime_ns, size): an atomic replace changes the inode
_loads = json.JSONDecoder().decode  # json.loads minus its argument checks
READ_BATCH = 256  # files per hand-over from the reader thread
READ_AHEAD = 4  # batches read ahead of the parser
OnChange = Callable[[set[str]], None]


class Read(NamedTuple):
    """What reading one key found: a job document, or why it is unreadable, or nothing (gone)."""

    doc: dict | None = None
    problem: str | None = None
    signature: Signature | None = None

    @property
    def gone(self) -> bool:
        return self.doc is None and self.problem is None


GONE = Read()


def _job_file_problem(key: str) -> str | None:
    project, _, name = key.rpartition("/")
    if not project:
        return "not a project folder"
    stem, dot, suffix = name.rpartition(".")
    if not (dot and suffix == "json" and ID_PATTERN.fullmatch(stem)):
        return "not a job file"
    return None


class FileJobSource:
    """The job files of a FileJobStore: `{jobs_dir}/{projectId}/{jobId}.json`."""

    kind = "files"

    def __init__(self, jobs_dir: str | os.PathLike, signed: bool = False) -> None:
        self.jobs_dir = str(jobs_dir)
        #: also record each file's signature as it is read (needed only by the polling fallback)
        self.signed = signed

    def keys(self) -> Iterator[str]:
        """Every file under jobs/ except our temp files, as "project/name" (or "name" at the top)."""
        with os.scandir(self.jobs_dir) as top:
            entries = list(top)
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not ID_PATTERN.fullmatch(entry.name):
                    yield entry.name
                    continue
                prefix = entry.name + "/"
                try:
                    names = os.listdir(entry.path)
                except FileNotFoundError:
                    continue  # the project folder went away while we listed
                for name in names:
                    if not is_temp_name(name):
                        yield prefix + name
            elif not is_temp_name(entry.name):
                yield entry.name

    def location(self, key: str) -> str:
        return f"{self.jobs_dir}/{key}"

    def initial(self) -> Iterator[tuple[str, Read]]:
        """Every file, read and parsed. A helper thread does the file system calls (which release
        the GIL) a batch ahead, while this thread parses: reading overlaps with parsing."""
        keys = list(self.keys())
        batches = [keys[start:start + READ_BATCH] for start in range(0, len(keys), READ_BATCH)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-index-reader") as reader:
            ahead = deque(reader.submit(self._load_batch, batch) for batch in batches[:READ_AHEAD])
            for next_batch in range(READ_AHEAD, len(batches) + READ_AHEAD):
                loaded = ahead.popleft().result()
                if next_batch < len(batches):  # bounded: at most READ_AHEAD batches of bytes in memory
                    ahead.append(reader.submit(self._load_batch, batches[next_batch]))
                for key, found in loaded:
                    yield key, found if found.__class__ is Read else self._parse(key, *found)

    def read(self, key: str) -> Read:
        """Read and parse one file as it is now (atomic writes: never half-written)."""
        found = self._load(key)
        return found if found.__class__ is Read else self._parse(key, *found)

    def _load_batch(self, keys: list[str]) -> list[tuple[str, Read | tuple[bytes, Signature | None, str | None]]]:
        load = self._load
        return [(key, load(key)) for key in keys]

    def _load(self, key: str) -> Read | tuple[bytes, Signature | None, str | None]:
        """The file's bytes (and signature), or a Read when there is nothing to parse."""
        bad_name = _job_file_problem(key)
        try:
            fd = os.open(f"{self.jobs_dir}/{key}", os.O_RDONLY)
        except FileNotFoundError:
            return GONE
        except IsADirectoryError:
            if "/" not in key and ID_PATTERN.fullmatch(key):
                return GONE  # a project folder: its files are keys of their own
            return Read(problem=bad_name or "not a job file", signature=(0, 0, 0))
        except OSError as error:
            return Read(problem=f"cannot be read ({error.strerror})", signature=(0, 0, 0))
        signature = None
        try:
            if self.signed:
                stat = os.fstat(fd)
                signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            data = b"" if bad_name else _read_to_end(fd)
        except OSError as error:
            return Read(problem=f"cannot be read ({error.strerror})", signature=(0, 0, 0))
        finally:
            os.close(fd)
        return data, signature, bad_name

    @staticmethod
    def _parse(key: str, data: bytes, signature: Signature | None, bad_name: str | None) -> Read:
        try:
            doc = _loads(data.decode())
        except ValueError:
            doc = None
        if (doc.__class__ is dict and doc.get("status") in STATUSES and doc.get("renderType").__class__ is str
                and not bad_name and key == f"{doc.get('projectId')}/{doc.get('jobId')}.json"):
            return Read(doc, None, signature)
        return Read(None, bad_name or _why_unreadable(data, doc), signature)

    def signatures(self) -> dict[str, Signature]:
        """(inode, mtime_ns, size) of every file, for the polling fallback (stat only, no reads)."""
        found: dict[str, Signature] = {}
        for key in self.keys():
            try:
                stat = os.stat(f"{self.jobs_dir}/{key}", follow_symlinks=False)
            except FileNotFoundError:
                continue
            found[key] = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        return found

    def keys_under(self, project: str) -> list[str]:
        try:
            return [f"{project}/{name}" for name in os.listdir(f"{self.jobs_dir}/{project}")
                    if not is_temp_name(name)]
        except (FileNotFoundError, NotADirectoryError):
            return []


def _read_to_end(fd: int) -> bytes:
    data = os.read(fd, 1 << 16)  # a job file is about 1 KB: one read, and one more to see the end
    while chunk := os.read(fd, 1 << 16):
        data += chunk
    return data


def _why_unreadable(data: bytes, doc: object) -> str:
    if not data.strip():
        return "the file is empty"
    if doc is None:
        try:
            _loads(data.decode())
        except UnicodeDecodeError:
            return "not valid JSON (not UTF-8 text)"
        except ValueError as error:
            return f"not valid JSON ({str(error).split(':')[0]})"
    return problem(doc) or "its jobId or projectId does not match its path"


# -- learning about changes ----------------------------------------------------------------------
WATCHED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent,
                  DirCreatedEvent, DirMovedEvent, DirDeletedEvent]


class _JobsEventHandler(FileSystemEventHandler):
    """Turns watchdog events into changed keys. Runs on the observer thread: it only records."""

    def __init__(self, jobs_dir: str, on_change: OnChange, on_folder: Callable[[str], None]) -> None:
        self.prefix = os.path.realpath(jobs_dir) + os.sep
        self.on_change = on_change
        self.on_folder = on_folder

    def _key(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        if not path.startswith(self.prefix):
            return None
        key = path[len(self.prefix):]
        if is_temp_name(key.rpartition("/")[2]) or key.count("/") > 1:
            return None
        return key

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("created", "modified", "moved", "deleted"):
            return  # opened/closed events: our own reads would otherwise feed back forever
        paths = [event.src_path]
        if event.event_type == "moved":
            paths.append(event.dest_path)  # an atomic write: temp (ignored) -> job file
        keys = {key for key in map(self._key, paths) if key}
        if event.is_directory:
            for key in keys:
                if "/" not in key:
                    self.on_folder(key)  # a project folder came, went or moved: re-list it
            return
        if keys:
            self.on_change(keys)


class JobsWatcher:
    """A watchdog observer on jobs/ (inotify on Linux). `start` raises OSError if it cannot run."""

    def __init__(self, jobs_dir: str, on_change: OnChange, on_folder: Callable[[str], None]) -> None:
        jobs_dir = os.path.realpath(jobs_dir)
        self.observer = Observer()
        self.observer.daemon = True
        self.observer.schedule(_JobsEventHandler(jobs_dir, on_change, on_folder), jobs_dir,
                               recursive=True, event_filter=WATCHED_EVENTS)

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        if self.observer.is_alive():
            self.observer.join(timeout=5)


class SignaturePoller:
    """The fallback when no observer can run: every `interval` seconds, stat every file and report
    the keys whose signature differs from what the index last read."""

    def __init__(self, source: FileJobSource, known: Callable[[], dict[str, Signature]],
                 on_change: OnChange, interval: float) -> None:
        self.source = source
        self.known = known
        self.on_change = on_change
        self.interval = interval
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-index-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def poll_once(self) -> set[str]:
        current = self.source.signatures()
        known = self.known()
        changed = {key for key, signature in current.items() if known.get(key) != signature}
        changed.update(key for key in known if key not in current)
        self.polls += 1
        if changed:
            self.on_change(changed)
        return changed

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except OSError:
                continue  # the store is briefly unreachable (network fs): try again next time

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


class StoreFeedSource:
    """Any JobStore, through `jobs_updated_since` (PostgreSQL has an index on updatedAt).

    Deletions are not in that feed: the index drops a job when `read` finds it gone, which the
    monitor's own delete action triggers.
    """

    kind = "store feed"
    #: re-ask for a little before the newest change seen: a transaction that committed late
    #: carries an updatedAt older than rows we already saw. Re-reading a row is harmless.
    overlap = timedelta(seconds=5)

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.newest: datetime | None = None

    @staticmethod
    def key(job: Job) -> str:
        return f"{job.project_id}/{job.job_id}.json"

    def _docs(self, jobs: list[Job]) -> Iterator[tuple[str, Read]]:
        for job in jobs:
            if self.newest is None or job.updated_at > self.newest:
                self.newest = job.updated_at
            yield self.key(job), Read(doc=job.model_dump(mode="json", by_alias=True))

    def location(self, key: str) -> str:
        return f"{self.store.describe()}: {key}"

    def initial(self) -> Iterator[tuple[str, Read]]:
        yield from self._docs(self.store.jobs_updated_since(None))

    def changes(self) -> list[tuple[str, Read]]:
        since = None if self.newest is None else self.newest - self.overlap
        return list(self._docs(self.store.jobs_updated_since(since)))

    def read(self, key: str) -> Read:
        project, _, name = key.partition("/")
        try:
            job = self.store.get(name.removesuffix(".json"), project)
        except JobNotFound:
            return GONE
        except JobsError as error:
            return Read(problem=str(error))
        return Read(doc=job.model_dump(mode="json", by_alias=True))
