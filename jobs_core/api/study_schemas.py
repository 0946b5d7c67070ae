"""The design-study endpoints' bodies (jobs_core.api.studies), as pydantic models: the OpenAPI
schema and `jobs_core.client`'s typed results. Light to import (no FastAPI), as api/schemas.py."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from ..models import _Camel
from .schemas import ApiJob


class StudySummary(_Camel):
    """How many of the study's variations are in each state."""

    total: int
    done: int
    running: int
    queued: int
    failed: int
    canceled: int
    missing: int = Field(description="variations without a job (deleted, or a create that did not finish: "
                                     "retry it with the same Idempotency-Key)")


class StudyCellOut(_Camel):
    index: int
    values: dict[str, Any] = Field(description="this variation's values of the varied fields")
    job_id: str
    job: ApiJob | None = Field(description="null when the variation has no job")


class ApiStudy(_Camel):
    """A design study as GET /api/studies/{studyId} answers it: its jobs' states and a summary."""

    study_id: str
    project_id: str
    title: str
    render_type: str
    vary: dict[str, list[Any]]
    created_at: datetime
    status: str = Field(description="running, completed, failed, canceled or incomplete")
    progress: int = Field(ge=0, le=100)
    summary: StudySummary
    cells: list[StudyCellOut]

    @property
    def is_final(self) -> bool:
        """No variation is queued or running (each job is done, failed or canceled, or missing)."""
        return not (self.summary.queued or self.summary.running)


class StudyEnvelope(_Camel):
    study: ApiStudy


class CreatedStudy(_Camel):
    study_id: str
    job_ids: list[str]
    poll_url: str
