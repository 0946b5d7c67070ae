"""The direct render: the renderer in the caller's thread, with no job. The old way, kept for comparison."""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from .ids import validate_id
from .models import ConceptInputs
from .renderers import RenderResult, RenderTask, get_renderer
from .service import JobService


def render_directly(service: JobService, project_id: str, render_type: str, inputs: Mapping[str, Any],
                    progress: Callable[[int, str], None], renderer_name: str | None = None
                    ) -> tuple[RenderResult, float]:
    """Run a renderer (the service's unless named) on a brief and wait for it: (result, seconds).
    Nothing is stored."""
    renderer = get_renderer(renderer_name or service.settings.renderer)
    renderer.check_render_type(render_type)
    concept = ConceptInputs.model_validate(dict(inputs))
    task = RenderTask("direct", validate_id(project_id, "projectId"), render_type, concept.model_dump())
    started = time.perf_counter()
    result = renderer.render(task, progress)
    return result, time.perf_counter() - started
