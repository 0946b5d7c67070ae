"""`create_app(service)`: the FastAPI application, with an embedded worker pool of N threads.

N=0 serves create and poll only (the seed's hybrid architecture: separate
`python -m jobs_core worker` processes do the work); POST /process still runs the named job here.
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware

from ..metrics import scrape_registry
from ..renderers import renderer_names
from ..service import JobService
from ..worker import Worker
from .context import ApiContext
from .errors import install_error_handlers
from .guard import Guard
from .metrics_route import router as metrics_router
from .routes import router
from .runner import InlineRunner
from .settings import ApiSettings
from .studies import router as studies_router

EXPOSED_HEADERS = ["Retry-After", "Location", "Preference-Applied", "Idempotent-Replayed"]


def create_app(service: JobService | None = None, *, workers: int = 0, settings: ApiSettings | None = None,
               render_size: int | None = None) -> FastAPI:
    """The API over `service` (default: JobService.from_env()); `workers` embedded claim threads."""
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, not {workers}.")
    service = service or JobService.from_env()
    settings = settings or ApiSettings.from_env()
    renderer_names()  # import the renderers now: the first create would otherwise wait ~0.3 s for them
    worker = Worker(service, concurrency=max(workers, 1), render_size=render_size)
    runner = InlineRunner(service, worker, settings.max_inline_renders)
    context = ApiContext(service, settings, runner, workers)  # what the routes reach (context.api_context)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Claim threads only when asked; the heartbeat/reclaim thread always (it keeps /process
        # renders alive and requeues jobs of crashed workers).
        worker.start(claiming=workers > 0)
        try:
            yield
        finally:
            runner.close()
            await run_in_threadpool(worker.stop)  # running jobs go back to pending

    # No trailing-slash redirects: they would echo the Host header back as a Location.
    app = FastAPI(title="Concept render jobs", version="1.0.0", lifespan=lifespan, redirect_slashes=False,
                  description="Create render jobs in milliseconds, process them in the background, poll.")
    app.state.api = context
    app.state.metrics = scrape_registry(service.store)  # GET /metrics (metrics_route.py)
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(studies_router)  # design studies (jobs_core.studies)
    app.include_router(metrics_router)
    app.add_middleware(Guard, token=settings.token, max_body_bytes=settings.max_body_bytes)
    if settings.cors_origins:  # added last: outermost, so preflights and 401s carry CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST"], expose_headers=EXPOSED_HEADERS,
                           allow_headers=["Content-Type", "Authorization", "Idempotency-Key", "Prefer",
                                          "Last-Event-ID"])
    return app
