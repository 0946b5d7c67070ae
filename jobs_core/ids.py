"""Identifiers: validation of user-supplied ids and generation of time-sortable ones."""
from __future__ import annotations

import os
import re
import threading
import time

from .errors import InvalidInput

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
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
    shown = value.replace("\x00", "\\0")
    if not value[0].isascii() or not value[0].isalnum():
        raise InvalidInput(f"{what} '{shown}' must start with a letter or a digit.")
    raise InvalidInput(f"{what} '{shown}' may only contain letters, digits, '-' and '_'.")


def _encode(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, rest = divmod(number, 32)
        chars.append(_CROCKFORD[rest])
    return "".join(reversed(chars))


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
