"""The design-study endpoints (jobs_core.studies): create a set of variations, read it with its
jobs' states and a summary, cancel or retry it whole. A failed variation alone is retried with
POST /api/jobs/{jobId}/retry, as any job."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import AfterValidator

from ..errors import InvalidInput
from ..ids import validate_id
from ..studies import Study, StudyRequest, cancel_study, create_study, read_study, retry_study
from .context import ApiContext
from .errors import BadRequestBody
from .routes import RETRY_AFTER_SECONDS, Api, IdempotencyKey, ProjectId, _errors
from .study_schemas import ApiStudy, CreatedStudy, StudyCellOut, StudyEnvelope, StudySummary

StudyId = Annotated[str, Path(alias="studyId", description="the study's id, as returned by create"),
                    AfterValidator(lambda value: validate_id(value, "studyId"))]


def api_study(study: Study, api: ApiContext) -> ApiStudy:
    summary = study.summary
    return ApiStudy(study_id=study.study_id, project_id=study.project_id, title=study.title,
                    render_type=study.render_type, vary=study.vary, created_at=study.created_at,
                    status=study.status, progress=study.progress, summary=StudySummary(**summary.__dict__),
                    cells=[StudyCellOut(index=cell.index, values=cell.values, job_id=cell.job_id,
                                        job=None if cell.job is None else api.answer(cell.job))
                           for cell in study.cells])


router = APIRouter(prefix="/api", tags=["studies"])


def _poll_url(study: Study) -> str:
    return f"/api/studies/{study.study_id}?projectId={study.project_id}"


def _envelope(study: Study, api: ApiContext, response: Response) -> StudyEnvelope:
    if not study.is_final:
        response.headers["Retry-After"] = RETRY_AFTER_SECONDS
    return StudyEnvelope(study=api_study(study, api))


def _create(api: ApiContext, request: StudyRequest, key: str | None) -> tuple[Study, bool]:
    try:
        return create_study(api.service, request, idempotency_key=key)
    except BadRequestBody:
        raise
    except InvalidInput as error:  # a combination that is not a building, a renderType not drawn
        raise BadRequestBody(str(error)) from None


@router.post("/studies", status_code=201, summary="Create a design study: one job per combination of values",
             responses=_errors(409, 422))
async def create(request: StudyRequest, response: Response, api: Api,
                 idempotency_key: IdempotencyKey = None) -> CreatedStudy:
    study, replayed = await run_in_threadpool(_create, api, request, idempotency_key)
    response.headers["Location"] = _poll_url(study)
    if replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return CreatedStudy(study_id=study.study_id, job_ids=[cell.job_id for cell in study.cells],
                        poll_url=_poll_url(study))


@router.get("/studies/{studyId}", summary="Read a study: its jobs' states and a summary (poll)",
            responses=_errors(404))
def get(api: Api, response: Response, study_id: StudyId, project_id: ProjectId = None) -> StudyEnvelope:
    return _envelope(read_study(api.service, study_id, project_id), api, response)


@router.post("/studies/{studyId}/cancel", summary="Cancel every queued or running job of the study",
             responses=_errors(404))
def cancel(api: Api, response: Response, study_id: StudyId, project_id: ProjectId = None) -> StudyEnvelope:
    study, _ = cancel_study(api.service, study_id, project_id)
    return _envelope(study, api, response)


@router.post("/studies/{studyId}/retry", summary="Queue every failed or canceled job of the study again",
             responses=_errors(404))
def retry(api: Api, response: Response, study_id: StudyId, project_id: ProjectId = None) -> StudyEnvelope:
    study, _ = retry_study(api.service, study_id, project_id)
    return _envelope(study, api, response)
