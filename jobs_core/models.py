"""The data: concept brief, render request, job document and event (camelCase JSON, as in the seed)."""
from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from .errors import InvalidInput
from .ids import validate_id


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


class _Camel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="allow",
    )


Footprint = Literal["bar", "L", "U", "courtyard", "tower"]
Roof = Literal["flat", "gable", "hip", "shed", "sawtooth"]
Material = Literal["concrete", "brick", "timber", "glass", "stone", "metal"]
Palette = Literal["warm", "cool", "monochrome", "earth", "pastel"]
MAX_HEIGHT_M = 500.0  # taller than any tower on the drawing board is a typo, not a brief
MAX_ASPECT = 20  # a footprint 20 times longer than deep is a wall, not a building
MIN_WINGED_SIDE_M = 9.0  # L, U and courtyard wings need room for a wing and a gap
MAX_BRIEF_DEPTH = 8  # extra fields may hold lists and objects, not arbitrarily deep ones
MAX_BRIEF_INTEGER = 10**15  # beyond this a number is a typo or an attack, and JSON readers round it


def brief_value_problem(value: Any, where: str, depth: int = 0) -> str | None:
    """Why `value` (anything in a brief, extra fields included) cannot be stored and sent on as
    plain JSON by every backend, or None. PostgreSQL's JSONB refuses NUL characters and lone
    surrogates; NaN and infinities are not JSON; so every backend refuses the same briefs."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where} must not contain a NUL character"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where} contains a lone surrogate, which is not a character"
    elif isinstance(value, float):
        if not math.isfinite(value):
            return f"{where} must be a finite number (got {value})"
    elif isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > MAX_BRIEF_INTEGER:
            return f"{where} is too large a number (the most is {MAX_BRIEF_INTEGER:.0e})"
    elif isinstance(value, dict | list):
        if depth >= MAX_BRIEF_DEPTH:
            return f"{where} is nested more than {MAX_BRIEF_DEPTH} levels deep"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            problem = (brief_value_problem(key, f"{where} (a key)", depth + 1) if isinstance(key, str) else None) \
                or brief_value_problem(item, f"{where}.{key}", depth + 1)
            if problem:
                return problem
    return None


class ConceptInputs(_Camel):
    """The concept brief. Every field has a default so `{}` renders a building.

    Unknown fields are kept (extra="allow") and passed on to AI providers' prompts.
    """

    title: str = Field("Untitled concept", max_length=120)
    description: str = Field("", max_length=2000)
    building_type: str = Field("mixed-use", max_length=60)
    footprint: Footprint = "bar"
    width: float = Field(36.0, ge=3, le=300, description="metres")
    depth: float = Field(18.0, ge=3, le=300, description="metres")
    floors: int = Field(5, ge=1, le=120)
    floor_height: float = Field(3.5, ge=2.4, le=8, description="metres")
    roof: Roof = "flat"
    material: Material = "concrete"
    palette: Palette = "warm"
    window_ratio: float = Field(0.4, ge=0.1, le=0.9, description="share of the facade that is glazed")

    @model_validator(mode="before")
    @classmethod
    def _plain_json(cls, data: Any) -> Any:
        if isinstance(data, dict):
            problem = brief_value_problem(data, "conceptInputs")
            if problem:
                raise ValueError(problem)
        return data

    @field_validator("title", "description", "building_type")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @property
    def height(self) -> float:
        """Eaves height in metres (floors x floor height)."""
        return self.floors * self.floor_height

    @model_validator(mode="after")
    def _buildable(self, info: ValidationInfo) -> ConceptInputs:
        # Each field may be in range while the whole is not a building anyone could draw.
        # A form that files each rule next to its fields validates with {"whole": False} and asks
        # `buildable_problems` itself.
        if isinstance(info.context, dict) and info.context.get("whole") is False:
            return self
        problems = buildable_problems(self)
        if problems:
            raise ValueError(f"conceptInputs: {problems[0][1]}")
        return self


def buildable_problems(brief: ConceptInputs) -> list[tuple[tuple[str, ...], str]]:
    """The rules spanning several fields that `brief` breaks: (the camelCase fields each rule is
    about, one sentence); empty when the brief is a building. Forms show each next to its fields."""
    problems = []
    if brief.height > MAX_HEIGHT_M:
        problems.append((("floors", "floorHeight"),
                         f"{brief.floors} floors of {brief.floor_height:g} m make a {brief.height:g} m tall "
                         f"building; the most is {MAX_HEIGHT_M:g} m"))
    if max(brief.width, brief.depth) > MAX_ASPECT * min(brief.width, brief.depth):
        problems.append((("width", "depth"),
                         f"a {brief.width:g} x {brief.depth:g} m footprint is more than {MAX_ASPECT} times "
                         "longer than it is deep; make width and depth closer"))
    if brief.footprint in ("L", "U", "courtyard") and min(brief.width, brief.depth) < MIN_WINGED_SIDE_M:
        problems.append((("footprint", "width", "depth"),
                         f"a {brief.footprint} footprint needs width and depth of at least "
                         f"{MIN_WINGED_SIDE_M:g} m (got {brief.width:g} x {brief.depth:g} m)"))
    return problems


class WebhookFields(_Camel):
    """A create request's webhook, checked by the rules of safe targets: a job's, or every job of a study's."""

    webhook: str | None = Field(None, max_length=2000, description=(
        "an http(s) URL that receives a signed POST of the job at the events of webhookEventsFilter"))
    webhook_events_filter: list[Literal["start", "progress", "completed"]] | None = Field(
        None, max_length=3, description="which events are sent: any of start, progress (at most once a second), "
        "completed (any final state); default start and completed")

    @field_validator("webhook")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        from .webhooks_targets import target_problem  # the rules of safe targets live with webhooks

        if value is None:
            return None
        problem = target_problem(value)
        if problem:
            raise ValueError(f"webhook: {problem}")
        return value

    @field_validator("webhook_events_filter")
    @classmethod
    def _events(cls, value: list[str] | None) -> list[str] | None:
        from .webhooks import parse_events_filter

        return parse_events_filter(value)


class RenderRequest(WebhookFields):
    """What a client sends to create a job (the seed's POST /api/jobs/render body)."""

    model_config = ConfigDict(extra="forbid")
    project_id: str
    render_type: str = "axonometric"
    concept_inputs: ConceptInputs = Field(default_factory=ConceptInputs)
    concept_id: str | None = None

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str) -> str:
        return validate_id(value, "projectId")

    @field_validator("concept_id")
    @classmethod
    def _concept(cls, value: str | None) -> str | None:
        return None if value is None else validate_id(value, "conceptId")

    @field_validator("render_type")
    @classmethod
    def _render_type(cls, value: str) -> str:
        return validate_id(value, "renderType")


class Concept(_Camel):
    """A saved brief, reusable by several jobs (`.jobs/concepts/{projectId}/{conceptId}.json`)."""

    concept_id: str
    project_id: str
    concept_inputs: dict[str, Any]
    created_at: datetime = Field(default_factory=utcnow)


class StudyCell(_Camel):
    """What a job of a design study carries (jobs_core.studies): the study it belongs to, so the
    study needs no record of its own and every job tells which variation it draws."""

    title: str
    vary: dict[str, list[Any]] = Field(description="the varied fields and their values, in order")
    values: dict[str, Any] = Field(description="this job's values of the varied fields")
    index: int = Field(ge=0)
    count: int = Field(ge=1)


class Job(_Camel):
    """The job document (`.jobs/jobs/{projectId}/{jobId}.json`)."""

    job_id: str
    concept_id: str
    project_id: str
    render_type: str
    renderer: str = "axonometric"
    status: JobStatus = JobStatus.PENDING
    progress: int = Field(0, ge=0, le=100)
    stage: str = "queued"
    image_url: str | None = None
    error: str | None = None
    concept_inputs: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    attempts: int = 0
    max_attempts: int = 3
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat_at: datetime | None = None
    worker_id: str | None = None
    cancel_requested: bool = False
    available_at: datetime = Field(default_factory=utcnow)
    idempotency_key: str | None = None
    # Only in the documents of jobs that have a webhook (see jobs_core.webhooks).
    webhook: str | None = Field(None, exclude_if=lambda value: value is None)
    webhook_events_filter: list[str] | None = Field(None, exclude_if=lambda value: value is None)
    # Only in the documents of a design study's jobs (see jobs_core.studies).
    study_id: str | None = Field(None, exclude_if=lambda value: value is None)
    study: StudyCell | None = Field(None, exclude_if=lambda value: value is None)

    def to_json(self) -> str:
        """Pretty JSON, so `cat .jobs/jobs/p/j.json` stays a monitoring tool (seed, "Monitoring")."""
        return self.model_dump_json(indent=2)

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Event(_Camel):
    """One line of `.jobs/events/{projectId}/{jobId}.jsonl`: a transition or a stage change."""

    at: datetime = Field(default_factory=utcnow)
    job_id: str
    type: str
    status: JobStatus
    attempt: int = 0
    worker_id: str | None = None
    progress: int | None = None
    message: str | None = None


def explain(error: ValidationError, prefix: str = "") -> str:
    """Turn a pydantic error into sentences a person can act on."""
    sentences = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "input"
        if prefix:
            where = f"{prefix}.{where}"
        message = item["msg"]
        if item["type"] == "value_error":
            # Our own validators already wrote a whole sentence naming the field.
            sentences.append(message.removeprefix("Value error, ").rstrip("."))
            continue
        message = message.replace("Input should be", "must be").replace("Field required", "is required")
        message = message.replace("Extra inputs are not permitted", "is not a known field")
        message = message.replace("less than or equal to", "at most").replace("greater than or equal to", "at least")
        shown = "" if item["type"] == "missing" else shown_input(item.get("input"))
        sentences.append(f"{where} {message}{shown}")
    return "; ".join(sentences) + "."


def shown_input(got: Any) -> str:
    """' (got ...)' for an error message: numbers as typed (a form sends 10000.0 for 10000),
    text quoted and cut at 60 characters; nothing for objects and lists."""
    if isinstance(got, (dict, list)):
        return ""
    if isinstance(got, float) and got.is_integer():
        got = int(got)
    if isinstance(got, (bool, int, float)) or got is None:
        return f" (got {json.dumps(got)})"
    return f" (got {str(got)[:60]!r})"


def parse_request(data: Any) -> RenderRequest:
    """Validate a render request, raising InvalidInput with readable sentences."""
    if not isinstance(data, dict):
        raise InvalidInput(f"The request body must be a JSON object, not {type(data).__name__}.")
    try:
        return RenderRequest.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(explain(error)) from None


def parse_concept(data: Any) -> ConceptInputs:
    if not isinstance(data, dict):
        raise InvalidInput(f"conceptInputs must be a JSON object, not {type(data).__name__}.")
    try:
        return ConceptInputs.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(explain(error, "conceptInputs")) from None
