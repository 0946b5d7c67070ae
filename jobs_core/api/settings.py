"""API settings, from JOBS_API_* environment variables (read when the app is built)."""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..config import env_number


@dataclass(frozen=True)
class ApiSettings:
    #: bearer token every /api request must carry (except /api/health); None: no auth
    token: str | None = None
    #: origins allowed by CORS; empty: no CORS headers at all
    cors_origins: tuple[str, ...] = ()
    #: request bodies above this many bytes get 413
    max_body_bytes: int = 64 * 1024
    #: how long POST /process holds the answer before a 202 (below common 10 s gateway limits)
    process_wait_seconds: float = 8.0
    #: the cap on `Prefer: wait=N`
    max_wait_seconds: float = 60.0
    #: renders POST /process may run at once in this process (more wait in a queue); 0: /process
    #: never renders here, it only waits for the separate workers (strict create/poll front end)
    max_inline_renders: int = 4
    #: seconds between store reads while a request waits for a job to finish
    wait_poll_seconds: float = 0.1

    @classmethod
    def from_env(cls) -> ApiSettings:
        origins = tuple(o.strip() for o in os.environ.get("JOBS_API_CORS_ORIGINS", "").split(",") if o.strip())
        return cls(
            token=os.environ.get("JOBS_API_TOKEN") or None,
            cors_origins=origins,
            max_body_bytes=int(env_number("JOBS_API_MAX_BODY_BYTES", cls.max_body_bytes, strict=True)),
            process_wait_seconds=env_number("JOBS_API_PROCESS_WAIT_SECONDS", cls.process_wait_seconds),
            max_wait_seconds=env_number("JOBS_API_MAX_WAIT_SECONDS", cls.max_wait_seconds),
            max_inline_renders=int(env_number("JOBS_API_MAX_INLINE_RENDERS", cls.max_inline_renders)),
        )
