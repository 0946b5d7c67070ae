"""File-store details beyond the shared contract suite."""
from __future__ import annotations

from jobs_core import FileJobStore, JobService


def test_the_job_to_project_memo_stays_bounded_and_forgotten_jobs_are_still_found(tmp_path):
    store = FileJobStore(tmp_path / "store")
    store._project_of.capacity = 5
    service = JobService(store)
    jobs = [service.submit({"projectId": f"p{n % 3}", "renderType": "axonometric"}) for n in range(12)]
    assert len(store._project_of) == 5
    assert store._project_of.get(jobs[0].job_id) is None  # the oldest were forgotten...
    for job in jobs:  # ... and every job is still found without its projectId (by the folder scan)
        assert service.get(job.job_id).project_id == job.project_id
    assert len(store._project_of) == 5
    service.cancel(jobs[-1].job_id)
    service.delete(jobs[-1].job_id)
    assert store._project_of.get(jobs[-1].job_id) is None  # a deleted job is not remembered
