"""Signed stream URLs, so a browser's `EventSource` can follow a job on an API that has a token.

`EventSource` cannot send `Authorization`. When `JOBS_API_TOKEN` is set, the `urls.stream` of
every job the API answers with (to a caller who showed the token) carries
`access=<expires>.<signature>`: an HMAC-SHA256 of the job id and the expiry, keyed by the token.
It opens that one job's stream and nothing else, until it expires: one to two hours, because the
expiry is rounded up to the next whole hour so a job's URLs stay the same from poll to poll.
Changing the token revokes every such URL.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from urllib.parse import parse_qs

LIFETIME_SECONDS = 3600
STREAM_PATH = re.compile(r"^/api/jobs/([A-Za-z0-9_-]{1,200})/stream$")


def _signature(token: str, job_id: str, expires: int) -> str:
    digest = hmac.new(token.encode(), f"stream:{job_id}:{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def stream_access(token: str, job_id: str, now: float | None = None) -> str:
    """The `access` value that opens `job_id`'s stream for the next one to two hours."""
    now = time.time() if now is None else now
    expires = (int(now) // LIFETIME_SECONDS + 2) * LIFETIME_SECONDS
    return f"{expires}.{_signature(token, job_id, expires)}"


def access_is_valid(token: str, job_id: str, value: str, now: float | None = None) -> bool:
    """Whether `value` was made by `stream_access` for this job with this token and is unexpired."""
    expires, _, signature = value.partition(".")
    if not expires.isdigit() or len(expires) > 12:
        return False
    now = time.time() if now is None else now
    return int(expires) > now and hmac.compare_digest(signature, _signature(token, job_id, int(expires)))


def request_has_stream_access(token: str, path: str, query_string: bytes) -> bool:
    """Whether this request is a GET of a job's stream that carries a valid `access` for that job."""
    matched = STREAM_PATH.match(path)
    if matched is None:
        return False
    values = parse_qs(query_string.decode("latin-1")).get("access", [])
    return len(values) == 1 and access_is_valid(token, matched.group(1), values[0])
