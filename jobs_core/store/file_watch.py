"""The file store's views over every job (for the monitor): a fast scan, reads of one place, a watch.

Keys are paths under jobs/: "{projectId}/{jobId}.json" for a job file, "{project}/{name}" for
anything else in a project folder, and a bare "{name}" for an entry at the top that is not a
project folder. The store's temp files are never keys, and a project folder is no place of its
own unless it cannot be opened.

Speed matters (every job, 100,000 of them, on each monitor start): files are decoded with plain
`json`, never pydantic, and checked only for what a view needs (a known status, a render type,
ids that match the path); a reader thread makes the file system calls, which release the GIL, a
batch ahead while the caller's thread decodes. The store's rules for untrusted files hold here
too (folders.py): folders and files are opened relative to their parent without following links,
never blocking, and only regular files under the document size limit are read; the odd entry is
reported with the store's own words ("a symbolic link", "a FIFO", "larger than 1 MiB").

Watching: a watchdog observer (inotify on Linux) on jobs/ reports the keys of changed files. When
it cannot start (inotify limits), or polling is asked for (a network file system, where inotify
never hears of other hosts' writes), every file's signature (inode, mtime_ns, size) is compared
every few seconds instead.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import groupby
from operator import itemgetter

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

from ..errors import InvalidInput
from ..models import JobStatus
from .base import JobRecord, OnChange
from .folders import FILE_FLAGS, Folder, StoreFolders, kind_of, size_text

log = logging.getLogger("jobs_core.store")

STATUSES = frozenset(status.value for status in JobStatus)
Signature = tuple[int, int, int]  # (inode, mtime_ns, size): an atomic replace changes the inode
_decode = json.JSONDecoder().decode  # json.loads minus its argument checks
READ_BATCH = 256  # files per hand-over from the reader thread
READ_AHEAD = 4  # batches read ahead of the decoder: bounds the bytes held in memory
NOT_A_FOLDER = "not a project folder"
NOT_A_JOB = "not a job file"
A_LINK = "a symbolic link"
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}

Found = bytes | str | None  # a file's bytes, or why it cannot be read, or None: nothing there


class JobFiles:
    """The job files under `jobs_dir`, read and watched for views over every job.

    `id_pattern` says which names are ids (project folders, job files); `is_temp` which names are
    the store's in-flight temp files (never jobs, never reported); `max_bytes` the largest job
    document the store reads.
    """

    def __init__(self, jobs_dir: str | os.PathLike, id_pattern: re.Pattern[str],
                 is_temp: Callable[[str], bool], max_bytes: int) -> None:
        self.jobs_dir = os.fspath(jobs_dir)
        self.id_pattern = id_pattern
        self.is_temp = is_temp
        self.max_bytes = max_bytes
        self.folders = StoreFolders(self.jobs_dir)

    def key(self, project_id: str, job_id: str) -> str:
        return f"{project_id}/{job_id}.json"

    def location(self, key: str) -> str:
        return f"{self.jobs_dir}/{key}"

    def is_job_name(self, name: str) -> bool:
        return name.endswith(".json") and self.id_pattern.fullmatch(name[:-5]) is not None

    # -- listing ---------------------------------------------------------------------------------
    def top(self) -> tuple[list[str], dict[str, str]]:
        """The project folders at the top of jobs/, and every other entry there with why it is none."""
        projects: list[str] = []
        others: dict[str, str] = {}
        try:
            with self.folders.open() as top, os.scandir(top.fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False) and self.id_pattern.fullmatch(entry.name):
                        projects.append(entry.name)
                    elif not self.is_temp(entry.name):
                        others[entry.name] = A_LINK if entry.is_symlink() else NOT_A_FOLDER
        except FileNotFoundError:
            pass  # no jobs/ folder: no jobs
        return projects, others

    def names(self, project: str) -> list[str]:
        """The entries of a project folder, temp files left out.

        Raises FileNotFoundError when it is gone, another OSError when it cannot be opened.
        """
        with self.folders.open(project) as folder:
            is_temp = self.is_temp
            return [name for name in os.listdir(folder.fd) if not is_temp(name)]

    # -- reading ---------------------------------------------------------------------------------
    def scan(self) -> Iterator[JobRecord]:
        """Every job file, read and decoded, and every place that is not a readable job (with why).

        A helper thread opens and reads the files a batch ahead while this one decodes them.
        """
        projects, others = self.top()
        for name, reason in others.items():
            yield JobRecord(name, self.location(name), None, reason)
        files: list[tuple[str, str]] = []
        for project in projects:
            try:
                names = self.names(project)
            except FileNotFoundError:
                continue  # the folder went away while we listed
            except OSError as error:
                yield JobRecord(project, self.location(project), None, _cannot_open(error))
                continue
            for name in names:
                if self.is_job_name(name):
                    files.append((project, name))
                else:
                    key = f"{project}/{name}"
                    yield JobRecord(key, self.location(key), None, NOT_A_JOB)
        for record in self._read_files(files):
            if record.doc is not None or record.problem is not None:
                yield record

    def read_many(self, keys: Iterable[str]) -> Iterator[JobRecord]:
        """`read` of each key, the job files among them read the way `scan` reads (a project
        folder opened once for its files, a thread reading ahead): a restart re-reading 20,000
        changed files spends its time in the files, not in opening their folders."""
        files: list[tuple[str, str]] = []
        for key in keys:
            project, slash, name = key.partition("/")
            if (slash and self.id_pattern.fullmatch(project) and "/" not in name and self.is_job_name(name)
                    and not self.is_temp(name)):
                files.append((project, name))
            else:
                yield self.read(key)
        files.sort()
        yield from self._read_files(files)

    def _read_files(self, files: list[tuple[str, str]]) -> Iterator[JobRecord]:
        """The record of each (project, job file name), in that order; one with neither a document
        nor a problem where nothing is there."""
        batches = [files[start:start + READ_BATCH] for start in range(0, len(files), READ_BATCH)]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-files-reader") as reader:
            ahead = deque(reader.submit(self._read_batch, batch) for batch in batches[:READ_AHEAD])
            for number, batch in enumerate(batches):
                found = ahead.popleft().result()
                if number + READ_AHEAD < len(batches):
                    ahead.append(reader.submit(self._read_batch, batches[number + READ_AHEAD]))
                for (project, name), content in zip(batch, found, strict=True):
                    key = f"{project}/{name}"
                    yield self._record(project, name, content) or JobRecord(key, self.location(key))

    def _read_batch(self, batch: list[tuple[str, str]]) -> list[Found]:
        """Read each file, opening each project folder once (its files are opened relative to it)."""
        found: list[Found] = []
        for project, group in groupby(batch, key=itemgetter(0)):
            names = [name for _, name in group]
            try:
                with self.folders.open(project) as folder:
                    found.extend([self._read_file(folder, name) for name in names])
            except OSError:  # gone (or unsafe) since it was listed: its files are nothing now
                found.extend([None] * len(names))
        return found

    def _read_file(self, folder: Folder, name: str) -> Found:
        """The bytes of the regular file `name`, or why it is not read, or None (nothing there).

        One open and reads on the common path; the file's kind is looked at only when the
        content is odd (empty, unreadable), so a FIFO or a folder gets the store's word for it.
        """
        try:
            fd = os.open(name, FILE_FLAGS, dir_fd=folder.fd)
        except FileNotFoundError:
            return None
        except OSError as error:
            return A_LINK if error.errno in (errno.ELOOP, errno.EMLINK) else _cannot_open(error)
        try:
            data = os.read(fd, 1 << 16)  # a job file is about 1 KB: one read, and one more to see the end
            while chunk := os.read(fd, 1 << 16):
                data += chunk
                if len(data) > self.max_bytes:
                    return f"larger than {size_text(self.max_bytes)}"
            if not data:
                return _odd_kind(fd) or data
            return data
        except OSError as error:  # EISDIR: a folder with a job file's name; EAGAIN: a FIFO being written
            return _odd_kind(fd) or _cannot_read(error)
        finally:
            os.close(fd)

    def _record(self, project: str, name: str, found: Found) -> JobRecord | None:
        """Decode what was read of `project/name` (a job file's name); None when nothing is there."""
        if found is None:
            return None
        key = f"{project}/{name}"
        if found.__class__ is str:
            return JobRecord(key, self.location(key), None, found)
        try:
            doc = _decode(found.decode())
        except ValueError as error:  # UnicodeDecodeError is one too
            return JobRecord(key, self.location(key), None, _not_json(found, error))
        status = doc.get("status") if doc.__class__ is dict else None
        if (status.__class__ is str and status in STATUSES and doc.get("renderType").__class__ is str
                and doc.get("projectId") == project and doc.get("jobId") == name[:-5]):
            return JobRecord(key, self.location(key), doc)
        return JobRecord(key, self.location(key), None, _not_a_job(doc, project, name[:-5]))

    def read(self, key: str) -> JobRecord:
        """The place `key` as it is now (the store writes atomically: never half a file)."""
        project, slash, name = key.partition("/")
        if not slash:
            return self._read_top(key)
        gone = JobRecord(key, self.location(key))
        if not self.id_pattern.fullmatch(project) or not name or "/" in name or name in (".", "..") \
                or self.is_temp(name):
            return gone  # not a place where the store keeps anything
        try:
            with self.folders.open(project) as folder:
                if self.is_job_name(name):
                    return self._record(project, name, self._read_file(folder, name)) or gone
                return JobRecord(key, self.location(key), None, NOT_A_JOB) if _exists(folder, name) else gone
        except OSError:
            return gone  # no such project folder (its own record says why when it cannot be opened)

    def _read_top(self, name: str) -> JobRecord:
        """An entry at the top of jobs/: a project folder is no place of its own (its files are),
        unless it cannot be opened; anything else is foreign."""
        location = self.location(name)
        if name in ("", ".", "..") or "/" in name or self.is_temp(name):
            return JobRecord(name, location)
        try:
            with self.folders.open() as top:
                mode = os.stat(name, dir_fd=top.fd, follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode) and self.id_pattern.fullmatch(name):
                with self.folders.open(name):
                    return JobRecord(name, location)
        except FileNotFoundError:
            return JobRecord(name, location)
        except OSError as error:
            return JobRecord(name, location, None, _cannot_open(error))
        return JobRecord(name, location, None, A_LINK if stat.S_ISLNK(mode) else NOT_A_FOLDER)

    def signatures(self) -> dict[str, Signature]:
        """(inode, mtime_ns, size) of every place, for the polling watch (stat only, no reads).

        A project folder that cannot be opened is a place of its own (with the error as signature).
        """
        found: dict[str, Signature] = {}
        projects, others = self.top()
        for name in others:
            try:
                info = os.lstat(self.location(name))
            except FileNotFoundError:
                continue
            found[name] = (info.st_ino, info.st_mtime_ns, info.st_size)
        for project in projects:
            try:
                with self.folders.open(project) as folder:
                    for name in os.listdir(folder.fd):
                        if self.is_temp(name):
                            continue
                        try:
                            info = os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
                        except FileNotFoundError:
                            continue
                        found[f"{project}/{name}"] = (info.st_ino, info.st_mtime_ns, info.st_size)
            except FileNotFoundError:
                continue
            except OSError as error:
                found[project] = (-1, error.errno or 0, 0)
        return found

    # -- watching --------------------------------------------------------------------------------
    def watch(self, on_change: OnChange, *, poll_seconds: float = 2.0,
              mode: str = "auto") -> FileObserverWatch | SignaturePollWatch:
        """Report changed keys to `on_change` from a background thread.

        mode "auto": a watchdog observer, else (it could not start) signature polling; "poll":
        signature polling every `poll_seconds` (network file systems).
        """
        if mode == "auto":
            try:
                return FileObserverWatch(self, on_change)
            except OSError as error:  # inotify watch or instance limits, an unsupported file system
                reason = f"the file watcher could not start ({error.strerror or error})"
        elif mode == "poll":
            reason = "polling was asked for"
        else:
            raise InvalidInput(f"The watch mode must be 'auto' or 'poll', not {mode!r}.")
        return SignaturePollWatch(self, on_change, poll_seconds, reason)


def _odd_kind(fd: int) -> str | None:
    """The store's word for an open entry that is not a regular file ("a FIFO", "a folder"), else None."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else kind_of(mode)


def _exists(folder: Folder, name: str) -> bool:
    try:
        os.stat(name, dir_fd=folder.fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def _cannot_open(error: OSError) -> str:
    reason = getattr(error, "reason", None)  # UnsafeEntry: the store's own words
    return reason or f"cannot be opened ({error.strerror or error})"


def _cannot_read(error: OSError) -> str:
    return f"cannot be read ({error.strerror or error})"


def _not_json(data: bytes, error: ValueError) -> str:
    if isinstance(error, UnicodeDecodeError):
        return "not valid JSON (not UTF-8 text)"
    if not data.strip():
        return "the file is empty"
    if isinstance(error, json.JSONDecodeError):
        return f"not valid JSON at line {error.lineno}, column {error.colno} ({error.msg.lower()})"
    return "not valid JSON"


def _not_a_job(doc: object, project: str, job_id: str) -> str:
    """Why a decoded document is not the job file's at its place, for people."""
    if not isinstance(doc, dict):
        return f"holds a JSON {_JSON_TYPES.get(type(doc), 'value')}, not a job object"
    for field in ("jobId", "projectId", "renderType"):
        if not isinstance(doc.get(field), str):
            return f"not a job document ({field} is missing or not text)"
    status = doc.get("status")
    if not (isinstance(status, str) and status in STATUSES):
        return f"not a job document (status {repr(status)[:40]} is unknown)"
    return (f"names job {doc['jobId']} of project {doc['projectId']} but holds the place of job {job_id} "
            f"of project {project}")


# -- watching ------------------------------------------------------------------------------------
WATCHED_EVENTS = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent,
                  DirCreatedEvent, DirMovedEvent, DirDeletedEvent]


class FileObserverWatch:
    """A watchdog observer on jobs/ (inotify on Linux). Raises OSError when it cannot start.

    It remembers the names in each project folder: a folder moved out of jobs/ takes its files
    with it without an event for each, so their keys are reported from what it remembers.
    """

    polling = False

    def __init__(self, files: JobFiles, on_change: OnChange) -> None:
        self.files, self.on_change = files, on_change
        root = os.path.realpath(files.jobs_dir)
        self._prefix = root + os.sep
        self._lock = threading.Lock()  # guards _names (the observer thread and this one)
        self._names: dict[str, set[str]] = {}
        self.observer = Observer()
        self.observer.daemon = True
        self.observer.schedule(_EventHandler(self), root, recursive=True, event_filter=WATCHED_EVENTS)
        self.observer.start()
        # Listed after the observer started: a file made meanwhile is in the listing, its event, or both.
        for project in files.top()[0]:
            self._list(project)

    def describe(self) -> str:
        return "a file watcher reports each job file as it changes"

    def close(self) -> None:
        self.observer.stop()
        if self.observer.is_alive():
            self.observer.join(timeout=5)

    def _list(self, project: str) -> set[str]:
        try:
            names = set(self.files.names(project))
        except OSError:
            names = set()
        with self._lock:
            known = self._names.setdefault(project, set())
            known |= names
            return set(known)

    def key(self, path: str | bytes) -> str | None:
        path = os.fsdecode(path)
        if not path.startswith(self._prefix):
            return None
        key = path[len(self._prefix):]
        if key.count("/") > 1 or self.files.is_temp(key.rpartition("/")[2]):
            return None
        return key

    def appeared(self, key: str, is_directory: bool) -> set[str]:
        project, slash, name = key.partition("/")
        if slash:
            with self._lock:
                self._names.setdefault(project, set()).add(name)
            return {key}
        if not is_directory:
            return {key}
        # A project folder made or moved in: its files may predate the watch on it.
        return {key} | {f"{key}/{name}" for name in self._list(key)}

    def vanished(self, key: str) -> set[str]:
        project, slash, name = key.partition("/")
        with self._lock:
            if slash:
                self._names.get(project, set()).discard(name)
                return {key}
            known = self._names.pop(key, set())
        return {key} | {f"{key}/{name}" for name in known}


class _EventHandler(FileSystemEventHandler):
    """Turns watchdog events into changed keys. Runs on the observer thread: it only records."""

    def __init__(self, watch: FileObserverWatch) -> None:
        self.watch = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind not in ("created", "modified", "moved", "deleted"):
            return  # opened/closed events: our own reads would otherwise feed back forever
        watch = self.watch
        keys: set[str] = set()
        source = watch.key(event.src_path)
        if source is not None and kind in ("moved", "deleted"):
            keys |= watch.vanished(source)
        elif source is not None:
            keys |= watch.appeared(source, event.is_directory)
        if kind == "moved":  # an atomic write: temp (ignored) -> job file
            target = watch.key(event.dest_path)
            if target is not None:
                keys |= watch.appeared(target, event.is_directory)
        if keys:
            watch.on_change(keys)


class SignaturePollWatch:
    """The watch when no observer can run: every `interval` seconds, lstat every file and report
    the keys whose signature differs from the last poll's."""

    polling = True

    def __init__(self, files: JobFiles, on_change: OnChange, interval: float, reason: str) -> None:
        self.files, self.on_change = files, on_change
        self.interval = interval
        self.reason = reason
        self.polls = 0
        self._known = files.signatures()  # from now on every change is seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-files-poller", daemon=True)
        self._thread.start()

    def describe(self) -> str:
        return f"{self.reason}, so file signatures are compared every {self.interval:g} s instead"

    def poll_once(self) -> set[str]:
        current = self.files.signatures()
        known, self._known = self._known, current
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
            except OSError as error:  # the store is briefly unreachable (a network file system)
                log.warning("could not compare job file signatures: %s", error)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
