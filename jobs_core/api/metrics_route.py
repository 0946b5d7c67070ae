"""`GET /metrics`: Prometheus' text format (see jobs_core.metrics), behind the bearer token when
one is set (guard.py)."""
from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ..metrics import exposition

router = APIRouter()
METRICS_RESPONSES = {200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                           "description": "Prometheus' text exposition format (OpenMetrics when the Accept "
                                          "header asks for application/openmetrics-text)"},
                     401: {"description": "missing or wrong bearer token"}}


@router.get("/metrics", response_class=Response, tags=["operations"], responses=METRICS_RESPONSES,
            summary="Prometheus metrics: jobs by outcome, queue, run times, webhooks, store errors")
def metrics(request: Request) -> Response:
    # A plain function: FastAPI runs it on its thread pool, where reading the store's gauges may block.
    body, content_type = exposition(request.app.state.metrics, request.headers.get("accept"))
    return Response(body, media_type=content_type, headers={"Cache-Control": "no-store"})
