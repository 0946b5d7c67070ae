"""Identifiers: validation of user-supplied ids and generation of time-sortable ones."""
from __future__ import annotations

import base64
import os
import re
import threading
import time

from .errors import InvalidInput

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# base64's base32 digits, in order, to Crockford's: the C encoder then does the 5-bit slicing.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())
_last = [0, 0]
_lock = threading.Lock()


def validate_id(value: object, what: str = "projectId") -> str:
    """Return `value` if it is a safe identifier, else raise InvalidInput with a precise reason.

    Ids become path components, so this runs before any path is built.
    """
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}.")
    if value == "":
        raise InvalidInput(f"{what} is empty; give 1 to 64 letters, digits, '-' or '_'.")
    if len(value) > 64:
        raise InvalidInput(f"{what} is {len(value)} characters long; at most 64 are allowed.")
    if ID_PATTERN.fullmatch(value):
        return value
    # Shown as text that any output can carry: NUL as \0, a lone surrogate as its escape.
    shown = value.replace("\x00", "\\0").encode("utf-8", "backslashreplace").decode("utf-8")
    if not value[0].isascii() or not value[0].isalnum():
        raise InvalidInput(f"{what} '{shown}' must start with a letter or a digit.")
    raise InvalidInput(f"{what} '{shown}' may only contain letters, digits, '-' and '_'.")


def _encode(number: int, length: int) -> str:
    """`number` as `length` Crockford base32 digits, most significant first (length <= 32)."""
    # 20 bytes are 32 digits; the last `length` of them hold the number's low 5*length bits.
    digits = base64.b32encode(number.to_bytes(20, "big")).translate(_TO_CROCKFORD)
    return digits[-length:].decode()


def new_id(prefix: str) -> str:
    """A ULID-style id: 48-bit millisecond time + 80 random bits, monotonic within a process.

    Sorting ids sorts by creation time, so directory listings are queue order.
    """
    with _lock:
        now = int(time.time() * 1000)
        if now <= _last[0]:
            now, rand = _last[0], _last[1] + 1
        else:
            rand = int.from_bytes(os.urandom(10), "big") >> 1  # headroom for increments
        _last[0], _last[1] = now, rand
    return f"{prefix}_{_encode(now, 10)}{_encode(rand, 16)}"


def new_job_id() -> str:
    return new_id("job")


def new_concept_id() -> str:
    return new_id("cpt")
