"""The two limits uvicorn's HTTP parser does not set: how large a request's line and headers may be,
and how long a client may take to send them.

uvicorn's httptools protocol keeps every header it is sent (no size cap) and starts no timer on a
new connection (its keep-alive timer runs only between requests, and any byte cancels it), so one
client could hold a connection open forever or fill the server's memory with headers. This is the
same protocol with those two limits, plugged in through uvicorn's own `http=` setting; the body's
deadline is `guard.BODY_SECONDS`, in the app.
"""
from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: request line plus headers, in bytes: nginx's and Node's default (a browser sends 1-2 KiB)
MAX_HEADER_BYTES = 16 * 1024
#: from a connection's opening, or a request's first byte, to the end of its headers; generous for
#: any real client, short enough that silent or trickling ones go away (between requests on a
#: kept-alive connection uvicorn's own keep-alive timer applies)
HEADER_SECONDS = 10.0


def _json_response(status: int, reason: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode("ascii") + body


HEADERS_TOO_LARGE = _json_response(
    431, "Request Header Fields Too Large",
    f"The request line and headers are larger than the limit of {MAX_HEADER_BYTES} bytes.")
HEADERS_TOO_SLOW = _json_response(
    408, "Request Timeout", f"The request's headers did not arrive within {HEADER_SECONDS:g} seconds.")


class HeadersRefused(Exception):
    """Raised from a parser callback to stop parsing a request that is already answered."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a cap on header bytes and a deadline for the headers."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_bytes = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._arm_header_deadline()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if not self.transport.is_closing():  # not after our own answer (see _count)
            super().send_400_response(msg)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refuse(HEADERS_TOO_LARGE)
            raise HeadersRefused  # stops the parser; httptools reports it as a parser error

    def _arm_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(HEADER_SECONDS, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._header_bytes or self.scope is not None:  # a request had begun: say why it ends
            self._refuse(HEADERS_TOO_SLOW)
        elif not self.transport.is_closing():
            self.transport.close()  # a connection that never sent a byte gets no answer

    def _refuse(self, response: bytes) -> None:
        self._disarm_header_deadline()
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()
