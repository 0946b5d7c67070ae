"""Bulk actions: retry or cancel every job a filter picks, through `JobService`, in batches.

    python -m jobs_core retry --status failed [--project-id P] [--error-contains TEXT] [--dry-run]
    python -m jobs_core cancel --status pending [--project-id P] [--error-contains TEXT] [--dry-run]

Each job is changed by its own compare-and-set (the lifecycle's rule, applied by the store), so
a run that is interrupted (Ctrl-C, a closed browser tab) leaves every job either changed or
untouched, never half-changed. A job that another process changed meanwhile (a failed job that
was already retried) is refused by the rule and left as it is; the report counts it.

The monitor page uses `apply_in_batches` too, on the jobs its filters show.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from .errors import InvalidInput, JobsError
from .ids import validate_id
from .service import JobService

ACTIONS = ("retry", "cancel", "delete")
#: the statuses a bulk action may pick (the lifecycle refuses the others anyway)
BULK_STATUSES = {"retry": ("failed", "canceled"), "cancel": ("pending", "processing")}
BATCH_SIZE = 100
VERBS = {"retry": "Retried", "cancel": "Canceled", "delete": "Deleted"}


@dataclass(frozen=True)
class JobRef:
    project_id: str
    job_id: str


@dataclass
class ActionReport:
    """What an action did: the jobs changed, and those refused with the lifecycle's sentence."""

    action: str
    done: list[JobRef] = field(default_factory=list)
    refused: list[tuple[JobRef, str]] = field(default_factory=list)
    #: jobs not reached because the run was stopped (they are untouched)
    not_reached: int = 0

    def summary(self) -> str:
        text = f"{VERBS[self.action]} {len(self.done):,} job{'s' if len(self.done) != 1 else ''}."
        if self.refused:
            text += f" {len(self.refused):,} could not be changed."
        if self.not_reached:
            text += f" Stopped before {self.not_reached:,} more, which are untouched."
        return text


OnBatch = Callable[[int, int], None]  # (jobs handled so far, total)


def apply_in_batches(service: JobService, action: str, jobs: list[JobRef], *, batch_size: int = BATCH_SIZE,
                     on_batch: OnBatch | None = None,
                     on_job: Callable[[JobRef], None] | None = None) -> ActionReport:
    """Apply `action` to each job through the service, `batch_size` at a time, calling
    `on_batch(handled, total)` after each batch (a progress bar) and `on_job(ref)` after each job
    (the monitor marks it to be re-read).

    A KeyboardInterrupt between two jobs stops the run: the report says how many were not reached.
    """
    if action not in ACTIONS:
        raise InvalidInput(f"action must be one of {', '.join(ACTIONS)}, not {action!r}.")
    if batch_size < 1:
        raise InvalidInput(f"batch size must be at least 1, not {batch_size}.")
    method = getattr(service, action)
    report = ActionReport(action)
    handled = 0
    try:
        for start in range(0, len(jobs), batch_size):
            for job in jobs[start:start + batch_size]:
                try:
                    method(job.job_id, job.project_id)
                except JobsError as error:  # not in a state the rule allows (any more): left as it is
                    report.refused.append((job, str(error)))
                else:
                    report.done.append(job)
                handled += 1
                if on_job is not None:
                    on_job(job)
            if on_batch is not None:
                on_batch(handled, len(jobs))
    except KeyboardInterrupt:
        report.not_reached = len(jobs) - handled
        raise BulkInterrupted(report) from None
    return report


class BulkInterrupted(Exception):
    """A bulk run stopped by Ctrl-C; `report` says what was done (the rest is untouched)."""

    def __init__(self, report: ActionReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclass(frozen=True)
class BulkFilter:
    """Which jobs a bulk command picks: one status, optionally one project and an error text."""

    status: str
    project_id: str | None = None
    error_contains: str = ""

    def matches(self, doc: dict) -> bool:
        if doc.get("status") != self.status:
            return False
        if self.project_id is not None and doc.get("projectId") != self.project_id:
            return False
        text = self.error_contains.strip().lower()
        if text:
            error = doc.get("error")
            return isinstance(error, str) and text in error.lower()
        return True

    def describe(self) -> str:
        words = f"{self.status} jobs"
        if self.project_id:
            words += f" of project {self.project_id}"
        if self.error_contains.strip():
            words += f" whose error contains {self.error_contains.strip()!r}"
        return words


def select_jobs(service: JobService, chosen: BulkFilter) -> list[JobRef]:
    """The jobs `chosen` picks, oldest first, read with the store's fast view over every job."""
    return sorted(_matching(service, chosen), key=lambda ref: ref.job_id)


def _matching(service: JobService, chosen: BulkFilter) -> Iterator[JobRef]:
    for record in service.store.scan_jobs():
        if record.doc is not None and chosen.matches(record.doc):
            yield JobRef(record.doc["projectId"], record.doc["jobId"])


# -- the command line ----------------------------------------------------------------------------
def add_bulk_commands(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`retry` and `cancel` over a filter (the lead adds this to jobs_core/cli.py's parser)."""
    for action, help_text in (("retry", "retry every failed (or canceled) job a filter picks"),
                              ("cancel", "cancel every pending (or processing) job a filter picks")):
        command = commands.add_parser(action, parents=[common], help=help_text)
        command.add_argument("--status", required=True, help=f"one of: {', '.join(BULK_STATUSES[action])}")
        command.add_argument("--project-id", help="only this project's jobs")
        command.add_argument("--error-contains", default="", help="only jobs whose error contains this text "
                                                                  "(any case)")
        command.add_argument("--dry-run", action="store_true", help="say which jobs would change; change none")
        command.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=argparse.SUPPRESS)
        command.set_defaults(handler=cmd_bulk, bulk_action=action)


def parse_bulk_filter(action: str, status: str, project_id: str | None, error_contains: str) -> BulkFilter:
    """The filter of a bulk command, checked: InvalidInput (one sentence) for a bad value."""
    allowed = BULK_STATUSES[action]
    if status not in allowed:
        raise InvalidInput(f"{action} --status must be {' or '.join(allowed)}, not {status!r}.")
    if project_id is not None:
        validate_id(project_id, "projectId")
    if len(error_contains) > 200:
        raise InvalidInput("--error-contains may be at most 200 characters.")
    return BulkFilter(status, project_id, error_contains)


def cmd_bulk(args: argparse.Namespace, service: JobService) -> int:
    action = args.bulk_action
    chosen = parse_bulk_filter(action, args.status, args.project_id, args.error_contains)
    if args.batch_size < 1:
        raise InvalidInput(f"--batch-size must be at least 1, not {args.batch_size}.")
    jobs = select_jobs(service, chosen)
    if not jobs:
        print(f"No {chosen.describe()}: nothing to {action}.")
        return 0
    if args.dry_run:
        for ref in jobs:
            print(f"{ref.job_id}\t{ref.project_id}")
        print(f"Would {action} {len(jobs):,} {chosen.describe()} (dry run: nothing changed).", file=sys.stderr)
        return 0

    def progress(handled: int, total: int) -> None:
        print(f"{action}: {handled:,} of {total:,}", file=sys.stderr, flush=True)

    try:
        report = apply_in_batches(service, action, jobs, batch_size=args.batch_size, on_batch=progress)
    except BulkInterrupted as stopped:
        print(stopped.report.summary(), file=sys.stderr)
        return 130
    print(report.summary())
    _print_refusals(report.refused)
    return 0


def _print_refusals(refused: Iterable[tuple[JobRef, str]], limit: int = 20) -> None:
    refused = list(refused)
    for ref, reason in refused[:limit]:
        print(f"  {ref.job_id}: {reason}", file=sys.stderr)
    if len(refused) > limit:
        print(f"  ... and {len(refused) - limit:,} more", file=sys.stderr)
