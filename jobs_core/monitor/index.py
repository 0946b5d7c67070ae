"""JobIndex: every job of the store as one pandas row, built once and kept current.

    index = JobIndex.open(service)      # full build, then a watcher (or a poller) keeps it current
    frame = index.frame()               # applies pending changes first; never mutated afterwards

The frame is replaced, never modified in place, so a reader may keep using the frame it got
while the index moves on. Changes are applied lazily on `refresh` (which `frame` calls): a burst
of writes to one job file costs one read, and the observer thread never touches pandas.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

import pandas as pd

from ..errors import InvalidInput
from ..models import utcnow
from ..service import JobService
from ..store import FileJobStore, JobStore
from ..store.base import Unreadable
from .frame import Columns, RowStore, empty_rows
from .sources import FileJobSource, JobsWatcher, Read, Signature, SignaturePoller, StoreFeedSource

T = TypeVar("T")
WATCHING = "watching"
POLLING = "polling"
FEED = "store feed"
WATCH_MODES = ("auto", "poll", "off")


class JobIndex:
    def __init__(self, source: FileJobSource | StoreFeedSource, *, lease_seconds: float = 30.0,
                 poll_seconds: float = 2.0) -> None:
        self.source = source
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.mode = FEED if isinstance(source, StoreFeedSource) else WATCHING
        self.mode_note = ""
        #: files (or rows) read since the index was made: a full build reads them all
        self.files_read = 0
        #: bumped whenever the rows change; cache derived views on it
        self.version = 0
        self.built_at: datetime | None = None
        self.build_seconds = 0.0
        self._rows = empty_rows()
        self._unreadable: dict[str, Unreadable] = {}
        self._signatures: dict[str, Signature] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()  # guards _dirty only (the observer thread adds to it)
        self._lock = threading.RLock()  # one refresh at a time
        self._watcher: JobsWatcher | None = None
        self._poller: SignaturePoller | None = None
        self._last_feed = 0.0
        self._memo: dict[str, tuple[int, object]] = {}

    # -- making one ------------------------------------------------------------------------------
    @classmethod
    def for_store(cls, store: JobStore, *, lease_seconds: float = 30.0, watch: str = "auto",
                  poll_seconds: float = 2.0) -> JobIndex:
        """Build the index of `store` and start keeping it current.

        watch: "auto" (a watchdog observer, else polling), "poll" (always poll file signatures,
        for network file systems), "off" (only explicit `mark_changed`). Non-file stores always
        use their `jobs_updated_since` feed.
        """
        if isinstance(store, FileJobStore):
            index = cls(FileJobSource(store.jobs_dir), lease_seconds=lease_seconds, poll_seconds=poll_seconds)
        else:
            index = cls(StoreFeedSource(store), lease_seconds=lease_seconds, poll_seconds=poll_seconds)
        index.start(watch)
        return index

    @classmethod
    def open(cls, service: JobService, watch: str | None = None) -> JobIndex:
        """The index of the service's store, with the service's lease for "stuck".

        watch defaults to JOBS_MONITOR_WATCH, else "auto". Set it to "poll" on a network file
        system: inotify starts there but never hears of writes made by other hosts.
        """
        watch = watch or os.environ.get("JOBS_MONITOR_WATCH") or "auto"
        if watch not in WATCH_MODES:
            raise InvalidInput(f"JOBS_MONITOR_WATCH={watch!r} must be one of: {', '.join(WATCH_MODES)}.")
        return cls.for_store(service.store, lease_seconds=service.settings.lease_seconds, watch=watch)

    def start(self, watch: str = "auto") -> None:
        if watch not in WATCH_MODES:
            raise InvalidInput(f"watch must be one of: {', '.join(WATCH_MODES)} (not {watch!r}).")
        if isinstance(self.source, FileJobSource):
            # The watcher starts before the build: whatever changes during the scan is re-read after.
            self._start_file_watch(watch)
        self.build()
        if self._poller is not None:
            self._poller.start()

    def _start_file_watch(self, watch: str) -> None:
        assert isinstance(self.source, FileJobSource)
        if watch == "off":
            self.mode, self.mode_note = "manual", "changes are applied only when marked"
            return
        if watch == "auto":
            try:
                self._watcher = JobsWatcher(self.source.jobs_dir, self.mark_changed, self._mark_folder)
                self._watcher.start()
                return
            except OSError as error:  # inotify watch/instance limits, unsupported file systems
                self._watcher = None
                self.mode_note = f"the file watcher could not start ({error.strerror or error})"
        else:
            self.mode_note = "polling was asked for"
        self.mode = POLLING
        self.source.signed = True
        self._poller = SignaturePoller(self.source, self.signatures, self.mark_changed, self.poll_seconds)

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        if self._poller is not None:
            self._poller.stop()

    # -- building and updating -----------------------------------------------------------------
    def build(self) -> None:
        """Read every job once and make the frame (column-wise, in one go)."""
        started = time.perf_counter()
        columns = Columns()
        unreadable: dict[str, Unreadable] = {}
        signatures: dict[str, Signature] = {}
        read = 0
        for key, found in self.source.initial():
            read += 1
            if found.signature is not None:
                signatures[key] = found.signature
            if found.doc is not None:
                columns.add(key, found.doc)
            elif found.problem is not None:
                unreadable[key] = Unreadable(self.source.location(key), found.problem)
        rows = RowStore(columns)
        with self._lock:
            self._rows, self._unreadable, self._signatures = rows, unreadable, signatures
            self.files_read += read
            self.version += 1
            self.built_at = utcnow()
        self.build_seconds = time.perf_counter() - started

    def mark_changed(self, keys: Iterable[str]) -> None:
        """Note keys ("project/jobId.json") to re-read at the next refresh. Thread-safe, cheap."""
        with self._dirty_lock:
            self._dirty.update(keys)

    def mark_job(self, project_id: str, job_id: str) -> None:
        """Re-read one job at the next refresh (after an action on it, whatever the backend)."""
        self.mark_changed([f"{project_id}/{job_id}.json"])

    def _mark_folder(self, project: str) -> None:
        # A folder that appeared may already hold files whose events came before its watch did;
        # one that vanished takes its jobs with it. Re-read what is there and what we knew.
        assert isinstance(self.source, FileJobSource)
        keys = set(self.source.keys_under(project)) | {project}
        with self._lock:
            keys.update(key for key in self._signatures if key.startswith(project + "/"))
        self.mark_changed(keys)

    def refresh(self) -> int:
        """Apply what changed since the last refresh; returns how many keys were re-read."""
        with self._lock:
            updates = self._take_updates()
            if not updates:
                return 0
            self._apply(updates)
            return len(updates)

    def _take_updates(self) -> dict[str, Read]:
        with self._dirty_lock:
            dirty, self._dirty = self._dirty, set()
        updates: dict[str, Read] = {}
        if isinstance(self.source, StoreFeedSource) and time.monotonic() - self._last_feed >= self.poll_seconds:
            self._last_feed = time.monotonic()
            updates.update(self.source.changes())
        for key in dirty:
            updates[key] = self.source.read(key)
        self.files_read += len(updates)
        return updates

    def _apply(self, updates: dict[str, Read]) -> None:
        columns = Columns()
        for key, found in updates.items():
            if found.signature is not None:
                self._signatures[key] = found.signature
            else:
                self._signatures.pop(key, None)
            if found.problem is not None:
                self._unreadable[key] = Unreadable(self.source.location(key), found.problem)
            else:
                self._unreadable.pop(key, None)
            if found.doc is not None:
                columns.add(key, found.doc)
        removed = {key for key, found in updates.items() if found.doc is None}
        self._rows.apply(columns, removed)
        self.version += 1

    # -- reading ---------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """Every readable job, one row each, current as of now. Do not modify it."""
        self.refresh()
        with self._lock:
            return self._rows.frame()

    def rows(self, keys: list[str]) -> pd.DataFrame:
        """The current rows of `keys`, in that order, without a lookup over the whole frame."""
        self.refresh()
        with self._lock:
            return self._rows.rows(keys)

    def memo(self, name: str, compute: Callable[[pd.DataFrame], T]) -> T:
        """`compute(frame)`, remembered until the rows change (for lists like the filter options)."""
        frame = self.frame()
        with self._lock:
            found = self._memo.get(name)
            if found is not None and found[0] == self.version:
                return found[1]
        value = compute(frame)
        with self._lock:
            self._memo[name] = (self.version, value)
        return value

    def unreadable(self) -> list[Unreadable]:
        """Files (or rows) in the store that are not readable jobs, and why (current as of now)."""
        self.refresh()
        with self._lock:
            return sorted(self._unreadable.values(), key=lambda bad: bad.location)

    def signatures(self) -> dict[str, Signature]:
        with self._lock:
            return dict(self._signatures)

    def pending_changes(self) -> int:
        with self._dirty_lock:
            return len(self._dirty)

    def describe_mode(self) -> str:
        """One sentence for the page: how the index stays current."""
        if self.mode == WATCHING:
            return "Live: a file watcher re-reads each job file as it changes."
        if self.mode == POLLING:
            return (f"Polling: {self.mode_note}, so file signatures are compared every "
                    f"{self.poll_seconds:g} s instead.")
        if self.mode == FEED:
            return f"Live: the store's change feed is read every {self.poll_seconds:g} s."
        return f"Manual: {self.mode_note}."
