"""Test renderers, loaded into worker processes with JOBS_RENDERER_MODULES=gate_renderer.

`gate` holds a job mid-render on a real condition instead of a sleep: it writes its pid to
`{gateDir}/started` and then waits until the file `{gateDir}/open` exists. The gate directory comes
from the job's own brief (`conceptInputs.gateDir`; unknown brief fields are kept), so each test
controls its own jobs. While waiting it reports progress (which also heartbeats and lets the worker
stop or cancel it) unless `conceptInputs.quiet` is true, in which case only the worker's
heartbeat thread keeps the lease alive.

`broken`, `flaky` and `crash` fail in the three ways a renderer can: a non-retryable RenderError,
a retryable one, and an unexpected exception (a bug); `jpeg` returns an image that is not a PNG.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from jobs_core.errors import RenderError
from jobs_core.renderers import ProgressFn, Renderer, RenderResult, RenderTask, register
from jobs_core.renderers.axonometric import RENDER_TYPES
from jobs_core.renderers.noop import _tiny_png

GATE_TIMEOUT_SECONDS = 60.0


class GateRenderer(Renderer):
    name = "gate"
    description = "Waits for {gateDir}/open before finishing (tests only)."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        gate = Path(task.concept_inputs["gateDir"])
        quiet = bool(task.concept_inputs.get("quiet"))
        progress(10, "at the gate")
        with open(gate / "started", "a") as started:
            started.write(f"{os.getpid()} {task.job_id}\n")
        deadline = time.monotonic() + GATE_TIMEOUT_SECONDS
        while not (gate / "open").exists():
            if time.monotonic() > deadline:
                raise RenderError(f"the gate {gate} never opened")
            if not quiet:
                progress(20, "at the gate")  # raises JobCanceled / WorkerStopping / LeaseLost
            time.sleep(0.05)  # a bounded poll for the gate file, not a stand-in for work
        progress(90, "through the gate")
        return RenderResult(png=_tiny_png(), prompt=f"gate {gate.name}")


class BrokenRenderer(Renderer):
    name = "broken"
    description = "Always fails with a non-retryable RenderError (tests only)."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        progress(30, "trying")
        raise RenderError("the brief cannot be drawn: walls intersect", retryable=False)


class FlakyRenderer(Renderer):
    name = "flaky"
    description = "Always fails with a retryable RenderError (tests only)."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        raise RenderError("the provider is busy", retryable=True)


class CrashRenderer(Renderer):
    name = "crash"
    description = "Has a bug: raises ZeroDivisionError (tests only)."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        return RenderResult(png=bytes(1 // len(task.concept_inputs.get("empty", []))))


class JpegRenderer(Renderer):
    name = "jpeg"
    description = "Returns JPEG bytes where a PNG is due (tests only)."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        return RenderResult(png=b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(64) + b"\xff\xd9")


for _renderer in (GateRenderer, BrokenRenderer, FlakyRenderer, CrashRenderer, JpegRenderer):
    register(_renderer.name, _renderer)
