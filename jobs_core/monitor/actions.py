"""Actions on jobs chosen in the monitor: retry, cancel, delete - through JobService only.

Each job is handled on its own (`jobs_core.bulk.apply_in_batches`): one that is in the wrong
state (a running job cannot be deleted; a completed one cannot be retried) is reported with the
lifecycle's own sentence and the others still go through. Bulk actions ("retry all 1,234 failed
jobs shown") pick their jobs from the filtered view with `bulk_targets`.
"""
from __future__ import annotations

import pandas as pd

from ..bulk import ACTIONS, ActionReport, JobRef, OnBatch, apply_in_batches
from ..service import JobService
from .index import JobIndex

__all__ = ["ACTIONS", "BULK", "ActionReport", "JobRef", "bulk_targets", "run_action"]

#: bulk action -> the status of the jobs it applies to, in the view the filters show
BULK = {"retry": "failed", "cancel": "pending"}


def run_action(service: JobService, action: str, jobs: list[JobRef], index: JobIndex | None = None, *,
               on_batch: OnBatch | None = None, batch_size: int = 100) -> ActionReport:
    """Apply `action` to each job; the index (if given) re-reads the jobs at its next refresh."""
    mark = None if index is None else (lambda job: index.mark_job(job.project_id, job.job_id))
    return apply_in_batches(service, action, jobs, batch_size=batch_size, on_batch=on_batch, on_job=mark)


def bulk_targets(view: pd.DataFrame, action: str) -> list[JobRef]:
    """The jobs of `view` a bulk `action` applies to (retry: the failed ones; cancel: the
    pending ones), oldest first."""
    rows = view[view["status"] == BULK[action]]
    rows = rows.sort_values("created", kind="stable")
    return [JobRef(project, job) for project, job in zip(rows["project"], rows["job"], strict=True)]
