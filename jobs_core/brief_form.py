"""What the brief form offers and checks, read from the `ConceptInputs` model itself."""
from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .errors import InvalidInput
from .ids import validate_id
from .models import ConceptInputs, buildable_problems, explain
from .renderers import get_renderer
from .service import JobService

#: Ready-made briefs a person can start from (values for ConceptInputs fields).
EXAMPLE_BRIEFS: dict[str, dict[str, Any]] = {
    "Timber housing block": {
        "title": "Timber housing block", "description": "Five storeys of cross-laminated timber flats "
        "around a shared garden.", "buildingType": "housing", "footprint": "U", "width": 42.0,
        "depth": 30.0, "floors": 5, "floorHeight": 3.1, "roof": "gable", "material": "timber",
        "palette": "earth", "windowRatio": 0.35},
    "Brick school": {
        "title": "Brick primary school", "description": "Two-storey school with a courtyard playground.",
        "buildingType": "school", "footprint": "courtyard", "width": 60.0, "depth": 48.0, "floors": 2,
        "floorHeight": 4.0, "roof": "flat", "material": "brick", "palette": "warm", "windowRatio": 0.3},
    "Glass office tower": {
        "title": "Harbour office tower", "description": "Slender office tower on a compact plot.",
        "buildingType": "office", "footprint": "tower", "width": 40.0, "depth": 40.0, "floors": 24,
        "floorHeight": 3.8, "roof": "flat", "material": "glass", "palette": "cool", "windowRatio": 0.8},
    "Concrete workshop": {
        "title": "Makers' workshop", "description": "Long single-storey workshop with north lights.",
        "buildingType": "industrial", "footprint": "bar", "width": 54.0, "depth": 20.0, "floors": 1,
        "floorHeight": 6.0, "roof": "sawtooth", "material": "concrete", "palette": "monochrome", "windowRatio": 0.25},
}


def field_choices(name: str) -> list[str]:
    """The allowed values of a Literal field of ConceptInputs."""
    annotation = ConceptInputs.model_fields[name].annotation
    return [str(choice) for choice in typing.get_args(annotation)]


def field_bounds(name: str) -> tuple[float | None, float | None]:
    """(minimum, maximum) of a numeric ConceptInputs field, from its ge/le constraints."""
    low = high = None
    for rule in ConceptInputs.model_fields[name].metadata:
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


def field_default(name: str) -> Any:
    return ConceptInputs.model_fields[name].default


def field_max_length(name: str) -> int | None:
    for rule in ConceptInputs.model_fields[name].metadata:
        if getattr(rule, "max_length", None) is not None:
            return rule.max_length
    return None


def render_types(service: JobService) -> list[str]:
    """The render types the service's renderer can draw, in its order (the first is the default)."""
    return list(get_renderer(service.settings.renderer).render_types)


def brief_problems(project_id: str, inputs: Mapping[str, Any]) -> dict[str, str]:
    """Field name (camelCase, or "projectId") -> one sentence saying what is wrong; empty when valid.

    A rule spanning several fields (a courtyard too small, a tower too tall) is filed under the
    first field it names, from the model's own list of rules, never by matching words.
    """
    problems: dict[str, str] = {}
    try:
        validate_id(project_id, "projectId")
    except InvalidInput as error:
        problems["projectId"] = str(error)
    try:
        brief = ConceptInputs.model_validate(dict(inputs), context={"whole": False})
    except ValidationError as error:
        sentences = explain(error, "conceptInputs").rstrip(".").split("; ")
        for item, sentence in zip(error.errors(include_url=False), sentences, strict=False):
            name = str(item["loc"][0]) if item["loc"] else "conceptInputs"
            problems.setdefault(name, sentence.removeprefix("conceptInputs.") + ".")
        return problems
    for fields, sentence in buildable_problems(brief):
        problems.setdefault(fields[0], sentence[0].upper() + sentence[1:] + ".")
    return problems
