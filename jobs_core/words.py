"""Words for people: durations, ages and briefs as a person would say them."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .models import ConceptInputs, Job, utcnow


def duration_text(seconds: float) -> str:
    """"2.3 s", "42 s", "2 min 05 s", "3 h 01 min"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def ago_text(moment: datetime, now: datetime | None = None) -> str:
    return f"{duration_text(((now or utcnow()) - moment).total_seconds())} ago"


def elapsed_seconds(job: Job, now: datetime | None = None) -> float:
    """Seconds since the job was created, up to when it finished."""
    end = job.finished_at if job.status.is_final and job.finished_at else (now or utcnow())
    return (end - job.created_at).total_seconds()


def brief_summary(inputs: Mapping[str, Any]) -> str:
    """One line describing a brief ("U 42 × 30 m, 5 floors, gable roof, timber"); "" if unreadable."""
    try:
        brief = ConceptInputs.model_validate(dict(inputs))
    except ValidationError:
        return ""
    return (f"{brief.footprint} {brief.width:g} × {brief.depth:g} m, {brief.floors} floors, "
            f"{brief.roof} roof, {brief.material}")
