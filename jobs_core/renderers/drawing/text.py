"""Text in any script on the sheet: DejaVu Sans first, then Noto Sans CJK, then Noto Color Emoji.

Pillow draws a character its font lacks as that font's .notdef box and has no font fallback of
its own (python-pillow/Pillow#4808). So the text is cut into runs by which font has each
character (fontTools reads each font's character map once per process) and each run is drawn
with its own font on one shared baseline. Colour emoji come from the 109 px bitmap strike of
Noto Color Emoji, the only size it has, scaled to the line height. A character that no installed
font has is drawn as U+FFFD, the replacement character, never as an empty box, and the log says
once which Debian package would draw it.

Text that DejaVu covers alone (every Latin, Greek and Cyrillic title) takes the one-run path:
the same single `draw.text` call as before, so those drawings keep their exact bytes.
"""
from __future__ import annotations

import functools
import logging
import math
import os
import re
import unicodedata
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger(__name__)

# Debian's folders first (the packages .ci/run installs), then Fedora's and Arch's names for them.
FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu",
             "/usr/share/fonts/opentype/noto", "/usr/share/fonts/truetype/noto",
             "/usr/share/fonts/google-noto-cjk", "/usr/share/fonts/noto-cjk",
             "/usr/share/fonts/google-noto-color-emoji", "/usr/share/fonts/noto", "/usr/local/share/fonts")
EMOJI_STRIKE = 109  # NotoColorEmoji.ttf (CBDT) holds bitmaps at this pixel size only
REPLACEMENT = "\ufffd"
MIN_SIZE = 6
# Face index in the Noto Sans CJK collections (.ttc): JP, KR, SC, TC, HK.
CJK_JAPANESE, CJK_KOREAN, CJK_CHINESE = 0, 1, 2
Face = ImageFont.FreeTypeFont | ImageFont.ImageFont


@dataclass(frozen=True)
class Family:
    regular: str
    bold: str
    package: str  # the Debian package that installs it, named in the log when it is missing
    colour: bool = False


DEJAVU = Family("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "fonts-dejavu-core")
NOTO_CJK = Family("NotoSansCJK-Regular.ttc", "NotoSansCJK-Bold.ttc", "fonts-noto-cjk")
NOTO_EMOJI = Family("NotoColorEmoji.ttf", "NotoColorEmoji.ttf", "fonts-noto-color-emoji", colour=True)

# Characters below U+1F000 that Unicode shows as emoji by default (Emoji_Presentation=Yes).
# DejaVu has black-and-white glyphs for many of them; a user who typed ☕ expects the colour one.
_BMP_EMOJI = ((0x231A, 0x231B), (0x23E9, 0x23EC), (0x23F0, 0x23F0), (0x23F3, 0x23F3), (0x25FD, 0x25FE),
              (0x2614, 0x2615), (0x2648, 0x2653), (0x267F, 0x267F), (0x2693, 0x2693), (0x26A1, 0x26A1),
              (0x26AA, 0x26AB), (0x26BD, 0x26BE), (0x26C4, 0x26C5), (0x26CE, 0x26CE), (0x26D4, 0x26D4),
              (0x26EA, 0x26EA), (0x26F2, 0x26F3), (0x26F5, 0x26F5), (0x26FA, 0x26FA), (0x26FD, 0x26FD),
              (0x2705, 0x2705), (0x270A, 0x270B), (0x2728, 0x2728), (0x274C, 0x274C), (0x274E, 0x274E),
              (0x2753, 0x2755), (0x2757, 0x2757), (0x2795, 0x2797), (0x27B0, 0x27B0), (0x27BF, 0x27BF),
              (0x2B1B, 0x2B1C), (0x2B50, 0x2B50), (0x2B55, 0x2B55))
# Where a missing character points the log: CJK ideographs, kana, hangul, CJK punctuation, fullwidth.
_CJK_RANGES = ((0x1100, 0x11FF), (0x2E80, 0x9FFF), (0xA960, 0xA97F), (0xAC00, 0xD7FF), (0xF900, 0xFAFF),
               (0xFE30, 0xFE4F), (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))
_KANA = re.compile("[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HANGUL = re.compile("[\u1100-\u11ff\u3130-\u318f\uac00-\ud7af]")
_warned: set[str] = set()


@dataclass(frozen=True)
class Run:
    """A stretch of text one font draws; `scale` shrinks the emoji strike to the line."""
    text: str
    face: Face
    scale: float = 1.0
    colour: bool = False

    @property
    def width(self) -> float:
        return self.face.getlength(self.text) * self.scale


# -- fonts -----------------------------------------------------------------------------------
@functools.cache
def find_font(name: str) -> str | None:
    """The path of an installed font file, or None."""
    return next((os.path.join(d, name) for d in FONT_DIRS if os.path.exists(os.path.join(d, name))), None)


@functools.lru_cache(maxsize=128)
def _load(path: str, size: int, index: int = 0) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size, index=index)


@functools.lru_cache(maxsize=64)
def font(size: int, bold: bool = False) -> Face:
    """DejaVu Sans at `size` px: the sheet's own face, the first one asked for every character."""
    path = find_font(DEJAVU.bold if bold else DEJAVU.regular)
    if path is None:
        _warn_once(DEJAVU.package, "DejaVu Sans is not installed; text is drawn in Pillow's default face.")
        return ImageFont.load_default(max(size, MIN_SIZE))
    return _load(path, max(size, MIN_SIZE))


@functools.cache
def coverage(path: str | None, index: int = 0) -> frozenset[int]:
    """The code points a font has glyphs for (its cmap); empty when it cannot be read."""
    if path is None:
        return frozenset(range(0x20, 0x7F))  # Pillow's built-in face: plain ASCII
    from fontTools.ttLib import TTFont  # imported on first need; each map is read once per process

    try:
        with TTFont(path, fontNumber=index, lazy=True) as ttf:
            return frozenset(ttf.getBestCmap() or ())
    except Exception:  # a damaged font file must not stop the drawing; the other fonts still draw
        log.exception("Could not read the character map of %s", path)
        return frozenset()


def cjk_face(text: str) -> int:
    """Which Noto Sans CJK face draws `text`: kana means Japanese, hangul Korean, else Chinese.
    Han characters alone cannot tell the language; Simplified Chinese forms are the default."""
    if _KANA.search(text):
        return CJK_JAPANESE
    return CJK_KOREAN if _HANGUL.search(text) else CJK_CHINESE


# -- runs ------------------------------------------------------------------------------------
def _in(cp: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _emoji_first(text: str, i: int) -> bool:
    """Whether character i is meant as an emoji: default emoji presentation, or asked for with
    VS16 (U+FE0F); VS15 (U+FE0E) asks for the text glyph."""
    follower = text[i + 1] if i + 1 < len(text) else ""
    if follower in ("\ufe0f", "\u20e3"):
        return True
    cp = ord(text[i])
    return follower != "\ufe0e" and (cp >= 0x1F000 or _in(cp, _BMP_EMOJI))


def _joins(ch: str) -> bool:
    """Marks that belong to the character before them: combining marks, variation selectors,
    the zero-width joiner, skin tones and tag characters (emoji sequences)."""
    cp = ord(ch)
    return (unicodedata.category(ch) in ("Mn", "Mc", "Me") or 0xFE00 <= cp <= 0xFE0F or cp == 0x200D
            or 0x1F3FB <= cp <= 0x1F3FF or 0xE0020 <= cp <= 0xE007F or 0xE0100 <= cp <= 0xE01EF)


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) == "Cf" or 0xFE00 <= ord(ch) <= 0xFE0F or 0xE0100 <= ord(ch) <= 0xE01EF


def _sources(bold: bool, cjk: int) -> list[tuple[Family, str | None, int]]:
    """(family, path, face index) in fallback order; a path is None when the font is missing."""
    return [(DEJAVU, find_font(DEJAVU.bold if bold else DEJAVU.regular), 0),
            (NOTO_CJK, find_font(NOTO_CJK.bold if bold else NOTO_CJK.regular), cjk),
            (NOTO_EMOJI, find_font(NOTO_EMOJI.regular), 0)]


def segments(text: str, bold: bool = False, cjk: int | None = None) -> list[tuple[str, int]]:
    """`text` cut into (chunk, source) pieces: 0 DejaVu, 1 Noto CJK, 2 Noto Color Emoji.
    A character that no installed font has becomes U+FFFD in a DejaVu piece."""
    sources = _sources(bold, cjk_face(text) if cjk is None else cjk)
    primary = coverage(sources[0][1])
    pieces: list[list] = []
    after_joiner = False
    for i, ch in enumerate(text):
        cp = ord(ch)
        if pieces and (after_joiner or _joins(ch)):
            last = pieces[-1]
            last_source = sources[last[1]]
            if last_source[1] is not None and cp in coverage(last_source[1], last_source[2]):
                last[0] += ch
                after_joiner = cp == 0x200D
                continue
            if _invisible(ch):  # a joiner the run's font lacks shows nothing, so it is left out
                continue
        after_joiner = False
        if ch.isspace() and cp not in primary:
            ch, cp = " ", 0x20  # a tab or line separator in a one-line title is a space, not a missing glyph
        emoji = _emoji_first(text, i)
        if cp in primary and not emoji:
            chosen = 0  # the common case: no other font's map is read
        else:
            chosen = next((k for k in ((2, 0, 1) if emoji else (0, 1, 2)) if sources[k][1] is not None
                           and cp in coverage(sources[k][1], sources[k][2])), None)
            if chosen is None:
                if _invisible(ch):
                    continue
                _missing(ch)
                ch, chosen = (REPLACEMENT if ord(REPLACEMENT) in primary else "?"), 0
        if pieces and pieces[-1][1] == chosen:
            pieces[-1][0] += ch
        else:
            pieces.append([ch, chosen])
    return [(chunk, source) for chunk, source in pieces]


@functools.lru_cache(maxsize=1024)
def runs(text: str, size: int, bold: bool = False, cjk: int | None = None) -> tuple[Run, ...]:
    """`text` at `size` px as runs of one font each (cached: measuring and drawing share them)."""
    size = max(size, MIN_SIZE)
    primary = font(size, bold)
    sources = _sources(bold, cjk_face(text) if cjk is None else cjk)
    result = []
    for chunk, source in segments(text, bold, cjk):
        family, path, index = sources[source]
        if source == 0:
            result.append(Run(chunk, primary))
        elif family.colour:
            face = _load(path, EMOJI_STRIKE)
            result.append(Run(chunk, face, _line_height(primary) / _line_height(face), colour=True))
        else:
            result.append(Run(chunk, _load(path, size, index)))
    return tuple(result)


def _line_height(face: Face) -> int:
    ascent, descent = face.getmetrics()
    return ascent + descent


# -- measuring and drawing -------------------------------------------------------------------
def text_length(text: str, size: int, bold: bool = False, cjk: int | None = None) -> float:
    """The advance width of `text` in px, as `draw_text` will draw it."""
    return sum(run.width for run in runs(text, size, bold, cjk))


def fit_text(text: str, size: int, max_width: float, bold: bool = False, cjk: int | None = None) -> str:
    """The text, shortened with an ellipsis until it fits `max_width` px."""
    if text_length(text, size, bold, cjk) <= max_width:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits with its ellipsis (widths grow with length)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_length(text[:mid] + "…", size, bold, cjk) <= max_width:
            lo = mid
        else:
            hi = mid - 1
    return re.sub(r"[\s\u200d]+$", "", text[:lo]) + "…"  # no dangling space or half an emoji sequence


def draw_text(image: Image.Image, xy: tuple[float, float], text: str, size: int, fill=(0, 0, 0),
              bold: bool = False, anchor: str = "la", cjk: int | None = None) -> None:
    """Draw `text` with per-character font fallback; `anchor` as Pillow's (horizontal text)."""
    parts = runs(text, size, bold, cjk)
    draw = ImageDraw.Draw(image)
    if len(parts) == 1 and not parts[0].colour and parts[0].face is font(size, bold):
        draw.text(xy, parts[0].text, fill=fill, font=parts[0].face, anchor=anchor)  # the one-font path
        return
    ascent, descent = font(size, bold).getmetrics()
    # Every run sits on the DejaVu baseline; `anchor` places that line as Pillow would place it.
    x = xy[0] - sum(run.width for run in parts) * {"l": 0.0, "m": 0.5, "r": 1.0}[anchor[0]]
    baseline = xy[1] + {"a": ascent, "t": ascent, "m": (ascent - descent) / 2, "s": 0,
                        "d": -descent, "b": -descent}[anchor[1]]
    for run in parts:
        if run.colour:
            tile, top = _emoji_tile(run.text, run.scale)
            image.paste(tile, (round(x), round(baseline - top)), tile)
        else:
            draw.text((x, baseline), run.text, fill=fill, font=run.face, anchor="ls")
        x += run.width


@functools.lru_cache(maxsize=256)
def _emoji_tile(text: str, scale: float) -> tuple[Image.Image, float]:
    """Emoji drawn in colour at the strike size and scaled down; (RGBA tile, its baseline row)."""
    face = _load(find_font(NOTO_EMOJI.regular), EMOJI_STRIKE)
    ascent, descent = face.getmetrics()
    big = Image.new("RGBA", (max(1, math.ceil(face.getlength(text))), ascent + descent), (0, 0, 0, 0))
    ImageDraw.Draw(big).text((0, ascent), text, font=face, anchor="ls", embedded_color=True)
    size = (max(1, round(big.width * scale)), max(1, round(big.height * scale)))
    return big.resize(size, Image.Resampling.LANCZOS), ascent * scale


def _missing(ch: str) -> None:
    cp = ord(ch)
    if _in(cp, _CJK_RANGES):
        package = NOTO_CJK.package
    elif cp >= 0x1F000 or _in(cp, _BMP_EMOJI) or 0x2600 <= cp <= 0x27BF:
        package = NOTO_EMOJI.package
    else:
        package = ""
    advice = f"install Debian's {package} to draw them" if package else "no font this renderer uses has them"
    _warn_once(package or "other", f"Drawing text with characters no installed font has (first: U+{cp:04X}); "
                                   f"they are drawn as U+FFFD; {advice}.")


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def forget_fonts() -> None:
    """Look for fonts afresh: after `FONT_DIRS` changed or fonts were installed while running."""
    for cached in (find_font, _load, font, coverage, runs, _emoji_tile):
        cached.cache_clear()
    _warned.clear()
