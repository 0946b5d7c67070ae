"""Helpers for API tests: a real uvicorn server on a free 127.0.0.1 port, and a test renderer
whose render waits at a gate the test opens (so "still running" is a real state, not a sleep)."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from jobs_core.api.http_limits import LimitedHttpToolsProtocol
from jobs_core.errors import RenderError
from jobs_core.renderers import ProgressFn, Renderer, RenderResult, RenderTask, register, renderer_names
from jobs_core.renderers.axonometric import RENDER_TYPES
from jobs_core.renderers.noop import _tiny_png


@contextmanager
def serve_in_thread(app, startup_timeout: float = 15.0) -> Iterator[str]:
    """Run `app` under uvicorn in a thread; yields its base URL; shuts it down (lifespan included)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False,
                                           http=LimitedHttpToolsProtocol))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gate:
    """Shared by every GatedRenderer: which jobs started rendering, and the gate they wait at."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.started: list[str] = []
        self.lock = threading.Lock()

    def reset(self) -> None:
        self.opened.clear()
        with self.lock:
            self.started.clear()

    def renders_of(self, job_id: str) -> int:
        with self.lock:
            return self.started.count(job_id)


GATE = Gate()


class GatedRenderer(Renderer):
    """Renders a 1x1 PNG once the test opens GATE; reports progress while it waits, so a cancel or
    a shutdown reaches it, as with a real renderer between stages."""

    name = "test-gated"
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        with GATE.lock:
            GATE.started.append(task.job_id)
        progress(10, "waiting at the gate")
        deadline = time.monotonic() + 30  # bounded: a forgotten gate fails the job, not the suite
        while not GATE.opened.wait(0.1):
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            progress(10, "waiting at the gate")
        progress(90, "encoding")
        return RenderResult(png=_tiny_png())


class FlakyRenderer(Renderer):
    """Fails its first attempt at each job with a retryable error, then renders."""

    name = "test-flaky"
    render_types = RENDER_TYPES
    attempts: dict[str, int] = {}

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        seen = self.attempts[task.job_id] = self.attempts.get(task.job_id, 0) + 1
        progress(20, "calling the provider")
        if seen == 1:
            raise RenderError("The provider is busy (HTTP 503); trying again.", retryable=True)
        return RenderResult(png=_tiny_png())


renderer_names()  # load the built-in renderers first: registering before would hide them
register(GatedRenderer.name, GatedRenderer)
register(FlakyRenderer.name, FlakyRenderer)
