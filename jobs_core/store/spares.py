"""Spare inodes: replaced versions of job files, refilled as the temp files of later versions.

Why. Every version of a job file is a new file (the atomic write's temp file) and every replaced
version a freed inode. On ext4 without a journal, allocating an inode skips each inode freed in
the last minute or more (`recently_deleted`), reading its inode-table block while the folder's lock
is held: with four workers draining a queue, a third of the CPU went there and the rest queued on
that lock. So a version that is replaced is kept, under .state/spares, and a later write refills
it in place and swaps it with the file it replaces in one renameat2(RENAME_EXCHANGE). That is the
atomic write's guarantee (the new content is complete and fsynced before it takes the name, the
old one whole until then), with no inode allocated or freed.

When a replaced version can be refilled. A reader that opened it before the swap reads on, so a
spare is refilled only if
- its inode last changed names more than RIPE_SECONDS ago (its ctime): no reader is that long
  between looking a path up and holding the file;
- it has no other name (a queue marker or running hint may still point at it); and
- nobody has it open, in any process: Linux grants a write lease (F_SETLEASE) only then.
Otherwise the write uses a fresh file; without renameat2 or leases (not Linux, other file
systems) the caller falls back to a temp file and os.replace.

Durability. Until an fsync of the job's folder has begun after the swap, a power loss could put
the replaced version back under the job's name, so it is not refilled before one has (a write
that skips that fsync, progress or heartbeat, leaves it to the next transition, or to the refill).
The spares folder itself is never fsynced: after a power loss a spare may still carry a name it
gave away, so a spare with two names is never refilled.

Ownership. Each process owns the spares it names (`{owner}.{n}`) and holds an flock on
`{owner}.owner` while it lives. A process adopts the spares of owners whose lock is free (a
process that died), after a syncfs: the dead owner's unsynced folders are then durable too.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import secrets
import signal
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence

from .atomic import _fill, _link_new, directory_sync_mark, fsync_dir, fsync_dir_since, unlink_quietly

RIPE_SECONDS = 1.0
CAPACITY = 2048  # spares kept per process; beyond it a replaced version is freed as before
_RENAME_EXCHANGE = 2
_TRIES = 3
_UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EXDEV, errno.EOPNOTSUPP)
_AT_FDCWD = -100


def _load_libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # the running program's symbols, libc's among them
        libc.renameat2  # noqa: B018 - glibc >= 2.28; missing elsewhere
        libc.syncfs  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def supported() -> bool:
    """Whether this system has renameat2 and file leases (the file system may still lack them)."""
    return (_libc is not None and hasattr(fcntl, "F_SETLEASE") and hasattr(fcntl, "F_SETSIG")
            and _leases_enabled())


def _leases_enabled() -> bool:
    try:
        with open("/proc/sys/fs/leases-enable") as setting:
            return setting.read().strip() != "0"
    except OSError:
        return True  # no such setting: leases are tried, and refused leases turn spares off


def exchange(first: str, second: str) -> None:
    """Swap the files at two names (same file system) in one step."""
    if _libc.renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), first)


def _sync_file_system(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), path)
    finally:
        os.close(fd)


class _Spare:
    __slots__ = ("path", "since", "unsynced")

    def __init__(self, path: str, since: float, unsynced: tuple[str, int] | None) -> None:
        self.path = path
        self.since = since  # monotonic time it was last handed in: a cheap first ripeness check
        self.unsynced = unsynced  # (folder, mark): refilled only once a fsync of the folder it left began after


class Spares:
    """This process's spare inodes in one folder, oldest first; thread-safe."""

    def __init__(self, directory: str, ripe_seconds: float = RIPE_SECONDS, capacity: int = CAPACITY) -> None:
        self.directory = directory
        self.ripe_seconds = ripe_seconds
        self.capacity = capacity
        self._guard = threading.Lock()
        self._start()
        _instances.add(self)

    def _start(self) -> None:
        self.usable = supported()
        self._queue: deque[_Spare] = deque()
        self._owner: str | None = None
        self._release: weakref.finalize | None = None  # closes the owner lock (also when collected)
        self._counter = 0

    def close(self) -> None:
        """Stop using spares here: the lock goes, and the next process to need spares adopts ours."""
        with self._guard:
            if self._release is not None:
                self._release()
            self._start()
            self.usable = False

    def forget(self) -> None:
        """In a forked child: the parent's spares and name are the parent's."""
        if self._release is not None:
            self._release()  # the child's copy only: the parent's lock stays held by the parent's
        self._guard = threading.Lock()
        self._start()

    # -- the one public operation --------------------------------------------------------------
    def replace(self, path: str, data: bytes, *, sync_dir: bool, links: Sequence[str], sync_links: bool) -> bool:
        """Put `data` at `path` (which exists) through a spare; False: nothing done, use os.replace.

        `links` are given to the filled file first, as atomic_write does. OSErrors are raised with
        nothing changed at `path`.
        """
        temp = self._filled(data) if self.usable else None
        if temp is None:
            return False
        made: list[str] = []
        try:
            made = _link_new(temp.path, links, sync_links)
            try:
                exchange(temp.path, path)
            except FileNotFoundError:
                if not os.path.exists(temp.path):
                    raise
                os.rename(temp.path, path)  # `path` is gone: a plain rename puts the new version there
                temp = None
        except OSError as error:
            for link in made:
                unlink_quietly(link)
            unsupported = error.errno in _UNSUPPORTED  # e.g. another file system, or no RENAME_EXCHANGE
            if temp is not None and unsupported:
                unlink_quietly(temp.path)
            elif temp is not None:
                self._hand_in(temp.path, None)
            if unsupported:
                self.usable = False
                return False
            raise
        directory = os.path.dirname(path)
        # The replaced version may be refilled once an fsync of its old folder has begun after
        # this mark: ours just below, or (if we skip it or it fails) a later one.
        unsynced = (directory, directory_sync_mark(directory))
        try:
            if sync_dir:
                fsync_dir(directory)
        finally:
            if temp is not None:  # it now holds the replaced version
                self._hand_in(temp.path, unsynced)
        return True

    # -- spares ----------------------------------------------------------------------------------
    def _filled(self, data: bytes) -> _Spare | None:
        """A spare (or a new file in the spares folder) holding exactly `data`, fsynced."""
        if not self._ensure_owner():
            return None
        for _ in range(_TRIES):  # the oldest may still be a queue marker's: look a little further
            spare = self._take_ripe()
            if spare is None:
                break
            try:
                fd = self._open_unshared(spare)
            except OSError:
                continue  # e.g. removed by hand: forget it
            if fd is None:
                continue
            try:
                _fill_at_start(fd, data)
            except BaseException:
                self._hand_in(spare.path, None)
                raise
            finally:
                os.close(fd)
            return spare
        return self._fresh(data)

    def _fresh(self, data: bytes) -> _Spare:
        path = self._new_name()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            _fill_at_start(fd, data)
        except BaseException:
            unlink_quietly(path)
            raise
        finally:
            os.close(fd)
        return _Spare(path, 0.0, None)

    def _take_ripe(self) -> _Spare | None:
        with self._guard:
            if not self._queue or time.monotonic() - self._queue[0].since < self.ripe_seconds:
                return None
            return self._queue.popleft()

    def _open_unshared(self, spare: _Spare) -> int | None:
        """Open a spare for refilling if it is ripe, has one name and nobody has it open."""
        if spare.unsynced is not None:
            fsync_dir_since(*spare.unsynced)  # a power loss must not give its old name back
            spare.unsynced = None
        fd = os.open(spare.path, os.O_RDWR)
        try:
            status = os.fstat(fd)
            if status.st_nlink != 1 or time.time() - status.st_ctime < self.ripe_seconds:
                raise BlockingIOError(errno.EAGAIN, "still linked, or renamed lately: try again later")
            _take_lease(fd)  # refused while anyone has it open
            _drop_lease(fd)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
                self._hand_in(spare.path, None)
            elif error.errno in _UNSUPPORTED:  # no leases here: spares can't be proven unread
                self.usable = False
                unlink_quietly(spare.path)
            elif error.errno != errno.ENOENT:
                raise
            return None
        return fd

    def _hand_in(self, path: str, unsynced: tuple[str, int] | None) -> None:
        with self._guard:
            if len(self._queue) < self.capacity:
                self._queue.append(_Spare(path, time.monotonic(), unsynced))
                return
        if unsynced is not None:
            fsync_dir_since(*unsynced)  # freed now: its old name must not come back pointing at nothing
        unlink_quietly(path)

    def _new_name(self) -> str:
        with self._guard:
            self._counter += 1
            return os.path.join(self.directory, f"{self._owner}.{self._counter}")

    # -- owners ----------------------------------------------------------------------------------
    def _ensure_owner(self) -> bool:
        if self._owner is not None:
            return True
        with self._guard:
            if self._owner is not None:
                return True
            owner = f"{os.getpid()}-{secrets.token_hex(4)}"
            starting = os.path.join(self.directory, f"{owner}.starting")
            try:
                os.makedirs(self.directory, exist_ok=True)
                fd = os.open(starting, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError:
                self.usable = False  # e.g. a store we may not write to: the caller's os.replace says why
                return False
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                # Locked before it has its name: nobody can take a live owner for a dead one.
                os.rename(starting, os.path.join(self.directory, f"{owner}.owner"))
            except OSError:
                os.close(fd)
                unlink_quietly(starting)
                self.usable = False
                return False
            self._release, self._owner = weakref.finalize(self, os.close, fd), owner
        self._adopt_orphans()
        return True

    def _adopt_orphans(self) -> None:
        """Take over the spares of processes that died, up to capacity; free the rest."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return
        orphans = [name[:-len(".owner")] for name in names
                   if name.endswith(".owner") and name != f"{self._owner}.owner" and self._is_orphan(name)]
        if not orphans:
            return
        synced = False
        for name in names:
            owner, _, number = name.partition(".")
            if owner not in orphans or not number.isdigit():
                continue
            if not synced:
                _sync_file_system(self.directory)  # what the dead owner left unsynced is durable now
                synced = True
            mine = self._new_name()
            try:
                os.rename(os.path.join(self.directory, name), mine)
            except FileNotFoundError:
                continue  # another process adopted it first
            self._hand_in(mine, None)
        for owner in orphans:
            unlink_quietly(os.path.join(self.directory, f"{owner}.owner"))

    def _is_orphan(self, owner_file: str) -> bool:
        try:
            fd = os.open(os.path.join(self.directory, owner_file), os.O_RDWR)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True  # released when we close: only a dead owner's lock is free
        except OSError:
            return False
        finally:
            os.close(fd)


_instances: weakref.WeakSet[Spares] = weakref.WeakSet()


def _forget_in_child() -> None:
    for spares in list(_instances):
        spares.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def _take_lease(fd: int) -> None:
    """A write lease on `fd`: granted only if no one else has the file open; OSError otherwise.

    Whoever opens the file while the lease is held makes the kernel signal the holder, with
    SIGIO by default, whose default action ends the process. A backup tool reading .state/spares
    in the microsecond between take and drop would kill a worker; SIGURG is ignored by default.
    """
    fcntl.fcntl(fd, fcntl.F_SETSIG, signal.SIGURG)
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)


def _drop_lease(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def _fill_at_start(fd: int, data: bytes) -> None:
    """Overwrite a just-opened file with `data` (its old blocks reused), cut it to length, fsync."""
    _fill(fd, data, durable=False)  # a fresh descriptor writes from offset 0
    os.ftruncate(fd, len(data))
    os.fsync(fd)
