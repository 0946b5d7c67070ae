"""Actions on jobs chosen in the monitor: retry, cancel, delete - through JobService only.

Each job is handled on its own: one that is in the wrong state (a running job cannot be
deleted; a completed one cannot be retried) is reported with the lifecycle's own sentence and
the others still go through.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import JobsError
from ..service import JobService
from .index import JobIndex

ACTIONS = ("retry", "cancel", "delete")


@dataclass(frozen=True)
class JobRef:
    project_id: str
    job_id: str


@dataclass
class ActionReport:
    action: str
    done: list[JobRef] = field(default_factory=list)
    refused: list[tuple[JobRef, str]] = field(default_factory=list)

    def summary(self) -> str:
        verb = {"retry": "Retried", "cancel": "Canceled", "delete": "Deleted"}[self.action]
        text = f"{verb} {len(self.done)} job{'s' if len(self.done) != 1 else ''}."
        if self.refused:
            text += f" {len(self.refused)} could not be changed."
        return text


def run_action(service: JobService, action: str, jobs: list[JobRef], index: JobIndex | None = None) -> ActionReport:
    """Apply `action` to each job; the index (if given) re-reads the jobs at its next refresh."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}.")
    report = ActionReport(action)
    method = getattr(service, action)
    for job in jobs:
        try:
            method(job.job_id, job.project_id)
        except JobsError as error:
            report.refused.append((job, str(error)))
        else:
            report.done.append(job)
        if index is not None:
            index.mark_job(job.project_id, job.job_id)
    return report
