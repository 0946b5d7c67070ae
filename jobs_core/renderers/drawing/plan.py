"""The `plan` view: a ground-floor plan at a standard scale.

Poché walls with window and door openings, the structural grid with bubbles, columns, the stair
and lift core, room partitions, chained dimensions, north arrow and scale bar.
"""
from __future__ import annotations

import math
import random

from PIL import Image, ImageChops, ImageDraw

from ...models import ConceptInputs
from . import outline as ol
from .massing import entrances, outline, podium_floors, tower_rect, wings
from .scene import core_rect
from .sheet import INK, Sheet, brief_code, paper_scale, polygon
from .style import Style, mix, shade

WALL = 0.45  # external wall thickness, metres
GRID = 7.5  # target structural bay, metres
POCHE = (52, 52, 58)


class PlanView:
    def __init__(self, concept: ConceptInputs, style: Style, sheet: Sheet) -> None:
        self.concept, self.style, self.sheet = concept, style, sheet
        self.loops = outline(concept)
        self.rects = wings(concept)
        self.ops: list[tuple] = []
        self.scale_label = ""
        self.s = 1.0
        self.ox = self.oy = 0.0
        self.rng = random.Random(brief_code(concept))

    def px(self, x: float, y: float) -> tuple[float, float]:
        return self.ox + x * self.s, self.oy + y * self.s

    # -- stage: massing: scale and position --------------------------------------------------
    def build_massing(self) -> None:
        c, a, u = self.concept, self.sheet.area, self.sheet.unit
        room = 60 * u  # dimension lines and grid bubbles around the building
        inner = type(a)(a.x0 + room, a.y0 + room + 14 * u, a.x1 - room, a.y1 - room)
        n, self.s = paper_scale(c.width, c.depth, inner, self.sheet.width)
        self.scale_label = f"1:{n} @ A3"
        self.ox = inner.x0 + (inner.width - c.width * self.s) / 2
        self.oy = inner.y0 + (inner.height - c.depth * self.s) / 2
        self.gx = _grid(c.width)
        self.gy = _grid(c.depth)

    # -- stage: facades: openings, grid, partitions, core ------------------------------------
    def build_facades(self) -> None:
        self._partitions()
        self._openings()
        self._columns()
        self._core()

    def _openings(self) -> None:
        s = self.style
        doors = entrances(self.concept)
        xs = [p[0] for p in self.loops[0]]
        ys = [p[1] for p in self.loops[0]]
        module_x = (max(xs) - min(xs)) / max(1, round((max(xs) - min(xs)) / s.bay))
        module_y = (max(ys) - min(ys)) / max(1, round((max(ys) - min(ys)) / s.bay))
        if min(module_x, module_y) * self.s < 6 * self.sheet.unit:
            return  # at this scale openings would be noise
        width = 0.88 if s.shopfront else s.window_width
        if s.material == "glass":
            width = 0.96
        for index, loop in enumerate(self.loops):
            ccw = ol.signed_area(loop) > 0
            into_left = ccw if index == 0 else not ccw
            for a, b in zip(loop, loop[1:] + loop[:1], strict=True):
                along_x = abs(a[1] - b[1]) < 1e-9
                module = module_x if along_x else module_y
                axis = 0 if along_x else 1
                lo, hi = min(a[axis], b[axis]), max(a[axis], b[axis])
                dx, dy = b[0] - a[0], b[1] - a[1]
                length = math.hypot(dx, dy)
                nx, ny = (-dy / length, dx / length) if into_left else (dy / length, -dx / length)
                first, last = math.ceil(lo / module - 1e-6), math.floor(hi / module + 1e-6)
                front = along_x and abs(a[1] - self.concept.depth) < 1e-9
                for k in range(first, last):
                    c0, c1 = k * module, (k + 1) * module
                    if front and any(c0 - 0.9 < x < c1 + 0.9 for x in doors):
                        continue  # the entrance takes this bay
                    m = (c1 - c0) * (1 - width) / 2
                    self._window(a, along_x, c0 + m, c1 - m, (nx, ny))
        self._doors()

    def _window(self, a, along_x: bool, t0: float, t1: float, inward) -> None:
        nx, ny = inward

        def at(t: float, depth: float) -> tuple[float, float]:
            x, y = (t, a[1]) if along_x else (a[0], t)
            return self.px(x + nx * depth, y + ny * depth)

        floor = self._floor_colour()
        self.ops.append(("poly", [at(t0, -0.05), at(t1, -0.05), at(t1, WALL + 0.02), at(t0, WALL + 0.02)],
                         floor, None, 0))
        fine = self.sheet.line_width(0.45)
        for depth in (WALL * 0.35, WALL * 0.65):
            self.ops.append(("line", [at(t0, depth), at(t1, depth)], INK, fine))
        for t in (t0, t1):
            self.ops.append(("line", [at(t, 0), at(t, WALL)], INK, fine))

    def _doors(self) -> None:
        """A pair of leaves opening inwards at each entrance, and an arrow marking the way in."""
        y, half, u = self.concept.depth, 0.9, self.sheet.unit
        w, fine = self.sheet.line_width(0.6), self.sheet.line_width(0.35)
        for x in entrances(self.concept):
            self.ops.append(("poly", [self.px(x - half, y + 0.05), self.px(x + half, y + 0.05),
                                      self.px(x + half, y - WALL - 0.02), self.px(x - half, y - WALL - 0.02)],
                             self._floor_colour(), None, 0))
            radius = half * self.s
            for hinge_x, angles in ((x - half, (270, 360)), (x + half, (180, 270))):
                hx, hy = self.px(hinge_x, y - WALL / 2)
                self.ops.append(("line", [(hx, hy), (hx, hy - radius)], INK, w))
                self.ops.append(("arc", [hx - radius, hy - radius, hx + radius, hy + radius], angles, INK, fine))
            tip = self.px(x, y + 2.2)
            self.ops.append(("text", (tip[0], tip[1] + 4 * u), "ENTRANCE", 7, "ma"))
            self.ops.append(("poly", [(tip[0], tip[1] - 4 * u), (tip[0] - 3 * u, tip[1]), (tip[0] + 3 * u, tip[1])],
                             INK, None, 0))

    def _columns(self) -> None:
        size = 0.45 / 2
        for x in _ticks(self.concept.width, self.gx):
            for y in _ticks(self.concept.depth, self.gy):
                if self._inside(x, y, WALL + 0.4):
                    self.ops.append(("poly", [self.px(x - size, y - size), self.px(x + size, y - size),
                                              self.px(x + size, y + size), self.px(x - size, y + size)],
                                     POCHE, None, 0))

    def _partitions(self) -> None:
        """Corridor along deep wings, cross walls on the grid: the plan reads as rooms."""
        w = self.sheet.line_width(0.7)
        colour = shade(POCHE, 1.6)
        for r in self.rects:
            along_x = r.width >= r.depth
            span = r.depth if along_x else r.width
            corridor = span >= 11
            mid = (r.y0 + r.y1) / 2 if along_x else (r.x0 + r.x1) / 2
            a0, a1 = (r.x0 + WALL, r.x1 - WALL) if along_x else (r.y0 + WALL, r.y1 - WALL)
            if corridor:
                for off in (-0.9, 0.9):
                    p = [(a0, mid + off), (a1, mid + off)] if along_x else [(mid + off, a0), (mid + off, a1)]
                    self.ops.append(("line", [self.px(*p[0]), self.px(*p[1])], colour, w))
            ticks = _ticks(self.concept.width if along_x else self.concept.depth, self.gx if along_x else self.gy)
            lo, hi = (r.y0 + WALL, r.y1 - WALL) if along_x else (r.x0 + WALL, r.x1 - WALL)
            for t in ticks:
                if not a0 + 1 < t < a1 - 1:
                    continue
                pieces = [(lo, mid - 0.9), (mid + 0.9, hi)] if corridor else [(lo, hi)]
                for p0, p1 in pieces:
                    a, b = ((t, p0), (t, p1)) if along_x else ((p0, t), (p1, t))
                    self.ops.append(("line", [self.px(*a), self.px(*b)], colour, w))

    def _core(self) -> None:
        core = core_rect(self.concept)
        u = self.sheet.unit
        x0, y0 = self.px(core.x0, core.y0)
        x1, y1 = self.px(core.x1, core.y1)
        self.ops.append(("rect", [x0, y0, x1, y1], self._floor_colour(), POCHE, self.sheet.line_width(1.6)))
        split = x0 + (x1 - x0) * 0.62
        self.ops.append(("line", [(split, y0), (split, y1)], POCHE, self.sheet.line_width(1.2)))
        treads = max(4, min(14, int((split - x0) / (4 * u))))
        mid = (y0 + y1) / 2
        fine = self.sheet.line_width(0.4)
        for i in range(1, treads):
            tx = x0 + (split - x0) * i / treads
            self.ops.append(("line", [(tx, y0), (tx, y1)], INK, fine))
        self.ops.append(("line", [(x0, mid), (split, mid)], INK, fine))
        self.ops.append(("line", [(split, y0), (x1, y1)], INK, fine))
        self.ops.append(("line", [(split, y1), (x1, y0)], INK, fine))

    def _inside(self, x: float, y: float, margin: float) -> bool:
        return any(r.x0 + margin <= x <= r.x1 - margin and r.y0 + margin <= y <= r.y1 - margin
                   for r in self.rects)

    def _floor_colour(self):
        return mix(self.style.paper, (255, 255, 255), 0.6)

    # -- stage: shading: fills, poché, then the operations ---------------------------------
    def paint(self) -> None:
        d, s, c = self.sheet.draw, self.style, self.concept
        ground = mix(s.ground, s.paper, 0.45)
        margin = 4.0
        d.rectangle([*self.px(-margin, -margin), *self.px(c.width + margin, c.depth + margin)], fill=ground)
        self._grid_lines()
        d.polygon([self.px(*p) for p in self.loops[0]], fill=self._floor_colour())
        if len(self.loops) > 1:
            d.polygon([self.px(*p) for p in self.loops[1]], fill=mix(s.ground, s.foliage, 0.25))
            self._courtyard_trees()
        self._poche()
        for op in self.ops:
            self._replay(op)
        if podium_floors(c):
            t = tower_rect(c)
            corners = [self.px(t.x0, t.y0), self.px(t.x1, t.y0), self.px(t.x1, t.y1), self.px(t.x0, t.y1)]
            for a, b in zip(corners, corners[1:] + corners[:1], strict=True):
                self.sheet.dashed(a, b, INK, self.sheet.line_width(0.6), 8 * self.sheet.unit, 5 * self.sheet.unit)
            self.sheet.text((corners[0][0] + 4 * self.sheet.unit, corners[0][1] + 4 * self.sheet.unit),
                            "TOWER ABOVE", 7)
        self._dimensions()
        a, u = self.sheet.area, self.sheet.unit
        self.sheet.text((a.x0, a.y0), f"GROUND FLOOR PLAN   {self.scale_label}", 11, bold=True)
        self.sheet.north_arrow(a.x1 - 22 * u, a.y0 + 30 * u, 14 * u)
        self.sheet.scale_bar(a.x0, a.y1 - 14 * u, self.s)

    def _replay(self, op: tuple) -> None:
        d, kind = self.sheet.draw, op[0]
        if kind == "poly":
            polygon(d, op[1], op[2], op[3], op[4])
        elif kind == "line":
            d.line(op[1], fill=op[2], width=op[3])
        elif kind == "rect":
            d.rectangle(op[1], fill=op[2], outline=op[3], width=op[4])
        elif kind == "arc":
            d.arc(op[1], op[2][0], op[2][1], fill=op[3], width=op[4])
        elif kind == "text":
            self.sheet.text(op[1], op[2], op[3], anchor=op[4], bold=True)

    def _poche(self) -> None:
        """Walls: the outline stroked 2t wide, kept only inside the building (a t-thick band)."""
        c = self.concept
        x0, y0 = (math.floor(v) - 4 for v in self.px(-1, -1))
        x1, y1 = (math.ceil(v) + 4 for v in self.px(c.width + 1, c.depth + 1))
        size = (x1 - x0, y1 - y0)

        def local(p):
            x, y = self.px(*p)
            return (x - x0, y - y0)

        stroke = Image.new("L", size, 0)
        inside = Image.new("L", size, 0)
        ds, di = ImageDraw.Draw(stroke), ImageDraw.Draw(inside)
        width = max(2, round(2 * WALL * self.s))
        for loop in self.loops:
            points = [local(p) for p in loop]
            ds.line(points + points[:1], fill=255, width=width, joint="curve")
        di.polygon([local(p) for p in self.loops[0]], fill=255)
        for loop in self.loops[1:]:
            di.polygon([local(p) for p in loop], fill=0)
        walls = ImageChops.multiply(stroke, inside)
        region = self.sheet.image.crop((x0, y0, x1, y1))
        region.paste(POCHE, mask=walls)
        self.sheet.image.paste(region, (x0, y0))
        for loop in self.loops:
            points = [self.px(*p) for p in loop]
            self.sheet.draw.line(points + points[:1], fill=INK, width=self.sheet.line_width(0.8))

    def _grid_lines(self) -> None:
        c, sheet, u = self.concept, self.sheet, self.sheet.unit
        colour, w = (150, 150, 158), sheet.line_width(0.4)
        ext = 40 * u
        r = 8 * u
        for i, x in enumerate(_ticks(c.width, self.gx)):
            top, bottom = self.px(x, 0), self.px(x, c.depth)
            sheet.dashed((top[0], top[1] - ext), (bottom[0], bottom[1] + 8 * u), colour, w, 12 * u, 4 * u)
            cx, cy = top[0], top[1] - ext - r
            sheet.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=sheet.paper, outline=INK,
                               width=sheet.line_width(0.6))
            sheet.text((cx, cy), str(i + 1), 7.5, anchor="mm", bold=True)
        for j, y in enumerate(_ticks(c.depth, self.gy)):
            left, right = self.px(0, y), self.px(c.width, y)
            sheet.dashed((left[0] - ext, left[1]), (right[0] + 8 * u, right[1]), colour, w, 12 * u, 4 * u)
            cx, cy = left[0] - ext - r, left[1]
            sheet.draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=sheet.paper, outline=INK,
                               width=sheet.line_width(0.6))
            sheet.text((cx, cy), _letter(j), 7.5, anchor="mm", bold=True)

    def _dimensions(self) -> None:
        c, u = self.concept, self.sheet.unit
        xs = _ticks(c.width, self.gx)
        ys = _ticks(c.depth, self.gy)
        y_line = self.px(0, 0)[1] - 18 * u
        self._chain([(self.px(x, 0)[0], y_line) for x in xs], [b - a for a, b in zip(xs, xs[1:], strict=False)],
                    horizontal=True)
        self._chain([(self.px(0, 0)[0], y_line - 9 * u), (self.px(c.width, 0)[0], y_line - 9 * u)],
                    [c.width], horizontal=True)
        x_line = self.px(c.width, 0)[0] + 18 * u
        self._chain([(x_line, self.px(0, y)[1]) for y in ys], [b - a for a, b in zip(ys, ys[1:], strict=False)],
                    horizontal=False)
        self._chain([(x_line + 9 * u, self.px(0, 0)[1]), (x_line + 9 * u, self.px(0, c.depth)[1])],
                    [c.depth], horizontal=False)

    def _chain(self, points, lengths, horizontal: bool) -> None:
        """A dimension line with architectural ticks and the lengths written along it."""
        d, u = self.sheet.draw, self.sheet.unit
        w = self.sheet.line_width(0.5)
        d.line([points[0], points[-1]], fill=INK, width=w)
        t = 3 * u
        for x, y in points:
            d.line([(x - t, y + t), (x + t, y - t)], fill=INK, width=self.sheet.line_width(1.1))
        for (ax, ay), (bx, by), length in zip(points, points[1:], lengths, strict=False):
            span = abs(bx - ax) if horizontal else abs(by - ay)
            label = f"{length:.2f}"
            if span < len(label) * 4.6 * u:
                continue
            if horizontal:
                self.sheet.text(((ax + bx) / 2, ay - 2 * u), label, 8, anchor="md")
            else:
                self._vertical_text(((ax + bx) / 2 + 2 * u, (ay + by) / 2), label)

    def _vertical_text(self, xy, label: str) -> None:
        from .sheet import font

        face = font(round(8 * self.sheet.unit))
        box = self.sheet.draw.textbbox((0, 0), label, font=face)
        tile = Image.new("L", (box[2] + 4, box[3] + 4), 0)
        ImageDraw.Draw(tile).text((2, 2), label, fill=255, font=face)
        tile = tile.rotate(90, expand=True)
        x, y = round(xy[0]), round(xy[1] - tile.height / 2)
        self.sheet.image.paste(INK, (x, y, x + tile.width, y + tile.height), mask=tile)

    def _courtyard_trees(self) -> None:
        inner = self.loops[1]
        xs, ys = [p[0] for p in inner], [p[1] for p in inner]
        for _ in range(3):
            r = self.rng.uniform(1.5, 2.6)
            x = self.rng.uniform(min(xs) + r + 1, max(xs) - r - 1) if max(xs) - min(xs) > 2 * r + 2 else None
            y = self.rng.uniform(min(ys) + r + 1, max(ys) - r - 1) if max(ys) - min(ys) > 2 * r + 2 else None
            if x is None or y is None:
                return
            cx, cy = self.px(x, y)
            rad = r * self.s
            self.sheet.draw.ellipse([cx - rad, cy - rad, cx + rad, cy + rad],
                                    fill=mix(self.style.foliage, self.style.paper, 0.4), outline=INK,
                                    width=self.sheet.line_width(0.5))


def _grid(length: float) -> float:
    return length / max(1, round(length / GRID))


def _ticks(length: float, step: float) -> list[float]:
    count = round(length / step)
    return [i * step for i in range(count + 1)]


def _letter(index: int) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O, as on drawings
    return letters[index] if index < len(letters) else letters[index // len(letters) - 1] + letters[index % len(letters)]
