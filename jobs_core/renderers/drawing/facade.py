"""Openings, floor lines and material texture on one wall face of a wing block."""
from __future__ import annotations

import math

from .massing import Block, Face, entrances
from .sheet import INK
from .style import light, shade
from .viewport import DrawingView


class Facade:
    """Openings, floor lines and material texture on one wall face of a wing block."""

    def __init__(self, view: DrawingView, block: Block, face: Face, fill, loops) -> None:
        self.view, self.block, self.face, self.fill, self.loops = view, block, face, fill, loops
        self.concept, self.style = view.concept, view.style
        self.along_x = abs(face.normal[1]) > 0.5
        a, b = face.points[0], face.points[1]
        axis = 0 if self.along_x else 1
        self.fixed = a[1] if self.along_x else a[0]
        self.t0, self.t1 = min(a[axis], b[axis]), max(a[axis], b[axis])
        xs = [p[0] for loop in loops for p in loop]
        ys = [p[1] for loop in loops for p in loop]
        lo, hi = (min(xs), max(xs)) if self.along_x else (min(ys), max(ys))
        self.origin = lo
        self.module = (hi - lo) / max(1, round((hi - lo) / self.style.bay))
        self.px_per_m = view.view.scale
        self.is_front = self.along_x and face.normal[1] > 0 and abs(self.fixed - max(ys)) < 1e-6

    def point(self, t: float, z: float) -> tuple[float, float]:
        return self.view.view.px((t, self.fixed, z) if self.along_x else (self.fixed, t, z))

    def quad(self, t0: float, t1: float, z0: float, z1: float) -> list[tuple[float, float]]:
        return [self.point(t0, z0), self.point(t1, z0), self.point(t1, z1), self.point(t0, z1)]

    def draw(self) -> None:
        fh = self.concept.floor_height
        floor_px = fh * self.px_per_m
        if floor_px < 3:
            return  # too small to show anything but the massing
        self._texture()
        cells = self._cells()
        for f in range(self.block.floors):
            z = self.block.z0 + f * fh
            level = self.block.first_floor + f
            if floor_px >= 6:
                self._openings(cells, z, level)
            if f or self.view.exploded:
                self._line(self.t0, self.t1, z, z, shade(self.fill, 0.72), 0.7)
        if self.view.exploded:  # slab edge at the top of each pulled-apart floor
            z = self.block.z1
            self.view.ops.append(("poly", self.quad(self.t0, self.t1, z - 0.3, z), shade(self.fill, 0.8), None, 0))

    def _cells(self) -> list[tuple[float, float]]:
        module = self.module
        min_px = 9 * self.view.sheet.unit
        if module * self.px_per_m < min_px:
            module *= math.ceil(min_px / (module * self.px_per_m))
        first = math.ceil((self.t0 - self.origin) / module - 1e-6)
        last = math.floor((self.t1 - self.origin) / module + 1e-6)
        return [(self.origin + k * module, self.origin + (k + 1) * module) for k in range(first, last)]

    def _openings(self, cells, z: float, level: int) -> None:
        s, fh, ops = self.style, self.concept.floor_height, self.view.ops
        glass = shade(s.glass, light(self.face.normal) * 1.02)
        frame = shade(self.fill, 0.55)
        width = self.view.sheet.line_width(0.45)
        if s.material == "glass":  # curtain wall: spandrel band and mullions
            ops.append(("poly", self.quad(self.t0, self.t1, z + fh * 0.86, z + fh), shade(self.fill, 0.78), None, 0))
            for c0, _ in cells[1:]:
                self._line(c0, c0, z, z + fh * 0.86, frame, 0.45)
            self._entrance(cells, z, level)
            return
        if s.material == "metal" and not (level == 0 and s.shopfront):  # ribbon windows
            lo, hi = z + fh * (1 - s.window_height) * 0.55, z + fh * (1 - (1 - s.window_height) * 0.45)
            ops.append(("poly", self.quad(self.t0 + 0.5, self.t1 - 0.5, lo, hi), glass, frame, width))
            for c0, _ in cells[1:]:
                self._line(c0, c0, lo, hi, frame, 0.4)
            self._entrance(cells, z, level)
            return
        ww, wh = s.window_width, s.window_height
        if level == 0 and s.shopfront:
            ww, wh = 0.86, 0.74
        sill = z + fh * (1 - wh) * (0.35 if level == 0 and s.shopfront else 0.6)
        doors = self.door_cells(cells) if level == 0 else []
        for c0, c1 in cells:
            if (c0, c1) in doors:
                continue
            m = (c1 - c0) * (1 - ww) / 2
            ops.append(("poly", self.quad(c0 + m, c1 - m, sill, sill + fh * wh), glass, frame, width))
        self._entrance(cells, z, level)

    def door_cells(self, cells) -> list[tuple[float, float]]:
        """The bays of this face that hold an entrance (ground floor of the front facade only)."""
        if not self.is_front:
            return []
        doors = [x for x in entrances(self.concept) if self.t0 <= x <= self.t1]
        return [c for c in cells if any(c[0] - 0.9 < x < c[1] + 0.9 for x in doors)][:len(doors)] or \
            [(x - 0.9, x + 0.9) for x in doors]

    def _entrance(self, cells, z: float, level: int) -> None:
        if level != 0:
            return
        for c0, c1 in self.door_cells(cells):
            self._door(c0, c1, z)

    def _door(self, c0: float, c1: float, z: float) -> None:
        fh = self.concept.floor_height
        inset = (c1 - c0) * 0.1
        door = shade(self.style.glass, 0.55)
        self.view.ops.append(("poly", self.quad(c0 + inset, c1 - inset, z, z + min(2.6, fh * 0.8)), door, INK,
                              self.view.sheet.line_width(0.6)))
        self.view.ops.append(("poly", self.quad(c0 - 0.2, c1 + 0.2, z + min(2.8, fh * 0.85),
                                                z + min(3.0, fh * 0.9)), shade(self.fill, 0.6), None, 0))

    def _texture(self) -> None:
        """Brick coursing, timber boards, stone courses, metal seams: only where they read."""
        spacing = {"brick": 0.5, "stone": 0.75, "timber": 0.4, "metal": 0.6, "concrete": self.module * 2}
        step = spacing.get(self.style.material)
        if step is None or step * self.px_per_m < 4 * self.view.sheet.unit:
            return
        colour = shade(self.fill, 0.9)
        z0, z1 = self.block.z0, self.block.z1
        if self.style.material in ("brick", "stone"):
            count = min(int((z1 - z0) / step), 600)
            for i in range(1, count):
                self._line(self.t0, self.t1, z0 + i * step, z0 + i * step, colour, 0.35)
            return
        first = math.ceil((self.t0 - self.origin) / step)
        last = math.floor((self.t1 - self.origin) / step)
        for k in range(first, min(last, first + 800) + 1):
            t = self.origin + k * step
            if self.t0 < t < self.t1:
                self._line(t, t, z0, z1, colour, 0.35)

    def _line(self, t0: float, t1: float, z0: float, z1: float, colour, points: float) -> None:
        self.view.ops.append(("line", [self.point(t0, z0), self.point(t1, z1)], colour,
                              self.view.sheet.line_width(points)))
