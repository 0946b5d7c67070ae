"""What a view and its facades share: the projection from world metres to sheet pixels, the
draw operations, and what a facade needs of the view it draws into (so facade.py does not
depend on scene.py, which builds the facades)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ...models import ConceptInputs
from .camera import Camera
from .sheet import Sheet
from .style import Style

Op = tuple  # ("poly", points, fill, outline, width) | ("line", points, fill, width) | ("ellipse", ...)


@dataclass
class Viewport:
    """World (metres) to sheet pixels through a camera."""

    camera: Camera
    scale: float = 1.0
    ox: float = 0.0
    oy: float = 0.0
    coefficients: tuple[float, ...] = field(default=(), init=False)

    def __post_init__(self) -> None:
        self.refresh()

    def refresh(self) -> None:
        (ax, ay, az), (bx, by, bz) = self.camera.axes()
        s = self.scale
        self.coefficients = (ax * s, ay * s, az * s, bx * s, by * s, bz * s)

    def px(self, p: tuple[float, float, float]) -> tuple[float, float]:
        a, b, c, d, e, f = self.coefficients
        return (self.ox + a * p[0] + b * p[1] + c * p[2], self.oy + d * p[0] + e * p[1] + f * p[2])

    def fit(self, points: list[tuple[float, float, float]], area, scale: float | None = None) -> None:
        """Scale (unless given) and centre so the points fill the area."""
        projected = [self.camera.project(p) for p in points]
        xs, ys = [p[0] for p in projected], [p[1] for p in projected]
        w, h = max(xs) - min(xs) or 1.0, max(ys) - min(ys) or 1.0
        self.scale = scale or min(area.width / w, area.height / h)
        self.ox = area.x0 + (area.width - w * self.scale) / 2 - min(xs) * self.scale
        self.oy = area.y0 + (area.height - h * self.scale) / 2 - min(ys) * self.scale
        self.refresh()


class DrawingView(Protocol):
    """The view a Facade draws into (scene.View3D is one): the brief, its style, the sheet, the
    projection, whether floors are pulled apart, and the draw operations to append to."""

    concept: ConceptInputs
    style: Style
    sheet: Sheet
    view: Viewport
    exploded: bool
    ops: list[Op]
