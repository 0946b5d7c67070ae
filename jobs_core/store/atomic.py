"""Crash-safe file writes: a reader or a crash at any instant sees the old file or the new one."""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import StoreWriteError

if TYPE_CHECKING:
    from .spares import Spares

TEMP_SUFFIX = ".tmp"


def is_temp_name(name: str) -> bool:
    """Our in-flight temp files: hidden and not ending in .json, so they never look like jobs."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def fsync_dir(directory: str | Path) -> None:
    """Make the entries made in `directory` so far durable; concurrent callers share fsyncs."""
    _directory_syncs.group(os.fspath(directory)).sync()


def directory_sync_mark(directory: str) -> int:
    """A mark for fsync_dir_since: the directory fsyncs this process has begun so far."""
    return _directory_syncs.group(directory).started


def fsync_dir_since(directory: str, mark: int) -> None:
    """Make the entries made before `mark` was taken durable: free if an fsync has begun since."""
    _directory_syncs.group(directory).sync(after=mark)


def _fsync_dir_now(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirectorySync:
    """Group commit for one directory: an fsync covers every entry made before it started.

    A directory fsync ends with a flush of the disk's cache, the dearest step of a durable
    write. Threads that link into one folder at once each need a flush that started after
    their own link; the first to ask runs one, those who linked while it ran wait and share
    the next. Sixteen creates at once then cost a few directory flushes, not sixteen.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.changed = threading.Condition()
        self.started = 0  # fsyncs begun
        self.finished = 0  # the newest fsync that completed (each covers all entries before its start)
        self.running = False

    def sync(self, after: int | None = None) -> None:
        with self.changed:
            # One that starts from now on (a running one may predate our entry), or after `after`.
            needed = (self.started if after is None else after) + 1
            while self.finished < needed:
                if self.running:
                    self.changed.wait()
                    continue
                self.running = True
                self.started += 1
                ticket = self.started
                self.changed.release()
                synced = False
                try:
                    _fsync_dir_now(self.path)
                    synced = True
                finally:
                    self.changed.acquire()
                    self.running = False
                    if synced:  # after an error each waiter runs an fsync of its own
                        self.finished = max(self.finished, ticket)
                    self.changed.notify_all()


class _DirectorySyncs:
    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start afresh: in a forked child, a lock another thread held at the fork stays held."""
        self._lock = threading.Lock()
        self._by_path: dict[str, _DirectorySync] = {}

    def group(self, directory: str) -> _DirectorySync:
        group = self._by_path.get(directory)
        if group is None:
            with self._lock:
                group = self._by_path.setdefault(directory, _DirectorySync(directory))
        return group


_directory_syncs = _DirectorySyncs()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_directory_syncs.forget)


def _describe(error: OSError) -> str:
    reasons = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied",
               errno.EROFS: "the file system is read-only", errno.EDQUOT: "the disk quota is exceeded"}
    return reasons.get(error.errno or 0, error.strerror or str(error))


def atomic_write(path: str | Path, data: bytes, *, durable: bool = True, sync_dir: bool = True,
                 links: Sequence[str] = (), sync_links: bool = True, spares: Spares | None = None) -> None:
    """Write `data` to `path` via a temp file in the same directory and os.replace.

    durable=True also fsyncs the file before the rename and (unless sync_dir=False) the directory
    after it, so the new content survives a power loss, not only a crash of this process. With
    sync_dir=False a power loss may bring back the previous version, which is complete too: its
    data was fsynced before, and the journal applies the rename whole or not at all.

    `links` are extra names (index markers, on the same file system) given to the new file before
    it takes its place, with their folders fsynced first when durable: the index entry is on disk
    before the file it points to. A hard link costs a directory entry; a new empty file would
    cost an inode allocation, the most expensive step of a small write on ext4. sync_links=False
    leaves their folders to the file system's own schedule, for an index that can be rebuilt.

    With `spares` (durable writes of a file that exists), the temp file is a replaced version kept
    for reuse and swapped in rather than renamed over: see spares.py.
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    temp = None
    try:
        if durable and spares is not None and spares.replace(
                path, data, sync_dir=sync_dir, links=links, sync_links=sync_links):
            return
        temp = _write_temp(directory, name, data, durable)
        _link_new(temp, links, durable and sync_links)
        os.replace(temp, path)
        if durable and sync_dir:
            fsync_dir(directory)
    except OSError as error:
        if temp is not None:
            unlink_quietly(temp)
        raise StoreWriteError(
            f"Could not write {name}: {_describe(error)}. The previous version is unchanged."
        ) from error


def _fill(fd: int, data: bytes, durable: bool) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    if durable:
        os.fsync(fd)


def _write_temp(directory: str, name: str, data: bytes, durable: bool) -> str:
    """A complete temp file beside `name` (fsynced if durable); none is left if writing fails."""
    temp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        _fill(fd, data, durable)
    except BaseException:
        unlink_quietly(temp)
        raise
    finally:
        os.close(fd)
    return temp


_O_TMPFILE = getattr(os, "O_TMPFILE", 0)
_tmpfile_works = _O_TMPFILE != 0 and os.path.isdir("/proc/self/fd")


def write_new(path: str | Path, data: bytes, *, durable: bool = True, links: Sequence[str] = (),
              sync_links: bool = True) -> None:
    """Write a file that must not exist yet; FileExistsError if it does (nothing is changed then).

    Same guarantees as atomic_write, one step cheaper where Linux allows: the data goes into an
    anonymous file (O_TMPFILE) that is given its name, complete, by one linkat. Nobody can see it
    before, a crash leaves no temp file, and linkat never replaces, so two creators of one name
    cannot both win, without a lock. `links` are made first, as in atomic_write.
    """
    global _tmpfile_works
    path = os.fspath(path)
    if _tmpfile_works:
        try:
            return _write_new_anonymous(path, data, durable, links, sync_links)
        except _NoAnonymousFiles:
            _tmpfile_works = False  # e.g. a file system without O_TMPFILE: the portable way from now on
    _write_new_named(path, data, durable, links, sync_links)


class _NoAnonymousFiles(Exception):
    pass


def _write_new_anonymous(path: str, data: bytes, durable: bool, links: Sequence[str], sync_links: bool) -> None:
    directory, name = os.path.split(path)
    made: list[str] = []
    try:
        try:
            fd = os.open(directory, _O_TMPFILE | os.O_WRONLY, 0o644)
        except OSError as error:
            if error.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise _NoAnonymousFiles from error
            raise
        try:
            _fill(fd, data, durable)
            made = _link_anonymous(fd, links, durable and sync_links)
            _name_anonymous(fd, path)
        finally:
            os.close(fd)
        if durable:
            fsync_dir(directory)
    except FileExistsError:
        for link in made:
            unlink_quietly(link)
        raise
    except OSError as error:
        for link in made:
            unlink_quietly(link)
        raise StoreWriteError(f"Could not write {name}: {_describe(error)}. Nothing was changed.") from error


def _write_new_named(path: str, data: bytes, durable: bool, links: Sequence[str], sync_links: bool) -> None:
    """The portable way: a named temp file, then link() (which, unlike rename, never replaces)."""
    directory, name = os.path.split(path)
    temp, made = None, []
    try:
        temp = _write_temp(directory, name, data, durable)
        made = _link_new(temp, links, durable and sync_links)
        os.link(temp, path)
        os.unlink(temp)
        if durable:
            fsync_dir(directory)
    except OSError as error:
        for leftover in ([temp] if temp else []) + made:
            unlink_quietly(leftover)
        if isinstance(error, FileExistsError):
            raise
        raise StoreWriteError(f"Could not write {name}: {_describe(error)}. Nothing was changed.") from error


def _link_new(source: str, links: Sequence[str], durable: bool) -> list[str]:
    """Give `source` each of `links` (one already there says the same thing); the names made."""
    made = []
    for link in links:
        try:
            os.link(source, link)
            made.append(link)
        except FileExistsError:
            pass
    if durable:
        for directory in {os.path.dirname(link) for link in links}:
            fsync_dir(directory)
    return made


def _link_anonymous(fd: int, links: Sequence[str], durable: bool) -> list[str]:
    """Name an O_TMPFILE at each of `links` (those already there are kept); the ones made."""
    made = []
    for link in links:
        try:
            _name_anonymous(fd, link)
            made.append(link)
        except FileExistsError:
            pass  # the name is the marker: one already there says the same thing
    if durable:
        for directory in {os.path.dirname(link) for link in links}:
            fsync_dir(directory)
    return made


def _name_anonymous(fd: int, path: str) -> None:
    # linkat(AT_SYMLINK_FOLLOW) on /proc/self/fd/N names the open file itself: the one way to
    # name an O_TMPFILE without privileges. Passing a dir fd makes Python call linkat with that
    # flag; it is ignored, both paths being absolute.
    os.link(f"/proc/self/fd/{fd}", os.path.abspath(path), src_dir_fd=fd, follow_symlinks=True)


def link_quietly(source: str, link: str) -> bool:
    """Give `source` one more name, not durably (for hints that can be rebuilt)."""
    try:
        os.link(source, link)
    except FileExistsError:
        pass
    except OSError:
        return False
    return True


def unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class StripedLocks:
    """Cross-process, cross-thread locks by key, on a fixed set of lock files (fcntl.flock).

    Each acquisition opens its own file description, so two threads of one process exclude each
    other too. A fixed number of stripes means lock files never pile up and are never unlinked
    (unlinking a lock file while someone waits on it is the classic flock race).
    """

    def __init__(self, directory: Path, stripes: int = 256) -> None:
        self.directory = directory
        self.stripes = stripes
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{zlib.crc32(key.encode()) % self.stripes:03d}.lock")

    def _open(self, key: str) -> int:
        path = self._path(key)
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:  # e.g. a store created by another user: say so, no traceback
            raise StoreWriteError(f"Could not open the lock file {path}: {_describe(error)}.") from error

    @contextmanager
    def hold(self, key: str) -> Iterator[None]:
        fd = self._open(key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the description releases the flock

    def try_hold(self, key: str) -> int | None:
        """Take the lock without waiting: a file descriptor to `release`, or None if busy."""
        fd = self._open(key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)
