"""`python -m jobs_core migrate`: files -> PostgreSQL -> files loses nothing; a second run changes nothing."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from jobs_core.lifecycle import Lease
from jobs_core.models import Concept
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import FileJobStore

ROOT = Path(__file__).resolve().parent.parent


def migrate(*args: str, env: dict[str, str] | None = None) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("JOBS_STORE_URL", "JOBS_DIR")}
    environment.update(env or {}, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "jobs_core", "migrate", *args], env=environment,
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def file_store_in_every_state(root: Path, settings) -> FileJobStore:
    """Jobs pending, processing, completed (with image), failed, canceled and retried, plus a
    concept whose job was deleted and a brief with a field we do not know."""
    store = FileJobStore(root)
    service = JobService(store, settings)

    def submit(project: str = "p1", **inputs):
        return service.submit({"projectId": project, "conceptInputs": {"floors": 4, **inputs}})

    done = submit(title="Library", roof="gable", client_note="keep the oak")
    lease = Lease.of(service.claim_next("w1"))
    service.report_progress(lease, 50, "drawing facades")
    service.complete(lease, _tiny_png(), prompt="a library")
    failed = submit(project="p2")
    service.fail(Lease.of(service.claim_next("w1")), "bad brief", retryable=False)
    retried = submit(project="p2")
    service.fail(Lease.of(service.claim_next("w1")), "provider down", retryable=False)
    service.retry(retried.job_id)
    service.cancel(submit().job_id)
    submit()
    service.claim(submit(project="p3").job_id, "w9")
    orphan = submit(project="p4")
    service.delete(orphan.job_id)
    store.save_concept(Concept(concept_id="cpt_saved", project_id="p4", concept_inputs={"floors": 2}))
    assert {done.job_id, failed.job_id} <= {j.job_id for j in store.iter_jobs()}
    return store


def contents(root: Path) -> dict[str, bytes]:
    """Every file of a file store, by relative path (lock files and spare inodes aside: not data).

    Queue markers and running hints count by name only: each is a hard link to whichever version
    of the job file was current when it was made.
    """
    return {str(p.relative_to(root)): b"" if ".state" in p.parts else p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not {"locks", "spares"} & set(p.parts)}


def mtimes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def row_versions(pg_url: str) -> dict[str, list]:
    """Each table's rows with their xmin: any rewrite of a row changes its xmin."""
    import psycopg

    with psycopg.connect(pg_url) as conn:
        return {table: conn.execute(f"SELECT xmin::text, * FROM {table} ORDER BY 2, 3").fetchall()
                for table in ("jobs", "job_events", "job_concepts", "job_images")}


def test_files_to_postgres_and_back_loses_nothing_and_repeats_change_nothing(tmp_path: Path, pg_url: str, settings):
    from jobs_core.store.postgres import PostgresJobStore

    source = file_store_in_every_state(tmp_path / "source", settings)

    first = migrate("--jobs-dir", str(source.root), "--to", pg_url)
    assert "jobs: 6 copied" in first and "images: 1 copied" in first and "concepts: 8 copied" in first
    database = PostgresJobStore(pg_url, pool_size=2)
    try:
        for job in source.iter_jobs():
            assert database.get(job.job_id) == job
            assert database.events(job.job_id) == source.events(job.job_id)
        assert sorted(map(repr, database.iter_concepts())) == sorted(map(repr, source.iter_concepts()))
        completed = next(j for j in source.iter_jobs() if j.status.value == "completed")
        assert database.load_image("p1", completed.job_id) == _tiny_png()
        assert [job_id for _, job_id in database.pending()] == [job_id for _, job_id in source.pending()]
    finally:
        database.close()

    before = row_versions(pg_url)
    again = migrate("--jobs-dir", str(source.root), "--to", pg_url)
    assert "nothing to change" in again and "6 unchanged" in again
    assert row_versions(pg_url) == before

    back = tmp_path / "back"
    migrate("--to", str(back), env={"JOBS_STORE_URL": pg_url})
    # Byte for byte: jobs, briefs, images, event logs and the queue markers.
    assert contents(back) == contents(source.root)

    stamps = mtimes(back)
    assert "nothing to change" in migrate("--to", str(back), env={"JOBS_STORE_URL": pg_url})
    assert mtimes(back) == stamps


def test_a_job_that_moved_on_in_the_source_is_brought_up_to_date(tmp_path: Path, pg_url: str, settings):
    source = file_store_in_every_state(tmp_path / "source", settings)
    migrate("--jobs-dir", str(source.root), "--to", pg_url)
    service = JobService(source, settings)
    pending = service.list(status="pending").jobs[-1]
    service.cancel(pending.job_id)

    report = migrate("--jobs-dir", str(source.root), "--to", pg_url)
    assert "1 updated" in report and "events: 1 copied" in report
    back = tmp_path / "back"
    migrate("--to", str(back), env={"JOBS_STORE_URL": pg_url})
    assert contents(back) == contents(source.root)


def test_migrating_onto_itself_is_refused(tmp_path: Path):
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "jobs_core", "migrate", "--jobs-dir", str(tmp_path),
                           "--to", str(tmp_path)], env=environment, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "names the store being copied" in done.stderr
