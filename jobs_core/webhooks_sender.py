"""Sending webhook deliveries: a few threads per process that empty the store's outbox.

Every worker pool (`python -m jobs_core worker`, the API's and the app's embedded pools) runs a
`WebhookSender`. A sender claims one due delivery from the store (one sender at a time holds it,
across processes), makes one attempt, and then removes it (a 2xx answer, or no tries left) or puts
it back with the next time to try (a timeout, a connection error, any other answer, redirects
included: they are not followed). Each attempt is a line in the job's event log. A sender that dies
mid-attempt leaves its claim to expire; another then tries again, with the same webhook-id.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from urllib.parse import urlsplit

import httpx

from . import metrics
from .errors import InvalidInput, JobNotFound, JobsError
from .models import utcnow
from .webhooks import (
    ALERT_ENV,
    SECRET_ENV,
    Delivery,
    WebhookSettings,
    alert_delivery,
    attempt_event,
    check_secret,
    job_status_of,
    new_secret,
    signed_headers,
)
from .webhooks_targets import resolve_target, target_problem

log = logging.getLogger("jobs_core.webhooks")
USER_AGENT = "concept-render-jobs-webhooks/1"


def signing_secret(store) -> str:
    """JOBS_WEBHOOK_SECRET when set, else the store's own (generated there on first use, so every
    process of one store signs with the same key)."""
    configured = os.environ.get(SECRET_ENV, "").strip()
    if configured:
        return check_secret(configured)
    return store.webhook_secret(new_secret())


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    latency_ms: float | None
    error: str | None  # None: delivered
    final: bool = False  # refused for good (the target is not allowed): no retry

    @property
    def delivered(self) -> bool:
        return self.error is None


def send_once(delivery: Delivery, secret: str, settings: WebhookSettings,
              client: httpx.Client | None = None) -> AttemptResult:
    """One attempt: check the target's addresses now, connect to the checked one, POST, read the status."""
    try:
        target = resolve_target(delivery.url, settings.allowed_hosts or None)
    except ValueError as refused:
        return AttemptResult(None, None, f"the target is not allowed: {refused}", final=True)
    except ConnectionError as error:
        return AttemptResult(None, None, str(error))
    url, extensions = httpx.URL(delivery.url), {}
    headers = {**signed_headers(secret, delivery.id, delivery.body), "content-type": "application/json",
               "user-agent": USER_AGENT}
    if target.address is not None:  # connect to the address checked, not to a second lookup's answer
        headers["host"] = urlsplit(delivery.url).netloc
        url = url.copy_with(host=target.address)
        if url.scheme == "https":
            extensions["sni_hostname"] = target.host  # and the certificate is checked against the name
    own = client is None
    client = client or httpx.Client(follow_redirects=False, timeout=settings.timeout_seconds, trust_env=False)
    started = time.perf_counter()
    try:
        with client.stream("POST", url, content=delivery.body.encode(), headers=headers,
                           extensions=extensions) as response:
            code = response.status_code  # the body is not read: a receiver cannot make us hold much
    except httpx.TimeoutException:
        return AttemptResult(None, _ms(started), f"no answer within {settings.timeout_seconds:g} s")
    except httpx.HTTPError as error:
        return AttemptResult(None, _ms(started), f"could not connect ({type(error).__name__}: {error})")
    finally:
        if own:
            client.close()
    latency = _ms(started)
    if 200 <= code < 300:
        return AttemptResult(code, latency, None)
    return AttemptResult(code, latency, "a redirect, which is not followed" if 300 <= code < 400
                         else "the receiver did not answer 2xx")


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


class WebhookSender:
    """Threads that send the deliveries of `store`'s outbox (see the module's docstring)."""

    def __init__(self, store, settings: WebhookSettings | None = None) -> None:
        self.store = store
        self.settings = settings or WebhookSettings.from_env()
        self._secret: str | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._client = httpx.Client(follow_redirects=False, timeout=self.settings.timeout_seconds, trust_env=False)
        self.sent = 0  # attempts made by this sender (for benches and tests)

    @property
    def secret(self) -> str:
        if self._secret is None:
            self._secret = signing_secret(self.store)
        return self._secret

    def start(self) -> WebhookSender:
        for index in range(self.settings.senders):
            thread = threading.Thread(target=self._loop, name=f"jobs-webhooks-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the attempts in flight (a claim left behind expires and is taken over)."""
        self._stopping.set()
        self.store.notify_deliveries()
        for thread in self._threads:
            thread.join(timeout)
        self._client.close()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                worked = self.run_once()
            except JobsError as error:  # the store is failing: try again after a pause
                metrics.store_error("webhooks", error)
                log.warning("webhook sender paused: %s", error)
                self._stopping.wait(max(self.settings.poll_seconds, 1.0))
                continue
            if not worked:
                self.store.wait_for_deliveries(self.settings.poll_seconds)

    def run_once(self) -> bool:
        """Claim one due delivery and make one attempt; False when none was due."""
        delivery = self.store.claim_delivery(utcnow(), self.settings.lease_seconds)
        if delivery is None:
            return False
        if not self._change_stored(delivery):
            return True
        self.attempt(delivery)
        return True

    def _change_stored(self, delivery: Delivery) -> bool:
        """Whether the job change a delivery describes is in the store. The file store writes a
        delivery just before the job (so a crash loses none); a crash between the two leaves one
        for a change that never landed. Such a delivery waits while the write could still be on
        its way (a lease), then is dropped, never sent."""
        if delivery.job_id is None or delivery.project_id is None:
            return True  # an alert
        try:
            job = self.store.get(delivery.job_id, delivery.project_id)
        except JobsError:  # deleted since (what it says did happen), or unreadable: send as made
            return True
        if job.updated_at >= delivery.created_at:
            return True
        now = utcnow()
        if now - delivery.created_at < timedelta(seconds=self.settings.lease_seconds):
            self.store.retry_delivery(replace(delivery, next_at=now + timedelta(seconds=1)))
        else:
            log.warning("webhook %s of job %s dropped: the change it describes was never stored (a crash "
                        "while it was written)", delivery.id, delivery.job_id)
            self.store.finish_delivery(delivery)
            metrics.webhook_dropped()
        return False

    def attempt(self, delivery: Delivery) -> AttemptResult:
        result = send_once(delivery, self.secret, self.settings, self._client)
        self.sent += 1
        now = utcnow()
        attempts = delivery.attempts + 1
        next_at = None if result.delivered or result.final else self.settings.next_try(attempts, now)
        self._log_attempt(delivery, attempts, result, next_at)
        metrics.webhook_attempt(result.delivered, will_retry=next_at is not None)
        if next_at is None:
            if not result.delivered:
                log.warning("webhook %s to %s given up after %d attempts: %s", delivery.id, delivery.url,
                            attempts, result.error)
            self.store.finish_delivery(delivery)
        else:
            self.store.retry_delivery(replace(delivery, attempts=attempts, next_at=next_at, last_error=result.error))
        return result

    def _log_attempt(self, delivery: Delivery, attempt: int, result: AttemptResult, next_at) -> None:
        if delivery.job_id is None or delivery.project_id is None:
            return  # an alert: it has no job whose log could say it
        event = attempt_event(delivery, job_status_of(delivery.body), attempt, result.status_code,
                              result.latency_ms, result.error, next_at)
        try:
            self.store.get(delivery.job_id, delivery.project_id)  # a deleted job gets no new log
            self.store.append_events(delivery.project_id, [event])
        except JobNotFound:
            pass
        except JobsError as error:
            log.warning("could not log a webhook attempt of job %s: %s", delivery.job_id, error)


# -- the monitor's alerts -----------------------------------------------------------------------------
def alert_sinks(store, url: str | None = None) -> list[Callable]:
    """For `AlertLog(sinks=...)`: each new alert queued as a delivery to JOBS_ALERT_WEBHOOK (none
    when unset). Sent, signed and retried like a job's webhook, by every process's senders."""
    url = url or os.environ.get(ALERT_ENV, "").strip()
    if not url:
        return []
    problem = target_problem(url)
    if problem:
        raise InvalidInput(f"{ALERT_ENV}={url!r} cannot be used: {problem}.")

    def send_alert(alert) -> None:
        store.enqueue_deliveries([alert_delivery(url, alert.kind, alert.message)])
    return [send_alert]
