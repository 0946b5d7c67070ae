"""Renderers: turn (conceptInputs, renderType) into a PNG, reporting progress as they go.

A renderer calls `progress(percent, stage)` between stages; that call raises JobCanceled (or
WorkerStopping / LeaseLost) when the render must stop, so cancellation is honoured at the next
stage boundary without the renderer knowing about jobs or stores.
"""
from __future__ import annotations

import importlib
import os
import threading
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
    size: int | None = None  # long side in pixels; None: the renderer's default (JOBS_RENDER_SIZE)


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
_LOADED: list[bool] = []
_LOADING = threading.RLock()  # worker threads ask for renderers at once: load exactly once, fully


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
    """Import the built-in renderers, then the plugin modules named in JOBS_RENDERER_MODULES.

    JOBS_RENDERER_MODULES is a comma-separated list of importable modules that call `register()`
    when imported (extra renderers, or test renderers that block on a real condition).
    """
    with _LOADING:
        if _LOADED:
            return
        _LOADED.append(True)  # set first: a plugin that fails to import is reported once, not per job
        from . import automatic1111, axonometric, noop, openai_images  # noqa: F401  (registration on import)

        for module in filter(None, (name.strip() for name in os.environ.get("JOBS_RENDERER_MODULES", "").split(","))):
            try:
                importlib.import_module(module)
            except ImportError as error:
                raise InvalidInput(
                    f"JOBS_RENDERER_MODULES names {module!r}, which cannot be imported ({error}).") from None
