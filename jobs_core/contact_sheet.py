"""A design study's contact sheet: its grid of renders on one page, with the project, the study's
title and the varied values as labels; as a PNG (Pillow) and a PDF (fpdf2, whose text is real
text: it can be searched, selected and read aloud, which a PDF of one picture cannot)."""
from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from fpdf import FPDF
from PIL import Image, ImageDraw

from .errors import JobsError
from .models import JobStatus
from .renderers.drawing.text import draw_text, find_font, fit_text
from .studies import Cell, Study, describe_values
from .words import render_type_name

CELL_PX = 360  # a cell's drawing on the PNG; big enough to read a facade, six fit a screen
CELL_H = CELL_PX * 3 // 4  # renders are 4:3
LABEL_PX = 150  # the column of row labels
GAP = 16
HEADER_PX = 110
CAPTION_PX = 34
INK, GREY, PAPER, BOX = (30, 30, 30), (110, 110, 110), (255, 255, 255), (236, 236, 236)
ImageOf = Callable[[Cell], bytes | None]


def cell_images(study: Study, load: Callable[[Any], bytes]) -> dict[int, bytes]:
    """{cell index: PNG} of the study's completed cells; a cell whose image cannot be read is left out."""
    images = {}
    for cell in study.cells:
        if cell.job is not None and cell.job.status == JobStatus.COMPLETED:
            try:
                images[cell.index] = load(cell.job)
            except JobsError:
                continue
    return images


def heading(study: Study) -> tuple[str, str]:
    """(title line, subtitle line) of a sheet."""
    fields = " × ".join(_field_label(name) for name in study.vary)
    return study.title, f"Project {study.project_id} · {render_type_name(study.render_type)} · varying {fields}"


def _field_label(name: str) -> str:
    return {"floorHeight": "floor height", "windowRatio": "glazing"}.get(name, name)


def column_labels(study: Study) -> list[str]:
    name, values = study.columns
    return [describe_values({name: value}) for value in values]


def row_labels(study: Study) -> list[str]:
    name, values = study.rows
    return [describe_values({name: value}) if name else "" for value in values]


def _cell_note(cell: Cell) -> str:
    if cell.job is None:
        return "not created"
    return {JobStatus.PENDING: "queued", JobStatus.PROCESSING: "rendering", JobStatus.FAILED: "failed",
            JobStatus.CANCELED: "canceled", JobStatus.COMPLETED: "image missing"}[JobStatus(cell.job.status)]


# -- PNG -------------------------------------------------------------------------------------------
def cell_box(study: Study, row: int, column: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of a cell's drawing on the PNG sheet."""
    x = (LABEL_PX if study.rows[0] else GAP) + column * (CELL_PX + GAP)
    y = HEADER_PX + 40 + row * (CELL_H + CAPTION_PX + GAP)
    return x, y, x + CELL_PX, y + CELL_H


def contact_sheet_png(study: Study, images: dict[int, bytes]) -> bytes:
    grid = study.grid()
    across, down = len(grid[0]), len(grid)
    left = LABEL_PX if study.rows[0] else GAP
    width = left + across * (CELL_PX + GAP) + GAP
    height = HEADER_PX + 40 + down * (CELL_H + CAPTION_PX + GAP) + GAP
    sheet = Image.new("RGB", (width, height), PAPER)
    title, subtitle = heading(study)
    draw_text(sheet, (GAP, 18), fit_text(title, 34, width - 2 * GAP, bold=True), 34, INK, bold=True)
    draw_text(sheet, (GAP, 66), fit_text(subtitle, 20, width - 2 * GAP), 20, GREY)
    for column, label in enumerate(column_labels(study)):
        draw_text(sheet, (left + column * (CELL_PX + GAP), HEADER_PX + 6), fit_text(label, 22, CELL_PX, bold=True),
                  22, INK, bold=True)
    pen = ImageDraw.Draw(sheet)
    for row, (label, cells) in enumerate(zip(row_labels(study), grid, strict=True)):
        top = cell_box(study, row, 0)[1]
        if label:
            draw_text(sheet, (GAP, top + CELL_H // 2 - 12), fit_text(label, 22, LABEL_PX - GAP, bold=True), 22, INK,
                      bold=True)
        for column, cell in enumerate(cells):
            x = cell_box(study, row, column)[0]
            _paste_cell(sheet, pen, cell, images.get(cell.index), x, top)
            draw_text(sheet, (x, top + CELL_H + 6), fit_text(describe_values(cell.values), 16, CELL_PX), 16, GREY)
    out = io.BytesIO()
    sheet.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _paste_cell(sheet: Image.Image, pen: ImageDraw.ImageDraw, cell: Cell, png: bytes | None, x: int, y: int) -> None:
    if png is None:
        pen.rectangle((x, y, x + CELL_PX, y + CELL_H), fill=BOX)
        draw_text(sheet, (x + 16, y + CELL_H // 2 - 12), _cell_note(cell), 22, GREY)
        return
    with Image.open(io.BytesIO(png)) as image:
        drawing = image.convert("RGB")
    drawing.thumbnail((CELL_PX, CELL_H))
    sheet.paste(drawing, (x + (CELL_PX - drawing.width) // 2, y + (CELL_H - drawing.height) // 2))


# -- PDF -------------------------------------------------------------------------------------------
def contact_sheet_pdf(study: Study, images: dict[int, bytes]) -> bytes:
    """One landscape page: the same grid, its labels as text in a font that has every script
    DejaVu Sans has (Helvetica, Latin only, when DejaVu is not installed)."""
    grid = study.grid()
    across, down = len(grid[0]), len(grid)
    pdf = FPDF(orientation="landscape", unit="mm", format="A4")
    pdf.set_auto_page_break(False)
    pdf.set_title(study.title)
    pdf.add_page()
    family = _font(pdf)
    title, subtitle = heading(study)
    pdf.set_font(family, size=18)
    pdf.set_xy(10, 10)
    pdf.cell(277, 9, _text(family, title))
    pdf.set_font(family, size=10)
    pdf.set_xy(10, 20)
    pdf.cell(277, 6, _text(family, subtitle))
    left = 32.0 if study.rows[0] else 10.0
    size = min((287 - left - 2 * across) / across, ((200 - 36) / down - 7) * 4 / 3)  # a cell's width, mm
    pdf.set_font(family, size=10)
    for column, label in enumerate(column_labels(study)):
        pdf.set_xy(left + column * (size + 2), 30)
        pdf.cell(size, 5, _text(family, label))
    for row, (label, cells) in enumerate(zip(row_labels(study), grid, strict=True)):
        top = 36 + row * (size * 0.75 + 7)
        if label:
            pdf.set_font(family, size=10)
            pdf.set_xy(10, top + size * 0.375 - 3)
            pdf.cell(left - 11, 6, _text(family, label))
        for column, cell in enumerate(cells):
            _pdf_cell(pdf, family, cell, images.get(cell.index), left + column * (size + 2), top, size)
    return bytes(pdf.output())


def _pdf_cell(pdf: FPDF, family: str, cell: Cell, png: bytes | None, x: float, y: float, size: float) -> None:
    if png is None:
        pdf.set_fill_color(*BOX)
        pdf.rect(x, y, size, size * 0.75, style="F")
        pdf.set_font(family, size=9)
        pdf.set_xy(x + 2, y + size * 0.375 - 3)
        pdf.cell(size - 4, 6, _cell_note(cell))
    else:
        pdf.image(io.BytesIO(png), x=x, y=y, w=size, h=size * 0.75, keep_aspect_ratio=True)
    pdf.set_font(family, size=8)
    pdf.set_xy(x, y + size * 0.75 + 0.5)
    pdf.cell(size, 4, _text(family, describe_values(cell.values)))


def _font(pdf: FPDF) -> str:
    path = find_font("DejaVuSans.ttf")
    if path is None:
        return "helvetica"
    pdf.add_font("DejaVu", fname=path)
    return "DejaVu"


def _text(family: str, text: str) -> str:
    # Helvetica has Latin-1 only: another character would stop the PDF being written at all.
    return text if family != "helvetica" else text.encode("latin-1", "replace").decode("latin-1")
