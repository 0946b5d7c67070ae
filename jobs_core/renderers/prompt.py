"""The text an AI image provider is asked: composed from the brief and the render type.

Readable on purpose: it is stored with the job (`job.prompt`) so a user sees what was asked.
Deterministic: the same brief and render type give the same prompt.
"""
from __future__ import annotations

from typing import Any

from ..models import ConceptInputs

VIEWS = {
    "axonometric": "an axonometric architectural drawing (parallel projection from above, 30 degrees), "
                   "showing two facades and the roof",
    "exploded-axonometric": "an exploded axonometric architectural diagram: the floors pulled apart "
                            "vertically with dashed guide lines, each floor plate visible",
    "plan": "an architectural ground floor plan, orthographic top view: black poche walls, window openings, "
            "structural grid with bubbles, stair core, dimension lines, north arrow",
    "elevation": "an architectural front elevation, orthographic with no perspective: floor levels, "
                 "window openings, roof profile, ground line and a person for scale",
}
STYLE = ("Clean presentation drawing on white paper, crisp ink lines, flat colour washes, soft cast shadows, "
         "a title block. No photographic background, no watermark.")
NEGATIVE = "photograph, perspective distortion, blurry, lowres, watermark, signature, garbled text, people crowd"
MAX_EXTRA_CHARS = 400


def compose(concept_inputs: dict[str, Any], render_type: str) -> str:
    """One paragraph: the view, the building, its finish, the brief's own words, any extra fields."""
    concept = ConceptInputs.model_validate(concept_inputs)
    storeys = f"{concept.floors}-storey" if concept.floors > 1 else "single-storey"
    footprint = {"bar": "a rectangular bar footprint", "L": "an L-shaped footprint", "U": "a U-shaped footprint",
                 "courtyard": "a courtyard footprint (wings around an open court)",
                 "tower": "a tower on a podium"}[concept.footprint]
    parts = [
        f"\"{concept.title}\": a {storeys} {concept.building_type} building on {footprint} of "
        f"{concept.width:g} m by {concept.depth:g} m, floor-to-floor height {concept.floor_height:g} m "
        f"({concept.height:g} m to the eaves), {concept.roof} roof, {concept.material} facade with about "
        f"{round(concept.window_ratio * 100)}% glazing, {concept.palette} colour palette.",
        f"Shown as {VIEWS.get(render_type, render_type)}.",
    ]
    if concept.description:
        parts.append(concept.description.rstrip(".") + ".")
    extras = _extras(concept)
    if extras:
        parts.append(f"Also: {extras}.")
    parts.append(STYLE)
    return " ".join(parts)


def _extras(concept: ConceptInputs) -> str:
    """Unknown brief fields, as 'key: value' pairs in a stable order, bounded in length."""
    items = []
    for key in sorted(concept.model_extra or {}):
        value = concept.model_extra[key]
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        elif isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
        items.append(f"{key}: {value}")
    text = "; ".join(items)
    return text if len(text) <= MAX_EXTRA_CHARS else text[:MAX_EXTRA_CHARS - 1].rstrip() + "…"
