"""Provider limits across the fleet: how many jobs of a renderer may run at once, and pauses.

`JOBS_RENDERER_LIMITS="openai=4,automatic1111=1"` caps the jobs of a renderer that run at once on
every worker of every host. The store enforces the cap when a job is claimed (counting, atomically
with the claim, the renderer's jobs in processing whose lease is alive), so the cap holds across
processes and hosts, not per process. Jobs beyond it wait in the queue; jobs of other renderers
are still claimed meanwhile.

A provider's 429 with Retry-After pauses its renderer's claims, fleet-wide, for that long (a
`RendererPause` kept by the store). The job that met it goes back to the queue, due when the
pause ends, with its attempt unspent: the provider refused to start the work, so nothing was tried, and spending
attempts on a busy day would fail jobs that only had to wait (the wait is bounded by the provider's
own Retry-After, capped at MAX_PAUSE_SECONDS, and a person can cancel a waiting job at any time).
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from .errors import InvalidInput, TransitionConflict

#: The longest pause a provider's Retry-After may impose: a provider asking for a day (or a
#: garbled date far ahead) must not freeze the renderer; after an hour a job simply asks again.
MAX_PAUSE_SECONDS = 3600.0
#: The shortest pause: "Retry-After: 0" still means "not this very instant".
MIN_PAUSE_SECONDS = 1.0
VARIABLE = "JOBS_RENDERER_LIMITS"


@dataclass(frozen=True)
class RendererLimits:
    """What a claim must respect: `caps[renderer]` jobs at once, counted over jobs in processing
    whose heartbeat is within `lease_seconds` (a job whose worker died stops holding its slot)."""

    caps: Mapping[str, int] = field(default_factory=dict)
    lease_seconds: float = 30.0

    def cap(self, renderer: str) -> int | None:
        return self.caps.get(renderer)

    def alive_since(self, now: datetime) -> datetime:
        """A processing job holds a slot while its heartbeat is at least this recent."""
        return now - timedelta(seconds=self.lease_seconds)


@dataclass(frozen=True)
class RendererPause:
    """A renderer whose claims are paused until `until`, and why in a few plain words."""

    renderer: str
    until: datetime
    reason: str = "too many requests"


def waiting_for_a_slot(renderer: str, in_use: int, cap: int) -> str:
    """Why a job of a renderer at its cap waits, in plain words."""
    return f"Waiting for a free {renderer} slot ({in_use} of {cap} in use)."


class RendererFull(TransitionConflict):
    """A claim found its job's renderer at its cap (the store counted, atomically with the claim,
    `in_use` live slots of `cap`); nothing was written."""

    def __init__(self, job_id: str, renderer: str, in_use: int, cap: int) -> None:
        super().__init__(f"Job {job_id} cannot start now. {waiting_for_a_slot(renderer, in_use, cap)}")
        self.renderer = renderer


def parse_renderer_limits(raw: str) -> dict[str, int]:
    """`"openai=4,automatic1111=1"` as {renderer: cap}; InvalidInput with one sentence otherwise.

    Renderer names are checked against the registered renderers by `check_renderer_names`
    (renderers are loaded later than settings).
    """
    caps: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, equals, number = (text.strip() for text in item.partition("="))
        if not equals or not name:
            raise InvalidInput(f"{VARIABLE} has {item!r}; write each limit as renderer=number, "
                               "for example openai=4,automatic1111=1.")
        if not number.isdigit():
            raise InvalidInput(f"{VARIABLE} gives {name} the limit {number!r}, which is not a whole number.")
        if int(number) < 1:
            raise InvalidInput(f"{VARIABLE} gives {name} the limit {number}; a limit must be at least 1 "
                               "(leave the renderer out to run it without a limit).")
        if name in caps:
            raise InvalidInput(f"{VARIABLE} names {name} twice.")
        caps[name] = int(number)
    return caps


def check_renderer_names(caps: Mapping[str, int], known: Collection[str]) -> None:
    """InvalidInput when a limit names a renderer that does not exist (a typo would silently do nothing)."""
    for name in caps:
        if name not in known:
            raise InvalidInput(f"{VARIABLE} names the renderer {name!r}, which does not exist; "
                               f"choose among: {', '.join(sorted(known))}.")


def pause_seconds(retry_after: float) -> float:
    """How long a Retry-After of `retry_after` seconds pauses a renderer: within 1 s and 1 h."""
    if retry_after != retry_after:  # NaN
        return MIN_PAUSE_SECONDS
    return min(max(retry_after, MIN_PAUSE_SECONDS), MAX_PAUSE_SECONDS)


@dataclass(frozen=True)
class LimitState:
    """The fleet's limits at one moment: pauses in force, and the slots in use of each capped
    renderer. One look at the store serves the waiting reasons of many pending jobs."""

    pauses: Mapping[str, RendererPause] = field(default_factory=dict)
    caps: Mapping[str, int] = field(default_factory=dict)
    in_use: Mapping[str, int] = field(default_factory=dict)

    def reason(self, renderer: str) -> str | None:
        """Why a pending job of `renderer` waits for its provider's limits, in plain words; None
        when nothing holds it back (it is simply queued)."""
        pause = self.pauses.get(renderer)
        if pause is not None:
            return f"Paused by the provider until {pause.until:%H:%M:%S} UTC ({pause.reason})."
        cap, in_use = self.caps.get(renderer), self.in_use.get(renderer, 0)
        if cap is not None and in_use >= cap:
            return waiting_for_a_slot(renderer, in_use, cap)
        return None

    def summary(self) -> str | None:
        """The fleet's limits in one line for the monitor ("Provider limits: openai 4 of 4 slots in
        use; automatic1111 paused until 14:05:30 UTC (too many requests)."); None when none is set."""
        parts = []
        for renderer in sorted(set(self.caps) | set(self.pauses)):
            pause = self.pauses.get(renderer)
            if pause is not None:
                parts.append(f"{renderer} paused by its provider until {pause.until:%H:%M:%S} UTC ({pause.reason})")
            else:
                cap = self.caps[renderer]
                parts.append(f"{renderer} {self.in_use.get(renderer, 0)} of {cap} slot{'s' if cap != 1 else ''} in use")
        return f"Provider limits: {'; '.join(parts)}." if parts else None
