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
