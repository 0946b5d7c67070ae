"""A pure ASGI middleware in front of the app: bearer-token check and request body limit.

Pure ASGI rather than BaseHTTPMiddleware: it adds microseconds, not a task per request.
"""
from __future__ import annotations

import hmac
import json

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import BodyTimeout, BodyTooLarge
from .stream_access import request_has_stream_access

OPEN_PATHS = frozenset({"/api/health"})
#: the interactive docs describe every endpoint: behind the token too when one is set
DOC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
METRICS_PATH = "/metrics"  # behind the token too: it tells how busy the service is and with what


async def send_error(send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


#: a client gets this long to send the whole body; a partial body is then dropped (408)
BODY_SECONDS = 5.0


class Guard:
    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int,
                 body_seconds: float = BODY_SECONDS) -> None:
        self.app = app
        self.token = token
        self.expected = f"Bearer {token}".encode() if token else None
        self.max_body_bytes = max_body_bytes
        self.body_seconds = body_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and self._needs_token(scope):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected) and not self._signed_stream(scope):
                return await send_error(send, 401, "This API needs 'Authorization: Bearer <JOBS_API_TOKEN>'.",
                                        [(b"www-authenticate", b"Bearer")])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return await send_error(send, 413, str(BodyTooLarge(self.max_body_bytes)))
        await self.app(scope, self._limited(receive), send)

    @staticmethod
    def _needs_token(scope: Scope) -> bool:
        path = scope["path"]
        return ((path.startswith("/api/") and path not in OPEN_PATHS) or path in DOC_PATHS or path == METRICS_PATH) \
            and scope["method"] != "OPTIONS"

    def _signed_stream(self, scope: Scope) -> bool:
        """A GET of one job's stream by its signed URL (stream_access.py): what EventSource can send."""
        return scope["method"] == "GET" and self.token is not None and \
            request_has_stream_access(self.token, scope["path"], scope.get("query_string", b""))

    def _limited(self, receive: Receive) -> Receive:
        """Count streamed (chunked) bodies too: past the limit, reading the body raises BodyTooLarge;
        a body still incomplete `body_seconds` after the first read raises BodyTimeout. Once the
        whole body is in, later reads (a streaming response listening for the client to leave) wait
        as long as they like."""
        seen = 0
        deadline: float | None = None
        body_done = False

        async def limited() -> Message:
            nonlocal seen, deadline, body_done
            if body_done:
                return await receive()
            if deadline is None:
                deadline = anyio.current_time() + self.body_seconds
            with anyio.move_on_after(max(deadline - anyio.current_time(), 0)) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise BodyTimeout(f"The request body did not arrive within {self.body_seconds:g} s; it was dropped.")
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
                body_done = not message.get("more_body", False)
            return message

        return limited
