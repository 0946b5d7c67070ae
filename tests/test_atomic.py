"""Crash-safe writes: a new file appears whole or not at all and never replaces one; a replacement
is whole; neither leaves anything behind. Folder fsyncs are shared by concurrent callers."""
from __future__ import annotations

import multiprocessing
import os
import threading
import time
from pathlib import Path

import pytest

from jobs_core.errors import StoreWriteError
from jobs_core.store import atomic
from jobs_core.store.atomic import atomic_write, write_new
from jobs_core.store.folders import Folder, StoreFolders


def in_folder(path: Path, write, name: str, data: bytes) -> None:
    """`write` (write_new or atomic_write) of `name` in the folder `path`."""
    with StoreFolders(path).open() as folder:
        write(folder, name, data)


def names(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_a_new_file_has_its_whole_content_and_nothing_else_is_left(tmp_path: Path) -> None:
    in_folder(tmp_path, write_new, "job.json", b'{"a": 1}')
    assert (tmp_path / "job.json").read_bytes() == b'{"a": 1}'
    assert names(tmp_path) == ["job.json"]  # no temp file left


def test_an_existing_file_is_never_replaced(tmp_path: Path) -> None:
    (tmp_path / "job.json").write_bytes(b"first")
    with pytest.raises(FileExistsError):
        in_folder(tmp_path, write_new, "job.json", b"second")
    assert (tmp_path / "job.json").read_bytes() == b"first"
    assert names(tmp_path) == ["job.json"]


def test_a_replacement_takes_the_name_whole_and_a_reader_never_sees_a_part(tmp_path: Path) -> None:
    path = tmp_path / "job.json"
    versions = [bytes([65 + n]) * 200_000 for n in range(8)]
    in_folder(tmp_path, atomic_write, "job.json", versions[0])
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    for version in versions[1:]:
        in_folder(tmp_path, atomic_write, "job.json", version)
    stop.set()
    reader.join(10)
    assert seen <= set(versions) and path.read_bytes() == versions[-1]
    assert names(tmp_path) == ["job.json"]


def test_racing_creators_of_one_name_have_exactly_one_winner(tmp_path: Path) -> None:
    wins, losses = [], []
    start = threading.Barrier(8)

    def create(number: int) -> None:
        start.wait()
        try:
            in_folder(tmp_path, write_new, "job.json", f"writer {number}".encode())
            wins.append(number)
        except FileExistsError:
            losses.append(number)

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1 and len(losses) == 7
    assert (tmp_path / "job.json").read_bytes() == f"writer {wins[0]}".encode()


def test_a_folder_that_is_gone_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "gone").mkdir()
    with StoreFolders(tmp_path).open("gone") as folder:
        (tmp_path / "gone").rmdir()
        for write in (write_new, atomic_write):
            with pytest.raises(StoreWriteError, match="Could not write job.json"):
                write(folder, "job.json", b"x")
    assert names(tmp_path) == []


def test_a_link_planted_where_the_file_goes_is_replaced_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "job.json").symlink_to(outside)
    in_folder(tmp_path / "store", atomic_write, "job.json", b"new")
    assert outside.read_bytes() == b"precious" and (tmp_path / "store" / "job.json").read_bytes() == b"new"
    assert not (tmp_path / "store" / "job.json").is_symlink()


def test_concurrent_directory_syncs_share_fsyncs_and_each_waits_for_one_that_covers_it(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    # A spy on the real fsync (it still runs): which syncs ran, and what each caller saw.
    ran: list[int] = []
    real = os.fsync
    gate = threading.Event()

    def counted(fd: int) -> None:
        ran.append(len(ran))
        gate.wait(5)  # the first fsync is slow, so the others pile up behind it
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", counted)
    opened = StoreFolders(tmp_path).open()
    folder = opened.__enter__()
    callers = [threading.Thread(target=atomic.fsync_dir, args=(folder,)) for _ in range(12)]
    for caller in callers:
        caller.start()
    deadline = time.monotonic() + 10
    while not ran and time.monotonic() < deadline:  # the first caller is inside its fsync; the rest queue
        time.sleep(0.001)
    gate.set()
    for caller in callers:
        caller.join(10)
    opened.__exit__(None, None, None)
    assert not any(caller.is_alive() for caller in callers)
    assert 2 <= len(ran) < 12  # the first, then shared ones: each caller's entries covered


def test_a_failed_directory_sync_raises_for_every_caller_that_needed_it(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    closed = os.open(tmp_path, os.O_RDONLY)
    os.close(closed)  # a descriptor that no longer names anything: every fsync of it fails

    def sync() -> None:
        try:
            atomic.fsync_dir(Folder(str(tmp_path / "gone"), closed))
        except OSError as error:
            errors.append(error)

    callers = [threading.Thread(target=sync) for _ in range(6)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    assert len(errors) == 6 and all(isinstance(error, OSError) for error in errors)


def _sync_in_child(path: str) -> None:
    with StoreFolders(path).open() as folder:
        atomic.fsync_dir(folder)


def test_a_process_forked_while_a_directory_sync_is_under_way_can_sync_that_directory(tmp_path: Path) -> None:
    folder = str(tmp_path)
    _sync_in_child(folder)  # the folder's group exists in this process
    group = atomic._directory_syncs[(os.getpid(), folder)]
    holding, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:  # another thread inside sync() at the moment of the fork
        with group.changed:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    holding.wait(10)
    child = multiprocessing.get_context("fork").Process(target=_sync_in_child, args=(folder,))
    child.start()
    release.set()
    holder.join(10)
    child.join(10)
    if child.is_alive():
        child.kill()
    assert child.exitcode == 0  # it synced instead of waiting forever on the inherited lock
