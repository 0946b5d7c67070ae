"""Orthographic cameras (axonometric and elevation) and the painter's order of blocks."""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from .massing import Block, Vec3

EPS = 1e-6


@dataclass(frozen=True)
class Camera:
    """Looks at the scene from `azimuth` (0 = straight at the front, +y) and `elevation` above it."""

    azimuth: float
    elevation: float

    @property
    def view(self) -> Vec3:
        """Unit vector from the scene towards the viewer: faces with n . view > 0 are visible."""
        ce = math.cos(self.elevation)
        return (math.sin(self.azimuth) * ce, math.cos(self.azimuth) * ce, math.sin(self.elevation))

    def axes(self) -> tuple[Vec3, Vec3]:
        """World-to-screen rows (metres): screen x to the right, screen y downwards."""
        sa, ca = math.sin(self.azimuth), math.cos(self.azimuth)
        se, ce = math.sin(self.elevation), math.cos(self.elevation)
        return (ca, -sa, 0.0), (sa * se, ca * se, -ce)

    def project(self, point: Vec3) -> tuple[float, float]:
        (ax, ay, az), (bx, by, bz) = self.axes()
        x, y, z = point
        return ax * x + ay * y + az * z, bx * x + by * y + bz * z

    def depth(self, point: Vec3) -> float:
        """Larger is nearer the viewer."""
        vx, vy, vz = self.view
        return vx * point[0] + vy * point[1] + vz * point[2]


AXONOMETRIC = Camera(math.radians(36), math.radians(32))
ELEVATION = Camera(0.0, 0.0)


def corners(block: Block) -> list[Vec3]:
    r = block.rect
    return [(x, y, z) for x in (r.x0, r.x1) for y in (r.y0, r.y1) for z in (block.z0, block.top)]


def screen_box(block: Block, camera: Camera) -> tuple[float, float, float, float]:
    points = [camera.project(p) for p in corners(block)]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return min(xs), min(ys), max(xs), max(ys)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] - EPS and b[0] < a[2] - EPS and a[1] < b[3] - EPS and b[1] < a[3] - EPS


def _behind(a: Block, b: Block, view: Vec3) -> bool | None:
    """True when a must be painted before b, False after, None when neither hides the other.

    Two disjoint boxes are separated along at least one axis; along a separating axis the one
    further from the viewer is behind. Contradicting votes mean no line of sight meets both.
    """
    ranges_a = ((a.rect.x0, a.rect.x1), (a.rect.y0, a.rect.y1), (a.z0, a.top))
    ranges_b = ((b.rect.x0, b.rect.x1), (b.rect.y0, b.rect.y1), (b.z0, b.top))
    votes = set()
    for (a0, a1), (b0, b1), v in zip(ranges_a, ranges_b, view, strict=True):
        if abs(v) < EPS:
            continue
        if a1 <= b0 + EPS:
            votes.add(v > 0)
        elif b1 <= a0 + EPS:
            votes.add(v < 0)
    return votes.pop() if len(votes) == 1 else None


def painter_order(blocks: list[Block], camera: Camera) -> list[Block]:
    """Blocks back to front: layer by layer, and inside a layer a topological sort of 'hides'."""
    ordered: list[Block] = []
    for layer in sorted({b.layer for b in blocks}):
        ordered += _topological([b for b in blocks if b.layer == layer], camera)
    return ordered


def _topological(blocks: list[Block], camera: Camera) -> list[Block]:
    view = camera.view
    boxes = [screen_box(b, camera) for b in blocks]
    after: list[list[int]] = [[] for _ in blocks]
    waiting = [0] * len(blocks)
    for i in range(len(blocks)):
        for j in range(i + 1, len(blocks)):
            if not _overlap(boxes[i], boxes[j]):
                continue
            first = _behind(blocks[i], blocks[j], view)
            if first is None:
                continue
            a, b = (i, j) if first else (j, i)
            after[a].append(b)
            waiting[b] += 1
    key = [_depth_key(b, camera) for b in blocks]
    ready = [(key[i], i) for i in range(len(blocks)) if waiting[i] == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(i)
        for j in after[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, (key[j], j))
    if len(order) < len(blocks):  # a cycle (rare with boxes): fall back to depth for the rest
        done = set(order)
        order += sorted((i for i in range(len(blocks)) if i not in done), key=lambda i: key[i])
    return [blocks[i] for i in order]


def _depth_key(block: Block, camera: Camera) -> float:
    r = block.rect
    return camera.depth(((r.x0 + r.x1) / 2, (r.y0 + r.y1) / 2, (block.z0 + block.top) / 2))
