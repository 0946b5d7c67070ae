"""Exceptions a caller can act on. Every message is a sentence a person can read."""
from __future__ import annotations


class JobsError(Exception):
    """Base class of every error jobs_core raises on purpose."""


class InvalidInput(JobsError, ValueError):
    """Input refused before it touched the store (bad id, bad brief, bad option)."""


class JobNotFound(JobsError, LookupError):
    """No job, concept or image with that id."""


class UnreadableJob(JobsError):
    """A file in the store exists but is not a job document (truncated, empty, foreign)."""


class TransitionConflict(JobsError):
    """A compare-and-set found the job in another state than the one it expected.

    Another process got there first; the caller's view is stale and nothing was written.
    """


class StoreWriteError(JobsError, OSError):
    """The store could not write (disk full, permission denied); the previous state is intact."""


class StoreUnavailable(JobsError):
    """The store cannot be reached for now (PostgreSQL down, connections refused); nothing was
    written by the failed call."""


#: Faults of the store, not of a job: a job they interrupt is handed back, never failed for them.
STORE_FAULTS = (StoreWriteError, StoreUnavailable)


class RendersUnavailable(JobsError):
    """The bucket that keeps renders (JOBS_ARTIFACTS_URL) refused a call or could not be reached;
    nothing was written by it. Not the job's fault: a render that could not be saved is a
    retryable failure (it spends an attempt, so a bucket refused for good does not re-render, and
    bill an AI provider, without end)."""


class JobCanceled(JobsError):
    """Raised inside a render when the job was canceled: the renderer must stop."""


class LeaseLost(JobsError):
    """Raised inside a render when this worker no longer owns the job (reclaimed elsewhere)."""


class WorkerStopping(JobsError):
    """Raised inside a render when the worker shuts down: the job goes back to pending."""


class RenderError(JobsError):
    """A renderer could not produce an image. `retryable` says whether another attempt may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ProviderRateLimited(RenderError):
    """The AI provider answered 429 with Retry-After: its renderer pauses fleet-wide for `seconds`
    and the job goes back to the queue, its attempt unspent (see limits.py)."""

    def __init__(self, message: str, *, seconds: float) -> None:
        super().__init__(message, retryable=True)
        self.seconds = seconds
