"""The drawing sheet: supersampled canvas, frame, title block, fonts, scale bar and north arrow."""
from __future__ import annotations

import hashlib
import io
import json
import math
from dataclasses import dataclass

from PIL import Image, ImageDraw

from ...models import ConceptInputs
from .text import cjk_face, draw_text, fit_text, text_length
from .text import font as font  # re-exported: plan.py measures its rotated labels with it

SUPERSAMPLE = 2
SHEET_RATIO = math.sqrt(2)  # ISO A-series landscape
INK = (38, 38, 42)
# Paper scales an architect would print at; plan and elevation use the largest that fits on A3.
STANDARD_SCALES = (50, 100, 125, 150, 200, 250, 500, 1000, 1250, 2000, 2500, 5000, 10000)
A3_WIDTH_MM = 420.0
SHEET_CODES = {"plan": "A-101", "elevation": "A-201", "axonometric": "A-301", "exploded-axonometric": "A-302"}


def brief_code(concept: ConceptInputs) -> str:
    """A short fingerprint of the brief: same brief, same code (printed as the drawing number)."""
    canonical = json.dumps(concept.model_dump(mode="json"), sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:6].upper()


@dataclass
class Area:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0


class Sheet:
    """A landscape sheet `size` px wide, drawn at SUPERSAMPLE x and scaled down when encoded."""

    def __init__(self, size: int, paper: tuple[int, int, int]) -> None:
        self.size = size
        self.width = size * SUPERSAMPLE
        self.height = round(size / SHEET_RATIO) * SUPERSAMPLE
        self.image = Image.new("RGB", (self.width, self.height), paper)
        self.draw = ImageDraw.Draw(self.image)
        self.paper = paper
        self.unit = self.width / 1000  # one "point": line widths and text scale with the sheet
        margin = 16 * self.unit
        self.frame = Area(margin, margin, self.width - margin, self.height - margin)
        self.title_height = 74 * self.unit
        pad = 22 * self.unit
        self.area = Area(self.frame.x0 + pad, self.frame.y0 + pad, self.frame.x1 - pad,
                         self.frame.y1 - self.title_height - pad)

    def line_width(self, points: float) -> int:
        return max(1, round(points * self.unit))

    def text(self, xy: tuple[float, float], text: str, size: float, fill=INK, bold: bool = False,
             anchor: str = "la", max_width: float | None = None) -> None:
        """Text in any script (see text.py), `size` in points; measured as it is drawn."""
        cjk = cjk_face(text)  # chosen from the whole text, so a shortened title keeps its face
        if max_width is not None:  # shrink a little first, then shorten with an ellipsis
            while size > 8 and text_length(text, round(size * self.unit), bold, cjk) > max_width:
                size -= 0.5
            text = fit_text(text, round(size * self.unit), max_width, bold, cjk)
        draw_text(self.image, xy, text, round(size * self.unit), fill, bold, anchor, cjk)

    # -- furniture -----------------------------------------------------------------------
    def frame_and_title(self, concept: ConceptInputs, project_id: str, render_type: str, scale: str) -> None:
        u, f, d = self.unit, self.frame, self.draw
        d.rectangle([f.x0, f.y0, f.x1, f.y1], outline=INK, width=self.line_width(2.2))
        top = f.y1 - self.title_height
        d.line([f.x0, top, f.x1, top], fill=INK, width=self.line_width(1.4))
        cells = [f.x0, f.x0 + f.width * 0.44, f.x0 + f.width * 0.6, f.x0 + f.width * 0.8, f.x1]
        for x in cells[1:-1]:
            d.line([x, top, x, f.y1], fill=INK, width=self.line_width(0.9))
        pad = 9 * u
        self.text((cells[0] + pad, top + pad), concept.title.upper() or "UNTITLED CONCEPT", 19, bold=True,
                  max_width=cells[1] - cells[0] - 2 * pad)
        summary = (f"{concept.building_type} · {concept.floors} floor{'s' if concept.floors > 1 else ''} · "
                   f"{concept.footprint} footprint {concept.width:g} × {concept.depth:g} m · "
                   f"{concept.height:g} m high")
        self.text((cells[0] + pad, top + 33 * u), summary, 10.5, max_width=cells[1] - cells[0] - 2 * pad)
        finish = f"{concept.material} facade · {concept.roof} roof · {concept.palette} palette · " \
                 f"{round(concept.window_ratio * 100)}% glazed"
        self.text((cells[0] + pad, top + 50 * u), finish, 10.5, fill=(95, 95, 100),
                  max_width=cells[1] - cells[0] - 2 * pad)
        code = SHEET_CODES.get(render_type, "A-900")
        labels = [("PROJECT", project_id, ""), ("DRAWING", render_type.replace("-", " ").upper(), ""),
                  ("SHEET", f"{code}-{brief_code(concept)}", f"SCALE {scale}")]
        for (label, value, note), x0, x1 in zip(labels, cells[1:], cells[2:], strict=False):
            self.text((x0 + pad, top + pad), label, 8.5, fill=(110, 110, 115))
            self.text((x0 + pad, top + 30 * u), value, 12, bold=True, max_width=x1 - x0 - 2 * pad)
            if note:
                self.text((x0 + pad, top + 50 * u), note, 9.5, max_width=x1 - x0 - 2 * pad)

    def scale_bar(self, x: float, y: float, px_per_m: float) -> None:
        """A 0-N m bar in alternating blocks, N chosen to be ~1/5 of the drawing width."""
        target = self.area.width * 0.2 / px_per_m
        step = next((s for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500) if s * 4 >= target), 500)
        h = 5 * self.unit
        for i in range(4):
            x0 = x + i * step * px_per_m
            self.draw.rectangle([x0, y, x0 + step * px_per_m, y + h], fill=INK if i % 2 == 0 else self.paper,
                                outline=INK, width=self.line_width(0.7))
            self.text((x0, y + h + 3 * self.unit), f"{i * step:g}", 7.5, anchor="ma")
        self.text((x + 4 * step * px_per_m, y + h + 3 * self.unit), f"{4 * step:g} m", 7.5, anchor="ma")

    def north_arrow(self, x: float, y: float, radius: float) -> None:
        d = self.draw
        d.ellipse([x - radius, y - radius, x + radius, y + radius], outline=INK, width=self.line_width(0.8))
        d.polygon([(x, y - radius * 0.95), (x + radius * 0.38, y + radius * 0.6), (x, y + radius * 0.3)], fill=INK)
        d.polygon([(x, y - radius * 0.95), (x - radius * 0.38, y + radius * 0.6), (x, y + radius * 0.3)],
                  fill=self.paper, outline=INK, width=self.line_width(0.6))
        self.text((x, y - radius * 1.1), "N", 10, bold=True, anchor="md")

    def dashed(self, a: tuple[float, float], b: tuple[float, float], fill, width: int,
               dash: float, gap: float) -> None:
        length = math.dist(a, b)
        if length <= 0:
            return
        ux, uy = (b[0] - a[0]) / length, (b[1] - a[1]) / length
        t = 0.0
        while t < length:
            e = min(t + dash, length)
            self.draw.line([a[0] + ux * t, a[1] + uy * t, a[0] + ux * e, a[1] + uy * e], fill=fill, width=width)
            t = e + gap

    def encode(self) -> bytes:
        """Downscale (the anti-aliasing) and encode as PNG."""
        small = self.image.reduce(SUPERSAMPLE)  # a box filter: each pixel the mean of its 2x2 block
        buffer = io.BytesIO()
        small.save(buffer, "PNG", compress_level=3)  # drawings compress well even at a fast level
        return buffer.getvalue()


def polygon(draw: ImageDraw.ImageDraw, points, fill, outline=None, width: int = 1) -> None:
    """A filled polygon with an outline. Pillow's own wide outline builds a sheet-sized mask per
    call (seconds for thousands of windows); a closed polyline costs next to nothing."""
    if fill is not None:
        draw.polygon(points, fill=fill)
    if outline is not None:
        draw.line([*points, points[0]], fill=outline, width=max(1, width or 1), joint="curve" if width > 2 else None)


def paper_scale(extent_w_m: float, extent_h_m: float, area: Area, sheet_width_px: float) -> tuple[int, float]:
    """The largest standard scale 1:N at which the extent fits the area; (N, px per metre)."""
    mm_per_px = A3_WIDTH_MM / sheet_width_px
    for n in STANDARD_SCALES:
        px_per_m = 1000.0 / n / mm_per_px
        if extent_w_m * px_per_m <= area.width and extent_h_m * px_per_m <= area.height:
            return n, px_per_m
    n = STANDARD_SCALES[-1]
    return n, min(area.width / extent_w_m, area.height / extent_h_m)
