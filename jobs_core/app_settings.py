"""How the Streamlit app runs: its settings from the environment, read where the runtime starts."""
from __future__ import annotations

from dataclasses import dataclass

from .config import env_number, load_settings


@dataclass(frozen=True)
class AppSettings:
    """The store the app uses and the JOBS_APP_* settings (frozen: the app caches its runtime on them)."""

    #: JOBS_STORE_URL, else JOBS_DIR, else ./.jobs
    store_location: str
    #: threads in the app's own worker pool; 0 = external `python -m jobs_core worker` processes only
    workers: int = 1
    #: interval of the render page's live status refresh
    poll_seconds: float = 0.5
    #: how long the render page polls before it asks whether to keep waiting
    max_wait_seconds: float = 120.0


def load_app_settings() -> AppSettings:
    """The app's settings from JOBS_STORE_URL/JOBS_DIR and JOBS_APP_WORKERS, JOBS_APP_POLL_SECONDS,
    JOBS_APP_MAX_WAIT_SECONDS; InvalidInput with one sentence for a bad value."""
    return AppSettings(
        store_location=load_settings().store_location,
        workers=int(env_number("JOBS_APP_WORKERS", 1, 0)),
        poll_seconds=env_number("JOBS_APP_POLL_SECONDS", 0.5, 0.2),
        max_wait_seconds=env_number("JOBS_APP_MAX_WAIT_SECONDS", 120.0, 1.0),
    )
