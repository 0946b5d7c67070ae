"""Words for people: durations, ages, counts, briefs and renderer names as a person would say them."""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from .models import ConceptInputs, Job, utcnow

#: What a person is offered instead of a renderer's registry name.
RENDERER_NAMES = {
    "axonometric": "Architectural drawing, instant",
    "openai": "AI image (OpenAI-compatible)",
    "automatic1111": "AI image (Stable Diffusion WebUI)",
    "noop": "Blank test image (measures the machinery)",
}
RENDER_TYPE_NAMES = {
    "axonometric": "3D view (axonometric)",
    "exploded-axonometric": "Exploded 3D view (floor by floor)",
    "plan": "Floor plan",
    "elevation": "Street elevation",
}
# Markdown and Streamlit's own directives (:red[...], :material/x:) start with these characters.
_MARKUP = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:=&])")
# GitHub-flavoured Markdown turns bare URLs and e-mail addresses into links even when escaped: an
# invisible word joiner (U+2060) before "://", after "www" and before "@" stops it.
_AUTOLINK = re.compile(r"(?<=[A-Za-z])(?=://)|(?<=\bwww)(?=\.)|(?=@)", re.IGNORECASE)


def renderer_name(name: str) -> str:
    return RENDERER_NAMES.get(name, name)


def render_type_name(render_type: str) -> str:
    return RENDER_TYPE_NAMES.get(render_type, render_type)


def plain(text: Any) -> str:
    """`text` escaped for st.markdown and friends: what a person typed is shown as typed, never as
    Markdown, a link, a colour or an icon."""
    unlinked = _AUTOLINK.sub("\u2060", str(text))
    return _MARKUP.sub(r"\\\1", unlinked).replace("\n", " ")


def count_text(number: int, singular: str, plural: str | None = None) -> str:
    """"1 floor", "5 floors", "0 jobs"."""
    return f"{number} {singular if number == 1 else (plural or singular + 's')}"


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
    """"just now", "42 s ago", "3 min ago", "2 h ago", "5 days ago"."""
    seconds = ((now or utcnow()) - moment).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{count_text(int(seconds // 86400), 'day')} ago"


def attempt_seconds(job: Job, now: datetime | None = None) -> float:
    """Seconds the current attempt has run (up to when it finished); 0 before a worker took it.

    A retry or a re-queue starts a new attempt (the lifecycle resets startedAt), so "running for"
    and "completed in" never count the time the job spent failed, canceled or waiting before.
    """
    if job.started_at is None:
        return 0.0
    end = job.finished_at if job.status.is_final and job.finished_at else (now or utcnow())
    return max(0.0, (end - job.started_at).total_seconds())


def elapsed_seconds(job: Job, now: datetime | None = None) -> float:
    """Seconds since the job was last queued (created, retried or handed back), up to when it finished."""
    since = job.available_at if job.available_at and job.available_at > job.created_at else job.created_at
    end = job.finished_at if job.status.is_final and job.finished_at else (now or utcnow())
    return max(0.0, (end - since).total_seconds())


def brief_summary(inputs: Mapping[str, Any]) -> str:
    """One line describing a brief ("U 42 × 30 m, 5 floors, gable roof, timber"); "" if unreadable."""
    try:
        brief = ConceptInputs.model_validate(dict(inputs))
    except ValidationError:
        return ""
    return (f"{brief.footprint} {brief.width:g} × {brief.depth:g} m, {count_text(brief.floors, 'floor')}, "
            f"{brief.roof} roof, {brief.material}")
