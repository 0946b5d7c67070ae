"""Renders in an S3-compatible bucket, with boto3 (the contract and the key scheme: artifacts.py).

Credentials and region come the usual AWS ways (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION / AWS_DEFAULT_REGION, instance roles), read by boto3
itself and never written anywhere by us. JOBS_S3_ENDPOINT_URL points at another service than AWS.

Every failure of the bucket becomes RendersUnavailable with one plain sentence; a missing object
is JobNotFound, as a missing image is in every store.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from .artifacts import Renders, job_folder, render_key
from .config import ArtifactSettings
from .errors import JobNotFound, LeaseLost, RendersUnavailable, TransitionConflict, UnreadableJob
from .lifecycle import Lease
from .models import Job, JobStatus
from .store.base import Change, JobStore

log = logging.getLogger("jobs_core.artifacts")
MAX_RENDER_BYTES = 64 * 1024 * 1024  # as the stores' own limit: a render is read whole into memory
STREAM_CHUNK_BYTES = 256 * 1024
_MISSING = {"NoSuchKey", "404", "NotFound"}
_REASONS = {
    "AccessDenied": "refused it (access denied)", "403": "refused it (access denied)",
    "Forbidden": "refused it (access denied)", "AllAccessDisabled": "refused it (access denied)",
    "NoSuchBucket": "does not exist", "InvalidAccessKeyId": "did not accept the access key",
    "SignatureDoesNotMatch": "did not accept the secret key", "ExpiredToken": "said the credentials expired",
    "SlowDown": "is too busy for the moment", "ServiceUnavailable": "is unavailable for the moment",
    "503": "is unavailable for the moment", "InternalError": "failed on its side", "500": "failed on its side",
}


def _client(settings: ArtifactSettings) -> Any:
    session = boto3.session.Session()  # a session of its own: boto3's default one is not thread-safe
    other_service = settings.endpoint_url is not None
    config = Config(
        signature_version="s3v4",
        # boto3 retries what may pass (throttling, 5xx, dropped connections) itself, briefly;
        # what is left is the job's retryable failure (lifecycle.fail), with its backoff
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=5, read_timeout=30, max_pool_connections=32,
        # MinIO, Supabase and R2 are reached by path (no bucket.host names to resolve), and are
        # sent only the checksums S3 requires (several reject the ones boto3 adds since 1.36)
        s3={"addressing_style": "path"} if other_service else None,
        request_checksum_calculation="when_required" if other_service else "when_supported",
        response_checksum_validation="when_required" if other_service else "when_supported",
    )
    return session.client("s3", endpoint_url=settings.endpoint_url, config=config,
                          region_name=session.region_name or "us-east-1")


class BucketRenders(Renders):
    """Renders as objects `{prefix}{projectId}/{jobId}/{attempt}-{claimed at}.png` in one bucket."""

    def __init__(self, bucket: str, prefix: str, settings: ArtifactSettings) -> None:
        self.bucket, self.prefix, self.settings = bucket, prefix, settings
        self._made: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        """The boto3 client, made on first use (thread-safe, shared by every thread)."""
        with self._lock:
            if self._made is None:
                self._made = _client(self.settings)
            return self._made

    def describe(self) -> str:
        where = self.settings.endpoint_url or "AWS S3"
        return f"in bucket {self.bucket}{'/' + self.prefix.rstrip('/') if self.prefix else ''} at {where}"

    # -- a completion: the object first, then the job ---------------------------------------------
    def complete(self, store: JobStore, lease: Lease, png: bytes, change: Change) -> Job:
        started = lease.started_at or store.get(lease.job_id, lease.project_id).started_at
        key = render_key(self.prefix, lease.project_id, lease.job_id, lease.attempt, started)
        self._put(key, png)
        try:
            return store.modify(lease.job_id, lease.project_id, change)
        except (LeaseLost, TransitionConflict, JobNotFound):
            # Refused (the attempt lost its job): nothing was recorded, so its render goes too. A
            # fault of the store is not a refusal: the job may be completed, and keeps its render.
            self._remove_quietly(key)
            raise

    def put(self, job: Job, png: bytes) -> None:
        self._put(self._key_of(job), png)

    def _put(self, key: str, png: bytes) -> None:
        digest = base64.b64encode(hashlib.md5(png).digest()).decode()  # the bucket checks what arrived
        with self._speaking("save the render"):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=png, ContentType="image/png",
                                   ContentMD5=digest)

    # -- reading ------------------------------------------------------------------------------------
    def load(self, job: Job) -> bytes:
        body = self._open(job)
        try:
            with self._speaking("read the render"):
                return body.read()
        finally:
            body.close()

    def stream(self, job: Job) -> Iterator[bytes]:
        body = self._open(job)  # before the answer starts: a missing render is still a 404
        return self._pieces(job, body)

    def _pieces(self, job: Job, body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(STREAM_CHUNK_BYTES)
        except (BotoCoreError, OSError) as error:  # cut short: the client sees the answer end early
            log.warning("streaming the render of job %s stopped: %s", job.job_id, error)
        finally:
            body.close()

    def _open(self, job: Job) -> Any:
        key = self._key_of(job)
        with self._speaking("read the render"):
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as error:
                if _code(error) in _MISSING:
                    raise JobNotFound(f"No image for job {job.job_id} in project {job.project_id}.") from None
                raise
        if answer.get("ContentLength", 0) > MAX_RENDER_BYTES:  # the bucket is outside: bounded like a file
            answer["Body"].close()
            raise UnreadableJob(f"The render of job {job.job_id} in the bucket is larger than "
                                f"{MAX_RENDER_BYTES // 2**20} MiB; it is not read.")
        return answer["Body"]

    def link(self, job: Job) -> str | None:
        if self.settings.proxy:
            return None
        key = self._key_of(job)
        with self._speaking("make a link to the render"):  # signed here: no call to the bucket
            return self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key, "ResponseContentType": "image/png"},
                ExpiresIn=int(self.settings.link_seconds))

    def holds(self, job: Job, png: bytes) -> bool:
        with self._speaking("look for the render"):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self._key_of(job))
            except ClientError as error:
                if _code(error) in _MISSING:
                    return False
                raise
        # A single PUT's ETag is the MD5 of its bytes (a service that says otherwise is copied again).
        return head.get("ContentLength") == len(png) and head.get("ETag", "").strip('"') == hashlib.md5(png).hexdigest()

    # -- removing -----------------------------------------------------------------------------------
    def forget(self, project_id: str, job_id: str) -> int:
        folder = job_folder(self.prefix, project_id, job_id)
        with self._speaking("remove the renders of a deleted job"):
            listed = self.client.list_objects_v2(Bucket=self.bucket, Prefix=folder)
            objects = listed.get("Contents", [])
            if objects:  # a job has one render and at most a few orphans: one page, one call
                self.client.delete_objects(Bucket=self.bucket, Delete={
                    "Objects": [{"Key": item["Key"]} for item in objects], "Quiet": True})
            return sum(int(item.get("Size", 0)) for item in objects)

    def _remove_quietly(self, key: str) -> None:
        try:
            with self._speaking("remove a render no job kept"):
                self.client.delete_object(Bucket=self.bucket, Key=key)
        except RendersUnavailable as error:  # an orphan: removed with its job later
            log.warning("%s", error)

    # -- helpers ------------------------------------------------------------------------------------
    def _key_of(self, job: Job) -> str:
        if job.status is not JobStatus.COMPLETED:
            raise JobNotFound(f"Job {job.job_id} has no image: it is {job.status.value}.")
        return render_key(self.prefix, job.project_id, job.job_id, job.attempts, job.started_at)

    @contextmanager
    def _speaking(self, doing: str) -> Iterator[None]:
        """Turn boto3's errors into one sentence a person can act on (the details go to the log)."""
        try:
            yield
        except NoCredentialsError:
            raise RendersUnavailable(f"Could not {doing}: there are no credentials for the bucket {self.bucket} "
                                     "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE).") from None
        except ClientError as error:
            log.warning("bucket %s: %s", self.bucket, error)
            code = _code(error)
            reason = _REASONS.get(code, f"refused it ({code or 'no reason given'})")
            raise RendersUnavailable(f"Could not {doing}: the bucket {self.bucket} {reason}.") from None
        except BotoCoreError as error:  # connection refused, timed out, DNS ...
            log.warning("bucket %s: %s", self.bucket, error)
            where = self.settings.endpoint_url or "AWS S3"
            raise RendersUnavailable(f"Could not {doing}: the bucket {self.bucket} at {where} cannot be "
                                     "reached.") from None


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code") or error.response.get("ResponseMetadata", {})
               .get("HTTPStatusCode", ""))
