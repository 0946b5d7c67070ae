"""Colours and facade rhythm from the brief: material, palette, window ratio, building type."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...models import ConceptInputs

RGB = tuple[int, int, int]

MATERIALS: dict[str, RGB] = {
    "concrete": (196, 193, 186), "brick": (170, 92, 66), "timber": (190, 146, 98),
    "glass": (150, 178, 196), "stone": (214, 204, 184), "metal": (158, 164, 170),
}
# Facade module (window bay) per material, in metres: brick and timber are finer-grained.
BAYS = {"concrete": 3.0, "brick": 2.7, "timber": 2.4, "glass": 1.5, "stone": 3.3, "metal": 3.6}
SHOPFRONT_TYPES = ("mixed-use", "retail", "commercial", "office", "hotel", "civic", "cultural")


@dataclass(frozen=True)
class PaletteColours:
    paper: RGB
    ground: RGB
    roof: RGB
    tint: tuple[float, float, float]  # multiplies the material colour
    foliage: RGB
    lighten: float = 0.0  # pastel: mix walls towards white


PALETTES: dict[str, PaletteColours] = {
    "warm": PaletteColours((250, 246, 238), (228, 221, 203), (156, 92, 68), (1.04, 1.0, 0.93), (118, 146, 92)),
    "cool": PaletteColours((244, 247, 250), (218, 225, 229), (84, 100, 120), (0.93, 0.99, 1.06), (96, 140, 120)),
    "monochrome": PaletteColours((252, 252, 252), (228, 228, 228), (92, 92, 96), (1.0, 1.0, 1.0), (150, 150, 150)),
    "earth": PaletteColours((246, 240, 226), (214, 203, 176), (118, 92, 62), (1.0, 0.97, 0.88), (112, 128, 78)),
    "pastel": PaletteColours((252, 248, 250), (234, 230, 236), (200, 150, 170), (1.0, 0.97, 1.02), (160, 196, 160),
                             lighten=0.38),
}


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def shade(colour: RGB, factor: float) -> RGB:
    return (min(255, round(colour[0] * factor)), min(255, round(colour[1] * factor)),
            min(255, round(colour[2] * factor)))


@dataclass(frozen=True)
class Style:
    paper: RGB
    ground: RGB
    wall: RGB
    roof: RGB
    glass: RGB
    frame: RGB
    foliage: RGB
    bay: float
    window_width: float  # share of a bay
    window_height: float  # share of a floor
    shopfront: bool
    material: str

    @classmethod
    def of(cls, concept: ConceptInputs) -> Style:
        palette = PALETTES[concept.palette]
        base = MATERIALS[concept.material]
        wall = tuple(min(255, round(c * t)) for c, t in zip(base, palette.tint, strict=True))
        if concept.palette == "monochrome":
            grey = round(0.3 * wall[0] + 0.59 * wall[1] + 0.11 * wall[2])
            wall = (grey, grey, grey)
        wall = mix(wall, (255, 255, 255), palette.lighten)
        glass = (176, 196, 210) if concept.palette != "monochrome" else (118, 122, 128)
        glass = mix(glass, palette.paper, palette.lighten * 0.5)
        # window_ratio = width share x height share; taller windows first, then wider.
        height = 0.4 + 0.4 * concept.window_ratio
        width = min(0.94, concept.window_ratio / height)
        return cls(palette.paper, palette.ground, wall, palette.roof, glass, (70, 74, 80), palette.foliage,
                   BAYS[concept.material], width, height,
                   concept.building_type.lower() in SHOPFRONT_TYPES, concept.material)


SUN = (-0.32, 0.62, 0.72)  # towards the sun: front lit, right side in shade, shadows fall back-right
AMBIENT = 0.62


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float]:
    n = math.sqrt(sum(c * c for c in v))
    return (v[0] / n, v[1] / n, v[2] / n)


SUN_DIR = _unit(SUN)


def light(normal: tuple[float, float, float]) -> float:
    """Lambert shading of a face: ambient light plus the share of direct sun it turns towards."""
    return AMBIENT + (1 - AMBIENT) * max(0.0, sum(a * b for a, b in zip(normal, SUN_DIR, strict=True)))
