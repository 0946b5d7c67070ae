"""The store's folders and files, opened without ever leaving the store.

Anyone who can write into the store's root may have planted a symbolic link, a FIFO or a huge file
where a job file or a project folder should be. So below the root (which the operator chose, and
which may itself be a link), every folder is opened relative to its parent with O_NOFOLLOW and
O_DIRECTORY, every file with O_NOFOLLOW and O_NONBLOCK (a FIFO would otherwise block the open),
and only regular files under a size limit are read. Names are made, replaced and removed relative
to an open folder too, so a folder swapped for a link in the meantime cannot redirect a write.
Portable: openat-style calls through Python's `dir_fd` (Linux, macOS, the BSDs).
"""
from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
FOLDER_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC
MiB = 1 << 20


class UnsafeEntry(OSError):
    """A name in the store that is not what the store put there: a link, a FIFO, too large..."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(errno.EPERM, reason, where)
        self.where = where
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class Folder(NamedTuple):
    """An open folder of the store: its path (for messages) and its descriptor."""

    path: str
    fd: int

    def child(self, name: str) -> str:
        return os.path.join(self.path, name)


def kind_of(mode: int) -> str:
    """What a file system entry is, in words, for one that should have been a regular file."""
    for test, words in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device")):
        if test(mode):
            return words
    return "not a regular file"


def size_text(limit: int) -> str:
    return f"{limit // MiB} MiB" if limit >= MiB else f"{limit} bytes"


def _refusal(parent_fd: int, name: str, error: OSError, expected: str) -> str:
    """Why opening `name` failed, in words: usually it is a link or not the kind we expected."""
    try:
        mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
    except OSError:
        return f"cannot be opened ({error.strerror or error})"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if expected == "folder" and not stat.S_ISDIR(mode):
        return f"{kind_of(mode)}, not a folder"
    return f"cannot be opened ({error.strerror or error})"


class StoreFolders:
    """Opens folders below `root` by their parts (("jobs", "p1"), (".state", "ready")...)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = os.fspath(root)

    @contextmanager
    def open(self, *parts: str, create: bool = False) -> Iterator[Folder]:
        """The folder root/parts..., each part opened without following a link.

        FileNotFoundError if a part is missing (unless `create`: then it is made, and its name made
        durable in its parent); UnsafeEntry if a part is a link or not a folder.
        """
        if create:
            os.makedirs(self.root, exist_ok=True)
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)  # the root may be a link
        path = self.root
        try:
            for part in parts:
                opened = self._open_part(fd, path, part, create)
                os.close(fd)
                fd, path = opened, os.path.join(path, part)
            yield Folder(path, fd)
        finally:
            os.close(fd)

    @staticmethod
    def _open_part(parent: int, parent_path: str, part: str, create: bool) -> int:
        try:
            return os.open(part, FOLDER_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as error:
            raise UnsafeEntry(os.path.join(parent_path, part), _refusal(parent, part, error, "folder")) from None
        try:
            os.mkdir(part, 0o755, dir_fd=parent)
        except FileExistsError:
            pass  # another process made it meanwhile
        os.fsync(parent)  # the new folder's name survives a power loss, or its files would go with it
        try:
            return os.open(part, FOLDER_FLAGS, dir_fd=parent)
        except OSError as error:
            raise UnsafeEntry(os.path.join(parent_path, part), _refusal(parent, part, error, "folder")) from None


def open_regular(folder: Folder, name: str, flags: int = FILE_FLAGS, mode: int = 0o644) -> int:
    """A descriptor of the regular file `name` in `folder`; UnsafeEntry for anything else.

    FileNotFoundError when there is nothing (unless `flags` create it).
    """
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC, mode, dir_fd=folder.fd)
    except FileNotFoundError:
        raise
    except OSError as error:
        if error.errno in (errno.ELOOP, errno.EMLINK, errno.EISDIR, errno.ENXIO):
            raise UnsafeEntry(folder.child(name), _refusal(folder.fd, name, error, "file")) from None
        raise
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        raise UnsafeEntry(folder.child(name), kind_of(kind))
    return fd


def read_regular(folder: Folder, name: str, limit: int) -> bytes:
    """The content of the regular file `name`, at most `limit` bytes (UnsafeEntry when larger)."""
    fd = open_regular(folder, name)
    try:
        if os.fstat(fd).st_size > limit:
            raise UnsafeEntry(folder.child(name), f"larger than {size_text(limit)}")
        chunks, total = [], 0
        while chunk := os.read(fd, min(1 << 20, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew while we read
                raise UnsafeEntry(folder.child(name), f"larger than {size_text(limit)}")
        return b"".join(chunks)
    finally:
        os.close(fd)


def entry_problem(folder: Folder, name: str) -> str | None:
    """Why `name` in `folder` is not a regular file, or None when it is (or is gone)."""
    try:
        mode = os.stat(name, dir_fd=folder.fd, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    return None if stat.S_ISREG(mode) else kind_of(mode)
