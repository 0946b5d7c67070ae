"""Spare inodes: a replaced job version is refilled only when nobody can be reading it.

Real files, real processes, real leases: the rules in jobs_core/store/spares.py, each shown to hold.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jobs_core.store import atomic, spares
from jobs_core.store.atomic import atomic_write, write_new
from jobs_core.store.spares import Spares

pytestmark = pytest.mark.skipif(not spares.supported(), reason="needs renameat2 and file leases (Linux)")


@pytest.fixture(autouse=True)
def swaps_work_here(tmp_path: Path) -> None:
    """Skip (with the reason) on a file system without RENAME_EXCHANGE, e.g. some overlay mounts."""
    (tmp_path / "probe-a").write_bytes(b"a")
    (tmp_path / "probe-b").write_bytes(b"b")
    try:
        spares.exchange(str(tmp_path / "probe-a"), str(tmp_path / "probe-b"))
    except OSError as error:
        pytest.skip(f"this file system cannot swap two files ({error.strerror})")
    finally:
        for name in ("probe-a", "probe-b"):
            (tmp_path / name).unlink()


def pool(tmp_path: Path, **options) -> Spares:
    return Spares(str(tmp_path / "spares"), **{"ripe_seconds": 0.0, **options})


def inode(path: Path | str) -> int:
    return os.stat(path).st_ino


def spare_files(tmp_path: Path) -> list[str]:
    return sorted(name for name in os.listdir(tmp_path / "spares") if name.split(".")[-1].isdigit())


def test_a_replaced_version_is_refilled_as_a_later_one(tmp_path: Path) -> None:
    job, keep = tmp_path / "job.json", pool(tmp_path)
    write_new(job, b"v1")
    first = inode(job)
    atomic_write(job, b"v2", spares=keep)  # a new file swapped in; v1's inode becomes a spare
    second = inode(job)
    assert job.read_bytes() == b"v2" and second != first
    atomic_write(job, b"version three")
    atomic_write(job, b"v4", spares=keep)  # v1's inode again, refilled
    assert job.read_bytes() == b"v4" and inode(job) == first
    assert [p.name for p in tmp_path.iterdir() if p.name != "spares"] == ["job.json"]  # no temp file left


def test_a_version_someone_has_open_is_not_refilled_and_reads_whole(tmp_path: Path) -> None:
    job, keep = tmp_path / "job.json", pool(tmp_path)
    write_new(job, b"the first version, read slowly")
    held = inode(job)
    reader = subprocess.Popen([sys.executable, "-c", "import sys; f = open(sys.argv[1], 'rb'); print(flush=True); "
                               "sys.stdin.read(); print(f.read().decode(), flush=True)", str(job)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline() == "\n"  # it holds the file open
    for number in range(5):
        atomic_write(job, f"version {number}".encode(), spares=keep)
        assert inode(job) != held  # its lease is refused: the open file is never refilled
    out, _ = reader.communicate("")
    assert out == "the first version, read slowly\n"
    atomic_write(job, b"after", spares=keep)
    atomic_write(job, b"after again", spares=keep)
    assert held in {inode(job), *(inode(tmp_path / "spares" / name) for name in spare_files(tmp_path))}


def test_a_version_with_another_name_is_not_refilled(tmp_path: Path) -> None:
    job, marker, keep = tmp_path / "job.json", tmp_path / "marker", pool(tmp_path)
    write_new(job, b"v1", links=[str(marker)])  # as a queue marker points at a job version
    for number in range(4):
        atomic_write(job, f"v{number + 2}".encode(), spares=keep)
    assert marker.read_bytes() == b"v1"
    assert inode(job) != inode(marker)


def test_a_spare_is_not_refilled_before_it_is_ripe(tmp_path: Path) -> None:
    job, keep = tmp_path / "job.json", pool(tmp_path, ripe_seconds=60.0)
    write_new(job, b"v1")
    seen = {inode(job)}
    for number in range(4):
        atomic_write(job, f"v{number + 2}".encode(), spares=keep)
        seen.add(inode(job))
    assert len(seen) == 5 and len(spare_files(tmp_path)) == 4  # every version a new inode, all kept


def test_beyond_its_capacity_a_replaced_version_is_freed(tmp_path: Path) -> None:
    job, keep = tmp_path / "job.json", pool(tmp_path, ripe_seconds=60.0, capacity=2)
    write_new(job, b"v1")
    for number in range(6):
        atomic_write(job, f"v{number + 2}".encode(), spares=keep)
    assert len(spare_files(tmp_path)) == 2 and job.read_bytes() == b"v7"


def test_a_replace_that_skipped_the_folder_fsync_has_it_synced_before_the_inode_is_refilled(tmp_path: Path) -> None:
    job, keep = tmp_path / "job.json", pool(tmp_path)
    write_new(job, b"v1")
    atomic_write(job, b"v2", spares=keep)  # v1's inode is kept, its folder synced
    group = atomic._directory_syncs.group(str(tmp_path))
    finished = group.finished
    atomic_write(job, b"progress", spares=keep, sync_dir=False)  # refills v1's; v2's leaves unsynced
    assert group.finished == finished
    atomic_write(job, b"v4", spares=keep, sync_dir=False)  # refills v2's: the folder is synced first
    assert group.finished == finished + 1
    assert job.read_bytes() == b"v4"


def test_where_versions_cannot_be_swapped_the_write_falls_back_to_a_rename(tmp_path: Path) -> None:
    other_disk = Path("/dev/shm") / f"spares-test-{os.getpid()}"
    if not Path("/dev/shm").is_dir() or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the tests' temp folder")
    keep = Spares(str(other_disk), ripe_seconds=0.0)  # a spares folder on another file system: EXDEV
    job = tmp_path / "job.json"
    try:
        write_new(job, b"v1")
        atomic_write(job, b"v2", spares=keep)
        assert job.read_bytes() == b"v2" and keep.usable is False
        assert [name for name in os.listdir(other_disk) if not name.endswith(".owner")] == []
    finally:
        subprocess.run(["rm", "-rf", str(other_disk)], check=True)


_LEASE_HOLDER = """
import os, signal, subprocess, sys
from jobs_core.store import spares
path = sys.argv[1]
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGURG, signal.SIGIO])  # to see which one comes
fd = os.open(path, os.O_RDWR)
spares._take_lease(fd)
opener = subprocess.Popen([sys.executable, "-c", "import sys; open(sys.argv[1]).read()", path])
got = signal.sigtimedwait([signal.SIGURG, signal.SIGIO], 30)  # the opener's open breaks the lease
spares._drop_lease(fd)
opener.wait()
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGURG, signal.SIGIO])  # a pending SIGIO would end us here
print(signal.Signals(got.si_signo).name if got else "no signal", flush=True)
"""


def test_someone_opening_a_spare_while_its_lease_is_held_does_not_end_the_process(tmp_path: Path) -> None:
    spare = tmp_path / "spare"
    spare.write_bytes(b"a kept version")
    holder = subprocess.run([sys.executable, "-c", _LEASE_HOLDER, str(spare)], capture_output=True, text=True,
                            timeout=60)
    assert (holder.returncode, holder.stdout) == (0, "SIGURG\n"), holder.stderr


_OWNER = """
import sys, os, signal
from jobs_core.store.atomic import atomic_write, write_new
from jobs_core.store.spares import Spares
folder, job = sys.argv[1], sys.argv[2]
keep = Spares(os.path.join(folder, "spares"), ripe_seconds=60.0)
write_new(job, b"v1")
for n in range(3):
    atomic_write(job, b"v%d" % (n + 2), spares=keep)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_spares_of_a_process_that_died_are_adopted(tmp_path: Path) -> None:
    died = subprocess.run([sys.executable, "-c", _OWNER, str(tmp_path), str(tmp_path / "other.json")])
    assert died.returncode == -signal.SIGKILL
    orphans = spare_files(tmp_path)
    orphan_inodes = {inode(tmp_path / "spares" / name) for name in orphans}
    assert len(orphans) == 3
    job, keep = tmp_path / "job.json", pool(tmp_path)
    write_new(job, b"mine")
    atomic_write(job, b"mine too", spares=keep)  # the first use adopts them, then refills one
    assert inode(job) in orphan_inodes and job.read_bytes() == b"mine too"
    owners = [name for name in os.listdir(tmp_path / "spares") if name.endswith(".owner")]
    assert len(owners) == 1 and not any(name.startswith(owners[0][:-6]) for name in orphans)
    assert (tmp_path / "other.json").read_bytes() == b"v4"  # the dead owner's last write stands


def test_a_live_process_keeps_its_spares(tmp_path: Path) -> None:
    ours = pool(tmp_path, ripe_seconds=60.0)
    write_new(tmp_path / "a.json", b"a1")
    atomic_write(tmp_path / "a.json", b"a2", spares=ours)
    kept = spare_files(tmp_path)
    theirs = pool(tmp_path)
    write_new(tmp_path / "b.json", b"b1")
    atomic_write(tmp_path / "b.json", b"b2", spares=theirs)
    assert set(kept) <= set(spare_files(tmp_path))  # not adopted: their owner's lock is held


@pytest.mark.parametrize("ending", ["close", "garbage collection"])
def test_spares_of_a_closed_or_collected_pool_pass_to_the_next(tmp_path: Path, ending: str) -> None:
    import gc

    first = pool(tmp_path, ripe_seconds=60.0)
    write_new(tmp_path / "a.json", b"a1")
    atomic_write(tmp_path / "a.json", b"a2", spares=first)
    left = spare_files(tmp_path)
    if ending == "close":
        first.close()
    else:
        del first
        gc.collect()
    second = pool(tmp_path)
    write_new(tmp_path / "b.json", b"b1")
    atomic_write(tmp_path / "b.json", b"b2", spares=second)  # adopts what the first left, refills it
    assert not set(left) & set(spare_files(tmp_path))
    assert [name for name in os.listdir(tmp_path / "spares") if name.endswith(".owner")] == [f"{second._owner}.owner"]


def test_a_forked_child_names_its_own_spares(tmp_path: Path) -> None:
    keep = pool(tmp_path)
    write_new(tmp_path / "job.json", b"v1")
    atomic_write(tmp_path / "job.json", b"v2", spares=keep)
    parents = spare_files(tmp_path)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            write_new(tmp_path / "child.json", b"c1")
            atomic_write(tmp_path / "child.json", b"c2", spares=keep)
            os.write(write_end, json.dumps(spare_files(tmp_path)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        after_child = json.loads(pipe.read())
    os.waitpid(child, 0)
    assert set(parents) <= set(after_child)  # the parent's spare was left to the parent
    assert len({name.split(".")[0] for name in after_child}) == 2  # the child named its own


def test_readers_racing_refills_only_ever_read_whole_versions_of_their_own_file(tmp_path: Path) -> None:
    """Eight files rewritten through one pool while readers read them: no torn or foreign read."""
    keep = pool(tmp_path, ripe_seconds=0.05)
    paths = [tmp_path / f"job{n}.json" for n in range(8)]
    for number, path in enumerate(paths):
        write_new(path, json.dumps({"file": number, "version": 0}).encode())
    versions, writers_done, problems, used = 200, threading.Event(), [], set()

    def write(number: int) -> None:
        for version in range(1, versions + 1):
            pad = "x" * (version * 7 % 300)  # versions of different lengths: a torn read shows
            atomic_write(paths[number], json.dumps({"file": number, "version": version, "pad": pad}).encode(),
                         spares=keep)
            used.add(inode(paths[number]))

    def read(number: int) -> None:
        while not writers_done.is_set():
            data = paths[number].read_bytes()
            try:
                if json.loads(data)["file"] != number:
                    problems.append(f"job{number}.json held another file's version: {data[:60]!r}")
            except ValueError:
                problems.append(f"job{number}.json read torn: {data[:60]!r}")

    writers = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    readers = [threading.Thread(target=read, args=(n,)) for n in range(8)]
    for thread in writers + readers:
        thread.start()
    for thread in writers:
        thread.join()
    writers_done.set()
    for thread in readers:
        thread.join()
    assert problems == []
    assert [json.loads(path.read_bytes())["version"] for path in paths] == [versions] * 8
    assert len(used) < 8 * versions / 2  # most versions went into refilled inodes, not new ones


def test_jobs_run_through_refilled_inodes_stay_whole_and_their_markers_right(tmp_path: Path) -> None:
    from dataclasses import replace

    from jobs_core.config import load_settings
    from jobs_core.lifecycle import Lease
    from jobs_core.models import JobStatus
    from jobs_core.renderers.noop import _tiny_png
    from jobs_core.service import JobService
    from jobs_core.store import FileJobStore
    from jobs_core.store.files import read_job_file

    store = FileJobStore(tmp_path / "store")
    store._spares.ripe_seconds = 0.0  # refill at once: every rule but the lease's ripeness applies
    service = JobService(store, replace(load_settings(tmp_path), store_url=None))
    submitted = [service.submit({"projectId": "p1"}) for _ in range(30)]
    for _ in submitted:
        lease = Lease.of(service.claim_next("w1"))
        service.report_progress(lease, 50, "half")
        service.complete(lease, _tiny_png())
    jobs = [read_job_file(store.job_path("p1", job.job_id)) for job in submitted]
    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 30
    assert [service.get(job.job_id) for job in submitted] == jobs
    assert os.listdir(store.ready_dir) == [] and os.listdir(store.running_dir) == []
    kept = os.listdir(store.state_dir / "spares")
    assert len(kept) < 30  # 90 versions replaced: most were refilled


_REWRITER = """
import json, os, sys
from jobs_core.store.atomic import atomic_write
from jobs_core.store.spares import Spares
folder, start = sys.argv[1], int(sys.argv[2])
keep = Spares(os.path.join(folder, "spares"), ripe_seconds=0.0)
for version in range(start, start + 100000):
    number = version % 4
    path = os.path.join(folder, f"job{number}.json")
    atomic_write(path, json.dumps({"file": number, "version": version, "pad": "x" * (version % 500)}).encode(),
                 spares=keep)
    print(version, flush=True)  # acknowledged: this version must survive a kill from here on
"""


def test_a_process_killed_at_random_moments_of_refilling_leaves_every_file_whole(tmp_path: Path) -> None:
    """SIGKILL a rewriter 12 times at random points; each time every file holds a whole version,
    at least the last one acknowledged, and the next rewriter adopts the dead one's spares."""
    import random

    files = [tmp_path / f"job{n}.json" for n in range(4)]
    for number, path in enumerate(files):
        write_new(path, json.dumps({"file": number, "version": -1}).encode())
    acknowledged = [-1] * 4
    start = 0
    for _ in range(12):
        rewriter = subprocess.Popen([sys.executable, "-c", _REWRITER, str(tmp_path), str(start)],
                                    stdout=subprocess.PIPE, text=True)
        for _ in range(random.randint(5, 400)):
            version = int(rewriter.stdout.readline())
            acknowledged[version % 4] = version
        rewriter.send_signal(signal.SIGKILL)
        rewriter.wait()
        for number, path in enumerate(files):
            document = json.loads(path.read_bytes())  # whole: parses
            assert document["file"] == number and document["version"] >= acknowledged[number]
            start = max(start, document["version"] + 1)
        owners = [name for name in os.listdir(tmp_path / "spares") if name.endswith(".owner")]
        assert len(owners) <= 1  # the previous dead owner's were adopted by this one
