"""2D helpers on the footprint's boundary loops: insets, clipping, which edges are real corners."""
from __future__ import annotations

from .massing import Rect

Point = tuple[float, float]
Loop = list[Point]
EPS = 1e-6


def signed_area(loop: Loop) -> float:
    return sum(a[0] * b[1] - b[0] * a[1] for a, b in zip(loop, loop[1:] + loop[:1], strict=True)) / 2


def inset(loop: Loop, distance: float, into_left: bool) -> Loop:
    """Move every edge of a rectilinear loop `distance` to its left (or right) side."""
    def normal(a: Point, b: Point) -> Point:
        dx, dy = b[0] - a[0], b[1] - a[1]
        length = abs(dx) + abs(dy) or 1.0
        left = (-dy / length, dx / length)
        return left if into_left else (-left[0], -left[1])

    out = []
    n = len(loop)
    for i, p in enumerate(loop):
        n1 = normal(loop[i - 1], p)
        n2 = normal(p, loop[(i + 1) % n])
        out.append((p[0] + distance * (n1[0] + n2[0]), p[1] + distance * (n1[1] + n2[1])))
    return out


def material_insets(loops: list[Loop], distance: float) -> list[Loop]:
    """Each loop moved `distance` into the building (outer loops shrink, courtyard loops grow)."""
    result = []
    for index, loop in enumerate(loops):
        ccw = signed_area(loop) > 0
        is_outer = index == 0
        # The interior is on the left of a counter-clockwise outer loop; a hole is the other way round.
        result.append(inset(loop, distance, into_left=ccw if is_outer else not ccw))
    return result


def clip(polygon: Loop, rect: Rect) -> Loop:
    """Sutherland-Hodgman clip of a polygon to an axis-aligned rectangle."""
    def cut(points: Loop, inside, cross) -> Loop:
        out: Loop = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            if inside(current):
                if not inside(previous):
                    out.append(cross(previous, current))
                out.append(current)
            elif inside(previous):
                out.append(cross(previous, current))
        return out

    def at_x(x: float):
        return lambda p, q: (x, p[1] + (q[1] - p[1]) * (x - p[0]) / ((q[0] - p[0]) or EPS))

    def at_y(y: float):
        return lambda p, q: (p[0] + (q[0] - p[0]) * (y - p[1]) / ((q[1] - p[1]) or EPS), y)

    points = polygon
    for inside, cross in ((lambda p: p[0] >= rect.x0 - EPS, at_x(rect.x0)),
                          (lambda p: p[0] <= rect.x1 + EPS, at_x(rect.x1)),
                          (lambda p: p[1] >= rect.y0 - EPS, at_y(rect.y0)),
                          (lambda p: p[1] <= rect.y1 + EPS, at_y(rect.y1))):
        if not points:
            break
        points = cut(points, inside, cross)
    return points


def segments_in_rect(loops: list[Loop], rect: Rect) -> list[tuple[Point, Point]]:
    """The parts of the loops' (axis-aligned) edges lying within a rectangle, edges included."""
    out = []
    for loop in loops:
        for a, b in zip(loop, loop[1:] + loop[:1], strict=True):
            if abs(a[1] - b[1]) < EPS and rect.y0 - EPS <= a[1] <= rect.y1 + EPS:
                lo, hi = max(min(a[0], b[0]), rect.x0), min(max(a[0], b[0]), rect.x1)
                if hi - lo > EPS:
                    out.append(((lo, a[1]), (hi, a[1])))
            elif abs(a[0] - b[0]) < EPS and rect.x0 - EPS <= a[0] <= rect.x1 + EPS:
                lo, hi = max(min(a[1], b[1]), rect.y0), min(max(a[1], b[1]), rect.y1)
                if hi - lo > EPS:
                    out.append(((a[0], lo), (a[0], hi)))
    return out


def corner_set(loops: list[Loop]) -> set[tuple[float, float]]:
    return {(round(x, 4), round(y, 4)) for loop in loops for x, y in loop}


def rect_loop(rect: Rect) -> Loop:
    return [(rect.x0, rect.y0), (rect.x1, rect.y0), (rect.x1, rect.y1), (rect.x0, rect.y1)]
