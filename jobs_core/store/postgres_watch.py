"""PostgreSQL's watch over every job: its NOTIFY change channel, with a safety poll.

PostgresJobStore sends a notification after each committed change, from whichever process made it
("project job status", in batches); `on_change` hands them to us on its listener thread. They
are best effort (a batch can fail to send, the LISTEN connection can drop and reconnect), so the
watch also asks every SAFETY_POLL_SECONDS for the jobs updated since the newest change it saw
(the updated_at index): a lost notification delays a change, it does not lose it. A deletion is
not in that answer: one whose notification was lost stays in a view until the job is reported
again or the view is rebuilt.

With mode "poll" notifications are not listened to, and the poll runs every `poll_seconds`.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..errors import InvalidInput, JobsError
from ..models import utcnow
from .base import OnChange

if TYPE_CHECKING:
    from .postgres import PostgresJobStore

log = logging.getLogger("jobs_core.store.postgres")

SAFETY_POLL_SECONDS = 30.0
#: ask again from a little before the newest change seen: a transaction that committed late
#: carries an updatedAt older than rows already seen (and writers' clocks differ a little).
OVERLAP = timedelta(seconds=5)


class PostgresJobWatch:
    """`watch_jobs` for PostgreSQL: notifications as they come, plus a poll in case one was lost."""

    def __init__(self, store: PostgresJobStore, on_change: OnChange, *, poll_seconds: float = 2.0,
                 mode: str = "auto", safety_seconds: float = SAFETY_POLL_SECONDS) -> None:
        if mode not in ("auto", "poll"):
            raise InvalidInput(f"The watch mode must be 'auto' or 'poll', not {mode!r}.")
        self.store, self.on_change = store, on_change
        self.listening = mode == "auto"
        self.polling = not self.listening
        self.interval = safety_seconds if self.listening else poll_seconds
        self.since: datetime = utcnow() - OVERLAP  # what changed before is in the caller's scan
        self._seen: dict[str, datetime] = {}  # the last answer's jobs: asked again, they are not news
        self._stop = threading.Event()
        # on_change returns once changes committed from now on will be heard
        self._stop_hearing = store.on_change(self._heard) if self.listening else None
        self._thread = threading.Thread(target=self._run, name="jobs-pg-watch-poll", daemon=True)
        self._thread.start()

    def describe(self) -> str:
        if self.listening:
            return (f"PostgreSQL notifies each committed change (and is asked for changed jobs every "
                    f"{self.interval:g} s in case a notification was lost)")
        return f"PostgreSQL is asked for changed jobs every {self.interval:g} s"

    def _heard(self, project_id: str, job_id: str, status: str) -> None:
        if project_id and job_id and not self._stop.is_set():
            self.on_change({self.store.record_key(project_id, job_id)})

    def poll_once(self) -> set[str]:
        """Report the jobs changed since the last answer (those in the overlap are asked again)."""
        jobs = self.store.jobs_updated_since(self.since)
        if jobs:
            self.since = max(self.since, max(job.updated_at for job in jobs) - OVERLAP)
        seen = {self.store.record_key(job.project_id, job.job_id): job.updated_at for job in jobs}
        keys = {key for key, updated_at in seen.items() if self._seen.get(key) != updated_at}
        self._seen = seen
        if keys and not self._stop.is_set():
            self.on_change(keys)
        return keys

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except JobsError as error:  # the database is briefly unavailable: try again next time
                log.warning("could not ask for changed jobs: %s", error)

    def close(self) -> None:
        self._stop.set()
        if self._stop_hearing is not None:
            self._stop_hearing()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
