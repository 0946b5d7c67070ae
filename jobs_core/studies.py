"""Design studies: variations of one concept, rendered as a set of ordinary jobs and compared.

A study is the jobs that share a `studyId`. It has no record of its own: each of its jobs carries
the study (`Job.study`: title, the varied fields and their values, its own values, its place) and
is named after it: study `study_<ULID>` has jobs `job_<ULID>-00`, `-01`... (a job id like any
other, so listings, newest first by id, keep the study's jobs in their time). So reading a
study is at most 36 reads by id on any store, it survives restarts as its jobs do, and nothing
can disagree with the jobs.

Creating one is all or nothing from the user's view: every combination is validated before the
first job is written. The first job carries the Idempotency-Key (prefixed, so it never answers a
plain job's key); a create that died half-way is finished by a retry with the same key, which
finds the study by that job and creates only the jobs still missing (their ids are known).
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import ConfigDict, Field, ValidationError, field_validator

from .bulk import ActionReport, JobRef, apply_in_batches
from .errors import InvalidInput, JobNotFound, TransitionConflict
from .eta import typical_run
from .ids import new_id, validate_id
from .models import (
    ConceptInputs,
    Footprint,
    Job,
    JobStatus,
    Material,
    Palette,
    RenderRequest,
    Roof,
    StudyCell,
    WebhookFields,
    explain,
    parse_concept,
)
from .renderers import get_renderer
from .service import JobService

MAX_STUDY_JOBS = 36
MAX_VARIED_FIELDS = 2
#: the brief's fields a study may vary (camelCase, as in conceptInputs), with a label for people
VARIABLE_FIELDS: dict[str, str] = {
    "floors": "Floors", "roof": "Roof", "footprint": "Footprint", "material": "Material", "palette": "Palette",
    "width": "Width (m)", "depth": "Depth (m)", "floorHeight": "Floor height (m)", "windowRatio": "Glazing",
}
#: the fields whose values are a choice among words; the others are numbers
CHOICE_FIELDS: dict[str, tuple[str, ...]] = {
    "roof": get_args(Roof), "footprint": get_args(Footprint), "material": get_args(Material),
    "palette": get_args(Palette),
}
KEY_PREFIX = "study:"  # a study's Idempotency-Key on its first job, apart from plain jobs' keys
STUDY_PREFIX = "study"


class StudyRequest(WebhookFields):
    """What a client sends to create a study (POST /api/studies); its webhook goes to each of its jobs."""

    model_config = ConfigDict(extra="forbid")
    project_id: str
    render_type: str = "axonometric"
    concept_inputs: dict[str, Any] = Field(default_factory=dict)
    vary: dict[str, list[Any]] = Field(description="one or two brief fields, each with the values to try")
    title: str | None = Field(None, max_length=120, description="default: the brief's title")

    @field_validator("project_id")
    @classmethod
    def _project(cls, value: str) -> str:
        return validate_id(value, "projectId")

    @field_validator("render_type")
    @classmethod
    def _render_type(cls, value: str) -> str:
        return validate_id(value, "renderType")


@dataclass(frozen=True)
class PlannedCell:
    values: dict[str, Any]
    brief: ConceptInputs


@dataclass(frozen=True)
class StudyPlan:
    """A checked study request: every combination is a brief that can be drawn."""

    project_id: str
    render_type: str
    title: str
    vary: dict[str, list[Any]]
    cells: list[PlannedCell]
    webhook: str | None = None
    webhook_events_filter: list[str] | None = None


def parse_study_request(data: Any) -> StudyRequest:
    if not isinstance(data, dict):
        raise InvalidInput(f"The request body must be a JSON object, not {type(data).__name__}.")
    try:
        return StudyRequest.model_validate(data)
    except ValidationError as error:
        raise InvalidInput(explain(error)) from None


def describe_values(values: dict[str, Any]) -> str:
    """'floors 4, roof gable': a combination in words."""
    return ", ".join(f"{_field_words(name)} {_shown(value)}" for name, value in values.items())


def _field_words(name: str) -> str:
    return {"floorHeight": "floor height", "windowRatio": "glazing"}.get(name, name)


def _shown(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= 40 else text[:39] + "…"  # a value from outside, echoed in a sentence


def plan_study(request: StudyRequest | dict) -> StudyPlan:
    """Check a study request whole, before anything is written: InvalidInput (one sentence that
    names the combination) for the first combination that is not a building."""
    if not isinstance(request, StudyRequest):
        request = parse_study_request(request)
    vary = _checked_vary(request.vary)
    base = {name: value for name, value in request.concept_inputs.items() if name not in vary}
    cells = []
    for combination in itertools.product(*vary.values()):
        values = dict(zip(vary, combination, strict=True))
        try:
            brief = parse_concept({**base, **values})
        except InvalidInput as error:
            reason = str(error).removeprefix("conceptInputs: ").rstrip(".")
            raise InvalidInput(f"The variation {describe_values(values)} cannot be drawn: {reason}. "
                               "No job was created.") from None
        cells.append(PlannedCell(_canonical(brief, vary), brief))
    vary = {name: [cell.values[name] for cell in cells] for name in vary}
    vary = {name: list(dict.fromkeys(values)) for name, values in vary.items()}
    _refuse_repeats(request.vary, vary)
    title = (request.title or "").strip() or f"{cells[0].brief.title}: variations"
    return StudyPlan(request.project_id, request.render_type, title, vary, cells, request.webhook,
                     request.webhook_events_filter)


def _checked_vary(vary: dict[str, list[Any]]) -> dict[str, list[Any]]:
    if not vary:
        raise InvalidInput("vary names no field; give one or two fields of the brief with the values to try, "
                           "such as {\"floors\": [4, 8, 12]}.")
    if len(vary) > MAX_VARIED_FIELDS:
        raise InvalidInput(f"vary names {len(vary)} fields; a study varies at most {MAX_VARIED_FIELDS}.")
    for name, values in vary.items():
        if name not in VARIABLE_FIELDS:
            raise InvalidInput(f"vary.{name[:60]} is not a field a study can vary; use one of: "
                               f"{', '.join(VARIABLE_FIELDS)}.")
        if not values:
            raise InvalidInput(f"vary.{name} lists no value; give at least one.")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise InvalidInput(f"vary.{name} values must be numbers or words, not {type(value).__name__}.")
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidInput(f"vary.{name} values must be finite numbers.")
    count = math.prod(len(values) for values in vary.values())
    if count > MAX_STUDY_JOBS:
        raise InvalidInput(f"That makes {count} renders; a study has at most {MAX_STUDY_JOBS}. "
                           "Try fewer values.")
    return vary


def _canonical(brief: ConceptInputs, vary: dict[str, list[Any]]) -> dict[str, Any]:
    """The varied values as the brief holds them ('8' -> 8, 6 -> 6.0 m)."""
    dumped = brief.model_dump()
    return {name: dumped[name] for name in vary}


def _refuse_repeats(asked: dict[str, list[Any]], kept: dict[str, list[Any]]) -> None:
    for name, values in kept.items():
        if len(values) < len(asked[name]):
            raise InvalidInput(f"vary.{name} lists the same value twice; give each value once.")


# -- creating ----------------------------------------------------------------------------------
def cell_job_id(study_id: str, index: int) -> str:
    """The id of a study's job: `study_X` -> `job_X-00`."""
    return f"job_{study_id.removeprefix(STUDY_PREFIX + '_')}-{index:02d}"


def validate_study_id(value: object) -> str:
    study_id = validate_id(value, "studyId")
    if not study_id.startswith(f"{STUDY_PREFIX}_") or len(study_id) > 60:
        raise JobNotFound(f"No study with id {study_id}: study ids look like study_01J... .")
    return study_id


def create_study(service: JobService, request: StudyRequest | dict, *, idempotency_key: str | None = None,
                 renderer: str | None = None) -> tuple[Study, bool]:
    """(study, replayed): a new study with one job per combination, or the one an earlier
    create with this Idempotency-Key made (finished if that create died half-way)."""
    plan = plan_study(request)
    get_renderer(renderer or service.settings.renderer).check_render_type(plan.render_type)
    key = None if idempotency_key is None else KEY_PREFIX + idempotency_key
    study_id, replayed = new_id(STUDY_PREFIX), False
    for index, cell in enumerate(plan.cells):
        try:
            _create_cell(service, plan, study_id, index, cell, key if index == 0 else None, renderer)
        except TransitionConflict:
            if index != 0 or key is None:
                continue  # made by an earlier or a concurrent create of this same study
            # The key's first job exists (the store refuses a second): an earlier create with this
            # key, finished or cut off, or a concurrent one. Carry on with its study.
            study_id = _study_of_key(service, plan, key)
            if study_id is None:
                raise
            replayed = True
    return read_study(service, study_id, plan.project_id), replayed


def _study_of_key(service: JobService, plan: StudyPlan, key: str) -> str | None:
    first = service.store.find_by_idempotency_key(plan.project_id, key)
    if first is None or first.study is None or first.study_id is None:
        return None
    if (first.render_type != plan.render_type or first.study.vary != plan.vary
            or first.concept_inputs != plan.cells[0].brief.model_dump() or first.study.title != plan.title
            or first.webhook != plan.webhook or first.webhook_events_filter != plan.webhook_events_filter):
        raise TransitionConflict(f"Idempotency-Key was already used for study {first.study_id} with a different "
                                 "request body.")
    return first.study_id


def _create_cell(service: JobService, plan: StudyPlan, study_id: str, index: int, cell: PlannedCell,
                 key: str | None, renderer: str | None) -> None:
    job_id = cell_job_id(study_id, index)
    try:
        service.get(job_id, plan.project_id)
        return  # an earlier create of this study made it
    except JobNotFound:
        pass
    study = StudyCell(title=plan.title, vary=plan.vary, values=cell.values, index=index, count=len(plan.cells))
    service.submit(RenderRequest(project_id=plan.project_id, render_type=plan.render_type,
                                 concept_inputs=cell.brief, webhook=plan.webhook,
                                 webhook_events_filter=plan.webhook_events_filter),
                   renderer=renderer, idempotency_key=key,
                   job_id=job_id, study_id=study_id, study=study)


# -- reading -----------------------------------------------------------------------------------
StudyStatus = Literal["running", "completed", "failed", "canceled", "incomplete"]


@dataclass(frozen=True)
class Cell:
    """One variation: its values and its job (None if the job is missing: deleted, or a create
    that died before making it)."""

    index: int
    values: dict[str, Any]
    job_id: str
    job: Job | None


@dataclass(frozen=True)
class Summary:
    total: int
    done: int = 0
    running: int = 0
    queued: int = 0
    failed: int = 0
    canceled: int = 0
    missing: int = 0

    def words(self) -> str:
        parts = [f"{self.done} of {self.total} done"]
        parts += [f"{count} {name}" for name, count in (("running", self.running), ("queued", self.queued),
                                                        ("failed", self.failed), ("canceled", self.canceled),
                                                        ("missing", self.missing)) if count]
        return ", ".join(parts)


@dataclass(frozen=True)
class Study:
    study_id: str
    project_id: str
    title: str
    render_type: str
    vary: dict[str, list[Any]]
    created_at: datetime
    cells: list[Cell] = field(default_factory=list)

    @property
    def jobs(self) -> list[Job]:
        return [cell.job for cell in self.cells if cell.job is not None]

    @property
    def summary(self) -> Summary:
        counts = {status: 0 for status in JobStatus}
        for job in self.jobs:
            counts[job.status] += 1
        return Summary(total=len(self.cells), done=counts[JobStatus.COMPLETED], running=counts[JobStatus.PROCESSING],
                       queued=counts[JobStatus.PENDING], failed=counts[JobStatus.FAILED],
                       canceled=counts[JobStatus.CANCELED], missing=len(self.cells) - len(self.jobs))

    @property
    def status(self) -> StudyStatus:
        summary = self.summary
        if summary.missing:  # first: only a retry of its create (same Idempotency-Key) makes it whole
            return "incomplete"
        if summary.running or summary.queued:
            return "running"
        if summary.failed:
            return "failed"
        return "canceled" if summary.canceled else "completed"

    @property
    def is_final(self) -> bool:
        """No job of the study is queued or running."""
        return all(job.status.is_final for job in self.jobs)

    @property
    def progress(self) -> int:
        """0-100 over every variation (a final job counts whole)."""
        total = sum(100 if job.status.is_final else job.progress for job in self.jobs)
        return total // max(len(self.cells), 1)

    # The grid: the first varied field across, the second (if any) down.
    @property
    def columns(self) -> tuple[str, list[Any]]:
        name = next(iter(self.vary))
        return name, self.vary[name]

    @property
    def rows(self) -> tuple[str | None, list[Any]]:
        names = list(self.vary)
        return (names[1], self.vary[names[1]]) if len(names) > 1 else (None, [None])

    def grid(self) -> list[list[Cell]]:
        """Rows of cells, each row one value of the second field (a single row for one field)."""
        across = len(self.columns[1])
        down = len(self.rows[1])
        # cells are in itertools.product order: the first field outermost
        return [[self.cells[column * down + row] for column in range(across)] for row in range(down)]


def read_study(service: JobService, study_id: str, project_id: str | None = None) -> Study:
    """The study as its jobs are now: JobNotFound when none of them exists."""
    study_id = validate_study_id(study_id)
    first = _first_job(service, study_id, project_id)
    project_id = first.project_id
    assert first.study is not None  # _first_job only returns jobs of the study
    jobs = {first.study.index: first}
    for index in range(first.study.count):
        if index not in jobs:
            jobs[index] = _job_or_none(service, cell_job_id(study_id, index), project_id, study_id)
    cells = [_cell(study_id, first.study, index, jobs[index]) for index in range(first.study.count)]
    return Study(study_id=study_id, project_id=project_id, title=first.study.title, render_type=first.render_type,
                 vary=first.study.vary, created_at=first.created_at, cells=cells)


def _first_job(service: JobService, study_id: str, project_id: str | None) -> Job:
    for index in range(MAX_STUDY_JOBS):
        job = _job_or_none(service, cell_job_id(study_id, index), project_id, study_id)
        if job is not None:
            return job
    where = f" in project {project_id}" if project_id else ""
    raise JobNotFound(f"No study with id {study_id}{where}.")


def _job_or_none(service: JobService, job_id: str, project_id: str | None, study_id: str) -> Job | None:
    try:
        job = service.get(job_id, project_id)
    except JobNotFound:
        return None
    # A job of this name that does not say it belongs to the study is not one of its cells.
    return job if job.study_id == study_id and job.study is not None else None


def _cell(study_id: str, study: StudyCell, index: int, job: Job | None) -> Cell:
    values = job.study.values if job is not None and job.study is not None else _values_at(study.vary, index)
    return Cell(index=index, values=values, job_id=cell_job_id(study_id, index), job=job)


def _values_at(vary: dict[str, list[Any]], index: int) -> dict[str, Any]:
    return dict(zip(vary, list(itertools.product(*vary.values()))[index], strict=True))


# -- the whole study at once ---------------------------------------------------------------------
def cancel_study(service: JobService, study_id: str, project_id: str | None = None) -> tuple[Study, ActionReport]:
    """Cancel every queued or running job of the study (each by the lifecycle's rule)."""
    return _apply(service, "cancel", study_id, project_id, (JobStatus.PENDING, JobStatus.PROCESSING))


def retry_study(service: JobService, study_id: str, project_id: str | None = None) -> tuple[Study, ActionReport]:
    """Queue every failed or canceled job of the study again."""
    return _apply(service, "retry", study_id, project_id, (JobStatus.FAILED, JobStatus.CANCELED))


def _apply(service: JobService, action: str, study_id: str, project_id: str | None,
           statuses: tuple[JobStatus, ...]) -> tuple[Study, ActionReport]:
    study = read_study(service, study_id, project_id)
    refs = [JobRef(job.project_id, job.job_id) for job in study.jobs if job.status in statuses]
    report = apply_in_batches(service, action, refs)
    return read_study(service, study.study_id, study.project_id), report


# -- before it starts ----------------------------------------------------------------------------
def estimate_seconds(service: JobService, render_type: str, count: int, renderer: str | None = None) -> float | None:
    """About how long `count` renders take from now, from the history of finished ones: the queue
    ahead and the study, shared among the live workers. None with too little history."""
    name = renderer or service.settings.renderer
    typical = typical_run(service, name, render_type)
    if typical is None:
        return None
    workers = sum(1 for worker in service.live_workers() if name in worker.renderers)
    return typical.median * (len(service.store.pending()) + count) / max(workers, 1)


def number_range(start: float, stop: float, step: float) -> list[float]:
    """start, start+step, ... up to stop (included when it falls on a step); InvalidInput for a
    step that is not positive or a range of more than MAX_STUDY_JOBS values."""
    if not step > 0:
        raise InvalidInput("The step must be more than 0.")
    if stop < start:
        raise InvalidInput("The range ends before it starts; make 'to' at least 'from'.")
    count = math.floor((stop - start) / step + 1e-9) + 1
    if count > MAX_STUDY_JOBS:
        raise InvalidInput(f"That range has {count} values; a study has at most {MAX_STUDY_JOBS} renders.")
    return [round(start + index * step, 6) for index in range(count)]


def group_by_study(jobs: list[Job]) -> Iterator[tuple[str | None, list[Job]]]:
    """Group a listing's jobs: each study's jobs together (in the place of its newest), others alone."""
    groups: dict[str, list[Job]] = {}
    order: list[tuple[str | None, list[Job]]] = []
    for job in jobs:
        if job.study_id is None:
            order.append((None, [job]))
        elif job.study_id in groups:
            groups[job.study_id].append(job)
        else:
            groups[job.study_id] = [job]
            order.append((job.study_id, groups[job.study_id]))
    yield from order


def brief_differences(first: Job, second: Job) -> list[str]:
    """How two jobs' briefs differ, a line per field in form order: 'floors: 4 → 8'."""
    lines = []
    names = list(dict.fromkeys([*first.concept_inputs, *second.concept_inputs]))
    for name in names:
        before, after = first.concept_inputs.get(name), second.concept_inputs.get(name)
        if before != after:
            lines.append(f"{_field_words(name)}: {_shown(before) if before is not None else '—'} → "
                         f"{_shown(after) if after is not None else '—'}")
    if first.render_type != second.render_type:
        lines.append(f"render type: {first.render_type} → {second.render_type}")
    return lines
