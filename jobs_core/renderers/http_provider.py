"""What the HTTP image providers share: settings from the environment, retries, image checks.

Retries with exponential backoff on a 429 without Retry-After, 5xx, timeouts and connection errors
(honouring a 5xx's Retry-After), within a bounded time budget; then RenderError(retryable=True) so
the job-level retry (with its own backoff) takes over. A 429 with Retry-After is ProviderRateLimited
at once: the worker pauses the renderer for the whole fleet and hands the job back (limits.py). Any other 4xx is RenderError(provider's message, retryable=False).
Secrets (API keys, passwords) are never put in a message or a log line: `redact` scrubs them.
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import functools
import io
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from PIL import Image, UnidentifiedImageError

from .. import config
from ..errors import InvalidInput, ProviderRateLimited, RenderError
from . import ProgressFn, Renderer, RenderTask
from .axonometric import RENDER_TYPES

log = logging.getLogger("jobs_core.renderers.http")

MAX_IMAGE_BYTES = 40 * 1024 * 1024
WATCH_SECONDS = 0.5  # how often a request in flight reports progress (and so notices a cancel)
SECRET_PATTERN = re.compile(r"\b(sk|pk|rk)-[A-Za-z0-9_\-*]{6,}")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The certificates every provider client verifies with, loaded once per process: loading
    them is most of the cost of a new httpx.Client (36 ms of CPU, against 1 ms with this shared),
    which a hundred renders at once would pay once a render each (bench/scale_bench.py)."""
    return httpx.create_ssl_context()


def env_number(name: str, default: float, minimum: float = 0.0) -> float:
    """config.env_number, failing the render (not retryable) when the setting is wrong."""
    try:
        return config.env_number(name, default, minimum)
    except InvalidInput as error:
        raise RenderError(str(error), retryable=False) from None


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3
    backoff_seconds: float = 1.0
    budget_seconds: float = 60.0
    max_wait_seconds: float = 30.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(retries=int(env_number("JOBS_PROVIDER_RETRIES", 3)),
                   backoff_seconds=env_number("JOBS_PROVIDER_BACKOFF_SECONDS", 1.0),
                   budget_seconds=env_number("JOBS_PROVIDER_RETRY_BUDGET_SECONDS", 60.0))


class Retryable(Exception):
    """One failed try that another try may fix; `wait` is the server's Retry-After, if any."""

    def __init__(self, problem: str, wait: float | None = None) -> None:
        super().__init__(problem)
        self.wait = wait


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return SECRET_PATTERN.sub("[redacted]", text)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asks us to wait (Retry-After as seconds or an HTTP date), if it says."""
    raw = response.headers.get("retry-after", "").strip()
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def provider_message(response: httpx.Response) -> str:
    """The provider's own explanation: OpenAI's error.message, FastAPI's detail, else the text."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or body.get("detail") or body.get("message") or body.get("errors")
    if message is None:
        message = response.text
    if not isinstance(message, str):
        message = str(message)
    message = " ".join(message.split())
    return (message[:300] + "…") if len(message) > 300 else (message or response.reason_phrase)


def as_png(data: bytes, provider: str) -> bytes:
    """The image as PNG bytes; RenderError when the bytes are not an image at all."""
    if len(data) > MAX_IMAGE_BYTES:
        raise RenderError(f"The {provider} provider returned {len(data)} bytes, more than an image should be.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "PNG":
                return data
            buffer = io.BytesIO()
            image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, "PNG")
            return buffer.getvalue()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        start = data[:24]
        raise RenderError(f"The {provider} provider returned data that is not an image "
                          f"({len(data)} bytes starting {start!r}).", retryable=False) from None


def decode_base64_image(text: Any, provider: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise RenderError(f"The {provider} provider's answer has no image data.", retryable=False)
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RenderError(f"The {provider} provider's image is not valid base64.", retryable=False) from None


class HttpImageProvider(Renderer):
    """Base of the HTTP providers: subclasses say how to configure, ask and read the answer."""

    render_types = RENDER_TYPES
    timeout_variable = ""

    def secrets(self) -> list[str]:
        """Values that must never appear in a message or a log line."""
        return []

    def public_url(self, url: str) -> str:
        """scheme://host:port only: no credentials, no query string with tokens."""
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            return "(invalid URL)"
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.host}{port}"

    def timeout(self, default: float) -> httpx.Timeout:
        seconds = env_number(self.timeout_variable, default, 0.01)
        return httpx.Timeout(seconds, connect=min(10.0, seconds))

    def fail(self, message: str, retryable: bool = False) -> RenderError:
        return RenderError(redact(message, self.secrets()), retryable=retryable)

    def begin(self, task: RenderTask, progress: ProgressFn) -> str:
        """The first stage of every provider render: check the job and the setup; the prompt."""
        progress(5, "validating")
        self.check_render_type(task.render_type)
        problem = self.configuration_problem()
        if problem:
            raise self.fail(f"The {self.name} renderer is not configured on this worker: {problem}.")
        return self.prompt(task)

    def call(self, send: Callable[[], httpx.Response], progress: ProgressFn, percent: int, what: str,
             where: str, estimate: Callable[[], int | None] | None = None) -> httpx.Response:
        """`send()` until it succeeds, a non-retryable answer comes, or tries or budget run out."""
        policy = RetryPolicy.from_env()
        deadline = time.monotonic() + policy.budget_seconds
        problem = ""
        for attempt in range(policy.retries + 1):
            try:
                return self._once(lambda: self._watched(send, progress, percent, estimate), what, where)
            except Retryable as failure:
                problem = str(failure)
                wait = max(failure.wait or 0.0, policy.backoff_seconds * 2 ** attempt)
            if attempt == policy.retries:
                break
            if wait > policy.max_wait_seconds or time.monotonic() + wait > deadline:
                problem += f"; it asked to wait {wait:g} s, beyond this attempt's retry budget"
                break
            log.warning("%s: %s; retrying in %.1f s (try %d of %d)", self.name, redact(problem, self.secrets()),
                        wait, attempt + 2, policy.retries + 1)
            self._wait(wait, progress, percent, f"waiting to retry {what}")
        raise self.fail(f"The {self.name} provider at {where} {problem}.", retryable=True)

    def _once(self, send: Callable[[], httpx.Response], what: str, where: str) -> httpx.Response:
        try:
            response = send()
        except httpx.TimeoutException:
            raise Retryable(f"did not answer {what} in time") from None
        except httpx.TransportError as error:
            raise Retryable(f"could not be reached for {what} ({type(error).__name__})") from None
        if response.status_code == 429 and (wait := retry_after(response)) is not None:
            # The provider says when to come back: every worker of the fleet waits that long, not
            # just this request (limits.py), so this job goes back to the queue for it.
            raise ProviderRateLimited(redact(
                f"The {self.name} provider at {where} answered HTTP 429 to {what} "
                f"({provider_message(response)}) and asked to wait {wait:g} s", self.secrets()), seconds=wait)
        if response.status_code == 429 or response.status_code >= 500:
            raise Retryable(f"answered HTTP {response.status_code} to {what}: {provider_message(response)}",
                            retry_after(response))
        if response.status_code >= 400:
            raise self.fail(f"The {self.name} provider at {where} refused {what} (HTTP {response.status_code}): "
                            f"{provider_message(response)}", retryable=False)
        return response

    @staticmethod
    def _watched(send: Callable[[], httpx.Response], progress: ProgressFn, percent: int,
                 estimate: Callable[[], int | None] | None = None) -> httpx.Response:
        """Run one request in a helper thread, reporting progress while it is out.

        An image request can take a minute; reporting every half second lets a cancel or a worker
        shutdown stop the job at once. The abandoned request ends at its own timeout. `estimate`,
        when the provider can tell how far along it is, turns that into the job's percent.
        """
        outcome: dict[str, object] = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["response"] = send()
            except BaseException as error:  # handed to the caller's thread below
                outcome["error"] = error
            finally:
                done.set()

        threading.Thread(target=run, name="provider-request", daemon=True).start()
        while not done.wait(WATCH_SECONDS):
            progress((estimate() if estimate else None) or percent, "waiting for the provider")
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        return outcome["response"]  # type: ignore[return-value]

    @staticmethod
    def _wait(seconds: float, progress: ProgressFn, percent: int, stage: str) -> None:
        """Sleep in short steps, reporting progress: a cancel or shutdown stops the wait."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            progress(percent, stage)
            time.sleep(min(0.25, left))

    def read_json(self, response: httpx.Response, where: str) -> dict:
        try:
            body = response.json()
        except ValueError:
            preview = " ".join(response.text[:80].split())
            raise self.fail(f"The {self.name} provider at {where} answered with malformed JSON "
                            f"(starting {preview!r}).", retryable=False) from None
        if not isinstance(body, dict):
            raise self.fail(f"The {self.name} provider at {where} answered JSON that is not an object.")
        return body

    def download(self, url: str, client: httpx.Client, progress: ProgressFn, percent: int) -> bytes:
        """Fetch an image the provider gave as a URL, now: such URLs expire within the hour.

        The API key is not sent: the URL usually points at a storage host, not the API.
        """
        where = self.public_url(url)
        response = self.call(lambda: client.get(url), progress, percent, "the image download", where)
        return response.content
