"""Copy one store into another (files -> PostgreSQL and back), losing nothing, changing nothing twice.

`python -m jobs_core migrate --to URL|DIRECTORY` copies the command's store (--jobs-dir, else
JOBS_STORE_URL, else JOBS_DIR) into the target: every job as it is (status, attempts, timestamps),
its event log, its image, and every saved concept. What the target already holds identically is
left alone, so a second run writes nothing; a job that changed in the source since is brought up
to date and only its missing events are appended.

Renders go where the target keeps them: `--renders-to s3://bucket/prefix` into a bucket, or
`--renders-to store` into the target store itself; by default where this store keeps them
(JOBS_ARTIFACTS_URL), so jobs moved between stores that share a bucket copy no render. Without
`--to`, only the renders move, within this store (into a bucket, or out of one). A render is copied
before its job and skipped when the target already holds the same bytes, so a run that was
interrupted is simply started again.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .artifacts import Renders, StoreRenders, open_renders
from .errors import InvalidInput, JobNotFound, UnreadableJob
from .models import Job, JobStatus
from .service import JobService
from .store import CopyableStore, JobStore, open_store


@dataclass
class MigrationReport:
    jobs_copied: int = 0
    jobs_updated: int = 0
    jobs_unchanged: int = 0
    events_copied: int = 0
    images_copied: int = 0
    concepts_copied: int = 0
    unreadable: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.jobs_copied or self.jobs_updated or self.events_copied or self.images_copied
                    or self.concepts_copied)

    def summary(self) -> str:
        return (f"jobs: {self.jobs_copied} copied, {self.jobs_updated} updated, {self.jobs_unchanged} unchanged; "
                f"events: {self.events_copied} copied; images: {self.images_copied} copied; "
                f"concepts: {self.concepts_copied} copied; unreadable (skipped): {len(self.unreadable)}")


def migrate(source: JobStore, target: JobStore, source_renders: Renders | None = None,
            target_renders: Renders | None = None) -> MigrationReport:
    """Make `target` hold everything `source` holds, renders where `target_renders` keeps them
    (default: each store's own images). Idempotent."""
    source_renders = source_renders or StoreRenders(source)
    target_renders = target_renders or StoreRenders(target)
    copy_images = not source_renders.same_place(target_renders)
    for store in (source, target):
        if not isinstance(store, CopyableStore):
            raise InvalidInput(f"{store.describe()} cannot be copied to or from.")
    report = MigrationReport()
    for concept in source.iter_concepts():
        try:
            same = target.load_concept(concept.project_id, concept.concept_id) == concept
        except JobNotFound:
            same = False
        if not same:
            target.save_concept(concept)
            report.concepts_copied += 1
    cursor = None
    while True:
        page = source.list_jobs(limit=500, cursor=cursor)
        report.unreadable += [f"{bad.location} ({bad.reason})" for bad in page.unreadable]
        for job in page.jobs:
            if copy_images:  # the image first: a completed job in the target always has its image
                _copy_image(source_renders, target_renders, job, report)
            _copy_job(source, target, job, report)
        if page.next_cursor is None:
            return report
        cursor = page.next_cursor


def copy_renders(store: JobStore, source: Renders, target: Renders) -> MigrationReport:
    """Copy the render of every completed job of `store` from `source` to `target` (into a bucket,
    or out of one). Idempotent: a render the target holds already is skipped."""
    if source.same_place(target):
        raise InvalidInput(f"Renders are already kept {target.describe()}: nothing to copy.")
    report = MigrationReport()
    cursor = None
    while True:
        page = store.list_jobs(status=JobStatus.COMPLETED, limit=500, cursor=cursor)
        report.unreadable += [f"{bad.location} ({bad.reason})" for bad in page.unreadable]
        for job in page.jobs:
            _copy_image(source, target, job, report)
        if page.next_cursor is None:
            return report
        cursor = page.next_cursor


def _copy_job(source: JobStore, target: JobStore, job: Job, report: MigrationReport) -> None:
    try:
        existing = target.get(job.job_id, job.project_id)
    except JobNotFound:
        existing = None
    if existing is None:
        target.create(job, None)
        report.jobs_copied += 1
    elif existing != job:
        target.modify(job.job_id, job.project_id, lambda _old: (job, None))
        report.jobs_updated += 1
    else:
        report.jobs_unchanged += 1
    have = target.events(job.job_id, job.project_id)
    try:
        events = source.events(job.job_id, job.project_id)
    except UnreadableJob as error:
        report.unreadable.append(f"the event log of job {job.job_id} ({error})")
        return
    missing = [event for event in events if event not in have]
    if missing:
        target.append_events(job.project_id, missing)
        report.events_copied += len(missing)


def _copy_image(source: Renders, target: Renders, job: Job, report: MigrationReport) -> None:
    try:
        png = source.load(job)
    except JobNotFound:
        return
    except UnreadableJob as error:  # what the store itself would not read is not copied either
        report.unreadable.append(f"the image of job {job.job_id} ({error})")
        return
    if not target.holds(job, png):
        target.put(job, png)
        report.images_copied += 1


def cmd_migrate(args: argparse.Namespace, service: JobService) -> int:
    """`python -m jobs_core migrate [--to URL|DIRECTORY] [--renders-to s3://bucket/prefix|store]`:
    copy the current store into another, and/or its renders into or out of a bucket."""
    if args.to is None and args.renders_to is None:
        raise InvalidInput("Say where to copy: --to a postgresql:// URL or a directory, and/or --renders-to "
                           "s3://bucket/prefix (or 'store').")
    if args.to is None:
        report = _move_renders(service, args.renders_to)
    else:
        report = _copy_store(service, args.to, args.renders_to)
    for line in report.unreadable:
        print(f"unreadable, not copied: {line}")
    print(report.summary())
    print("nothing to change: the target already held everything" if not report.changed else "done")
    return 0


def _copy_store(service: JobService, to: str, renders_to: str | None) -> MigrationReport:
    source = service.store
    if not to.strip():
        raise InvalidInput("--to needs a postgresql:// URL or a directory.")
    target = open_store(to)
    try:
        if target.describe() == source.describe():
            raise InvalidInput(f"--to names the store being copied ({source.describe()}); give another one.")
        if renders_to is not None:
            target_renders = open_renders(target, url=renders_to)
        elif isinstance(service.renders, StoreRenders):
            target_renders = StoreRenders(target)  # each store keeps its own, as before
        else:
            target_renders = service.renders  # both stores share the bucket: no render to copy
        print(f"copying {source.describe()} -> {target.describe()}; renders {service.renders.describe()} -> "
              f"{target_renders.describe()}")
        return migrate(source, target, service.renders, target_renders)
    finally:
        target.close()


def _move_renders(service: JobService, renders_to: str) -> MigrationReport:
    target = open_renders(service.store, url=renders_to)
    print(f"copying renders {service.renders.describe()} -> {target.describe()}")
    return copy_renders(service.store, service.renders, target)
