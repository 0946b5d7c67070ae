"""Where renders are kept: in the job store (the default), or in an S3-compatible bucket.

`JOBS_ARTIFACTS_URL=s3://bucket/prefix` keeps every render in a bucket (AWS S3, MinIO, Supabase
Storage, Cloudflare R2 ...), whichever store keeps the jobs, which then keeps only their state.
A job's `imageUrl` stays the API's own URL; the API answers it with a short-lived presigned URL of
the object, or streams the object itself (JOBS_S3_PROXY=1). See `artifacts_s3.py`.

A completion writes the render first and records the job as completed after: a crash between the
two leaves an object no completed job names (removed with its job), never a completed job without
its render. In a bucket, a render's key names its job, its attempt and when that attempt was
claimed (`render_key`), so the key is found from the job document alone, and a late upload by an
attempt that lost its job can never overwrite the render of the attempt that completed it.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime

from .config import ArtifactSettings, load_artifact_settings
from .errors import InvalidInput, JobNotFound
from .ids import validate_id
from .lifecycle import Lease
from .models import Job
from .store.base import Change, JobStore

S3_SCHEME = "s3://"
#: what the target of `migrate --renders-to` is called to mean "inside the job store"
IN_STORE = "store"
# Bucket names as S3 and its look-alikes accept them (Supabase also allows capitals and '_').
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._=-]+")


class Renders(ABC):
    """Where the PNGs of completed jobs are kept."""

    @abstractmethod
    def describe(self) -> str:
        """Where renders are, for people ("in the job store", "in bucket b at ...")."""

    @abstractmethod
    def complete(self, store: JobStore, lease: Lease, png: bytes, change: Change) -> Job:
        """Keep `png` as the render of the attempt `lease` holds, then apply `change` (the
        completion): the job is completed only once its render is kept."""

    @abstractmethod
    def load(self, job: Job) -> bytes:
        """The render of `job`: JobNotFound when there is none."""

    def link(self, job: Job) -> str | None:
        """A short-lived URL where a client can fetch the render itself; None: the API serves it."""
        return None

    def stream(self, job: Job) -> Iterator[bytes] | None:
        """The render in pieces, for the API to pass on as they come; None: load it whole."""
        return None

    @abstractmethod
    def holds(self, job: Job, png: bytes) -> bool:
        """Whether exactly `png` is kept as the render of `job` (so `migrate` copies it once)."""

    @abstractmethod
    def put(self, job: Job, png: bytes) -> None:
        """Keep `png` as the render of a job that is already completed (`migrate`)."""

    def forget(self, project_id: str, job_id: str) -> int:
        """Remove what is kept for a deleted job (the store removes its own copy with the job);
        the bytes removed outside the store."""
        return 0

    def same_place(self, other: Renders) -> bool:
        """Whether `other` keeps renders in the same place (then `migrate` has none to copy)."""
        return self.describe() == other.describe()


class StoreRenders(Renders):
    """Renders kept by the job store itself, as the store's own images (the default)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    def describe(self) -> str:
        return f"in the job store ({self.store.describe()})"

    def complete(self, store: JobStore, lease: Lease, png: bytes, change: Change) -> Job:
        # The store writes both, the image first or in the change's own transaction.
        return store.save_image_and_modify(lease.project_id, lease.job_id, png, change)

    def load(self, job: Job) -> bytes:
        return self.store.load_image(job.project_id, job.job_id)

    def holds(self, job: Job, png: bytes) -> bool:
        try:
            return self.load(job) == png
        except JobNotFound:
            return False

    def put(self, job: Job, png: bytes) -> None:
        self.store.save_image(job.project_id, job.job_id, png)


def parse_bucket_url(url: str) -> tuple[str, str]:
    """(bucket, key prefix ending in '/' or empty) of `s3://bucket/prefix`; InvalidInput otherwise."""
    if not url.startswith(S3_SCHEME):
        raise InvalidInput(f"JOBS_ARTIFACTS_URL={url!r} is not an s3://bucket/prefix URL.")
    bucket, _, prefix = url.removeprefix(S3_SCHEME).partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise InvalidInput(f"{bucket!r} in JOBS_ARTIFACTS_URL is not a bucket name: 3 to 63 letters, digits, "
                           "'.', '-' or '_', starting and ending with a letter or digit.")
    parts = [part for part in prefix.split("/") if part]
    for part in parts:
        if not _PREFIX_PART.fullmatch(part) or part in (".", ".."):
            raise InvalidInput(f"The folder {part!r} in JOBS_ARTIFACTS_URL may only hold letters, digits, "
                               "'.', '_', '=' and '-'.")
    return bucket, "".join(f"{part}/" for part in parts)


def render_key(prefix: str, project_id: str, job_id: str, attempt: int, started_at: datetime | None) -> str:
    """The key of one attempt's render: `{prefix}{projectId}/{jobId}/{attempt}-{claimed at}.png`.

    The claim time tells apart two attempts with one number (a retried job counts from 1 again).
    """
    claimed = started_at.strftime("%Y%m%dT%H%M%S%fZ") if started_at is not None else "unclaimed"
    return f"{job_folder(prefix, project_id, job_id)}{int(attempt)}-{claimed}.png"


def job_folder(prefix: str, project_id: str, job_id: str) -> str:
    """The key prefix under which every render (and any orphan) of one job lies."""
    return f"{prefix}{validate_id(project_id, 'projectId')}/{validate_id(job_id, 'jobId')}/"


def open_renders(store: JobStore, settings: ArtifactSettings | None = None, url: str | None = None) -> Renders:
    """The place renders are kept: `url` (`s3://...` or "store"), else JOBS_ARTIFACTS_URL, else the store."""
    settings = settings or load_artifact_settings()
    where = url if url is not None else settings.url
    if where is None or where == IN_STORE:
        return StoreRenders(store)
    bucket, prefix = parse_bucket_url(where)
    from .artifacts_s3 import BucketRenders  # imported only when asked for: boto3 takes a while to load

    return BucketRenders(bucket, prefix, settings)
