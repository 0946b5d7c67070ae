"""The answer to a job's imageUrl (`GET /api/renders/{projectId}/{jobId}.png`).

A render kept in the store is sent as it is. One kept in a bucket is fetched by the client from
the bucket itself, through a short-lived presigned URL (307: the same method, and no credentials
of ours leave the server); with JOBS_S3_PROXY=1 this server streams it from the bucket instead
(for a bucket clients cannot reach).
"""
from __future__ import annotations

from fastapi import Response
from fastapi.responses import RedirectResponse, StreamingResponse

from ..models import Job
from ..service import JobService


def render_response(service: JobService, job: Job) -> Response:
    link = service.image_link(job)
    if link is not None:
        # no-store: a presigned URL expires, so the redirect must be asked for again next time
        return RedirectResponse(link, status_code=307, headers={"Cache-Control": "no-store"})
    pieces = service.image_stream(job)
    if pieces is not None:
        return StreamingResponse(pieces, media_type="image/png", headers={"Cache-Control": "no-cache"})
    return Response(service.image(job), media_type="image/png", headers={"Cache-Control": "no-cache"})
