"""Webhooks: which job changes are delivered, what a delivery holds, how it is signed and retried.

A job created with `webhook` (and optionally `webhookEventsFilter`) gets a POST of its document at
these moments (Replicate's events):

    start      the job was claimed by a worker (each attempt)
    progress   its progress or stage changed, at most once a second (off by default)
    completed  it reached a final state: completed, failed or canceled

Deliveries are made due *inside* the change that causes them: `with_deliveries` runs in
`store.base.apply_change`, so every store writes the deliveries in the same atomic write as the
job's new state (PostgreSQL: the same statement; files: outbox entries made durable before the job
file, like the queue markers; memory: under the same lock). A crash therefore never loses a
delivery whose state change was recorded. Senders (webhooks_sender.py) then claim them one at a
time from the store's outbox and retry them with exponential backoff: at least once, with the same
`webhook-id` on every attempt of one delivery. Deliveries of one job go out in order.

Signing is Standard Webhooks' (the `standardwebhooks` package): `webhook-signature` is
`v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">` keyed by the secret.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import secrets
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .api.schemas import ApiJob
from .config import env_number
from .errors import InvalidInput
from .lifecycle import Outcome
from .models import Event, Job, JobStatus, utcnow

WebhookEvent = Literal["start", "progress", "completed"]
EVENTS: tuple[str, ...] = ("start", "progress", "completed")
DEFAULT_EVENTS: tuple[str, ...] = ("start", "completed")
PROGRESS_EVERY_SECONDS = 1  # at most one progress delivery per job per second of the clock
SECRET_PREFIX = "whsec_"
SECRET_ENV = "JOBS_WEBHOOK_SECRET"
ALERT_ENV = "JOBS_ALERT_WEBHOOK"
ALERTS_KEY = "alerts"  # the ordering key of alert deliveries (they have no job)


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery waiting in a store's outbox (or claimed by a sender).

    `order` sorts the deliveries of one `key` (a job id, or ALERTS_KEY): a sender takes a key's
    deliveries only in that order. `claim` is set by the store while a sender holds it.
    """

    id: str  # the webhook-id, the same on every attempt
    key: str
    order: int
    event: str  # start, progress, completed, or alert
    url: str
    body: str  # the JSON sent, as it was when the delivery was made due
    project_id: str | None = None
    job_id: str | None = None
    attempts: int = 0  # attempts made so far
    next_at: datetime = field(default_factory=utcnow)
    created_at: datetime = field(default_factory=utcnow)
    last_error: str | None = None
    claim: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("claim")
        data["next_at"], data["created_at"] = self.next_at.isoformat(), self.created_at.isoformat()
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, claim: str | None = None) -> Delivery:
        """The delivery in `text`; ValueError when it is not one (a foreign or torn file)."""
        try:
            data = json.loads(text)
            data["next_at"] = datetime.fromisoformat(data["next_at"])
            data["created_at"] = datetime.fromisoformat(data["created_at"])
            delivery = cls(**data, claim=claim)
        except (TypeError, KeyError, AttributeError) as error:
            raise ValueError(f"not a webhook delivery ({error})") from None
        if not all(isinstance(value, str) for value in (delivery.id, delivery.key, delivery.url, delivery.body)):
            raise ValueError("not a webhook delivery")
        return delivery


# -- which changes make deliveries due ------------------------------------------------------------
def events_of(job: Job) -> tuple[str, ...]:
    return tuple(job.webhook_events_filter) if job.webhook_events_filter is not None else DEFAULT_EVENTS


def due_events(old: Job, new: Job) -> list[str]:
    """The events the change from `old` to `new` makes due, in the order they happened."""
    if not new.webhook:
        return []
    wanted = events_of(new)
    happened: list[str] = []
    started = new.status is JobStatus.PROCESSING and (old.status is not JobStatus.PROCESSING
                                                       or old.attempts != new.attempts)
    if started:
        happened.append("start")
    elif (new.status is JobStatus.PROCESSING and (new.progress, new.stage) != (old.progress, old.stage)
          and _second(new.updated_at) > _second(old.updated_at)):
        happened.append("progress")
    if new.status.is_final and not old.status.is_final:
        happened.append("completed")
    return [event for event in happened if event in wanted]


def _second(moment: datetime) -> int:
    return int(moment.timestamp()) // PROGRESS_EVERY_SECONDS


def body_of(job: Job) -> str:
    """The JSON a delivery carries: the job as GET /api/jobs/{jobId} answers it under `job`, as it
    was at the event (no queue position: it has left the queue; no estimate: a moment's state)."""
    return ApiJob.of(job).model_dump_json()


def deliveries_for(old: Job, new: Job) -> tuple[Delivery, ...]:
    events = due_events(old, new)
    if not events:
        return ()
    body = body_of(new)
    base_order = int(new.updated_at.timestamp() * 1_000_000) * 10
    return tuple(Delivery(id=_delivery_id(new, event), key=new.job_id, order=base_order + index, event=event,
                          url=new.webhook or "", body=body, project_id=new.project_id, job_id=new.job_id,
                          next_at=new.updated_at, created_at=new.updated_at)
                 for index, event in enumerate(events))


def _delivery_id(job: Job, event: str) -> str:
    """Deterministic: the same change made twice (a retried transaction) is the same delivery."""
    seed = f"{job.job_id}|{event}|{job.attempts}|{job.updated_at.isoformat()}"
    return "msg_" + hashlib.sha256(seed.encode()).hexdigest()[:26]


def with_deliveries(old: Job, outcome: Outcome) -> Outcome:
    """`outcome` with the deliveries its change makes due (the store writes them with the job)."""
    if not outcome.job.webhook or outcome.job is old:
        return outcome
    deliveries = deliveries_for(old, outcome.job)
    if not deliveries:
        return outcome
    return outcome._replace(deliveries=outcome.deliveries + deliveries)


def alert_delivery(url: str, kind: str, message: str, now: datetime | None = None) -> Delivery:
    now = now or utcnow()
    body = json.dumps({"type": "alert", "kind": kind, "message": message, "at": now.isoformat()},
                      separators=(",", ":"))
    return Delivery(id="msg_" + secrets.token_hex(13), key=ALERTS_KEY, order=int(now.timestamp() * 1_000_000) * 10,
                    event="alert", url=url, body=body, next_at=now, created_at=now)


# -- signing ----------------------------------------------------------------------------------------
def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def check_secret(secret: str) -> str:
    """`secret` if it is a usable `whsec_...` key, else InvalidInput with a sentence."""
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except ValueError:
        key = b""
    if not secret.startswith(SECRET_PREFIX) or len(key) < 16:
        raise InvalidInput(f"{SECRET_ENV} must be 'whsec_' followed by the base64 of at least 16 random bytes.")
    return secret


def signed_headers(secret: str, delivery_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (the timestamp is the attempt's)."""
    from standardwebhooks import Webhook  # imported when a delivery is made, not by every store user

    moment = (now or utcnow()).astimezone(UTC)
    return {"webhook-id": delivery_id, "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": Webhook(secret).sign(delivery_id, moment, body)}


# -- retries -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookSettings:
    """From JOBS_WEBHOOK_* (defaults: 8 tries over about 2 hours)."""

    max_attempts: int = 8
    backoff_seconds: float = 60.0  # the wait after the first failure; doubled after each next one
    timeout_seconds: float = 10.0  # one attempt: connect, send, answer
    poll_seconds: float = 0.2  # how often an idle sender looks for due deliveries
    senders: int = 2  # sender threads per process (0: this process sends nothing)
    allowed_hosts: tuple[str, ...] = ()  # when set, the only hosts a webhook may target

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery stays with its sender before another may take it over."""
        return self.timeout_seconds * 3 + 5

    def next_try(self, attempts: int, now: datetime) -> datetime | None:
        """When to try again after `attempts` failed attempts; None: give up."""
        if attempts >= self.max_attempts:
            return None
        wait = self.backoff_seconds * 2 ** (attempts - 1)
        return now + timedelta(seconds=wait * random.uniform(0.9, 1.1))  # jitter: receivers recover in peace

    def schedule(self) -> list[float]:
        """Seconds from the first attempt to each later one (without jitter), for people."""
        total, times = 0.0, []
        for attempt in range(1, self.max_attempts):
            total += self.backoff_seconds * 2 ** (attempt - 1)
            times.append(total)
        return times

    @classmethod
    def from_env(cls) -> WebhookSettings:
        hosts = tuple(h.strip().lower().rstrip(".") for h in os.environ.get("JOBS_WEBHOOK_ALLOWED_HOSTS", "").split(",")
                      if h.strip())
        return cls(max_attempts=int(env_number("JOBS_WEBHOOK_MAX_ATTEMPTS", cls.max_attempts, 1)),
                   backoff_seconds=env_number("JOBS_WEBHOOK_BACKOFF_SECONDS", cls.backoff_seconds),
                   timeout_seconds=env_number("JOBS_WEBHOOK_TIMEOUT_SECONDS", cls.timeout_seconds, 0, strict=True),
                   poll_seconds=env_number("JOBS_WEBHOOK_POLL_SECONDS", cls.poll_seconds, 0, strict=True),
                   senders=int(env_number("JOBS_WEBHOOK_SENDERS", cls.senders)),
                   allowed_hosts=hosts)


def attempt_event(delivery: Delivery, status: JobStatus, attempt: int, status_code: int | None,
                  latency_ms: float | None, error: str | None, next_at: datetime | None,
                  now: datetime | None = None) -> Event:
    """The job's event-log line for one attempt (the monitor's job detail lists the log)."""
    now = now or utcnow()
    if error is None:
        outcome = f"delivered: HTTP {status_code} in {latency_ms:.0f} ms"
    else:
        later = f"; next try at {next_at:%H:%M:%S} UTC" if next_at else "; no tries left, given up"
        code = f"HTTP {status_code}, " if status_code is not None else ""
        outcome = f"failed ({code}{error}){later}"
    return Event.model_validate({
        "at": now, "jobId": delivery.job_id, "type": "webhook", "status": status, "attempt": attempt,
        "message": f"{delivery.event} webhook, attempt {attempt}: {outcome}",
        "webhookId": delivery.id, "webhookEvent": delivery.event, "statusCode": status_code,
        "latencyMs": None if latency_ms is None else round(latency_ms, 1), "error": error})


def retried(delivery: Delivery, error: str, next_at: datetime) -> Delivery:
    return replace(delivery, attempts=delivery.attempts + 1, last_error=error, next_at=next_at)


def parse_events_filter(values: list[Any] | None) -> list[str] | None:
    """A webhookEventsFilter as given (None: the default), or ValueError with a sentence."""
    if values is None:
        return None
    unknown = [value for value in values if value not in EVENTS]
    if unknown:
        raise ValueError(f"webhookEventsFilter may hold only {', '.join(EVENTS)} (got {unknown[0]!r})")
    return [event for event in EVENTS if event in values]  # each once, in a stable order


def job_status_of(body: str) -> JobStatus:
    try:
        return JobStatus(json.loads(body).get("status"))
    except (ValueError, AttributeError):
        return JobStatus.PENDING


def utc_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
