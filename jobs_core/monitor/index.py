"""JobIndex: every job of a store as one pandas row, built once and kept current.

    index = JobIndex.open(service)      # one scan, then the store's watch keeps it current
    frame = index.frame()               # applies reported changes first; never mutated afterwards

The index knows nothing of how a store keeps its jobs: it reads them through the store contract
(`scan_jobs` once, then `read_record` for each key `watch_jobs` reports; keys are the store's).
The frame is replaced, never modified in place, so a reader may keep using the frame it got
while the index moves on. Changes are applied lazily on `refresh` (which `frame` calls): a burst
of writes to one job costs one read, and the watch's thread never touches pandas.

On PostgreSQL the first build asks for just the index's fields (`scan_job_fields`, column_scan.py):
the same rows as `scan_jobs` would give, in a third of the time, and nothing kept that could go stale.

On a file store the index keeps its snapshot on disk current (snapshot.py): after it absorbed
changes it writes the snapshot again, at most every `save_seconds`; a saver thread applies and
saves what the watch reported when no page asks for a while, so a restart re-reads only the
files changed in the last moments.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

import pandas as pd

from ..errors import InvalidInput, JobsError
from ..models import utcnow
from ..retention import StoreSizeGauge
from ..service import JobService
from ..store import JobRecord, JobStore, Unreadable
from ..store.base import JobWatch
from ..webhooks_sender import alert_sinks
from . import column_scan
from . import snapshot as snapshot_module
from .alerts import AlertLog
from .frame import Columns, RowStore, empty_rows
from .snapshot import IndexSnapshot, settled
from .view import ViewCache

T = TypeVar("T")
log = logging.getLogger("jobs_core.monitor")
WATCHING = "watching"  # the store tells of each change
POLLING = "polling"  # changes are found by asking the store again every few seconds
MANUAL = "manual"  # only `mark_changed` / `mark_job` (JOBS_MONITOR_WATCH=off)
FEED = "store feed"  # no longer a mode of its own (every store watches); kept for pages that name it
WATCH_MODES = ("auto", "poll", "off")
SAVE_SECONDS = 30.0  # the snapshot is written again at most this often (each write costs ~0.1-0.3 s of CPU)


def _alert_sinks(store: JobStore) -> list[Callable]:
    """Alerts also go to JOBS_ALERT_WEBHOOK when it is set; a URL that may not be used is said in
    the log, and the banner still shows."""
    try:
        return alert_sinks(store)
    except InvalidInput as problem:
        log.warning("%s Alerts show on the monitor only.", problem)
        return []


class JobIndex:
    def __init__(self, store: JobStore, *, lease_seconds: float = 30.0, poll_seconds: float = 2.0,
                 snapshot: bool = True, save_seconds: float = SAVE_SECONDS, field_scan: bool = True) -> None:
        self.store = store
        #: build from just the index's fields when the store can send them (PostgreSQL, column_scan.py)
        self.field_scan = field_scan and column_scan.supported(store)
        #: the file store's index on disk (snapshot.py): a restart re-reads only the files that changed
        self.snapshot = IndexSnapshot.for_store(store) if snapshot else None
        self.save_seconds = save_seconds
        #: snapshots written by this index (the build's and the later ones)
        self.saves = 0
        #: each key's signature when its row was last read (for the snapshot; racy ones left out)
        self._signatures: dict[str, tuple[int, int, int]] = {}
        #: keys whose signature was racy (snapshot.settled): read again once their time is old enough
        self._racy: dict[str, float] = {}
        self._unsaved = False  # rows changed since the last snapshot was written
        self._saved_at = 0.0  # time.monotonic() of the last write started
        self._closed = threading.Event()
        self._saver: threading.Thread | None = None
        #: "snapshot" when the last build started from the snapshot, else "scan"
        self.built_from = "scan"
        self.lease_seconds = lease_seconds
        self.poll_seconds = poll_seconds
        self.mode = MANUAL
        #: places read since the index was made: a full build reads them all
        self.records_read = 0
        #: bumped whenever the rows change; cache derived views on it
        self.version = 0
        self.built_at: datetime | None = None
        self.build_seconds = 0.0
        self._rows = empty_rows()
        self._unreadable: dict[str, Unreadable] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()  # guards _dirty only (the watch's thread adds to it)
        self._lock = threading.RLock()  # one refresh at a time
        self._watch: JobWatch | None = None
        self._memo: dict[str, tuple[int, object]] = {}
        #: the alerts active now, logged once per start and clear however many pages look (alerts.py)
        self.alerts = AlertLog(sinks=_alert_sinks(store))
        #: what the page shows per set of filters, recomputed only when a job or the clock changes it
        self.views = ViewCache(self)
        #: the store's size (jobs, renders, bytes), measured at most once a minute (retention.py)
        self.size = StoreSizeGauge(store)

    # -- making one ------------------------------------------------------------------------------
    @classmethod
    def for_store(cls, store: JobStore, *, lease_seconds: float = 30.0, watch: str = "auto",
                  poll_seconds: float = 2.0, snapshot: bool = True, save_seconds: float = SAVE_SECONDS,
                  field_scan: bool = True) -> JobIndex:
        """Build the index of `store` and start keeping it current.

        watch: "auto" (the store's own way: a file watcher, notifications), "poll" (ask the store
        every `poll_seconds`, for network file systems where a file watcher hears nothing of other
        hosts), "off" (only explicit `mark_changed`).
        """
        index = cls(store, lease_seconds=lease_seconds, poll_seconds=poll_seconds, snapshot=snapshot,
                    save_seconds=save_seconds, field_scan=field_scan)
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
        index = cls.for_store(service.store, lease_seconds=service.settings.lease_seconds, watch=watch)
        index.size.latest()  # the first measure of the store's size starts now, in the background
        return index

    def start(self, watch: str = "auto") -> None:
        if watch not in WATCH_MODES:
            raise InvalidInput(f"watch must be one of: {', '.join(WATCH_MODES)} (not {watch!r}).")
        if watch != "off":
            # The watch starts before the scan: whatever changes during the scan is re-read after.
            self._watch = self.store.watch_jobs(self.mark_changed, poll_seconds=self.poll_seconds, mode=watch)
            self.mode = POLLING if self._watch.polling else WATCHING
        try:
            self.build()
        except BaseException:
            self.close()  # no watch thread outlives an index that could not be made
            raise
        if self.snapshot is not None and watch != "off":
            self._saver = threading.Thread(target=self._save_periodically, name="monitor-saver", daemon=True)
            self._saver.start()

    def close(self) -> None:
        """Stop watching. Nothing is saved here: a snapshot is at most `save_seconds` behind, and
        what it misses is read again at the next start (the same as after a crash)."""
        self._closed.set()
        if self._watch is not None:
            self._watch.close()
        if self._saver is not None:
            self._saver.join(timeout=60)
        if self.snapshot is not None:
            self.snapshot.wait()

    # -- building and updating -----------------------------------------------------------------
    def build(self) -> None:
        """Read every job once and make the frame (column-wise, in one go); from the snapshot and
        the files changed since, when the store has a usable one."""
        started = time.perf_counter()
        loaded = self.snapshot.load() if self.snapshot is not None else None
        save = self.snapshot is not None and (loaded is None or loaded.changed)
        if loaded is not None:
            rows, unreadable, read = loaded.rows, loaded.unreadable, loaded.records_read
            signatures, racy = loaded.signatures, loaded.racy
            self.built_from = "snapshot"
        else:
            # Signatures before the reads: a file written meanwhile is read again next time.
            signatures, racy = {}, set()
            if self.snapshot is not None:
                taken = self.snapshot.stat_all()
                signatures, racy = settled(taken.signatures, taken.taken_ns)
            rows, unreadable, read = self._scan()
            self.built_from = "scan"
        with self._lock:
            self._rows, self._unreadable, self._signatures = rows, unreadable, signatures
            self._note_racy(racy)
            self.records_read += read
            self.version += 1
            self.built_at = utcnow()
            self._unsaved = save  # a snapshot start that found nothing changed leaves the snapshot as it is
        self.build_seconds = time.perf_counter() - started
        if loaded is None:
            self._save(force=True)  # the snapshot the next start needs
        else:
            # Caught up from the snapshot: what it re-read is written with the next save (within
            # `save_seconds`), not now, where the write (0.1-0.3 s of CPU) would delay the first figures.
            # A start before then reads those files again; the saved signatures still tell which.
            self._saved_at = time.monotonic()

    def _scan(self) -> tuple[RowStore, dict[str, Unreadable], int]:
        if self.field_scan:
            scanned = column_scan.scan(self.store)
            if scanned is not None:
                return scanned
        columns = Columns()
        unreadable: dict[str, Unreadable] = {}
        read = 0
        for record in self.store.scan_jobs():
            read += 1
            if record.doc is not None:
                columns.add(record.key, record.doc)
            elif record.problem is not None:
                unreadable[record.key] = Unreadable(record.location, record.problem)
        return RowStore(columns), unreadable, read

    def mark_changed(self, keys: Iterable[str]) -> None:
        """Note store keys to re-read at the next refresh. Thread-safe, cheap (the watch calls it)."""
        with self._dirty_lock:
            self._dirty.update(keys)

    def mark_job(self, project_id: str, job_id: str) -> None:
        """Re-read one job at the next refresh (after an action on it, whatever the watch)."""
        self.mark_changed([self.store.record_key(project_id, job_id)])

    def refresh(self) -> int:
        """Apply what changed since the last refresh; returns how many keys were re-read."""
        with self._lock:
            self._recheck_racy()
            with self._dirty_lock:
                dirty, self._dirty = self._dirty, set()
            # Signatures before the reads (snapshot.py): a write in between is read again next start.
            signatures, racy = self.snapshot.stat_keys(dirty) if self.snapshot is not None and dirty else ({}, set())
            records: list[JobRecord] = []
            try:
                for key in dirty:
                    records.append(self.store.read_record(key))
            except JobsError as error:  # the store is briefly unavailable: keep the rest for later
                log.warning("could not re-read changed jobs: %s", error)
                self.mark_changed(dirty.difference(record.key for record in records))
            if records:
                self._apply(records)
                for record in records:  # only rows read now take a new signature
                    if record.key in signatures:
                        self._signatures[record.key] = signatures[record.key]
                    else:
                        self._signatures.pop(record.key, None)
                self._note_racy(racy.intersection(record.key for record in records))
                self._unsaved = True
        self._save()
        return len(records)

    def _note_racy(self, keys: set[str]) -> None:
        due = time.monotonic() + snapshot_module.RACY_SECONDS
        self._racy.update(dict.fromkeys(keys, due))

    def _recheck_racy(self) -> None:
        """Read again the files whose signature was racy once it no longer is, so the snapshot
        keeps a signature for them too (else each start would read them again)."""
        if not self._racy:
            return
        now = time.monotonic()
        due = [key for key, when in self._racy.items() if when <= now]
        for key in due:
            del self._racy[key]
        self.mark_changed(due)

    def _save(self, force: bool = False) -> None:
        """Write the snapshot in the background if rows changed since the last one, at most every
        `save_seconds` (unless forced: after a build)."""
        if self.snapshot is None or not self._unsaved:
            return
        with self._lock:
            if not self._unsaved or (not force and time.monotonic() - self._saved_at < self.save_seconds):
                return
            # copies under the lock: the rows' arrays are replaced, never modified, so references do
            rows, signatures, unreadable = self._rows, dict(self._signatures), set(self._unreadable)
            if not self.snapshot.save_in_background(rows, signatures, unreadable):
                return  # the previous write is still under way: the next refresh tries again
            self._unsaved, self._saved_at = False, time.monotonic()
            self.saves += 1

    def _save_periodically(self) -> None:
        """Apply and save what the watch reported while no page asked (a quiet server's snapshot
        stays current too); runs until `close`."""
        while not self._closed.wait(max(self.save_seconds, 0.05)):
            try:
                if self.pending_changes() or self._racy:
                    self.refresh()
                else:
                    self._save()
            except Exception as error:  # noqa: BLE001 - the page's own refresh reports store faults
                log.warning("could not bring the index snapshot up to date: %s", error)

    def _apply(self, records: list[JobRecord]) -> None:
        """Put re-read records in; the version moves only when a row or a problem changed."""
        columns = Columns()
        removed: set[str] = set()
        problems = False
        for record in records:
            if record.problem is not None:
                bad = Unreadable(record.location, record.problem)
                problems |= self._unreadable.get(record.key) != bad
                self._unreadable[record.key] = bad
            else:
                problems |= self._unreadable.pop(record.key, None) is not None
            if record.doc is not None:
                columns.add(record.key, record.doc)
            else:
                removed.add(record.key)
        rows = self._rows.apply(columns, removed)
        self.records_read += len(records)
        if rows or problems:
            self.version += 1

    # -- reading ---------------------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """Every readable job, one row each (indexed by the store's keys), current as of now.
        Do not modify it."""
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
        """Places in the store (files, rows) that are not readable jobs, and why (current as of now)."""
        self.refresh()
        with self._lock:
            return sorted(self._unreadable.values(), key=lambda bad: bad.location)

    def pending_changes(self) -> int:
        with self._dirty_lock:
            return len(self._dirty)

    def snapshot_is_current(self) -> bool:
        """Whether the snapshot on disk holds every change the index was told of (for tests and
        the benchmark: a server never needs to wait for it)."""
        with self._lock:
            return (self.snapshot is not None and not self.pending_changes() and not self._racy
                    and not self._unsaved and not self.snapshot.busy())

    def describe_mode(self) -> str:
        """One sentence for the page: how the index stays current."""
        if self._watch is None:
            return "Manual: changes are applied only when marked."
        how = self._watch.describe()
        return f"Polling: {how}." if self.mode == POLLING else f"Live: {how}."
