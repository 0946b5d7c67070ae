"""The file store's own files are untrusted: someone else may write into JOBS_DIR.

Links, FIFOs, huge files and documents in the wrong place are listed as unreadable with their
reason; nothing is ever read or written outside the store, nothing hangs, and workers go on.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from jobs_core.config import load_settings
from jobs_core.errors import JobNotFound, StoreWriteError, UnreadableJob
from jobs_core.lifecycle import Lease
from jobs_core.migrate import migrate
from jobs_core.models import JobStatus
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import FileJobStore, MemoryJobStore


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def service(root: Path) -> JobService:
    return JobService(FileJobStore(root), load_settings(root))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "outside"
    secret.mkdir()
    (secret / "secret.json").write_text('{"not": "yours"}')
    return secret


def submit(service: JobService, project: str = "p1"):
    return service.submit({"projectId": project, "renderType": "axonometric", "conceptInputs": {}})


def unreadable(service: JobService) -> dict[str, str]:
    page = service.list()
    return {os.path.basename(bad.location): bad.reason for bad in page.unreadable}


def test_a_job_file_that_is_a_link_is_unreadable_and_never_followed(service, root, outside):
    job = submit(service)
    path = root / "jobs" / "p1" / f"{job.job_id}.json"
    path.unlink()
    path.symlink_to(outside / "secret.json")
    with pytest.raises(UnreadableJob, match="a symbolic link"):
        service.get(job.job_id, "p1")
    assert unreadable(service) == {f"{job.job_id}.json": "a symbolic link"}
    assert service.claim_next("w1") is None  # its marker is dropped, nothing outside is touched
    assert (outside / "secret.json").read_text() == '{"not": "yours"}'


def test_a_fifo_where_a_job_file_goes_does_not_hang_any_reader(service, root):
    job = submit(service)
    path = root / "jobs" / "p1" / f"{job.job_id}.json"
    path.unlink()
    os.mkfifo(path)
    done = threading.Event()

    def read_all() -> None:
        unreadable(service)
        with pytest.raises(UnreadableJob):
            service.get(job.job_id, "p1")
        service.claim_next("w1")
        done.set()

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(20)
    assert done.is_set(), "a reader blocked on the FIFO"
    assert unreadable(service) == {f"{job.job_id}.json": "a FIFO"}


def test_a_huge_job_file_is_unreadable_not_loaded(service, root):
    job = submit(service)
    path = root / "jobs" / "p1" / f"{job.job_id}.json"
    with open(path, "r+b") as file:
        file.truncate(5 << 20)  # 5 MiB (sparse): far more than any job document
    with pytest.raises(UnreadableJob, match="larger than 1 MiB"):
        service.get(job.job_id, "p1")
    assert unreadable(service) == {f"{job.job_id}.json": "larger than 1 MiB"}


def test_a_file_holding_another_jobs_document_is_unreadable_not_served_as_that_job(service, root):
    first, second = submit(service), submit(service)
    (root / "jobs" / "p1" / f"{first.job_id}.json").write_bytes(
        (root / "jobs" / "p1" / f"{second.job_id}.json").read_bytes())
    with pytest.raises(UnreadableJob, match=f"names job {second.job_id}"):
        service.get(first.job_id, "p1")
    assert [job.job_id for job in service.list().jobs] == [second.job_id]
    assert f"names job {second.job_id}" in unreadable(service)[f"{first.job_id}.json"]


def test_a_project_folder_that_is_a_link_is_listed_as_such_and_nothing_is_written_through_it(service, root, outside):
    submit(service, "real")
    (root / "jobs" / "p2").symlink_to(outside)
    assert unreadable(service) == {"p2": "a symbolic link"}
    assert service.store.projects() == ["real"]
    with pytest.raises(StoreWriteError, match="a symbolic link"):
        submit(service, "p2")
    assert sorted(os.listdir(outside)) == ["secret.json"]


def test_links_planted_for_renders_and_event_logs_are_replaced_or_refused_never_followed(service, root, outside):
    job = submit(service)
    lease = Lease.of(service.claim(job.job_id, "w1"))
    (root / "renders" / "p1").mkdir(parents=True, exist_ok=True)
    (root / "renders" / "p1" / f"{job.job_id}.png").symlink_to(outside / "secret.json")
    (root / "events" / "p1" / f"{job.job_id}.jsonl").unlink()
    (root / "events" / "p1" / f"{job.job_id}.jsonl").symlink_to(outside / "secret.json")
    done = service.complete(lease, _tiny_png())
    assert done.status is JobStatus.COMPLETED and service.image(done) == _tiny_png()
    assert (outside / "secret.json").read_text() == '{"not": "yours"}'
    with pytest.raises(UnreadableJob, match="a symbolic link"):
        service.store.events(job.job_id, "p1")


def test_a_store_whose_queue_folder_is_a_link_refuses_to_open_with_a_sentence(tmp_path, outside):
    root = tmp_path / "store"
    (root / ".state").mkdir(parents=True)
    (root / ".state" / "ready").symlink_to(outside)
    with pytest.raises(StoreWriteError, match="ready: a symbolic link"):
        FileJobStore(root)


def test_foreign_queue_entries_are_ignored(service, root):
    job = submit(service)
    for name in ("garbage", "12..etc.passwd", "0000000000001.job_x", ".hidden"):
        (root / ".state" / "ready" / name).touch()
    (root / ".state" / "running" / "not-a-marker").touch()
    assert service.claim_next("w1").job_id == job.job_id
    assert [found.job_id for found in service.store.processing()] == [job.job_id]


def test_migrate_copies_only_what_the_store_would_read_and_says_what_it_skipped(service, root, outside):
    good, bad = submit(service), submit(service)
    lease = Lease.of(service.claim(good.job_id, "w1"))
    service.complete(lease, _tiny_png())
    image = root / "renders" / "p1" / f"{good.job_id}.png"
    image.unlink()
    image.symlink_to(outside / "secret.json")
    (root / "jobs" / "p1" / f"{bad.job_id}.json").write_text("{broken")
    target = MemoryJobStore()
    report = migrate(service.store, target)
    assert [job.job_id for job in target.list_jobs().jobs] == [good.job_id]
    assert len(report.unreadable) == 2
    assert any("symbolic link" in line for line in report.unreadable)
    with pytest.raises(JobNotFound):
        target.load_image("p1", good.job_id)
