"""`noop`: a renderer that encodes a 1x1 PNG at once, for benchmarks of the job machinery itself."""
from __future__ import annotations

import struct
import zlib

from . import ProgressFn, Renderer, RenderResult, RenderTask, register
from .axonometric import RENDER_TYPES


def _tiny_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\xff\xff")) + chunk(b"IEND", b"")


_PNG = _tiny_png()  # always the same bytes: encoded once (zlib sets up ~0.2 ms of state per call)


class NoopRenderer(Renderer):
    name = "noop"
    description = "Encodes a 1x1 white PNG at once: measures the job machinery, not drawing."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        # No progress report: a no-op job is submit, claim and complete, as the RQ peer's is
        # enqueue, dequeue and finish. A report costs one job write (bench/core_bench.py prints it).
        return RenderResult(png=_PNG)


register("noop", NoopRenderer)
