"""A stand-in AI image provider on 127.0.0.1: the OpenAI images API, slow the way a real one is.

Each `POST /v1/images/generations` is answered after a random delay in [min_seconds, max_seconds]
(a thread waiting on an event, not computing: a hundred requests in flight cost no CPU), with a
small PNG as `b64_json`. Every request is logged with the brief's title the prompt starts with,
so a run can count how many times each job asked the provider.
"""
from __future__ import annotations

import base64
import io
import json
import random
import re
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image

PATH = "/v1/images/generations"
TITLE = re.compile(r'^"([^"]*)"')  # the prompt starts with the brief's title in quotes (renderers/prompt.py)


@dataclass(frozen=True)
class ProviderRequest:
    title: str
    delay: float
    at: float  # time.time() when it arrived


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 140, 200)).save(buffer, "PNG")
    return buffer.getvalue()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # a hundred workers connect at once; the default backlog is 5

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a killed worker hung up: expected
            super().handle_error(request, client_address)


class StandInProvider:
    """Start with `start()` (returns the base URL for OPENAI_BASE_URL), end with `stop()`."""

    def __init__(self, min_seconds: float, max_seconds: float, seed: int = 19) -> None:
        self.min_seconds, self.max_seconds = min_seconds, max_seconds
        self.requests: list[ProviderRequest] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._answer = json.dumps({"created": 1, "data": [{"b64_json": base64.b64encode(_png()).decode()}]}).encode()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="standin-provider", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> str:
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()  # answers still waiting return at once
        self._server.shutdown()
        self._server.server_close()

    def _log(self, prompt: str) -> float:
        match = TITLE.match(prompt)
        with self._lock:
            delay = self._random.uniform(self.min_seconds, self.max_seconds)
            self.requests.append(ProviderRequest(match.group(1) if match else "", delay, time.time()))
        return delay

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # a hundred requests a second: keep the output readable
                pass

            def do_POST(self) -> None:  # noqa: N802 (stdlib name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path != PATH:
                    self._send(404, b'{"error": {"message": "no such endpoint"}}')
                    return
                try:
                    prompt = str(json.loads(body).get("prompt", ""))
                except (ValueError, AttributeError):
                    self._send(400, b'{"error": {"message": "the body is not a JSON object"}}')
                    return
                provider._stopping.wait(provider._log(prompt))  # the provider "generating"
                self._send(200, provider._answer)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
