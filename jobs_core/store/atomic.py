"""Crash-safe file writes with portable calls only: a reader or a crash at any instant sees the old
file or the new one, never a part of either.

Every write goes through a temp file in the same folder: written, fsynced, then given its name by
a rename (or by a link for a file that must not exist yet, since a link never replaces), then the
folder is fsynced so the name itself survives a power loss. Temp files are hidden and end in
`.tmp`, so `ls` and the store's readers never take one for a job. Every call works in a `Folder`
opened by `folders.StoreFolders`, so no write follows a link out of the store.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import StoreWriteError
from .folders import Folder, StoreFolders, UnsafeEntry, open_regular

TEMP_SUFFIX = ".tmp"


def is_temp_name(name: str) -> bool:
    """Our in-flight temp files: hidden and not ending in .json, so they never look like jobs."""
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


# -- folder fsyncs, group-committed ---------------------------------------------------------------
class _DirectorySync:
    """Group commit for one folder: an fsync covers every entry made before it started.

    A folder fsync ends with a flush of the disk's cache, the dearest step of a durable write.
    Threads that write into one folder at once each need a flush that started after their own
    entry; the first to ask runs one, those who wrote while it ran wait and share the next.
    """

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.started = 0  # fsyncs begun
        self.finished = 0  # the newest fsync that completed
        self.running = False

    def sync(self, fd: int) -> None:
        with self.changed:
            needed = self.started + 1  # one that starts from now on (a running one may predate our entry)
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
                    os.fsync(fd)
                    synced = True
                finally:
                    self.changed.acquire()
                    self.running = False
                    if synced:  # after an error each waiter runs an fsync of its own
                        self.finished = max(self.finished, ticket)
                    self.changed.notify_all()


# Keyed by process too: a forked child must not wait on a lock a thread of its parent held.
_directory_syncs: dict[tuple[int, str], _DirectorySync] = {}


def fsync_dir(folder: Folder) -> None:
    """Make the entries made in `folder` so far durable; concurrent callers share fsyncs."""
    key = (os.getpid(), folder.path)
    group = _directory_syncs.get(key) or _directory_syncs.setdefault(key, _DirectorySync())
    group.sync(folder.fd)


# -- writes ------------------------------------------------------------------------------------------
def describe_os_error(error: OSError) -> str:
    if isinstance(error, UnsafeEntry):
        return f"{error.where} is {error.reason}"
    reasons = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied",
               errno.EROFS: "the file system is read-only", errno.EDQUOT: "the disk quota is exceeded"}
    return reasons.get(error.errno or 0, error.strerror or str(error))


def atomic_write(folder: Folder, name: str, data: bytes, *, durable: bool = True, sync_dir: bool = True) -> None:
    """Write `data` as `name` in `folder`, replacing what is there, via a temp file and a rename.

    durable=True fsyncs the file before the rename and (unless sync_dir=False) the folder after
    it, so the new content survives a power loss. With sync_dir=False a power loss may bring back
    the previous version, which is whole too (its data was fsynced before it took the name).
    A rename replaces the name itself: a link planted there is replaced, never followed.
    """
    temp = None
    try:
        temp = _write_temp(folder, name, data, durable)
        os.rename(temp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
        if durable and sync_dir:
            fsync_dir(folder)
    except OSError as error:
        if temp is not None:
            unlink_quietly(folder, temp)
        raise StoreWriteError(
            f"Could not write {name}: {describe_os_error(error)}. The previous version is unchanged.") from error


def write_new(folder: Folder, name: str, data: bytes, *, durable: bool = True, mode: int = 0o644) -> None:
    """Write `name`, which must not exist yet; FileExistsError if it does (nothing is changed then).

    The temp file takes the name with a link, which never replaces: of two writers of one name
    exactly one wins, without a lock.
    """
    temp = None
    try:
        temp = _write_temp(folder, name, data, durable, mode)
        os.link(temp, name, src_dir_fd=folder.fd, dst_dir_fd=folder.fd)
        unlink_quietly(folder, temp)
        if durable:
            fsync_dir(folder)
    except OSError as error:
        if temp is not None:
            unlink_quietly(folder, temp)
        if isinstance(error, FileExistsError):
            raise
        raise StoreWriteError(f"Could not write {name}: {describe_os_error(error)}. Nothing was changed.") from error


def write_or_replace(folder: Folder, name: str, data: bytes, *, durable: bool = True) -> None:
    """A new file, or a new version of one (a render done again)."""
    try:
        write_new(folder, name, data, durable=durable)
    except FileExistsError:
        atomic_write(folder, name, data, durable=durable)


def _write_temp(folder: Folder, name: str, data: bytes, durable: bool, mode: int = 0o644) -> str:
    """A complete temp file beside `name` (fsynced if durable); none is left if writing fails."""
    temp = f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = open_regular(folder, temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        unlink_quietly(folder, temp)
        raise
    os.close(fd)
    return temp


def append_line(folder: Folder, name: str, line: bytes) -> None:
    """Append one line with one write() in O_APPEND mode: lines of concurrent writers never mix."""
    fd = open_regular(folder, name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def touch_new(folder: Folder, name: str) -> bool:
    """Create an empty file (an index marker: its name is its content); False if it was there."""
    try:
        os.close(open_regular(folder, name, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def unlink_quietly(folder: Folder, name: str) -> None:
    try:
        os.unlink(name, dir_fd=folder.fd)
    except FileNotFoundError:
        pass


# -- locks ---------------------------------------------------------------------------------------------
class StripedLocks:
    """Cross-process, cross-thread locks by key, on a fixed set of lock files (fcntl.flock).

    Each acquisition opens its own file description, so two threads of one process exclude each
    other too. A fixed number of stripes means lock files never pile up and are never unlinked
    (unlinking a lock file while someone waits on it is the classic flock race).
    """

    def __init__(self, folders: StoreFolders, parts: tuple[str, ...], stripes: int = 256) -> None:
        self.folders, self.parts, self.stripes = folders, parts, stripes
        with folders.open(*parts, create=True):
            pass

    def _open(self, key: str) -> int:
        name = f"{zlib.crc32(key.encode()) % self.stripes:03d}.lock"
        try:
            with self.folders.open(*self.parts) as folder:
                return open_regular(folder, name, os.O_RDWR | os.O_CREAT)
        except OSError as error:  # e.g. a store created by another user: say so, no traceback
            where = os.path.join(self.folders.root, *self.parts, name)
            raise StoreWriteError(f"Could not open the lock file {where}: {describe_os_error(error)}.") from error

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
