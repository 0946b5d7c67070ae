"""`axonometric`: the embedded offline renderer. Draws the brief as an architectural drawing.

Four views of one massing model (see `drawing/`): `axonometric`, `exploded-axonometric`, `plan`
(ground floor) and `elevation` (front). Deterministic: the same brief gives the same bytes; drawn at
2x and box-filtered down for anti-aliasing. Progress is reported between the real stages, and each
report is where a cancel or a worker shutdown stops the render.
"""
from __future__ import annotations

import os

from ..errors import InvalidInput, RenderError
from ..models import ConceptInputs, parse_concept
from . import ProgressFn, Renderer, RenderResult, RenderTask, register
from .drawing.plan import PlanView
from .drawing.scene import View3D
from .drawing.sheet import Sheet
from .drawing.style import Style

RENDER_TYPES = ("axonometric", "exploded-axonometric", "plan", "elevation")
MIN_SIZE, MAX_SIZE = 128, 4096


def render_size(requested: int | None = None) -> int:
    """The long side in pixels: the task's, else JOBS_RENDER_SIZE, else 1024; refused if absurd."""
    raw = requested if requested is not None else os.environ.get("JOBS_RENDER_SIZE") or 1024
    try:
        size = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"JOBS_RENDER_SIZE={raw!r} is not a whole number of pixels.") from None
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise InvalidInput(f"The render size must be between {MIN_SIZE} and {MAX_SIZE} pixels, not {size}.")
    return size


def draw(concept: ConceptInputs, render_type: str, project_id: str, size: int,
         progress: ProgressFn = lambda percent, stage: None) -> bytes:
    """The whole drawing as PNG bytes, calling `progress` between stages."""
    style = Style.of(concept)
    sheet = Sheet(size, style.paper)
    view = PlanView(concept, style, sheet) if render_type == "plan" else View3D(concept, style, sheet, render_type)
    progress(15, "massing")
    view.build_massing()
    progress(35, "facades")
    view.build_facades()
    progress(60, "shading")
    view.paint()
    sheet.frame_and_title(concept, project_id, render_type, view.scale_label)
    progress(80, "encoding")
    return sheet.encode()


class AxonometricRenderer(Renderer):
    name = "axonometric"
    description = "Draws the brief itself, offline: the same brief always gives the same drawing; no key, no network."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        progress(5, "validating")
        self.check_render_type(task.render_type)
        try:
            concept = parse_concept(task.concept_inputs)
            size = render_size(task.size)
        except InvalidInput as error:  # a brief stored before today's rules: no retry will fix it
            raise RenderError(str(error), retryable=False) from None
        png = draw(concept, task.render_type, task.project_id, size, progress)
        progress(95, "saving")
        return RenderResult(png=png)


register("axonometric", AxonometricRenderer)
