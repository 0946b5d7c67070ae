"""Renderers: turn (conceptInputs, renderType) into a PNG, reporting progress as they go.

A renderer calls `progress(percent, stage)` between stages; that call raises JobCanceled (or
WorkerStopping / LeaseLost) when the render must stop, so cancellation is honoured at the next
stage boundary without the renderer knowing about jobs or stores.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput

ProgressFn = Callable[[int, str], None]


@dataclass(frozen=True)
class RenderTask:
    job_id: str
    project_id: str
    render_type: str
    concept_inputs: dict[str, Any]
    size: int = 1024


@dataclass
class RenderResult:
    png: bytes
    prompt: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Renderer(ABC):
    name: str = ""
    description: str = ""
    render_types: tuple[str, ...] = ()

    def configuration_problem(self) -> str | None:
        """None when the renderer can run here, else what is missing ("OPENAI_API_KEY is not set")."""
        return None

    def prompt(self, task: RenderTask) -> str | None:
        """The text sent to an AI provider (stored with the job); None for drawing renderers."""
        return None

    def check_render_type(self, render_type: str) -> None:
        if render_type not in self.render_types:
            valid = ", ".join(self.render_types)
            raise InvalidInput(f"renderType '{render_type}' is not one of: {valid}.")

    @abstractmethod
    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        """Draw the image. Raise RenderError(message, retryable=...) when it cannot."""


_FACTORIES: dict[str, Callable[[], Renderer]] = {}


def register(name: str, factory: Callable[[], Renderer]) -> None:
    _FACTORIES[name] = factory


def renderer_names() -> list[str]:
    _load_builtins()
    return sorted(_FACTORIES)


def get_renderer(name: str) -> Renderer:
    """The renderer registered as `name`; InvalidInput naming the valid ones otherwise."""
    _load_builtins()
    if name not in _FACTORIES:
        raise InvalidInput(f"Unknown renderer '{name}'; choose one of: {', '.join(sorted(_FACTORIES))}.")
    return _FACTORIES[name]()


def _load_builtins() -> None:
    # Importing a renderer module registers it; importing one directly (as tests and benches do)
    # must not hide the others, so check for the whole set rather than "any registered".
    from . import automatic1111, axonometric, noop, openai_images  # noqa: F401  (registration on import)
