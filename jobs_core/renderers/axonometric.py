"""`axonometric`: the embedded offline renderer. Draws the concept itself with Pillow.

Deterministic: the same brief gives the same bytes. Footprints are unions of boxes, projected
isometrically and painted back to front; drawn at 2x and downscaled for anti-aliasing.
"""
from __future__ import annotations

import io
import math
import os

from PIL import Image, ImageDraw, ImageFont

from ..models import ConceptInputs
from . import ProgressFn, Renderer, RenderResult, RenderTask, register

RENDER_TYPES = ("axonometric", "exploded-axonometric", "plan", "elevation")
SUPERSAMPLE = 2
PALETTES = {
    "warm": ((236, 226, 208), (190, 120, 80), (120, 70, 50)),
    "cool": ((222, 232, 240), (90, 130, 170), (40, 60, 90)),
    "monochrome": ((238, 238, 238), (150, 150, 150), (60, 60, 60)),
    "earth": ((230, 224, 200), (140, 120, 80), (80, 70, 50)),
    "pastel": ((246, 236, 242), (200, 170, 210), (120, 110, 150)),
}
MATERIAL_TINT = {"concrete": (0, 0, 0), "brick": (40, -10, -20), "timber": (30, 10, -20),
                 "glass": (-30, 0, 30), "stone": (10, 10, 0), "metal": (-10, -5, 5)}

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in metres


def footprint_boxes(concept: ConceptInputs) -> list[Box]:
    """The footprint as rectangles covering the width x depth site."""
    w, d = concept.width, concept.depth
    wing = max(min(w, d) / 3, 3)
    shapes = {
        "bar": [(0, 0, w, d)],
        "L": [(0, 0, w, wing), (0, wing, wing, d)],
        "U": [(0, 0, w, wing), (0, wing, wing, d), (w - wing, wing, w, d)],
        "courtyard": [(0, 0, w, wing), (0, d - wing, w, d), (0, wing, wing, d - wing),
                      (w - wing, wing, w, d - wing)],
        "tower": [(w * 0.25, d * 0.25, w * 0.75, d * 0.75)],
    }
    return shapes[concept.footprint]


def _shade(colour: tuple[int, int, int], factor: float, tint=(0, 0, 0)) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(c * factor + t))) for c, t in zip(colour, tint, strict=False))


class AxonometricRenderer(Renderer):
    name = "axonometric"
    description = "Offline, deterministic architectural drawing of the brief (Pillow)."
    render_types = RENDER_TYPES

    def render(self, task: RenderTask, progress: ProgressFn) -> RenderResult:
        progress(5, "validating brief")
        concept = ConceptInputs.model_validate(task.concept_inputs)
        self.check_render_type(task.render_type)
        size = task.size * SUPERSAMPLE
        image = Image.new("RGB", (size, int(size * 0.75)), PALETTES[concept.palette][0])
        draw = ImageDraw.Draw(image)
        progress(20, "laying out massing")
        if task.render_type == "plan":
            self._plan(draw, concept, image.size)
        elif task.render_type == "elevation":
            self._elevation(draw, concept, image.size)
        else:
            self._axonometric(draw, concept, image.size, task.render_type == "exploded-axonometric", progress)
        progress(80, "adding title block")
        self._title(draw, concept, task, image.size)
        progress(90, "encoding")
        image = image.resize((task.size, int(task.size * 0.75)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "PNG", optimize=False)
        return RenderResult(png=buffer.getvalue())

    # -- views -----------------------------------------------------------------------------
    def _axonometric(self, draw, concept, canvas, exploded, progress) -> None:
        w, h = canvas
        gap = concept.floor_height * 0.8 if exploded else 0.0
        total_h = concept.floors * (concept.floor_height + gap)
        extent = concept.width + concept.depth
        scale = min(w * 0.8 / (extent * math.cos(math.radians(30))),
                    h * 0.7 / (extent * 0.5 + total_h))
        ox, oy = w / 2 - (concept.width - concept.depth) * math.cos(math.radians(30)) * scale / 2, \
            h * 0.85 - (extent * 0.5) * scale / 2 + extent * 0.25 * scale

        def project(x: float, y: float, z: float) -> tuple[float, float]:
            c = math.cos(math.radians(30))
            return ox + (x - y) * c * scale, oy + (x + y) * 0.5 * scale - extent * 0.5 * scale - z * scale

        wall, accent, line = PALETTES[concept.palette]
        tint = MATERIAL_TINT[concept.material]
        boxes = sorted(footprint_boxes(concept), key=lambda b: -(b[2] + b[3]))
        shadow = [project(b[0] + total_h * 0.3, b[1] - total_h * 0.1, 0) for b in boxes]
        for x0, y0, x1, y1 in boxes:  # ground shadow offset from each box
            poly = [project(x0, y0, 0), project(x1 + total_h * 0.4, y0, 0),
                    project(x1 + total_h * 0.4, y1 + total_h * 0.2, 0), project(x0, y1 + total_h * 0.2, 0)]
            draw.polygon(poly, fill=_shade(wall, 0.8))
        del shadow
        progress(40, "drawing facades")
        for floor in range(concept.floors):
            z0 = floor * (concept.floor_height + gap)
            z1 = z0 + concept.floor_height
            for x0, y0, x1, y1 in boxes:
                self._slab(draw, project, (x0, y0, x1, y1), z0, z1, wall, accent, line, tint, concept)
        progress(65, "placing roof")
        top = (concept.floors - 1) * (concept.floor_height + gap) + concept.floor_height
        for x0, y0, x1, y1 in boxes:
            self._roof(draw, project, (x0, y0, x1, y1), top, concept, accent, line)

    def _slab(self, draw, project, box, z0, z1, wall, accent, line, tint, concept) -> None:
        x0, y0, x1, y1 = box
        right = [project(x1, y0, z0), project(x1, y1, z0), project(x1, y1, z1), project(x1, y0, z1)]
        front = [project(x0, y1, z0), project(x1, y1, z0), project(x1, y1, z1), project(x0, y1, z1)]
        draw.polygon(right, fill=_shade(wall, 0.78, tint), outline=line)
        draw.polygon(front, fill=_shade(wall, 0.92, tint), outline=line)
        glass = (150, 180, 200) if concept.material != "glass" else (120, 160, 190)
        bay = 3.0
        for face, length, point in (("front", x1 - x0, lambda t, z: project(x0 + t, y1, z)),
                                    ("right", y1 - y0, lambda t, z: project(x1, y0 + t, z))):
            bays = max(int(length // bay), 1)
            step = length / bays
            for i in range(bays):
                a, b = i * step + step * 0.25, i * step + step * 0.75
                za, zb = z0 + (z1 - z0) * 0.3, z0 + (z1 - z0) * 0.8
                shade = 1.0 if face == "front" else 0.85
                draw.polygon([point(a, za), point(b, za), point(b, zb), point(a, zb)],
                             fill=_shade(glass, shade))

    def _roof(self, draw, project, box, top, concept, accent, line) -> None:
        x0, y0, x1, y1 = box
        if concept.roof in ("gable", "hip", "shed", "sawtooth"):
            ridge = min(x1 - x0, y1 - y0) * 0.35
            mid = (y0 + y1) / 2
            far = [project(x0, y0, top), project(x1, y0, top), project(x1, mid, top + ridge), project(x0, mid, top + ridge)]
            near = [project(x0, y1, top), project(x1, y1, top), project(x1, mid, top + ridge), project(x0, mid, top + ridge)]
            gable = [project(x1, y0, top), project(x1, y1, top), project(x1, mid, top + ridge)]
            draw.polygon(far, fill=_shade(accent, 0.8), outline=line)
            draw.polygon(gable, fill=_shade(accent, 0.7), outline=line)
            draw.polygon(near, fill=accent, outline=line)
        else:
            draw.polygon([project(x0, y0, top), project(x1, y0, top), project(x1, y1, top), project(x0, y1, top)],
                         fill=_shade(accent, 1.1), outline=line)

    def _plan(self, draw, concept, canvas) -> None:
        w, h = canvas
        scale = min(w * 0.8 / concept.width, h * 0.7 / concept.depth)
        ox, oy = (w - concept.width * scale) / 2, (h - concept.depth * scale) / 2
        wall, accent, line = PALETTES[concept.palette]
        for x0, y0, x1, y1 in footprint_boxes(concept):
            draw.rectangle([ox + x0 * scale, oy + y0 * scale, ox + x1 * scale, oy + y1 * scale],
                           fill=_shade(accent, 1.15), outline=line, width=SUPERSAMPLE * 3)
        grid = 6.0
        for i in range(int(concept.width // grid) + 1):
            x = ox + i * grid * scale
            draw.line([x, oy, x, oy + concept.depth * scale], fill=_shade(line, 1.8), width=1)

    def _elevation(self, draw, concept, canvas) -> None:
        w, h = canvas
        height = concept.floors * concept.floor_height
        scale = min(w * 0.8 / concept.width, h * 0.65 / height)
        ox, base = (w - concept.width * scale) / 2, h * 0.85
        wall, accent, line = PALETTES[concept.palette]
        draw.rectangle([0, base, w, h], fill=_shade(wall, 0.8))
        draw.rectangle([ox, base - height * scale, ox + concept.width * scale, base],
                       fill=_shade(wall, 0.92, MATERIAL_TINT[concept.material]), outline=line, width=SUPERSAMPLE * 2)
        for floor in range(concept.floors):
            z = base - floor * concept.floor_height * scale
            draw.line([ox, z, ox + concept.width * scale, z], fill=line, width=SUPERSAMPLE)
            bays = max(int(concept.width // 3), 1)
            for i in range(bays):
                bx = ox + (i + 0.25) * concept.width / bays * scale
                draw.rectangle([bx, z - concept.floor_height * scale * 0.8, bx + concept.width / bays * scale * 0.5,
                                z - concept.floor_height * scale * 0.3], fill=(150, 180, 200))

    def _title(self, draw, concept, task, canvas) -> None:
        w, h = canvas
        font = _font(int(h * 0.035))
        small = _font(int(h * 0.022))
        draw.rectangle([0, 0, w, int(h * 0.11)], fill=(255, 255, 255))
        draw.text((int(w * 0.02), int(h * 0.015)), concept.title, fill=(30, 30, 30), font=font)
        draw.text((int(w * 0.02), int(h * 0.06)),
                  f"{task.project_id}  ·  {task.render_type}  ·  {concept.floors} floors  ·  "
                  f"{concept.footprint} {concept.width:g} x {concept.depth:g} m  ·  {concept.material}",
                  fill=(90, 90, 90), font=small)


def _font(size: int) -> ImageFont.ImageFont:
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
                 os.path.join(os.path.dirname(ImageFont.__file__), "fonts", "DejaVuSans.ttf")):
        if os.path.exists(path):
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


register("axonometric", AxonometricRenderer)
