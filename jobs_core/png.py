"""What a whole PNG looks like: its signature first and its empty IEND chunk last."""
from __future__ import annotations

PNG_START = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def is_whole_png(data: bytes) -> bool:
    """A cheap check, not a decode: catches other formats and files cut short (a lost write)."""
    return len(data) >= len(PNG_START) + len(PNG_END) and data.startswith(PNG_START) and data.endswith(PNG_END)
