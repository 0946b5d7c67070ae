"""Small copies of rendered images, for galleries (the full image stays in the store)."""
from __future__ import annotations

from io import BytesIO

from PIL import Image


def thumbnail(png: bytes, width: int = 360) -> bytes:
    """The PNG scaled down to fit in `width` × `width` pixels, as a PNG."""
    with Image.open(BytesIO(png)) as image:
        image.thumbnail((width, width))
        out = BytesIO()
        image.save(out, "PNG")
    return out.getvalue()
