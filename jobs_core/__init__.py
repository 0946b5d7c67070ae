"""concept render jobs: the library. Importable without Streamlit."""
from .errors import (
                     InvalidInput,
                     JobCanceled,
                     JobNotFound,
                     JobsError,
                     LeaseLost,
                     RenderError,
                     StoreUnavailable,
                     StoreWriteError,
                     TransitionConflict,
                     UnreadableJob,
)
from .models import ConceptInputs, Job, JobStatus, RenderRequest
from .service import JobService
from .store import FileJobStore, JobStore, open_store
from .worker import Worker

__all__ = ["ConceptInputs", "FileJobStore", "InvalidInput", "Job", "JobCanceled", "JobNotFound",
           "JobService", "JobStatus", "JobStore", "JobsError", "LeaseLost", "RenderError",
           "RenderRequest", "StoreUnavailable", "StoreWriteError", "TransitionConflict", "UnreadableJob", "Worker",
           "open_store"]
