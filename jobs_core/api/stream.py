"""GET /api/jobs/{jobId}/stream: a job's states as server-sent events, until it is final.

    event: job
    id: 1767225600123456-3f2a9c01
    data: {"jobId": "job_...", "status": "processing", "progress": 40, "stage": "drawing facades", ...}

Every event is named `job` (one listener in a browser's EventSource sees them all) and carries the
job JSON exactly as GET /api/jobs/{jobId} answers under `job`. One is sent on every change of
status, progress, stage or attempt (not on heartbeats); the stream ends after the final state.
Its `id` is the job's updatedAt in microseconds (so ids rise) and a digest of what the event
showed: a client that reconnects with `Last-Event-ID` is sent the current state only if that
changed since, and one that already saw the final state gets 204 No Content, which tells
EventSource to stop reconnecting. (Replicate names its events `output`/`logs`/`done` and fal
sends unnamed status events; a job has one kind of news, its state, hence one name.)

Changes made by any process reach the streams through ONE store watch per API process
(`JobStore.watch_jobs`: the file store's watcher, PostgreSQL's notifications, the memory store's
own writes), started by the first stream and fanned out on the event loop: a stream re-reads its
job only when the watch names it, and every `safety_seconds` in case a notification was lost. So
open streams cost little while their jobs are quiet, and a change to a job nobody follows costs
the watch one dictionary lookup (bench/stream_bench.py: creates and polls with 1,000 open streams).

The response is sse-starlette's: it sends the keep-alive comment every 15 s, ends the stream when
the client goes away (its task is cancelled: our `finally` unsubscribes), and ends open streams
when uvicorn is told to stop, which otherwise waits for every open response before it exits.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial

import anyio
from fastapi.concurrency import run_in_threadpool
from sse_starlette import EventSourceResponse, ServerSentEvent

from ..errors import STORE_FAULTS, JobNotFound, JobsError
from ..models import Job
from ..store import JobStore
from ..store.base import JobWatch
from .schemas import ApiJob

log = logging.getLogger("jobs_core.api")

EVENT_NAME = "job"
KEEPALIVE_SECONDS = 15.0
#: how often an open stream re-reads its job although the watch said nothing: the last net, since the
#: watches have their own (PostgreSQL's asks for changed jobs every 30 s; a file watcher that cannot
#: start polls instead); 1,000 streams make 33 reads a second (bench/stream_bench.py)
SAFETY_SECONDS = 30.0
#: how often streams re-read their jobs while no watch could be started (they poll instead)
UNWATCHED_SECONDS = 2.0
#: once uvicorn is told to stop, how long open streams have to end by themselves
STOP_GRACE_SECONDS = 2.0


def fingerprint(job: Job) -> str:
    """What an event shows, as 8 hex digits: equal for two states a client would not tell apart."""
    seen = f"{job.status.value}\n{job.progress}\n{job.stage}\n{job.attempts}"
    return hashlib.blake2s(seen.encode(), digest_size=4).hexdigest()


def event_id(job: Job) -> str:
    return f"{int(job.updated_at.timestamp() * 1_000_000)}-{fingerprint(job)}"


def seen_fingerprint(last_event_id: str | None) -> str | None:
    """The fingerprint inside a Last-Event-ID we sent; None for anything else (send the state)."""
    _, dash, digest = (last_event_id or "").strip().rpartition("-")
    return digest if dash and len(digest) == 8 else None


def job_event(job: ApiJob) -> ServerSentEvent:
    return ServerSentEvent(data=job.model_dump_json(), event=EVENT_NAME, id=event_id(job), sep="\n")


@dataclass(eq=False)
class _Subscriber:
    key: str
    loop: asyncio.AbstractEventLoop
    changed: asyncio.Event
    stopping: anyio.Event  # set by sse-starlette when the server is told to stop

    def wake(self) -> None:  # any thread
        try:
            self.loop.call_soon_threadsafe(self.changed.set)
        except RuntimeError:  # the loop is closed: the server stopped, the stream with it
            pass


class StreamHub:
    """The open streams of one API process and the one store watch that wakes them."""

    def __init__(self, store: JobStore, answer: Callable[[Job], ApiJob], *, safety_seconds: float = SAFETY_SECONDS,
                 keepalive_seconds: float = KEEPALIVE_SECONDS, poll_seconds: float = UNWATCHED_SECONDS) -> None:
        self.store = store
        self.answer = answer  # the job as GET answers it (queue position, estimate): only for an event
        self.safety_seconds = safety_seconds
        self.keepalive_seconds = keepalive_seconds
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()  # guards _subscribers: the watch's thread reads, the loop writes
        self._subscribers: dict[str, set[_Subscriber]] = {}
        self._watch: JobWatch | None = None
        self._starting: asyncio.Lock | None = None
        self._closed = False

    @property
    def open_streams(self) -> int:
        with self._lock:
            return sum(len(subscribers) for subscribers in self._subscribers.values())

    @property
    def watching(self) -> bool:
        return self._watch is not None

    # -- the watch -------------------------------------------------------------------------------
    async def _ensure_watching(self) -> None:
        """Start the watch on first use (in a thread: PostgreSQL's waits until it listens)."""
        if self._watch is not None or self._closed:
            return
        self._starting = self._starting or asyncio.Lock()
        async with self._starting:
            if self._watch is None and not self._closed:
                try:
                    self._watch = await run_in_threadpool(
                        self.store.watch_jobs, self._on_change, poll_seconds=self.poll_seconds)
                except (JobsError, OSError) as error:  # streams poll meanwhile; the next stream tries again
                    log.warning("job streams cannot watch the store (%s); they re-read every %g s",
                                error, self.poll_seconds)

    def _on_change(self, keys: set[str]) -> None:
        """The watch's thread: wake the streams of these jobs (most changes concern none)."""
        with self._lock:
            woken = [subscriber for key in keys for subscriber in self._subscribers.get(key, ())]
        for subscriber in woken:
            subscriber.wake()

    def close(self) -> None:
        self._closed = True
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.close()

    # -- streams ---------------------------------------------------------------------------------
    def _subscribe(self, key: str, stopping: anyio.Event) -> _Subscriber:
        subscriber = _Subscriber(key, asyncio.get_running_loop(), asyncio.Event(), stopping)
        with self._lock:
            self._subscribers.setdefault(key, set()).add(subscriber)
        return subscriber

    def _unsubscribe(self, subscriber: _Subscriber) -> None:
        with self._lock:
            subscribers = self._subscribers.get(subscriber.key, set())
            subscribers.discard(subscriber)
            if not subscribers:
                self._subscribers.pop(subscriber.key, None)

    def response(self, job: Job, seen: str | None) -> EventSourceResponse:
        """The stream of `job` (see `states`), as a response."""
        stopping = anyio.Event()
        # A grace period after `stopping`: the stream then ends cleanly, not cut off mid-response.
        return EventSourceResponse(self.states(job, seen, stopping), ping=self.keepalive_seconds, sep="\n",
                                 shutdown_event=stopping, shutdown_grace_period=STOP_GRACE_SECONDS)

    async def states(self, job: Job, seen: str | None, stopping: anyio.Event) -> AsyncIterator[ServerSentEvent]:
        """The job's events from now on: its state unless `seen` (a fingerprint) shows it, then one
        per change, the last one final. Ends early when the job is deleted or the server stops."""
        subscriber = self._subscribe(self.store.record_key(job.project_id, job.job_id), stopping)
        read = partial(run_in_threadpool, self.store.get, job.job_id, job.project_id)
        try:
            await self._ensure_watching()
            job = await read()  # again, now that changes are heard: none falls between
            while True:
                if fingerprint(job) != seen:
                    seen = fingerprint(job)
                    yield job_event(await run_in_threadpool(self.answer, job))
                if job.status.is_final:
                    return
                await self._wait(subscriber)
                if stopping.is_set():
                    return  # the client reconnects with Last-Event-ID, to another process or later
                try:
                    job = await read()  # the document only: most re-reads find nothing to send
                except JobNotFound:
                    return  # deleted: a reconnect is answered 404
                except STORE_FAULTS as error:  # unavailable for a moment: try again at the next change
                    log.warning("job stream could not read %s: %s", subscriber.key, error)
        finally:
            self._unsubscribe(subscriber)

    async def _wait(self, subscriber: _Subscriber) -> None:
        """Until the watch names the job, the server stops, or the safety interval passes."""
        base = self.safety_seconds if self.watching else self.poll_seconds
        # spread the safety re-reads of many streams opened together over time
        with anyio.move_on_after(base * random.uniform(0.9, 1.1)):
            async with anyio.create_task_group() as first:
                for event in (subscriber.changed, subscriber.stopping):
                    first.start_soon(_cancel_when_set, event, first.cancel_scope)
        subscriber.changed.clear()


async def _cancel_when_set(event: asyncio.Event | anyio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()
