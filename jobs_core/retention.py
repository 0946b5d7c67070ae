"""Retention: remove finished jobs older than a cutoff, whole, with what only they used.

`python -m jobs_core prune --older-than 30d` (see `cmd_prune`) and, with JOBS_RETENTION_DAYS, the
workers once an hour (`RetentionLoop`: one worker at a time across hosts, by the store's record of
the last prune). Which job may go is `lifecycle.prunable`; the store removes each one whole
(`JobStore.remove_jobs`), batch by batch, so an interrupted prune leaves every job whole or gone
and the next run finishes what it left.

A concept goes with its last job: when every job that uses it is removed. A job created meanwhile
from a removed job's concept (a resubmit) keeps working: every job carries its own conceptInputs.
"""
from __future__ import annotations

import argparse
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import lifecycle
from .artifacts import Renders
from .errors import InvalidInput, JobsError, RendersUnavailable
from .ids import validate_id
from .models import Job, JobStatus, utcnow
from .store.base import JobStore, RemovableJob, Removal, StoreSize

log = logging.getLogger("jobs_core.retention")
PRUNE_EVERY = timedelta(hours=1)  # workers prune at most this often, per store
BATCH_SIZE = 200  # jobs per store call: one PostgreSQL transaction, one intent file
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([dhw])")
_UNITS = {"d": "days", "h": "hours", "w": "weeks"}


def parse_age(text: str) -> timedelta:
    """'30d', '12h' or '2w' as a timedelta; InvalidInput with a sentence otherwise."""
    match = _AGE.fullmatch(text.strip().lower())
    if match is None or float(match[1]) <= 0:
        raise InvalidInput(f"--older-than {text!r} is not an age: write a number of days, hours or weeks, "
                           "such as 30d, 12h or 2w.")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def parse_statuses(text: str | None) -> tuple[JobStatus, ...]:
    """'completed,failed' as statuses; only finished ones may be named."""
    if text is None or not text.strip():
        return lifecycle.FINISHED
    allowed = ", ".join(status.value for status in lifecycle.FINISHED)
    statuses = []
    for name in (part.strip().lower() for part in text.split(",") if part.strip()):
        status = next((s for s in lifecycle.FINISHED if s.value == name), None)
        if status is None:
            raise InvalidInput(f"--status {name!r} is not a finished status: prune removes only {allowed} jobs "
                               "(a pending or running job is never removed).")
        statuses.append(status)
    return tuple(dict.fromkeys(statuses))


def retention_days() -> float | None:
    """JOBS_RETENTION_DAYS: workers prune jobs finished longer ago than this; None when unset."""
    raw = os.environ.get("JOBS_RETENTION_DAYS", "").strip()
    if not raw:
        return None
    try:
        days = float(raw)
    except ValueError:
        days = 0.0
    if not days > 0:
        raise InvalidInput(f"JOBS_RETENTION_DAYS={raw!r} must be a number of days above 0, such as 30.")
    return days


@dataclass(frozen=True)
class PruneRule:
    """Which jobs a prune removes: finished (of `statuses`) before `cutoff`, optionally of one project."""

    cutoff: datetime
    statuses: tuple[JobStatus, ...] = lifecycle.FINISHED
    project_id: str | None = None

    def check(self, job: Job) -> None:
        lifecycle.prunable(job, self.cutoff, self.statuses)

    def matches(self, job: Job) -> bool:
        try:
            self.check(job)
        except JobsError:
            return False
        return self.project_id is None or job.project_id == self.project_id


@dataclass
class PruneReport:
    dry_run: bool = False
    by_status: Counter = field(default_factory=Counter)
    renders: int = 0
    concepts: int = 0
    bytes_freed: int = 0

    @property
    def jobs(self) -> int:
        return sum(self.by_status.values())

    def add(self, removal: Removal) -> None:
        for removed in removal.jobs:
            self.by_status[removed.status.value] += 1
            self.renders += removed.had_render
            self.bytes_freed += removed.bytes_freed
        self.concepts += removal.concepts
        self.bytes_freed += removal.other_bytes

    def summary(self) -> str:
        if not self.jobs and not self.concepts:
            return "nothing to prune: no finished job is older than the cutoff"
        statuses = ", ".join(f"{count} {name}" for name, count in sorted(self.by_status.items()))
        verb, freed = ("would remove", "would free") if self.dry_run else ("removed", "freed")
        return (f"{verb} {self.jobs} job(s) ({statuses or 'none'}), {self.renders} render(s), "
                f"{self.concepts} concept(s); {freed} {human_bytes(self.bytes_freed)}")


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} bytes"


def prune(store: JobStore, rule: PruneRule, *, dry_run: bool = False, batch_size: int = BATCH_SIZE,
          renders: Renders | None = None) -> PruneReport:
    """Remove every job `rule` matches, whole, batch by batch (see the module's docstring).
    `renders`: where renders are kept when not in the store (a bucket): a removed job's objects go
    too, after the job (a crash between leaves bytes no job names, never a job without its render)."""
    report = PruneReport(dry_run=dry_run)
    targets, users = _targets_and_concept_users(store, rule)
    kept: set[tuple[str, str]] = set()  # concepts a kept job still uses
    for start in range(0, len(targets), batch_size):
        batch = targets[start:start + batch_size]
        for target in batch:
            users[(target.project_id, target.concept_id)] -= 1
        concepts = {(t.project_id, t.concept_id) for t in batch
                    if users[(t.project_id, t.concept_id)] == 0} - kept
        removal = store.remove_jobs(batch, rule.check, concepts, dry_run=dry_run)
        gone = {removed.job_id for removed in removal.jobs}
        kept |= {(t.project_id, t.concept_id) for t in batch if t.job_id not in gone}
        report.add(removal)
        if renders is not None and not dry_run:
            _forget_renders(renders, removal, report)
    if not targets:  # finish what an interrupted prune left, even with nothing new to remove
        report.add(store.remove_jobs([], rule.check, dry_run=dry_run))
    return report


def _forget_renders(renders: Renders, removal: Removal, report: PruneReport) -> None:
    for removed in removal.jobs:
        try:
            freed = renders.forget(removed.project_id, removed.job_id)
        except RendersUnavailable as error:  # the job is gone; what is left in the bucket is only bytes
            log.warning("retention: job %s removed, its renders left in the bucket: %s", removed.job_id, error)
            continue
        if freed and not removed.had_render:
            report.renders += 1
        report.bytes_freed += freed


def _targets_and_concept_users(store: JobStore, rule: PruneRule) -> tuple[list[RemovableJob], Counter]:
    """The jobs to remove, and how many jobs (kept or not) use each concept of the projects read."""
    targets: list[RemovableJob] = []
    users: Counter = Counter()
    for job in _jobs(store, rule.project_id):
        users[(job.project_id, job.concept_id)] += 1
        if rule.matches(job):
            targets.append(RemovableJob.of(job))
    targets.sort(key=lambda target: (target.project_id, target.job_id))  # a batch touches few folders
    return targets, users


def _jobs(store: JobStore, project_id: str | None) -> Iterator[Job]:
    cursor = None
    while True:
        page = store.list_jobs(project_id, limit=1000, cursor=cursor)
        yield from page.jobs
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def rule_from_days(days: float, now: datetime | None = None) -> PruneRule:
    return PruneRule(cutoff=(now or utcnow()) - timedelta(days=days))


# -- workers: once an hour per store ---------------------------------------------------------------
class RetentionLoop:
    """A worker's retention thread: every few minutes it asks the store for the turn to prune,
    which one caller per hour gets (across processes and hosts), and then prunes."""

    def __init__(self, store: JobStore, days: float, worker_id: str, check_seconds: float = 60.0,
                 renders: Renders | None = None) -> None:
        self.store, self.days, self.worker_id, self.check_seconds = store, days, worker_id, check_seconds
        self.renders = renders
        self._stop = threading.Event()
        self._told_waiting = False
        self._thread = threading.Thread(target=self._run, name="jobs-retention", daemon=True)

    def start(self) -> RetentionLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.check_seconds)

    def run_once(self, now: datetime | None = None) -> PruneReport | None:
        """Prune if it is this worker's turn; the report, or None when another worker has it."""
        now = now or utcnow()
        try:
            if not self.store.claim_prune_turn(now, PRUNE_EVERY):
                if not self._told_waiting:  # once: then every hour would say it again
                    self._told_waiting = True
                    log.info("retention: another worker pruned within the hour (at %s); this one waits its turn",
                             self.store.last_pruned_at())
                return None
            report = prune(self.store, rule_from_days(self.days, now), renders=self.renders)
        except JobsError as error:
            log.warning("retention: could not prune: %s", error)
            return None
        log.info("retention (jobs finished over %g days ago) by worker %s: %s", self.days, self.worker_id,
                 report.summary())
        return report

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


# -- the monitor: the store's size, at most once a minute --------------------------------------------
class StoreSizeGauge:
    """The store's size and its last prune, for the monitor, measured in a background thread at
    most every `every_seconds` (a file store stats every file): reading them is instant."""

    def __init__(self, store: JobStore, every_seconds: float = 60.0) -> None:
        self.store, self.every_seconds = store, every_seconds
        self.size: StoreSize | None = None
        self.last_pruned_at: datetime | None = None
        self.measured_at: datetime | None = None
        self.problem: str | None = None
        self._measuring = threading.Lock()

    def latest(self, now: datetime | None = None) -> StoreSize | None:
        """The last measure (None until the first is done); starts a new one when it is stale."""
        now = now or utcnow()
        stale = self.measured_at is None or (now - self.measured_at).total_seconds() >= self.every_seconds
        if stale and self._measuring.acquire(blocking=False):
            threading.Thread(target=self._measure, name="jobs-store-size", daemon=True).start()
        return self.size

    def _measure(self) -> None:
        try:
            self.size, self.last_pruned_at, self.problem = self.store.store_size(), self.store.last_pruned_at(), None
        except (JobsError, OSError) as error:
            self.problem = str(error) or type(error).__name__
            log.warning("could not measure the store: %s", self.problem)
        finally:
            self.measured_at = utcnow()
            self._measuring.release()

    def describe(self) -> str:
        """The size and the retention in force, in words, for the monitor."""
        if self.size is None:
            size = "Store size: not known (it could not be measured)." if self.problem else "Store size: measuring…"
        else:
            size = (f"Store size: {self.size.jobs:,} jobs, {self.size.renders:,} renders, "
                    f"{human_bytes(self.size.bytes)}.")
        return f"{size} {describe_retention(self.last_pruned_at)}"


def describe_retention(last_pruned_at: datetime | None) -> str:
    """The retention in force, in words."""
    try:
        days = retention_days()
    except InvalidInput as error:
        return str(error)
    if days is None:
        return "Retention: off (jobs are kept until pruned with `python -m jobs_core prune`)."
    when = "not yet" if last_pruned_at is None else f"last at {last_pruned_at:%Y-%m-%d %H:%M} UTC"
    return f"Retention: workers remove jobs finished over {days:g} days ago, once an hour ({when})."


# -- the command line --------------------------------------------------------------------------------
def add_prune_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    prune_parser = commands.add_parser("prune", parents=[common],
                                       help="remove finished jobs older than an age, with their renders and events")
    prune_parser.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h or 2w")
    prune_parser.add_argument("--status", help="finished statuses to remove, comma-separated "
                                               "(default: completed,failed,canceled)")
    prune_parser.add_argument("--project-id", help="only this project's jobs")
    prune_parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    prune_parser.set_defaults(handler=cmd_prune)


def cmd_prune(args: argparse.Namespace, service) -> int:
    age = parse_age(args.older_than)
    statuses = parse_statuses(args.status)
    if args.project_id is not None:
        validate_id(args.project_id, "projectId")
    rule = PruneRule(cutoff=utcnow() - age, statuses=statuses, project_id=args.project_id)
    print(prune(service.store, rule, dry_run=args.dry_run, renders=service.renders).summary())
    return 0
