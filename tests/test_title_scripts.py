"""Titles in any script: the title block draws Greek, Cyrillic, Chinese, Japanese, Korean and
colour emoji as real glyphs, never the font's empty .notdef box.

Every drawing goes through the product's renderer. A box is the same shape whatever character it
stands for, so two different characters that draw the same pixels are boxes; a glyph also differs
from the U+FFFD marker the sheet draws for a character no installed font has, and from no ink.
"""
from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs_core.renderers import RenderTask, get_renderer
from jobs_core.renderers.drawing import text
from jobs_core.renderers.drawing.sheet import SUPERSAMPLE, Sheet

SIZE = 1024


def render(title: str) -> np.ndarray:
    task = RenderTask("job-1", "demo", "elevation", {"title": title}, SIZE)
    png = get_renderer("axonometric").render(task, lambda percent, stage: None).png
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def title_cell() -> tuple[slice, slice, int]:
    """(rows, columns) of the title's line in the drawn PNG, and the column where its cell ends."""
    sheet = Sheet(SIZE, (255, 255, 255))  # geometry only: where frame_and_title puts the title
    f, u = sheet.frame, sheet.unit
    top = f.y1 - sheet.title_height
    cell_end = f.x0 + f.width * 0.44
    rows = slice(round((top + 4 * u) / SUPERSAMPLE), round((top + 31 * u) / SUPERSAMPLE))
    columns = slice(round((f.x0 + 4 * u) / SUPERSAMPLE), round((cell_end - 3 * u) / SUPERSAMPLE))
    return rows, columns, round((cell_end - 9 * u) / SUPERSAMPLE)  # 9 points: the cell's padding


def title_row(title: str) -> np.ndarray:
    rows, columns, _ = title_cell()
    return render(title)[rows, columns]


def ink(row: np.ndarray) -> np.ndarray:
    """Pixels clearly off the paper colour (the row's most common one)."""
    colours, counts = np.unique(row.reshape(-1, 3), axis=0, return_counts=True)
    paper = colours[counts.argmax()]
    return np.abs(row - paper).max(axis=2) > 60


def coloured(row: np.ndarray) -> int:
    """Pixels with real colour in them: ink, paper and anti-aliasing are all near-grey here."""
    return int(((row.max(axis=2) - row.min(axis=2)) > 50).sum())


MISSING_PACKAGES = sorted({family.package for family in (text.DEJAVU, text.NOTO_CJK, text.NOTO_EMOJI)
                           for name in (family.regular, family.bold) if not text.find_font(name)})
needs_fonts = pytest.mark.skipif(bool(MISSING_PACKAGES), reason="the title fonts are not installed: "
                                 f"apt-get install {' '.join(MISSING_PACKAGES)} (.ci/run does)")


@needs_fonts
@pytest.mark.parametrize("script, one, other", [
    ("Greek", "Ω", "Ψ"), ("Cyrillic", "Ж", "Я"), ("Chinese", "北", "京"), ("Japanese", "あ", "タ"),
    ("Korean", "한", "글"), ("emoji", "🏠", "🌳"),
])
def test_each_script_draws_its_own_glyphs_not_boxes(script, one, other):
    first, second, marker = title_row(f"{one}{one}{one}"), title_row(f"{other}{other}{other}"), title_row("\ufffd" * 3)
    assert ink(first).sum() > 100, f"the {script} title drew nothing"
    assert ink(np.abs(first - second)).sum() > 50, f"{one} and {other} drew the same shape: a missing-glyph box"
    assert ink(np.abs(first - marker)).sum() > 50, f"{one} drew the replacement marker: its font was not found"


@needs_fonts
def test_an_emoji_in_the_title_adds_colour_and_a_joined_sequence_is_one_glyph():
    assert coloured(title_row("HOUSE")) == 0
    assert coloured(title_row("HOUSE 🏠")) > 40
    # The rainbow flag is white flag + VS16 + ZWJ + rainbow: one emoji, not two pictures or boxes.
    rainbow_flag = "\U0001F3F3\ufe0f\u200d\U0001F308"
    assert coloured(title_row(rainbow_flag)) > 40
    widths = [np.ptp(np.flatnonzero(ink(title_row(t)).any(axis=0))) for t in ("🏠", rainbow_flag)]
    assert widths[1] < widths[0] * 1.4, f"the flag drew {widths[1]} px wide, one emoji is {widths[0]} px"


@needs_fonts
def test_a_long_mixed_title_is_measured_as_drawn_and_stays_in_its_cell():
    title = ("北京国际贸易中心 🏠 Τίτλος Заголовок 東京タワー " * 6)[:120]
    rows, columns, cell_end = title_cell()
    drawing = render(title)
    row = ink(drawing[rows, columns])
    last_ink = columns.start + np.flatnonzero(row.any(axis=0)).max()
    assert last_ink <= cell_end, f"the title runs to x={last_ink}, past its cell's padding at x={cell_end}"
    assert last_ink > cell_end - 60, "the shortened title should fill its cell up to the ellipsis"


@pytest.fixture
def only_dejavu(tmp_path: Path, monkeypatch):
    """A machine with DejaVu only: the real fonts copied into the one folder searched."""
    for name in (text.DEJAVU.regular, text.DEJAVU.bold):
        shutil.copy(text.find_font(name), tmp_path / name)
    monkeypatch.setattr(text, "FONT_DIRS", (str(tmp_path),))
    text.forget_fonts()
    yield
    monkeypatch.undo()
    text.forget_fonts()


@pytest.mark.skipif(text.DEJAVU.package in MISSING_PACKAGES, reason=f"apt-get install {text.DEJAVU.package}")
def test_without_cjk_and_emoji_fonts_the_title_shows_the_replacement_mark_and_the_log_names_the_package(
        only_dejavu, caplog):
    with caplog.at_level(logging.WARNING, logger=text.__name__):
        missing = title_row("北京 🏠")
        again = title_row("上海 🌳")
    assert np.array_equal(missing, title_row("\ufffd\ufffd \ufffd")), "a missing character is drawn as U+FFFD"
    assert np.array_equal(missing, again)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2, warnings  # once per package, however many titles
    assert any("fonts-noto-cjk" in w for w in warnings) and any("fonts-noto-color-emoji" in w for w in warnings)
