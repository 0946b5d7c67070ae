"""Settings from the environment, read once where they are needed (never at import time)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidInput
from .limits import VARIABLE as LIMITS_VARIABLE
from .limits import parse_renderer_limits


def env_number(name: str, default: float, minimum: float = 0.0, *, strict: bool = False) -> float:
    """A number from the environment variable `name` (default when unset or blank).

    At least `minimum`, or more than it when strict; otherwise InvalidInput with one sentence.
    """
    raw = os.environ.get(name, "").strip()
    if raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{name}={raw!r} is not a number.") from None
    if value < minimum or (strict and value == minimum):
        raise InvalidInput(f"{name}={raw!r} must be {'more than' if strict else 'at least'} {minimum:g}.")
    return value


@dataclass(frozen=True)
class Settings:
    jobs_dir: Path
    store_url: str | None
    lease_seconds: float
    max_attempts: int
    renderer: str
    retry_backoff_seconds: float
    #: JOBS_RENDERER_LIMITS: the most jobs of a renderer that run at once across the fleet
    renderer_limits: dict[str, int] = field(default_factory=dict, hash=False)

    @property
    def heartbeat_seconds(self) -> float:
        # A third of the lease: two heartbeats may be missed before a job is reclaimed.
        return max(self.lease_seconds / 3, 0.05)

    @property
    def store_location(self) -> str:
        """The store URL if one is set, else the jobs directory."""
        return self.store_url or str(self.jobs_dir)


def load_settings(jobs_dir: str | os.PathLike | None = None) -> Settings:
    """Settings from JOBS_* environment variables; `jobs_dir` overrides JOBS_DIR."""
    return Settings(
        jobs_dir=Path(jobs_dir or os.environ.get("JOBS_DIR") or ".jobs"),
        store_url=os.environ.get("JOBS_STORE_URL") or None,
        lease_seconds=env_number("JOBS_LEASE_SECONDS", 30.0, 0.1),
        max_attempts=int(env_number("JOBS_MAX_ATTEMPTS", 3, 1)),
        renderer=os.environ.get("JOBS_RENDERER") or "axonometric",
        retry_backoff_seconds=env_number("JOBS_RETRY_BACKOFF_SECONDS", 2.0, 0.0),
        renderer_limits=parse_renderer_limits(os.environ.get(LIMITS_VARIABLE, "")),
    )


@dataclass(frozen=True)
class ArtifactSettings:
    """Where renders are kept (jobs_core.artifacts): in the job store, or in an S3-compatible bucket."""

    #: JOBS_ARTIFACTS_URL, `s3://bucket/prefix`; None keeps renders in the job store
    url: str | None
    #: JOBS_S3_ENDPOINT_URL: a service other than AWS (MinIO, Supabase Storage, Cloudflare R2 ...)
    endpoint_url: str | None
    #: JOBS_S3_PROXY: the API streams renders itself instead of redirecting to a presigned URL
    proxy: bool
    #: JOBS_S3_URL_SECONDS: how long a presigned URL works
    link_seconds: float


#: SigV4 presigned URLs work for at most 7 days
MAX_LINK_SECONDS = 7 * 24 * 3600


def env_flag(name: str, default: bool = False) -> bool:
    """A yes/no environment variable: 1/true/yes/on or 0/false/no/off (default when unset)."""
    raw = os.environ.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise InvalidInput(f"{name}={raw!r} must be 1 or 0 (yes or no).")


def load_artifact_settings() -> ArtifactSettings:
    """Artifact settings from JOBS_ARTIFACTS_URL and JOBS_S3_* (see the README)."""
    link_seconds = env_number("JOBS_S3_URL_SECONDS", 300.0, 1.0)
    if link_seconds > MAX_LINK_SECONDS:
        raise InvalidInput(f"JOBS_S3_URL_SECONDS={link_seconds:g} is too long: a presigned URL works for at most "
                           f"{MAX_LINK_SECONDS} seconds (7 days).")
    return ArtifactSettings(
        url=os.environ.get("JOBS_ARTIFACTS_URL", "").strip() or None,
        endpoint_url=os.environ.get("JOBS_S3_ENDPOINT_URL", "").strip() or None,
        proxy=env_flag("JOBS_S3_PROXY"),
        link_seconds=link_seconds,
    )
