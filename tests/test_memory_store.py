"""The memory backend beyond the contract suite: how it is opened and how it reports changes."""
from __future__ import annotations

from jobs_core.models import Job
from jobs_core.store import MemoryJobStore, open_store


def a_job(project: str = "p1") -> Job:
    from jobs_core.ids import new_concept_id, new_job_id

    return Job(job_id=new_job_id(), concept_id=new_concept_id(), project_id=project, render_type="axonometric",
               renderer="axonometric", concept_inputs={}, max_attempts=3)


def test_a_named_memory_store_is_shared_in_the_process_and_an_unnamed_one_is_private():
    first, again = open_store("memory://shared-by-name"), open_store("memory://shared-by-name")
    assert first is again and isinstance(first, MemoryJobStore)
    assert open_store("memory://") is not open_store("memory://")
    job = a_job()
    first.create(job, None)
    assert again.get(job.job_id).job_id == job.job_id


def test_readers_get_copies_so_nobody_changes_a_stored_job_by_accident():
    store = MemoryJobStore()
    job = a_job()
    store.create(job, None)
    read = store.get(job.job_id)
    read.concept_inputs["floors"] = 99
    assert "floors" not in store.get(job.job_id).concept_inputs


def test_a_watch_hears_every_write_until_it_is_closed():
    store = MemoryJobStore()
    heard: list[set[str]] = []
    watch = store.watch_jobs(heard.append)
    job = a_job("p2")
    store.create(job, None)
    store.delete(job.job_id, "p2", lambda _job: None)
    watch.close()
    store.create(a_job("p2"), None)
    assert heard == [{f"p2/{job.job_id}"}, {f"p2/{job.job_id}"}]


def test_an_unknown_store_url_scheme_is_refused_with_a_sentence_not_made_into_a_folder(tmp_path, monkeypatch):
    import pytest

    from jobs_core.errors import InvalidInput

    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="'postgress://' is not known"):
        open_store("postgress://db/jobs")
    assert list(tmp_path.iterdir()) == []
