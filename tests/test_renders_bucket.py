"""Renders in an S3-compatible bucket (JOBS_ARTIFACTS_URL), against moto's S3 server on 127.0.0.1.

moto's server is a real HTTP server speaking the S3 protocol; boto3 signs every call with SigV4 as
it would for AWS, MinIO or R2. (moto does not check signatures or a presigned URL's expiry, so
the tests read the expiry from the URL itself.) Jobs are kept by the file store or PostgreSQL.
A bucket that refuses writes does so for real: a bucket policy that denies PutObject.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from jobs_core.api import create_app
from jobs_core.artifacts import StoreRenders, parse_bucket_url
from jobs_core.artifacts_s3 import BucketRenders
from jobs_core.cli import main as cli_main
from jobs_core.client import JobsClient
from jobs_core.config import load_artifact_settings
from jobs_core.errors import InvalidInput, JobNotFound, LeaseLost, RendersUnavailable, StoreUnavailable
from jobs_core.lifecycle import Lease, Outcome
from jobs_core.models import Job, JobStatus, utcnow
from jobs_core.png import is_whole_png
from jobs_core.renderers.noop import _tiny_png
from jobs_core.retention import PruneRule, prune
from jobs_core.service import JobService
from jobs_core.store import FileJobStore, JobStore
from jobs_core.worker import Worker
from tests.api_server import free_port, serve_in_thread
from tests.conftest import make_file_store, make_postgres_store

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "team-a/renders"
STORES = {"files": make_file_store, "postgres": make_postgres_store}


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Bucket:
    name: str
    s3: object  # a boto3 client of the test's own, to look at the bucket from outside

    def objects(self) -> list[str]:
        return sorted(item["Key"] for item in self.s3.list_objects_v2(Bucket=self.name).get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.name, Key=key)["Body"].read()

    def refuse_writes(self) -> None:
        self.s3.put_bucket_policy(Bucket=self.name, Policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
                           "Resource": f"arn:aws:s3:::{self.name}/*"}]}))

    def take_writes(self) -> None:
        self.s3.delete_bucket_policy(Bucket=self.name)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The usual AWS variables, and nothing of this machine's own AWS set-up."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "JOBS_S3_PROXY", "JOBS_S3_URL_SECONDS", "JOBS_ARTIFACTS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask an instance metadata address
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def bucket(moto_url: str, aws_env: None, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new bucket, named by JOBS_ARTIFACTS_URL for every service the test makes."""
    name = f"renders-{uuid.uuid4().hex[:10]}"
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1")
    s3.create_bucket(Bucket=name)
    monkeypatch.setenv("JOBS_ARTIFACTS_URL", f"s3://{name}/{PREFIX}")
    monkeypatch.setenv("JOBS_S3_ENDPOINT_URL", moto_url)
    return Bucket(name, s3)


@pytest.fixture(params=sorted(STORES))
def job_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    store = STORES[request.param](tmp_path)
    yield store
    store.close()


@pytest.fixture
def service(job_store: JobStore, settings, bucket: Bucket) -> JobService:
    return JobService(job_store, settings)


def render_one(service: JobService, project: str = "p1", title: str = "Library") -> Job:
    """Submit a job and let a real worker pool render it; the completed job."""
    job = service.submit({"projectId": project, "conceptInputs": {"title": title, "floors": 3}})
    worker = Worker(service, poll_seconds=0.05, render_size=128).start()
    try:
        return wait_for(service, job.job_id, lambda j: j.status.is_final)
    finally:
        worker.stop()


def wait_for(service: JobService, job_id: str, done: Callable[[Job], bool], seconds: float = 30) -> Job:
    deadline = time.monotonic() + seconds
    while True:
        job = service.get(job_id)
        if done(job):
            return job
        assert time.monotonic() < deadline, f"job {job_id} is still {job.status.value}: {job.error}"
        service.store.wait_for_work(0.05)


def key_of(job: Job) -> str:
    return f"{PREFIX}/{job.project_id}/{job.job_id}/{job.attempts}-{job.started_at:%Y%m%dT%H%M%S%fZ}.png"


# -- a worker's render lands in the bucket, not in the store ------------------------------------
def test_a_render_made_by_a_worker_is_kept_in_the_bucket_and_read_back_from_it(service, bucket):
    assert isinstance(service.renders, BucketRenders)
    job = render_one(service)
    assert job.status is JobStatus.COMPLETED, job.error
    assert job.image_url == f"/api/renders/p1/{job.job_id}.png"  # still the product's own URL
    assert bucket.objects() == [key_of(job)]  # job id, attempt and claim time in the key
    stored = bucket.read(key_of(job))
    assert is_whole_png(stored) and service.image(job) == stored
    with pytest.raises(JobNotFound):  # the store keeps job state only
        service.store.load_image(job.project_id, job.job_id)


def test_a_worker_process_started_from_the_command_line_keeps_its_renders_in_the_bucket(service, bucket):
    jobs = [service.submit({"projectId": "p1", "conceptInputs": {"title": f"Block {n}"}}) for n in range(3)]
    command, env = worker_command(service, "--drain")
    done = subprocess.run(command, env={**env, "JOBS_RENDER_SIZE": "128"}, capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    finished = [service.get(job.job_id) for job in jobs]
    assert all(job.status is JobStatus.COMPLETED for job in finished)
    assert bucket.objects() == sorted(key_of(job) for job in finished)


def worker_command(service: JobService, *args: str) -> tuple[list[str], dict[str, str]]:
    where = ["--jobs-dir", str(service.store.root)] if isinstance(service.store, FileJobStore) else []
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JOBS_LEASE_SECONDS": "1"}
    if not isinstance(service.store, FileJobStore):
        env["JOBS_STORE_URL"] = service.store.url
    return [sys.executable, "-m", "jobs_core", "worker", "--poll", "0.05", *where, *args], env


def test_a_worker_killed_mid_work_leaves_no_completed_job_without_its_render(service, bucket):
    jobs = [service.submit({"projectId": "p1", "conceptInputs": {"title": f"Block {n}", "floors": 6}})
            for n in range(12)]
    command, env = worker_command(service, "--concurrency", "2")
    victim = subprocess.Popen(command, env={**env, "JOBS_RENDER_SIZE": "1024"}, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not bucket.objects():  # killed once it has begun to upload: some jobs done, some midway
            assert victim.poll() is None and time.monotonic() < deadline, "the worker saved no render"
            time.sleep(0.02)
    finally:
        victim.kill()
        victim.wait()
    drain, env = worker_command(service, "--drain")
    deadline = time.monotonic() + 120
    while not all(service.get(job.job_id).status.is_final for job in jobs):  # the survivors take over
        assert time.monotonic() < deadline
        subprocess.run(drain, env={**env, "JOBS_RENDER_SIZE": "128"}, cwd=ROOT, capture_output=True, timeout=120)
    finished = [service.get(job.job_id) for job in jobs]
    assert all(job.status is JobStatus.COMPLETED for job in finished)
    for job in finished:  # each completed job's render is whole in the bucket; others are orphans
        assert is_whole_png(bucket.read(key_of(job))) and service.image(job) == bucket.read(key_of(job))
    assert all(key.split("/")[3] in {job.job_id for job in jobs} for key in bucket.objects())


def test_deleting_a_job_removes_its_renders_from_the_bucket(service, bucket):
    job = render_one(service)
    other = render_one(service, title="School")
    service.delete(job.job_id)
    assert bucket.objects() == [key_of(other)]


def test_pruning_removes_a_job_s_render_from_the_bucket_and_counts_its_bytes(service, bucket, capsys, monkeypatch):
    old, recent = render_one(service), render_one(service, title="School")
    size = len(service.image(old))
    weeks_ago = timedelta(days=40)
    service.store.modify(old.job_id, old.project_id, lambda job: Outcome(job.model_copy(
        update={"updated_at": job.updated_at - weeks_ago, "finished_at": job.finished_at - weeks_ago}), None))
    report = prune(service.store, PruneRule(cutoff=utcnow() - timedelta(days=30)), renders=service.renders)
    assert report.jobs == 1 and report.renders == 1 and report.bytes_freed >= size
    assert bucket.objects() == [key_of(recent)]
    with pytest.raises(JobNotFound):
        service.get(old.job_id)


# -- the API: imageUrl redirects to a presigned URL, or streams ---------------------------------
def test_image_url_redirects_to_a_short_lived_presigned_url_that_downloads_the_png(service, bucket, moto_url,
                                                                                   monkeypatch):
    monkeypatch.setenv("JOBS_S3_URL_SECONDS", "120")
    service = JobService(service.store, service.settings)  # the new expiry, as a restarted server reads it
    job = render_one(service)
    with serve_in_thread(create_app(service)) as base:
        answer = httpx.get(base + job.image_url)
        assert answer.status_code == 307 and answer.headers["cache-control"] == "no-store"
        link = answer.headers["location"]
        assert link.startswith(f"{moto_url}/{bucket.name}/{key_of(job)}?")
        query = parse_qs(urlsplit(link).query)
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["120"]
        assert "test-secret" not in link
        fetched = httpx.get(link)
        assert fetched.status_code == 200 and fetched.content == bucket.read(key_of(job))
        assert fetched.headers["content-type"] == "image/png"
        with JobsClient(base) as api:  # the Python client follows the redirect
            assert api.image(api.get(job.job_id)) == fetched.content


def test_proxy_mode_streams_the_render_through_the_api(service, bucket, monkeypatch):
    monkeypatch.setenv("JOBS_S3_PROXY", "1")
    service = JobService(service.store, service.settings)
    job = render_one(service)
    with serve_in_thread(create_app(service)) as base:
        answer = httpx.get(base + job.image_url)
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        assert answer.content == bucket.read(key_of(job))
        bucket.s3.delete_object(Bucket=bucket.name, Key=key_of(job))  # lost from the bucket: a plain 404
        gone = httpx.get(base + job.image_url)
        assert gone.status_code == 404 and gone.json() == {"error": f"No image for job {job.job_id} in project p1."}


def test_a_bucket_out_of_reach_is_a_503_with_a_plain_message(job_store, settings, aws_env, monkeypatch):
    monkeypatch.setenv("JOBS_ARTIFACTS_URL", "s3://renders-away/x")
    monkeypatch.setenv("JOBS_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("JOBS_S3_PROXY", "1")
    service = JobService(job_store, settings)
    job = completed_in_store(job_store, settings)
    with serve_in_thread(create_app(service)) as base:
        answer = httpx.get(base + job.image_url, timeout=60)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert answer.json() == {"error": "The storage that keeps renders is unavailable for the moment; try again in "
                                      "a few seconds."}


def completed_in_store(store: JobStore, settings) -> Job:
    """A job completed with its render kept by the store (as before any bucket was set up)."""
    service = JobService(store, settings, StoreRenders(store))
    service.submit({"projectId": "p1", "conceptInputs": {"title": "Old render"}})
    return service.complete(Lease.of(service.claim_next("w-old")), _tiny_png())


# -- the app ----------------------------------------------------------------------------------
def test_the_app_shows_and_offers_the_render_from_the_bucket(bucket, settings, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_app import APP

    root = tmp_path / "jobs"
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("JOBS_DIR", str(root))
    monkeypatch.delenv("JOBS_STORE_URL", raising=False)
    monkeypatch.setenv("JOBS_APP_WORKERS", "0")
    service = JobService(FileJobStore(root), settings)
    job = render_one(service, project="site-3", title="Brick school")
    assert not (root / "renders").exists() or not any((root / "renders").rglob("*.png"))
    app = AppTest.from_file(APP, default_timeout=60)
    app.query_params["project"], app.query_params["job"] = "site-3", job.job_id
    app.run()
    try:
        assert not app.exception
        assert len(app.get("image")) >= 1 and not app.error
        assert "Download PNG" in [button.label for button in app.get("download_button")]
        assert f"Renders: in bucket {bucket.name}/{PREFIX}" in " ".join(c.value for c in app.sidebar.caption)
        monitor = app.switch_page("pages/monitor.py").run()
        assert not monitor.exception
        table = next(frame for frame in monitor.dataframe if frame.key and frame.key.startswith("monitor_jobs_"))
        assert table.value.iloc[0]["thumbnail"].startswith("data:image/png;base64,")  # read from the bucket
    finally:
        import streamlit as st

        st.cache_resource.clear()


# -- a bucket that refuses writes for a moment ----------------------------------------------------
def test_a_bucket_that_refuses_writes_for_a_moment_retries_the_job_which_then_completes(service, bucket):
    worker = Worker(service, render_size=128)  # run here, one attempt at a time: no race with the bucket
    job = service.submit({"projectId": "p1", "conceptInputs": {"title": "Library"}})
    bucket.refuse_writes()
    first = worker.run(service.claim_next(worker.worker_id))
    assert first.status is JobStatus.PENDING and first.attempts == 1  # retried, not failed
    assert first.error == f"Could not save the render: the bucket {bucket.name} refused it (access denied)."
    assert bucket.objects() == []
    bucket.take_writes()
    done = worker.run(service.claim_next(worker.worker_id))
    assert done.job_id == job.job_id and done.status is JobStatus.COMPLETED and done.attempts == 2
    assert bucket.objects() == [key_of(done)] and key_of(done).split("/")[-1].startswith("2-")
    kinds = [(event.type, event.message) for event in service.events(job.job_id)]
    assert ("requeued", first.error) in kinds and kinds[-1][0] == "completed"


def test_a_bucket_refusing_writes_longer_than_the_attempts_fails_the_job_with_its_reason(service, bucket):
    worker = Worker(service, render_size=128)
    service.submit({"projectId": "p1", "conceptInputs": {}})
    bucket.refuse_writes()
    for _ in range(service.settings.max_attempts):
        last = worker.run(service.claim_next(worker.worker_id))
    assert last.status is JobStatus.FAILED and "refused it (access denied)" in last.error
    assert service.claim_next(worker.worker_id) is None


def test_a_bucket_out_of_reach_is_a_retryable_failure_too(job_store, settings, aws_env, monkeypatch):
    monkeypatch.setenv("JOBS_ARTIFACTS_URL", "s3://renders-away")
    monkeypatch.setenv("JOBS_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    service = JobService(job_store, settings)
    service.submit({"projectId": "p1", "conceptInputs": {}})
    worker = Worker(service, render_size=128)
    job = worker.run(service.claim_next(worker.worker_id))
    assert job.status is JobStatus.PENDING and job.attempts == 1, job.error
    assert job.error == (f"Could not save the render: the bucket renders-away at http://127.0.0.1:"
                         f"{urlsplit(service.renders.settings.endpoint_url).port} cannot be reached.")


# -- crash safety: the object first, then the job --------------------------------------------------
def test_a_completion_refused_because_the_job_moved_on_leaves_no_object(service, bucket):
    service.submit({"projectId": "p1", "conceptInputs": {}})
    lease = Lease.of(service.claim_next("w1"))
    stale = Lease(lease.job_id, lease.project_id, "w-gone", lease.attempt, lease.started_at)
    with pytest.raises(LeaseLost):
        service.complete(stale, _tiny_png())
    assert bucket.objects() == []
    assert service.complete(lease, _tiny_png()).status is JobStatus.COMPLETED
    assert len(bucket.objects()) == 1


def test_a_store_failing_after_the_upload_keeps_the_object_and_never_completes_the_job_without_it(service, bucket):
    service.submit({"projectId": "p1", "conceptInputs": {}})
    lease = Lease.of(service.claim_next("w1"))

    def store_fails(job: Job):
        raise StoreUnavailable("PostgreSQL went away")  # as the store would, between upload and record
    with pytest.raises(StoreUnavailable):
        service.renders.complete(service.store, lease, _tiny_png(), store_fails)
    assert service.get(lease.job_id).status is JobStatus.PROCESSING  # not completed: it will be reclaimed
    orphan = bucket.objects()
    assert len(orphan) == 1  # kept: whether the store recorded the completion was not known
    service.release(lease)
    done = service.complete(Lease.of(service.claim_next("w2")), _tiny_png())
    assert key_of(done) in bucket.objects() and len(bucket.objects()) == 2  # another attempt, another key
    service.delete(done.job_id)
    assert bucket.objects() == []  # the orphan goes with its job


def test_repair_requeues_a_completed_job_whose_object_is_gone(service, bucket):
    job = render_one(service)
    bucket.s3.delete_object(Bucket=bucket.name, Key=key_of(job))
    report = service.repair()
    assert report.images_requeued == [job.job_id]
    assert service.get(job.job_id).status is JobStatus.PENDING


# -- migrate: renders into and out of a bucket --------------------------------------------------------
@pytest.fixture
def migrate(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """`python -m jobs_core migrate ...` on a store (in this process: the moto server is here)."""
    def run(store: JobStore, *args: str) -> str:
        if isinstance(store, FileJobStore):
            monkeypatch.delenv("JOBS_STORE_URL", raising=False)
            args = ("--jobs-dir", str(store.root), *args)
        else:
            monkeypatch.setenv("JOBS_STORE_URL", store.url)
        code = cli_main(["migrate", *args])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        return captured.out
    return run


def test_migrate_copies_renders_into_a_bucket_and_out_again(job_store, settings, bucket, tmp_path, monkeypatch,
                                                            migrate):
    url = f"s3://{bucket.name}/{PREFIX}"
    monkeypatch.delenv("JOBS_ARTIFACTS_URL")  # renders in the store, as before
    old = [completed_in_store(job_store, settings) for _ in range(3)]
    pngs = {job.job_id: job_store.load_image(job.project_id, job.job_id) for job in old}

    out = migrate(job_store, "--renders-to", url)
    assert "images: 3 copied" in out
    assert bucket.objects() == sorted(key_of(job) for job in old)
    assert all(bucket.read(key_of(job)) == pngs[job.job_id] for job in old)
    assert "nothing to change" in migrate(job_store, "--renders-to", url)  # idempotent
    bucket.s3.delete_object(Bucket=bucket.name, Key=key_of(old[1]))  # as if interrupted before this one
    assert "images: 1 copied" in migrate(job_store, "--renders-to", url)  # resumed

    monkeypatch.setenv("JOBS_ARTIFACTS_URL", url)  # from now on the bucket keeps them
    in_bucket = JobService(job_store, settings)
    assert all(in_bucket.image(job) == pngs[job.job_id] for job in old)
    new = render_one(in_bucket)

    back = tmp_path / "back"  # out of the bucket: into another store's own images ...
    out = migrate(job_store, "--to", str(back), "--renders-to", "store")
    assert "jobs: 4 copied" in out and "images: 4 copied" in out
    copy = FileJobStore(back)
    assert copy.load_image("p1", new.job_id) == in_bucket.image(new)
    assert all(copy.load_image("p1", job.job_id) == pngs[job.job_id] for job in old)
    # ... or into this store itself
    out = migrate(job_store, "--renders-to", "store")
    assert "images: 1 copied" in out  # the three old ones were still in the store
    assert job_store.load_image("p1", new.job_id) == in_bucket.image(new)


def test_migrate_between_stores_sharing_a_bucket_copies_no_render(bucket, settings, tmp_path, migrate):
    source = FileJobStore(tmp_path / "source")
    job = render_one(JobService(source, settings))
    out = migrate(source, "--to", str(tmp_path / "target"))
    assert "jobs: 1 copied" in out and "images: 0 copied" in out
    target = JobService(FileJobStore(tmp_path / "target"), settings)
    assert target.image(target.get(job.job_id)) == bucket.read(key_of(job))  # found by the job alone


def test_migrate_without_a_target_says_what_to_give(tmp_path, capsys, aws_env, monkeypatch):
    monkeypatch.delenv("JOBS_ARTIFACTS_URL", raising=False)
    assert cli_main(["migrate", "--jobs-dir", str(tmp_path / "s")]) == 2
    assert "--renders-to" in capsys.readouterr().err
    assert cli_main(["migrate", "--jobs-dir", str(tmp_path / "s"), "--renders-to", "store"]) == 2
    assert "nothing to copy" in capsys.readouterr().err


# -- settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "words"), [
    ("ftp://bucket/x", "is not an s3://bucket/prefix URL"),
    ("s3://ab", "is not a bucket name"),
    ("s3://my bucket/x", "is not a bucket name"),
    ("s3://renders/../etc", "may only hold letters"),
    ("s3://renders/a b", "may only hold letters"),
])
def test_a_bad_artifacts_url_is_refused_with_a_sentence(url, words, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOBS_ARTIFACTS_URL", url)
    assert cli_main(["list", "--jobs-dir", str(tmp_path / "s")]) == 2
    assert words in capsys.readouterr().err


def test_bucket_urls_settings_and_keys():
    assert parse_bucket_url("s3://renders") == ("renders", "")
    assert parse_bucket_url("s3://renders//team/a/") == ("renders", "team/a/")
    settings = replace(load_artifact_settings(), proxy=False)
    assert "renders/team" in BucketRenders("renders", "team/", settings).describe()


@pytest.mark.parametrize(("name", "value", "words"), [
    ("JOBS_S3_PROXY", "maybe", "must be 1 or 0"),
    ("JOBS_S3_URL_SECONDS", "0", "must be at least 1"),
    ("JOBS_S3_URL_SECONDS", "9999999", "at most 604800 seconds"),
])
def test_bad_s3_settings_are_refused_with_a_sentence(name, value, words, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(InvalidInput, match=words):
        load_artifact_settings()


def test_without_credentials_the_save_fails_with_what_to_set(job_store, settings, aws_env, moto_url, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("JOBS_ARTIFACTS_URL", "s3://renders-nocreds")
    monkeypatch.setenv("JOBS_S3_ENDPOINT_URL", moto_url)
    service = JobService(job_store, settings)
    service.submit({"projectId": "p1", "conceptInputs": {}})
    lease = Lease.of(service.claim_next("w1"))
    with pytest.raises(RendersUnavailable, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        service.complete(lease, _tiny_png())
