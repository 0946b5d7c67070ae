"""Copy one store into another (files -> PostgreSQL and back), losing nothing, changing nothing twice.

`python -m jobs_core migrate --to URL|DIRECTORY` copies the command's store (--jobs-dir, else
JOBS_STORE_URL, else JOBS_DIR) into the target: every job as it is (status, attempts, timestamps),
its event log, its image, and every saved concept. What the target already holds identically is
left alone, so a second run writes nothing; a job that changed in the source since is brought up
to date and only its missing events are appended.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from .errors import InvalidInput, JobNotFound, UnreadableJob
from .models import Job
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


def migrate(source: JobStore, target: JobStore) -> MigrationReport:
    """Make `target` hold everything `source` holds. Idempotent."""
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
            _copy_job(source, target, job, report)
        if page.next_cursor is None:
            return report
        cursor = page.next_cursor


def _copy_job(source: JobStore, target: JobStore, job: Job, report: MigrationReport) -> None:
    # The image first: a completed job in the target always has its image.
    _copy_image(source, target, job, report)
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


def _copy_image(source: JobStore, target: JobStore, job: Job, report: MigrationReport) -> None:
    try:
        png = source.load_image(job.project_id, job.job_id)
    except JobNotFound:
        return
    except UnreadableJob as error:  # what the store itself would not read is not copied either
        report.unreadable.append(f"the image of job {job.job_id} ({error})")
        return
    try:
        same = target.load_image(job.project_id, job.job_id) == png
    except JobNotFound:
        same = False
    if not same:
        target.save_image(job.project_id, job.job_id, png)
        report.images_copied += 1


def cmd_migrate(args: argparse.Namespace, service: JobService) -> int:
    """`python -m jobs_core migrate --to URL|DIRECTORY`: copy the current store into another."""
    source = service.store
    if not args.to.strip():
        raise InvalidInput("--to needs a postgresql:// URL or a directory.")
    target = open_store(args.to)
    try:
        if target.describe() == source.describe():
            raise InvalidInput(f"--to names the store being copied ({source.describe()}); give another one.")
        print(f"copying {source.describe()} -> {target.describe()}")
        report = migrate(source, target)
    finally:
        target.close()
    for line in report.unreadable:
        print(f"unreadable, not copied: {line}")
    print(report.summary())
    print("nothing to change: the target already held everything" if not report.changed else "done")
    return 0
