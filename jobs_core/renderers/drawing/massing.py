"""The building as axis-aligned blocks (one wing over a run of floors) and their faces in 3D.

Coordinates are metres: x along the width (left to right), y along the depth (back to front),
z up. The front facade is the one at the largest y.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from ...models import ConceptInputs

Vec3 = tuple[float, float, float]

ROOF_PITCH = math.radians(30)  # gable and hip
SHED_PITCH = math.radians(12)


@dataclass(frozen=True)
class Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def depth(self) -> float:
        return self.y1 - self.y0

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


@dataclass(frozen=True)
class Face:
    """A planar convex polygon with its outward normal; `role` picks its colour."""

    points: tuple[Vec3, ...]
    normal: Vec3
    role: str  # wall | top | roof | gable | glass | slab


@dataclass(frozen=True)
class Block:
    """An axis-aligned box: one wing over a run of floors (or a roof, a plant room, a tree)."""

    rect: Rect
    z0: float
    z1: float
    kind: str = "wing"  # wing | roof | plant | tree
    first_floor: int = 0
    floors: int = 1
    roof: str = "flat"
    roof_height: float = 0.0
    layer: int = 0  # exploded views draw layer by layer, bottom up
    facades: tuple[str, ...] = field(default=("x0", "x1", "y0", "y1"))

    @property
    def top(self) -> float:
        return self.z1 + self.roof_height


def wings(concept: ConceptInputs) -> list[Rect]:
    """The footprint as non-overlapping rectangles covering width x depth."""
    w, d = concept.width, concept.depth
    wing = wing_depth(concept)
    shapes = {
        "bar": [Rect(0, 0, w, d)],
        "L": [Rect(0, 0, w, wing), Rect(0, wing, wing, d)],
        "U": [Rect(0, 0, w, wing), Rect(0, wing, wing, d), Rect(w - wing, wing, w, d)],
        "courtyard": [Rect(0, 0, w, wing), Rect(0, wing, wing, d - wing),
                      Rect(w - wing, wing, w, d - wing), Rect(0, d - wing, w, d)],
        "tower": [Rect(0, 0, w, d)],
    }
    return shapes[concept.footprint]


def wing_depth(concept: ConceptInputs) -> float:
    """How deep a wing of an L, U or courtyard is: daylight reaches ~7 m into a room from each side,
    and the court between two wings stays at least as wide as a wing."""
    return min(14.0, max(3.0, 0.3 * min(concept.width, concept.depth)))


def tower_rect(concept: ConceptInputs) -> Rect:
    """The tower above a podium: the middle of the site, a little over half of each side."""
    w, d = concept.width, concept.depth
    return Rect(w * 0.22, d * 0.22, w * 0.78, d * 0.78)


def entrances(concept: ConceptInputs) -> list[float]:
    """Where the doors are: x positions on the front facade (y = depth), one per front wing."""
    k = wing_depth(concept)
    return {"L": [k / 2], "U": [k / 2, concept.width - k / 2]}.get(concept.footprint, [concept.width / 2])


def podium_floors(concept: ConceptInputs) -> int:
    return 0 if concept.footprint != "tower" or concept.floors < 4 else min(2, concept.floors // 4 + 1)


def outline(concept: ConceptInputs) -> list[list[tuple[float, float]]]:
    """The footprint's boundary loops (outer first; a courtyard has an inner one)."""
    w, d = concept.width, concept.depth
    k = wing_depth(concept)
    loops = {
        "bar": [[(0, 0), (w, 0), (w, d), (0, d)]],
        "tower": [[(0, 0), (w, 0), (w, d), (0, d)]],
        "L": [[(0, 0), (w, 0), (w, k), (k, k), (k, d), (0, d)]],
        "U": [[(0, 0), (w, 0), (w, d), (w - k, d), (w - k, k), (k, k), (k, d), (0, d)]],
        "courtyard": [[(0, 0), (w, 0), (w, d), (0, d)], [(k, k), (k, d - k), (w - k, d - k), (w - k, k)]],
    }
    return loops[concept.footprint]


def roof_rise(rect: Rect, roof: str) -> float:
    span = min(rect.width, rect.depth)
    if roof in ("gable", "hip"):
        return span / 2 * math.tan(ROOF_PITCH)
    if roof == "shed":
        return span * math.tan(SHED_PITCH)
    if roof == "sawtooth":
        return min(3.5, max(1.5, _tooth_length(rect) * 0.45))
    return 0.0


def _tooth_length(rect: Rect) -> float:
    long = max(rect.width, rect.depth)
    return long / max(2, round(long / 7.0))


def massing(concept: ConceptInputs, exploded: bool = False) -> list[Block]:
    """The building's blocks. Exploded: one block per wing per floor, the roof lifted off."""
    fh = concept.floor_height
    gap = fh * explode_gap(concept.floors) if exploded else 0.0
    podium = podium_floors(concept)
    blocks: list[Block] = []
    runs = [(0, podium, wings(concept)), (podium, concept.floors, [tower_rect(concept)])] if podium \
        else [(0, concept.floors, wings(concept))]
    for start, end, rects in runs:
        floor_runs = [(f, f + 1) for f in range(start, end)] if exploded else [(start, end)]
        for first, last in floor_runs:
            z0 = first * fh + first * gap
            z1 = z0 + (last - first) * fh
            top_run = last == concept.floors
            for rect in rects:
                roof = concept.roof if top_run and not exploded else "flat"
                blocks.append(Block(rect, z0, z1, "wing", first, last - first, roof,
                                    roof_rise(rect, roof), layer=first if exploded else 0))
    top = concept.floors * (fh + gap)
    if exploded and concept.roof != "flat":
        for rect in (wings(concept) if not podium else [tower_rect(concept)]):
            blocks.append(Block(rect, top + gap * 0.2, top + gap * 0.2, "roof", concept.floors, 0,
                                concept.roof, roof_rise(rect, concept.roof), layer=concept.floors + 1))
    if concept.roof == "flat" and not exploded and min(concept.width, concept.depth) >= 10:
        blocks.append(plant_room(blocks, fh))
    return blocks


def explode_gap(floors: int) -> float:
    """Gap between pulled-apart floors, in floor heights: wide enough to see each floor plate,
    narrower for tall buildings so the drawing stays legible."""
    return max(1.2, min(2.8, 3.2 - 0.1 * floors))


def plant_room(blocks: list[Block], floor_height: float) -> Block:
    """A small rooftop plant room on the largest top block: flat roofs are never quite empty."""
    host = max((b for b in blocks if b.kind == "wing"), key=lambda b: (b.z1, b.rect.width * b.rect.depth))
    cx, cy = host.rect.centre
    hw, hd = min(4.0, host.rect.width * 0.2), min(3.0, host.rect.depth * 0.2)
    return Block(Rect(cx - hw, cy - hd, cx + hw, cy + hd), host.z1, host.z1 + min(3.0, floor_height * 0.8),
                 "plant", floors=1)


def wall_faces(block: Block) -> list[Face]:
    r, z0, z1 = block.rect, block.z0, block.z1
    if z1 <= z0:
        return []
    return [
        Face(((r.x0, r.y1, z0), (r.x1, r.y1, z0), (r.x1, r.y1, z1), (r.x0, r.y1, z1)), (0, 1, 0), "wall"),
        Face(((r.x1, r.y1, z0), (r.x1, r.y0, z0), (r.x1, r.y0, z1), (r.x1, r.y1, z1)), (1, 0, 0), "wall"),
        Face(((r.x1, r.y0, z0), (r.x0, r.y0, z0), (r.x0, r.y0, z1), (r.x1, r.y0, z1)), (0, -1, 0), "wall"),
        Face(((r.x0, r.y0, z0), (r.x0, r.y1, z0), (r.x0, r.y1, z1), (r.x0, r.y0, z1)), (-1, 0, 0), "wall"),
    ]


def roof_faces(block: Block) -> list[Face]:
    """The roof on top of a block, in local (u along the long side, v across) then world axes."""
    r, z = block.rect, block.z1
    along_x = r.width >= r.depth
    length, span = (r.width, r.depth) if along_x else (r.depth, r.width)
    rise = block.roof_height
    if block.roof == "flat" or rise <= 0:
        return [Face(((r.x0, r.y0, z), (r.x1, r.y0, z), (r.x1, r.y1, z), (r.x0, r.y1, z)), (0, 0, 1), "top")]
    local = _ROOFS[block.roof](length, span, rise)
    return [_to_world(face, r, z, along_x) for face in local]


def _gable(length: float, span: float, rise: float) -> list[Face]:
    m = span / 2
    return [
        Face(((0, 0, 0), (length, 0, 0), (length, m, rise), (0, m, rise)), _n(0, -rise, m), "roof"),
        Face(((0, span, 0), (0, m, rise), (length, m, rise), (length, span, 0)), _n(0, rise, m), "roof"),
        Face(((0, 0, 0), (0, m, rise), (0, span, 0)), (-1, 0, 0), "gable"),
        Face(((length, 0, 0), (length, span, 0), (length, m, rise)), (1, 0, 0), "gable"),
    ]


def _hip(length: float, span: float, rise: float) -> list[Face]:
    m = span / 2
    a, b = min(m, length / 2), max(length - m, length / 2)
    return [
        Face(((0, 0, 0), (length, 0, 0), (b, m, rise), (a, m, rise)), _n(0, -rise, m), "roof"),
        Face(((0, span, 0), (a, m, rise), (b, m, rise), (length, span, 0)), _n(0, rise, m), "roof"),
        Face(((0, 0, 0), (a, m, rise), (0, span, 0)), _n(-rise, 0, a), "roof"),
        Face(((length, 0, 0), (length, span, 0), (b, m, rise)), _n(rise, 0, length - b), "roof"),
    ]


def _shed(length: float, span: float, rise: float) -> list[Face]:
    # High at the back (v = 0), so the slope faces the viewer and the front facade stays low.
    return [
        Face(((0, 0, rise), (length, 0, rise), (length, span, 0), (0, span, 0)), _n(0, rise, span), "roof"),
        Face(((0, 0, 0), (0, 0, rise), (0, span, 0)), (-1, 0, 0), "gable"),
        Face(((length, 0, 0), (length, span, 0), (length, 0, rise)), (1, 0, 0), "gable"),
        Face(((0, 0, 0), (length, 0, 0), (length, 0, rise), (0, 0, rise)), (0, -1, 0), "gable"),
    ]


def _sawtooth(length: float, span: float, rise: float) -> list[Face]:
    teeth = max(2, round(length / 7.0))
    step = length / teeth
    faces: list[Face] = []
    for i in range(teeth):  # back to front along u: later teeth hide earlier ones' glazing
        a, b = i * step, (i + 1) * step
        faces += [
            Face(((a, 0, 0), (b, 0, rise), (b, span, rise), (a, span, 0)), _n(-rise, 0, step), "roof"),
            Face(((b, 0, 0), (b, span, 0), (b, span, rise), (b, 0, rise)), (1, 0, 0), "glass"),
            Face(((a, span, 0), (b, span, rise), (b, span, 0)), (0, 1, 0), "gable"),
            Face(((a, 0, 0), (b, 0, 0), (b, 0, rise)), (0, -1, 0), "gable"),
        ]
    return faces


_ROOFS = {"gable": _gable, "hip": _hip, "shed": _shed, "sawtooth": _sawtooth}


def _n(x: float, y: float, z: float) -> Vec3:
    length = math.sqrt(x * x + y * y + z * z) or 1.0
    return (x / length, y / length, z / length)


def _to_world(face: Face, r: Rect, z: float, along_x: bool) -> Face:
    if along_x:
        points = tuple((r.x0 + u, r.y0 + v, z + h) for u, v, h in face.points)
        return Face(points, face.normal, face.role)
    # Long side along y: u -> y and v -> x (a mirror), so the front (+x here) keeps facing +x.
    points = tuple((r.x0 + v, r.y0 + u, z + h) for u, v, h in face.points)
    nx, ny, nz = face.normal
    return Face(points, (ny, nx, nz), face.role)
