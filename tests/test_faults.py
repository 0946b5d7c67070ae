"""Real write faults: a full disk (ENOSPC on a tiny tmpfs) and permission denied (EACCES as another user).

No mock of the OS: the disk really is full and the process really lacks the permission. Both need
root (to mount a tmpfs, and to switch the effective uid); without it the tests skip and say why.
"""
from __future__ import annotations

import errno
import os
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from jobs_core.config import load_settings
from jobs_core.errors import StoreWriteError
from jobs_core.lifecycle import Lease
from jobs_core.models import JobStatus
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.store.atomic import is_temp_name

NOBODY = 65534


def file_service(root: Path) -> JobService:
    return JobService(FileJobStore(root), replace(load_settings(root), store_url=None, retry_backoff_seconds=0.0))


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: small enough to fill in milliseconds, real enough to return ENOSPC."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here for a real ENOSPC ({mounted.stderr.strip()})")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the file system refuses another byte."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for chunk in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * chunk)
                except OSError as error:
                    assert error.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def index(root: Path) -> dict[str, list[str]]:
    """The store's queue and running markers (FileJobStore's index of pending/processing jobs)."""
    return {kind: sorted(os.listdir(root / ".state" / kind)) for kind in ("ready", "running")}


def temp_files(root: Path) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if is_temp_name(name)]


def test_disk_full_leaves_every_job_as_it_was_and_says_so(tiny_disk):
    root = tiny_disk / "store"
    service = file_service(root)
    waiting = service.submit({"projectId": "p1"})
    running = service.submit({"projectId": "p1"})
    lease = Lease.of(service.claim_next("w1"))
    assert lease.job_id == waiting.job_id
    service.report_progress(lease, 30, "drawing")
    job_file = root / "jobs" / "p1" / f"{waiting.job_id}.json"
    before, index_before = job_file.read_bytes(), index(root)
    listing_before = [j.model_dump_json() for j in service.list().jobs]

    filler = fill(tiny_disk)
    full = "the disk is full. The previous version is unchanged."
    full_new = "the disk is full. Nothing was changed."  # a file that did not exist yet
    with pytest.raises(StoreWriteError, match=f"Could not write {waiting.job_id}.json: {full}"):
        service.report_progress(lease, 60, "drawing facades")
    with pytest.raises(StoreWriteError, match=f"Could not write {waiting.job_id}.png: {full_new}"):
        service.complete(lease, _tiny_png() * 2000)  # the image is written first, so this fails first
    with pytest.raises(StoreWriteError, match=f"Could not write {running.job_id}.json: {full}"):
        service.claim_next("w2")
    with pytest.raises(StoreWriteError, match="the disk is full"):
        service.submit({"projectId": "p1", "conceptInputs": {"description": "x" * 1500}})
    with pytest.raises(StoreWriteError, match=full_new):  # a saved concept: only the job itself is written
        service.submit({"projectId": "p1", "conceptId": waiting.concept_id})
    with pytest.raises(StoreWriteError, match=full):
        service.cancel(running.job_id)

    assert job_file.read_bytes() == before
    assert index(root) == index_before  # no queue/running entry for a change that did not happen
    assert [j.model_dump_json() for j in service.list().jobs] == listing_before
    assert service.list().unreadable == [] and temp_files(root) == []

    filler.unlink()  # space again: the same calls now succeed, from the state they found
    assert service.report_progress(lease, 60, "drawing facades").progress == 60
    assert service.complete(lease, _tiny_png()).status is JobStatus.COMPLETED
    assert service.claim_next("w2").job_id == running.job_id


def fill_leaving(disk: Path, free_bytes: int) -> Path:
    """Fill the disk but for about `free_bytes`: room for a job file, not for a drawing."""
    filler = fill(disk)
    with open(filler, "r+b") as file:
        file.truncate(max(os.path.getsize(filler) - free_bytes, 0))
    return filler


def test_a_full_disk_while_saving_the_image_hands_the_job_back_unspent(tiny_disk, caplog):
    from jobs_core.worker import STORE_RETRY_SECONDS, Worker

    root = tiny_disk / "store"
    service = file_service(root)
    job = service.submit({"projectId": "p1", "renderType": "axonometric"}, renderer="axonometric")
    claimed = service.claim_next("w1")
    filler = fill_leaving(tiny_disk, 24 * 1024)
    assert Worker(service).run(claimed).status is JobStatus.PENDING  # the drawing did not fit; the job did
    back = service.get(job.job_id)
    assert back.attempts == 0 and back.error is None and back.worker_id is None
    assert (back.available_at - back.updated_at).total_seconds() == pytest.approx(STORE_RETRY_SECONDS)
    assert "the store failed while the job ran" in service.events(job.job_id)[-1].message
    assert "disk is full" in caplog.text
    filler.unlink()
    later = back.available_at
    done = Worker(service).run(service.claim_next("w2", now=later))
    assert done.status is JobStatus.COMPLETED and done.attempts == 1


def test_a_disk_too_full_even_to_hand_the_job_back_is_retried_until_it_takes_it(tiny_disk):
    from jobs_core.worker import Worker

    root = tiny_disk / "store"
    service = file_service(root)
    job = service.submit({"projectId": "p1"}, renderer="noop")
    claimed = service.claim_next("w1")
    filler = fill(tiny_disk)
    worker = Worker(service)
    assert worker.run(claimed) is None  # every write failed: nothing was changed, nothing failed
    assert service.get(job.job_id).status is JobStatus.PROCESSING
    worker._retry_hand_backs()  # the maintenance pass, while the disk is still full
    assert service.get(job.job_id).status is JobStatus.PROCESSING
    filler.unlink()
    worker._retry_hand_backs()
    back = service.get(job.job_id)
    assert back.status is JobStatus.PENDING and back.attempts == 0 and back.error is None


def test_a_worker_pauses_claiming_on_a_full_disk_says_so_once_and_resumes_by_itself(tiny_disk, caplog):
    from proc_helpers import wait_until

    from jobs_core.worker import Worker

    root = tiny_disk / "store"
    service = file_service(root)
    job = service.submit({"projectId": "p1"}, renderer="noop")
    filler = fill(tiny_disk)
    worker = Worker(service, poll_seconds=0.05).start()
    try:
        wait_until(lambda: worker.store_problem, what="the worker to notice the full disk")
        assert "disk is full" in worker.store_problem
        wait_until(lambda: caplog.text.count("claiming paused") == 1 and worker._pause > 0.05,
                   what="a second failed claim")
        assert service.get(job.job_id).status is JobStatus.PENDING and service.get(job.job_id).attempts == 0
        filler.unlink()
        done = wait_until(lambda: service.get(job.job_id).status is JobStatus.COMPLETED and service.get(job.job_id),
                          what="the job to run once there is space")
        assert done.attempts == 1 and worker.store_problem is None
        assert caplog.text.count("claiming paused") == 1 and "claiming resumed" in caplog.text
    finally:
        worker.stop()


@contextmanager
def acting_as(uid: int) -> Iterator[None]:
    """Run the block with another effective uid, so file permissions apply even though we are root."""
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)


@pytest.fixture
def root_owned_store() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to act as another user for a real EACCES")
    base = Path(tempfile.mkdtemp(prefix="jobs-eacces-"))
    base.chmod(0o755)  # others may look in, not write: a store owned by another account
    yield base / "store"
    subprocess.run(["rm", "-rf", str(base)], check=False)


def test_permission_denied_on_the_lock_is_a_clear_error(root_owned_store):
    service = file_service(root_owned_store)
    job = service.submit({"projectId": "p1"})
    before = (root_owned_store / "jobs" / "p1" / f"{job.job_id}.json").read_bytes()
    denied = r"Could not open the lock file .*: permission denied\."
    with acting_as(NOBODY), pytest.raises(StoreWriteError, match=denied):
        service.cancel(job.job_id)
    assert (root_owned_store / "jobs" / "p1" / f"{job.job_id}.json").read_bytes() == before


def test_permission_denied_on_the_job_folder_leaves_the_job_intact(root_owned_store):
    service = file_service(root_owned_store)
    job = service.submit({"projectId": "p1"})
    locks = root_owned_store / ".state" / "locks"
    locks.chmod(0o777)  # a shared lock folder: the failure must come from the job write itself
    for lock in locks.iterdir():
        lock.chmod(0o666)
    job_file = root_owned_store / "jobs" / "p1" / f"{job.job_id}.json"
    before = job_file.read_bytes()
    with acting_as(NOBODY):
        denied = f"Could not write {job.job_id}.json: permission denied. The previous version is unchanged."
        with pytest.raises(StoreWriteError, match=denied):
            service.cancel(job.job_id)
        with pytest.raises(StoreWriteError, match="permission denied"):
            service.submit({"projectId": "p1"})
        assert service.get(job.job_id).status is JobStatus.PENDING  # reading still works
    assert job_file.read_bytes() == before
    assert [j.job_id for j in service.list().jobs] == [job.job_id] and temp_files(root_owned_store) == []


# -- what a crash or a power loss can leave in the FileJobStore's index -------------------------------
def test_a_stale_running_marker_does_not_hold_a_pending_job_back(tmp_path):
    service = file_service(tmp_path / "store")
    job = service.submit({"projectId": "p1"})
    stale = tmp_path / "store" / ".state" / "running" / f"{job.job_id}.p1"
    stale.touch()  # as if a crash came between a release's job write and its marker removal
    assert service.reclaim_expired() == [] and not stale.exists()  # the maintenance pass drops it
    assert service.claim_next("w1").job_id == job.job_id


def test_a_stale_queue_marker_is_dropped(tmp_path):
    service = file_service(tmp_path / "store")
    job = service.submit({"projectId": "p1"})
    service.cancel(job.job_id)
    ghost = tmp_path / "store" / ".state" / "ready" / f"0000000000001.{job.job_id}.p1"
    ghost.touch()  # as if a crash came between the job write and the marker removal
    assert service.claim_next("w1") is None and not ghost.exists()
    assert service.get(job.job_id).status is JobStatus.CANCELED


def test_a_claim_moves_the_job_from_the_queue_to_the_running_list_and_back(tmp_path):
    root = tmp_path / "store"
    service = file_service(root)
    job = service.submit({"projectId": "p1"})
    ready, running = root / ".state" / "ready", root / ".state" / "running"
    assert [name.split(".")[1] for name in os.listdir(ready)] == [job.job_id] and os.listdir(running) == []
    claimed = service.claim_next("w1")
    assert os.listdir(ready) == [] and os.listdir(running) == [f"{job.job_id}.p1"]
    service.release(Lease.of(claimed))
    assert [name.split(".")[1] for name in os.listdir(ready)] == [job.job_id] and os.listdir(running) == []


def test_repair_rebuilds_a_damaged_queue_index_and_a_second_run_finds_nothing(tmp_path):
    """Markers are durable, so only damage (a disk fault, a hand) removes them: `repair` puts them back."""
    root = tmp_path / "store"
    service = file_service(root)
    waiting, running, done = (service.submit({"projectId": p}) for p in ("p1", "p2", "p1"))
    service.claim(running.job_id, "w1")
    service.complete(Lease.of(service.claim(done.job_id, "w1")), _tiny_png())
    for folder in ("ready", "running"):
        for marker in (root / ".state" / folder).iterdir():
            marker.unlink()
    assert service.claim_next("w2") is None and service.store.processing() == []  # lost to workers
    (root / ".state" / "running" / f"{done.job_id}.p1").touch()  # and one that no job calls for

    report = service.repair()
    assert report.changed and len(report.index_fixes) == 3 and report.images_requeued == []
    assert service.repair().summary().startswith("Nothing to repair")
    assert service.claim_next("w2").job_id == waiting.job_id
    assert [job.job_id for job in service.store.processing()] == sorted([waiting.job_id, running.job_id])
    assert service.claim_next("w2") is None and service.get(done.job_id).status is JobStatus.COMPLETED


def test_repair_renders_again_completed_jobs_whose_image_is_missing_or_cut(tmp_path):
    root = tmp_path / "store"
    service = file_service(root)
    gone, cut, kept = (service.submit({"projectId": "p1"}) for _ in range(3))
    for job in (gone, cut, kept):
        service.complete(Lease.of(service.claim(job.job_id, "w1")), _tiny_png())
    (root / "renders" / "p1" / f"{gone.job_id}.png").unlink()
    image = root / "renders" / "p1" / f"{cut.job_id}.png"
    image.write_bytes(image.read_bytes()[:20])

    report = service.repair()
    assert sorted(report.images_requeued) == sorted([gone.job_id, cut.job_id])
    for job in (gone, cut):
        again = service.get(job.job_id)
        assert again.status is JobStatus.PENDING and again.image_url is None and again.attempts == 0
        assert [e.type for e in service.events(job.job_id)][-1] == "requeued"
    assert service.get(kept.job_id).status is JobStatus.COMPLETED
    assert {service.claim_next("w2").job_id, service.claim_next("w2").job_id} == {gone.job_id, cut.job_id}
    assert not service.repair().changed


def test_the_temp_file_sweep_removes_only_old_leftovers_and_never_trips_on_live_writes(tmp_path):
    """Workers sweep at start-up while other processes write: a temp file may vanish mid-sweep."""
    import threading

    root = tmp_path / "store"
    service = file_service(root)
    job = service.submit({"projectId": "p1"})
    folder = root / "jobs" / "p1"
    old, fresh = folder / f".{job.job_id}.json.dead0001.tmp", folder / f".{job.job_id}.json.live0001.tmp"
    old.write_text("{half")
    fresh.write_text("{half")
    os.utime(old, (0, 0))  # left by a process killed long ago
    assert service.store.sweep_temp_files() == 1
    assert not old.exists() and fresh.exists() and service.get(job.job_id).status is JobStatus.PENDING
    fresh.unlink()

    writing = threading.Event()
    def write_many() -> None:
        writing.set()
        for _ in range(300):
            service.submit({"projectId": "p1"})
    writer = threading.Thread(target=write_many)
    writer.start()
    writing.wait()
    while writer.is_alive():
        assert service.store.sweep_temp_files() == 0  # in-flight temp files are young: kept, and no crash
    writer.join()
    assert len(service.list("p1").jobs) == 301
