"""The 3D views: axonometric, exploded axonometric and front elevation of the massing.

Work is split in the renderer's stages: `massing` (blocks, painter's order, fit to the sheet),
`facades` (every polygon and line, as draw operations), `paint` (ground, cast shadows, then the
operations back to front). Occlusion is the painter's algorithm over blocks ordered by
`camera.painter_order`; inside a block only faces turned to the viewer are drawn.
"""
from __future__ import annotations

import math
import random

from PIL import Image, ImageChops, ImageDraw

from ...models import ConceptInputs
from . import outline as ol
from .camera import AXONOMETRIC, ELEVATION, corners, painter_order
from .facade import Facade
from .massing import (
    Block,
    Face,
    Rect,
    entrances,
    massing,
    outline,
    podium_floors,
    roof_faces,
    tower_rect,
    wall_faces,
    wings,
)
from .sheet import INK, Sheet, brief_code, paper_scale, polygon
from .style import SUN_DIR, Style, light, mix, shade
from .viewport import Op, Viewport

PARAPET = 0.45  # metres


class View3D:
    def __init__(self, concept: ConceptInputs, style: Style, sheet: Sheet, render_type: str) -> None:
        self.concept, self.style, self.sheet, self.render_type = concept, style, sheet, render_type
        self.exploded = render_type == "exploded-axonometric"
        self.elevation = render_type == "elevation"
        self.view = Viewport(ELEVATION if self.elevation else AXONOMETRIC)
        self.camera = self.view.camera
        self.blocks: list[Block] = []
        self.ops: list[Op] = []
        self.scale_label = "NTS"
        self.rng = random.Random(brief_code(concept))
        self.loops_main = outline(concept)
        self.loops_tower = [ol.rect_loop(tower_rect(concept))] if podium_floors(concept) else []

    # -- stage: massing --------------------------------------------------------------------
    def build_massing(self) -> None:
        blocks = massing(self.concept, self.exploded)
        if not self.exploded and not self.elevation:
            blocks += self._trees(blocks)
        self.blocks = painter_order(blocks, self.camera)
        self.highest_floor_top = max(b.z1 for b in self.blocks if b.kind == "wing")
        self._fit()

    def _site(self) -> Rect:
        c = self.concept
        margin = max(6.0, 0.28 * max(c.width, c.depth))
        return Rect(-margin, -margin, c.width + margin, c.depth + margin * 1.2)

    def _trees(self, blocks: list[Block]) -> list[Block]:
        """A few trees around the building (and in a courtyard), placed by the brief's own seed."""
        site, c = self._site(), self.concept
        wanted = 4 + self.rng.randrange(4)
        trees: list[Block] = []
        spots = [(self.rng.uniform(site.x0 + 2, site.x1 - 2), self.rng.uniform(site.y0 + 2, site.y1 - 2))
                 for _ in range(60)]
        if c.footprint == "courtyard":
            k = ol.inset(self.loops_main[1], 0, True)
            cx, cy = (k[0][0] + k[2][0]) / 2, (k[0][1] + k[2][1]) / 2
            spots.insert(0, (cx, cy))
        for index, (x, y) in enumerate(spots):
            radius = self.rng.uniform(1.8, 3.2)
            rect = Rect(x - radius, y - radius, x + radius, y + radius)
            in_court = c.footprint == "courtyard" and index == 0
            # Only behind or left of the building (or in its court): never hiding the drawn facades.
            if not in_court and rect.x1 > -0.5 and rect.y1 > -0.5:
                continue
            if any(_overlaps(rect, b.rect, 1.0) for b in blocks + trees):
                continue
            trees.append(Block(rect, 0.0, self.rng.uniform(6.5, 10.0), "tree"))
            if len(trees) >= wanted:
                break
        return trees

    def _fit(self) -> None:
        area = self.sheet.area
        points = [p for b in self.blocks for p in corners(b)]
        if self.elevation:
            c = self.concept
            extent_w, extent_h = c.width + 25, max(b.top for b in self.blocks) + 4
            n, px_per_m = paper_scale(extent_w, extent_h + 8, area, self.sheet.width)
            self.scale_label = f"1:{n} @ A3"
            points += [(-9, 0, -2), (c.width + 16, 0, -2)]
            self.view.fit(points, area, px_per_m)
            return
        site = self._site()
        points += [(site.x0, site.y0, 0), (site.x1, site.y0, 0), (site.x1, site.y1, 0), (site.x0, site.y1, 0)]
        if self.exploded:  # room on the right for the level labels
            area = type(area)(area.x0, area.y0, area.x1 - area.width * 0.12, area.y1)
        self.view.fit(points, area)

    # -- stage: facades --------------------------------------------------------------------
    def build_facades(self) -> None:
        if self.exploded:
            self._guides()
        for block in self.blocks:
            if block.kind == "tree":
                self._tree(block)
                continue
            self._block(block)

    def _loops(self, block: Block) -> list[ol.Loop]:
        if block.kind == "plant" or (block.kind == "roof" and self.loops_tower):
            return [ol.rect_loop(block.rect)]
        if self.loops_tower and block.first_floor >= podium_floors(self.concept):
            return self.loops_tower
        return self.loops_main

    def _block(self, block: Block) -> None:
        view = self.camera.view
        loops = self._loops(block)
        for face in wall_faces(block):
            if _dot(face.normal, view) > 1e-6:
                self._wall(block, face, loops)
        for face in roof_faces(block):
            if _dot(face.normal, view) <= 1e-6:
                continue
            if face.role == "top":
                self._top(block, face, loops)
            else:
                self._roof_face(block, face)

    def _colour(self, block: Block, base, normal) -> tuple[int, int, int]:
        colour = shade(base, light(normal))
        if self.elevation:  # recessed planes read lighter and greyer, as in an inked elevation
            recess = (self.concept.depth - block.rect.y1) / max(self.concept.depth, 1.0)
            colour = mix(shade(colour, 1 - 0.25 * min(recess * 3, 1)), self.style.paper, 0.3 * recess)
        return colour

    def _wall(self, block: Block, face: Face, loops) -> None:
        s, px = self.style, self.view.px
        base = (178, 182, 186) if block.kind == "plant" else (s.glass if s.material == "glass" else s.wall)
        fill = self._colour(block, base, face.normal)
        self.ops.append(("poly", [px(p) for p in face.points], fill, None, 0))
        if block.kind == "wing":
            Facade(self, block, face, fill, loops).draw()
        if self.elevation:
            self._cast_shadows(block, face)
        ink = self.sheet.line_width(1.1)
        a, b, c, d = face.points
        self.ops.append(("line", [px(a), px(b)], INK, ink))
        self.ops.append(("line", [px(d), px(c)], INK, ink))
        corners_ = ol.corner_set(loops)
        for bottom, top in ((a, d), (b, c)):
            if (round(bottom[0], 4), round(bottom[1], 4)) in corners_:
                self.ops.append(("line", [px(bottom), px(top)], INK, ink))

    def _cast_shadows(self, block: Block, face: Face) -> None:
        """Elevation convention: sun at 45 degrees from the upper left, so a wing standing forward
        by d metres casts a shadow d to the right and d down onto the recessed facade behind it."""
        if face.normal != (0, 1, 0):
            return
        r = block.rect
        for other in self.blocks:
            forward = other.rect.y1 - r.y1
            if other.kind != "wing" or forward <= 1e-6 or other.rect.y0 > r.y1 + 1e-6:
                continue
            x0, x1 = max(r.x0, other.rect.x0 + forward), min(r.x1, other.rect.x1 + forward)
            z0, z1 = max(block.z0, other.z0), min(block.z1, other.top - forward)
            if x1 - x0 > 1e-6 and z1 - z0 > 1e-6:
                quad = [(x0, r.y1, z0), (x1, r.y1, z0), (x1, r.y1, z1), (x0, r.y1, z1)]
                self.ops.append(("shadow", [self.view.px(p) for p in quad]))

    def _roof_face(self, block: Block, face: Face) -> None:
        s = self.style
        base = {"roof": s.roof, "glass": s.glass}.get(face.role, s.wall)
        fill = self._colour(block, base, face.normal)
        self.ops.append(("poly", [self.view.px(p) for p in face.points], fill, INK, self.sheet.line_width(0.9)))
        if face.role == "roof" and self.view.scale * 0.6 > 3.5:  # standing seams / tile courses
            self._roof_lines(face, shade(fill, 0.86))

    def _roof_lines(self, face: Face, colour) -> None:
        """Lines down the slope, every 0.9 m along the eaves: reads as a roof, not a wall."""
        if len(face.points) != 4:  # hip ends and gable triangles stay plain
            return
        eave_a, eave_b, top_b, top_a = face.points
        length = math.dist(eave_a, eave_b)
        count = min(int(length / 0.9), 400)
        width = self.sheet.line_width(0.4)
        for i in range(1, count):
            t = i / count
            bottom = _lerp(eave_a, eave_b, t)
            top = _lerp(top_a, top_b, t)
            self.ops.append(("line", [self.view.px(bottom), self.view.px(top)], colour, width))

    def _top(self, block: Block, face: Face, loops) -> None:
        """A flat top: parapet band, roof membrane (or floor plate) inside it, edges on the outline."""
        s, px, z = self.style, self.view.px, block.z1
        lit = light(face.normal)
        rect = block.rect
        if block.kind == "plant":
            self.ops.append(("poly", [px(p) for p in face.points], shade((196, 198, 200), lit), INK,
                             self.sheet.line_width(0.9)))
            return
        # Exploded: every floor shows its plate, the top one too when its roof is lifted off.
        slab = self.exploded and block.kind == "wing" and (
            block.z1 < self.highest_floor_top or self.concept.roof != "flat")
        parapet = shade(mix(s.wall, s.paper, 0.25), lit)
        inner = mix(s.paper, s.ground, 0.55) if slab else shade(mix(s.wall, (128, 128, 128), 0.45), lit)
        self.ops.append(("poly", [px(p) for p in face.points], parapet, None, 0))
        for index, loop in enumerate(ol.material_insets(loops, PARAPET)):
            piece = ol.clip(loop, rect)
            if len(piece) >= 3:
                self.ops.append(("poly", [px((x, y, z)) for x, y in piece], inner if index == 0 else parapet,
                                 None, 0))
        fine, ink = self.sheet.line_width(0.5), self.sheet.line_width(1.1)
        for a, b in ol.segments_in_rect(ol.material_insets(loops, PARAPET), rect):
            self.ops.append(("line", [px((*a, z)), px((*b, z))], shade(parapet, 0.7), fine))
        for a, b in ol.segments_in_rect(loops, rect):
            self.ops.append(("line", [px((*a, z)), px((*b, z))], INK, ink))
        if slab:
            self._core(block)

    def _core(self, block: Block) -> None:
        """The stair and lift core, seen on each floor plate of an exploded view."""
        core, r = core_rect(self.concept), block.rect
        if not (r.x0 <= core.x0 and core.x1 <= r.x1 and r.y0 <= core.y0 and core.y1 <= r.y1):
            return  # the core rises through another wing
        z, px = block.z1, self.view.px
        pts = [(core.x0, core.y0, z), (core.x1, core.y0, z), (core.x1, core.y1, z), (core.x0, core.y1, z)]
        self.ops.append(("poly", [px(p) for p in pts], shade(self.style.wall, 0.72), INK, self.sheet.line_width(0.6)))

    def _tree(self, block: Block) -> None:
        r, px = block.rect, self.view.px
        cx, cy = r.centre
        radius = r.width / 2
        trunk_top = block.z1 - radius * 1.2
        self.ops.append(("line", [px((cx, cy, 0)), px((cx, cy, trunk_top))], (92, 80, 66),
                         max(1, round(0.35 * self.view.scale))))
        x, y = px((cx, cy, block.z1 - radius))
        rad = radius * self.view.scale
        leaf = self.style.foliage
        self.ops.append(("ellipse", [x - rad, y - rad, x + rad, y + rad], shade(leaf, 0.82), INK,
                         self.sheet.line_width(0.6)))
        hx, hy, hr = x - rad * 0.22, y - rad * 0.25, rad * 0.62
        self.ops.append(("ellipse", [hx - hr, hy - hr, hx + hr, hy + hr], mix(leaf, (255, 255, 255), 0.18), None, 0))

    def _guides(self) -> None:
        """Dashed lines joining the corners of the pulled-apart floors (drawn first, behind)."""
        top = max(b.top for b in self.blocks)
        px = self.view.px
        for loops in (self.loops_main, self.loops_tower):
            for x, y in ol.corner_set(loops):
                self.ops.append(("dash", [px((x, y, 0)), px((x, y, top))], (150, 150, 156),
                                 self.sheet.line_width(0.6)))

    # -- stage: shading and painting -------------------------------------------------------
    def paint(self) -> None:
        if self.elevation:
            self._elevation_ground()
        else:
            self._ground_and_shadows()
        for op in self.ops:
            self._replay(op)
        if self.exploded:
            self._level_labels()
        if self.elevation:
            self._elevation_notes()

    def _replay(self, op: Op) -> None:
        d = self.sheet.draw
        kind = op[0]
        if kind == "poly":
            polygon(d, op[1], op[2], op[3], op[4])
        elif kind == "line":
            d.line(op[1], fill=op[2], width=op[3])
        elif kind == "ellipse":
            d.ellipse(op[1], fill=op[2], outline=op[3], width=op[4] or 1)
        elif kind == "shadow":  # translucent: windows and joints stay visible inside the shadow
            xs, ys = [p[0] for p in op[1]], [p[1] for p in op[1]]
            box = (int(min(xs)), int(min(ys)), math.ceil(max(xs)) + 1, math.ceil(max(ys)) + 1)
            mask = Image.new("L", (box[2] - box[0], box[3] - box[1]), 0)
            ImageDraw.Draw(mask).polygon([(x - box[0], y - box[1]) for x, y in op[1]], fill=80)
            region = self.sheet.image.crop(box)
            region.paste((30, 34, 46), mask=mask)
            self.sheet.image.paste(region, box[:2])
        elif kind == "dash":
            self.sheet.dashed(op[1][0], op[1][1], op[2], op[3], 9 * self.sheet.unit, 6 * self.sheet.unit)

    def _ground_and_shadows(self) -> None:
        sheet, px, s = self.sheet, self.view.px, self.style
        site = self._site()
        ground = [px((site.x0, site.y0, 0)), px((site.x1, site.y0, 0)), px((site.x1, site.y1, 0)),
                  px((site.x0, site.y1, 0))]
        sheet.draw.polygon(ground, fill=s.ground, outline=shade(s.ground, 0.75), width=sheet.line_width(0.8))
        c = self.concept
        for x in entrances(c):  # a paved path from each door to the edge of the site
            path = [(x - 1.6, c.depth, 0), (x + 1.6, c.depth, 0), (x + 1.6, site.y1, 0), (x - 1.6, site.y1, 0)]
            sheet.draw.polygon([px(p) for p in path], fill=mix(s.ground, s.paper, 0.6))
        mask = Image.new("L", sheet.image.size, 0)
        draw = ImageDraw.Draw(mask)
        for block in self.blocks:
            if self.exploded and block.layer:
                continue
            hull = _convex_hull([_on_ground(p) for p in _shadow_points(block)])
            if len(hull) >= 3:
                draw.polygon([px((x, y, 0)) for x, y in hull], fill=96)
        site_mask = Image.new("L", sheet.image.size, 0)
        ImageDraw.Draw(site_mask).polygon(ground, fill=255)
        shadow = ImageChops.multiply(mask, site_mask)
        box = shadow.getbbox()
        if box:  # paste only where there is shadow: a whole-sheet paste costs ~30 ms
            region = sheet.image.crop(box)
            region.paste((40, 44, 56), mask=shadow.crop(box))
            sheet.image.paste(region, box[:2])

    def _level_labels(self) -> None:
        sheet, px = self.sheet, self.view.px
        by_layer: dict[int, list[Block]] = {}
        for block in self.blocks:
            by_layer.setdefault(block.layer, []).append(block)
        step = max(1, math.ceil(len(by_layer) / 14))
        x_text = sheet.area.x1 - sheet.area.width * 0.1
        layers = sorted(by_layer)
        for i, layer in enumerate(layers):
            group = by_layer[layer]
            last = layer == layers[-1]
            if (i % step and not last) or (not last and step > 1 and len(layers) - 1 - i < step):
                continue  # thinned out; and never crowd the top label
            right = max((px(p) for b in group for p in corners(b)), key=lambda q: q[0])
            mid_z = (group[0].z0 + group[0].z1) / 2
            anchor = max((px((b.rect.x1, b.rect.y1, mid_z)) for b in group), key=lambda q: q[0])
            y = anchor[1]
            sheet.draw.line([anchor, (right[0] + 8 * sheet.unit, y), (x_text - 4 * sheet.unit, y)],
                            fill=(120, 120, 126), width=sheet.line_width(0.5))
            name = "ROOF" if group[0].kind == "roof" else f"LEVEL {group[0].first_floor:02d}"
            sheet.text((x_text, y), name, 8.5, anchor="lm", bold=True)

    def _elevation_ground(self) -> None:
        sheet, px = self.sheet, self.view.px
        c = self.concept
        x0, y = px((-9, 0, 0))
        x1, _ = px((c.width + 16, 0, 0))
        depth = 1.6 * self.view.scale
        sheet.draw.rectangle([x0, y, x1, y + depth], fill=mix(self.style.ground, self.style.paper, 0.3))
        step = 0.8 * self.view.scale
        x = x0
        while x < x1 + depth:  # earth hatch below the ground line
            sheet.draw.line([max(x0, x - depth), y + min(depth, x - x0) if x - depth < x0 else y + depth,
                             min(x, x1), y if x <= x1 else y + (x - x1)], fill=(150, 140, 124),
                            width=sheet.line_width(0.4))
            x += step
        for cx in (-5.5, c.width + 5.5):
            self._elevation_tree(cx)
        self._figure(-1.8)

    def _elevation_tree(self, cx: float) -> None:
        px, s = self.view.px, self.sheet
        h = min(9.0, max(5.0, self.concept.height * 0.6))
        r = h * 0.3
        self.sheet.draw.line([px((cx, 0, 0)), px((cx, 0, h - r))], fill=(92, 80, 66),
                             width=max(1, round(0.3 * self.view.scale)))
        x, y = px((cx, 0, h - r))
        rad = r * self.view.scale
        s.draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=mix(self.style.foliage, self.style.paper, 0.35),
                       outline=INK, width=s.line_width(0.6))

    def _figure(self, cx: float) -> None:
        """A 1.75 m person beside the building, for scale."""
        px, d = self.view.px, self.sheet.draw
        head = px((cx, 0, 1.62))
        r = 0.12 * self.view.scale
        d.ellipse([head[0] - r, head[1] - r, head[0] + r, head[1] + r], fill=INK)
        body = [(cx - 0.22, 0, 1.45), (cx + 0.22, 0, 1.45), (cx + 0.16, 0, 0.85), (cx + 0.12, 0, 0),
                (cx - 0.12, 0, 0), (cx - 0.16, 0, 0.85)]
        d.polygon([px(p) for p in body], fill=INK)

    def _elevation_notes(self) -> None:
        """Level marks on the right: ground, each floor (thinned out when many), eaves and ridge."""
        sheet, px, c = self.sheet, self.view.px, self.concept
        x = c.width + 12.5
        levels = [(f * c.floor_height, f"{f * c.floor_height:+.2f}") for f in range(c.floors + 1)]
        step = max(1, math.ceil(len(levels) / 12))
        levels = [lv for i, lv in enumerate(levels) if i % step == 0 or i == len(levels) - 1]
        ridge = max(b.top for b in self.blocks)
        if ridge > c.height + 0.01:
            levels.append((ridge, f"{ridge:+.2f}"))
        for z, label in levels:
            lx, ly = px((x, 0, z))
            t = 4 * sheet.unit
            sheet.draw.polygon([(lx, ly), (lx - t, ly - t * 1.4), (lx + t, ly - t * 1.4)], fill=INK)
            sheet.draw.line([px((c.width + 0.6, 0, z)), (lx + 3 * t, ly)], fill=(130, 130, 136),
                            width=sheet.line_width(0.4))
            sheet.text((lx + 3.5 * t, ly - 1.2 * t), label, 7.5, anchor="ls")
        sheet.scale_bar(sheet.area.x0, sheet.area.y1 - 14 * sheet.unit, self.view.scale)
        sheet.text((sheet.area.x0, sheet.area.y0), f"FRONT ELEVATION   {self.scale_label}", 11, bold=True)


def core_rect(concept: ConceptInputs) -> Rect:
    """Stairs and lifts: in the middle of the tower, else of the largest wing, on every floor."""
    rect = tower_rect(concept) if podium_floors(concept) else max(wings(concept), key=lambda r: r.width * r.depth)
    cx, cy = rect.centre
    hw, hd = min(3.2, rect.width * 0.18), min(2.4, rect.depth * 0.2)
    return Rect(cx - hw, cy - hd, cx + hw, cy + hd)


def _shadow_points(block: Block) -> list[tuple[float, float, float]]:
    if block.kind == "tree":
        cx, cy = block.rect.centre
        r = block.rect.width / 2
        zc = block.z1 - r
        ring = [(cx + r * math.cos(a), cy + r * math.sin(a), zc + dz) for a in
                (i * math.pi / 6 for i in range(12)) for dz in (-r * 0.6, 0, r * 0.6)]
        return ring + [(cx, cy, 0.0)]
    points = [p for face in roof_faces(block) for p in face.points]
    return points + list(corners(block))


def _on_ground(p: tuple[float, float, float]) -> tuple[float, float]:
    sx, sy, sz = SUN_DIR
    return p[0] - sx / sz * p[2], p[1] - sy / sz * p[2]


def _convex_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    pts = sorted(set(points))
    if len(pts) < 3:
        return pts

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list = []
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _overlaps(a: Rect, b: Rect, margin: float) -> bool:
    return a.x0 < b.x1 + margin and b.x0 < a.x1 + margin and a.y0 < b.y1 + margin and b.y0 < a.y1 + margin


def _dot(a, b) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _lerp(a, b, t: float):
    return tuple(x + (y - x) * t for x, y in zip(a, b, strict=True))
