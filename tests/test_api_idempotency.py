"""`JobStore.find_by_idempotency_key` (added for the API's Idempotency-Key) on every backend, and
the file store's race-free guarantee: one key, one job, across threads and processes."""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from jobs_core.api import ApiSettings, create_app
from jobs_core.errors import TransitionConflict
from jobs_core.service import JobService
from jobs_core.store import FileJobStore, JobStore
from tests.api_server import serve_in_thread


def _submit(service: JobService, project: str = "p1", key: str | None = None, floors: int = 3):
    return service.submit({"projectId": project, "conceptInputs": {"floors": floors}}, idempotency_key=key)


def test_lookup_finds_the_job_of_a_key_in_its_project_only(service):
    keyed = _submit(service, key="order-1")
    _submit(service)  # no key
    found = service.store.find_by_idempotency_key("p1", "order-1")
    assert found is not None and found.job_id == keyed.job_id and found.idempotency_key == "order-1"
    assert service.store.find_by_idempotency_key("p1", "order-2") is None
    assert service.store.find_by_idempotency_key("p2", "order-1") is None


def test_a_deleted_jobs_key_is_free_again(service):
    job = _submit(service, key="k")
    service.delete(job.job_id)
    assert service.store.find_by_idempotency_key("p1", "k") is None
    again = _submit(service, key="k")
    assert service.store.find_by_idempotency_key("p1", "k").job_id == again.job_id


def test_file_store_refuses_a_second_job_with_the_same_key(tmp_path):
    service = JobService(FileJobStore(tmp_path / "store"))
    first = _submit(service, key="same")
    with pytest.raises(TransitionConflict, match=first.job_id):
        _submit(service, key="same", floors=9)
    assert _submit(service, project="p2", key="same").project_id == "p2"


def test_file_store_threads_racing_with_one_key_create_one_job(tmp_path):
    service = JobService(FileJobStore(tmp_path / "store"))

    def attempt(_: int) -> str:
        try:
            return _submit(service, key="race").job_id
        except TransitionConflict:
            return "refused"

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(attempt, range(16)))
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1 and len(service.list("p1").jobs) == 1


def _process_attempt(root: str, results) -> None:
    service = JobService(FileJobStore(root))
    try:
        results.put(_submit(service, key="across-processes").job_id)
    except TransitionConflict:
        results.put("refused")


def test_file_store_processes_racing_with_one_key_create_one_job(tmp_path):
    root = str(tmp_path / "store")
    FileJobStore(root)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_process_attempt, args=(root, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
    assert outcomes.count("refused") == 3  # exactly one process created the job
    assert len(JobService(FileJobStore(root)).list("p1").jobs) == 1


class DefaultLookupStore(FileJobStore):
    """A store that keeps the contract's default lookup (a scan) and no create-time refusal, as a
    new backend does before it adds its own index."""

    find_by_idempotency_key = JobStore.find_by_idempotency_key

    def create(self, job, event) -> None:
        self._create(job, event)


def test_the_default_lookup_scans_and_one_api_server_still_makes_one_job(tmp_path):
    service = JobService(DefaultLookupStore(tmp_path / "store"))
    for floors in range(1, 4):
        _submit(service, key=None, floors=floors)
    keyed = _submit(service, key="scan-me")
    assert service.store.find_by_idempotency_key("p1", "scan-me").job_id == keyed.job_id
    assert service.store.find_by_idempotency_key("p1", "absent") is None
    body = {"projectId": "race", "conceptInputs": {"floors": 2}}
    with serve_in_thread(create_app(service, settings=ApiSettings())) as base, httpx.Client(base_url=base) as http:
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: http.post("/api/jobs/render", json=body,
                                                        headers={"Idempotency-Key": "k"}), range(8)))
    assert {a.status_code for a in answers} == {201} and len({a.json()["jobId"] for a in answers}) == 1
    assert len(service.list("race").jobs) == 1
