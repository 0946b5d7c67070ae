"""Which URLs a webhook may target, so that a job's creator cannot make our servers call inside.

Refused: anything but http and https; credentials in the URL; link-local addresses (169.254.0.0/16,
fe80::/10: cloud metadata services live there) and the cloud metadata names and addresses
(169.254.169.254, fd00:ec2::254, metadata.google.internal); unspecified and multicast addresses.
Loopback and private networks are allowed: a developer's receiver on localhost is a real use.

`JOBS_WEBHOOK_ALLOWED_HOSTS` (comma-separated; `*.example.com` matches subdomains), when set, is
the only list of hosts a webhook may name, and the operator's word: listed hosts skip the address
checks. Checked at create on the URL as written, and again at every send on the addresses the name
resolves to (a name may resolve elsewhere by then: DNS rebinding); the send then connects to the
address that was checked.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2000
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                                ipaddress.ip_address("100.100.100.200")})  # the last: Alibaba Cloud's
ALLOWED_HOSTS_ENV = "JOBS_WEBHOOK_ALLOWED_HOSTS"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def allowed_hosts_setting() -> tuple[str, ...]:
    raw = os.environ.get(ALLOWED_HOSTS_ENV, "")
    return tuple(host.strip().lower().rstrip(".") for host in raw.split(",") if host.strip())


def address_problem(address: Address) -> str | None:
    """What `address` is when a webhook must not be sent there ("a link-local address"), or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified or address.is_multicast:
        return "not an address a webhook can be sent to"
    return None


def _listed(host: str, allowed: tuple[str, ...]) -> bool:
    return any(host == entry or (entry.startswith("*.") and host.endswith(entry[1:])) for entry in allowed)


def _parts(url: str) -> tuple[SplitResult | None, str | None]:
    if not isinstance(url, str) or not url.strip():
        return None, "give an http or https URL"
    if len(url) > MAX_URL_LENGTH:
        return None, f"the URL is longer than {MAX_URL_LENGTH} characters"
    if any(ord(char) <= 32 or ord(char) == 127 for char in url):
        return None, "the URL contains spaces or control characters"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is not a number in range)
    except ValueError:
        return None, "the URL is not a valid URL"
    if parts.scheme.lower() not in ("http", "https"):
        return None, f"only http and https URLs are allowed, not {parts.scheme or 'a URL without a scheme'}"
    if parts.username is not None or parts.password is not None:
        return None, "the URL must not contain a user name or password (the signature proves who sends it)"
    if not parts.hostname:
        return None, "the URL has no host"
    return parts, None


def target_problem(url: str, allowed: tuple[str, ...] | None = None) -> str | None:
    """Why `url` cannot be a webhook target, in one sentence (no final stop), or None."""
    parts, problem = _parts(url)
    if problem or parts is None:
        return problem
    host = (parts.hostname or "").rstrip(".")
    allowed = allowed_hosts_setting() if allowed is None else allowed
    if allowed:
        return None if _listed(host, allowed) else f"{host} is not one of the allowed webhook hosts"
    if host in METADATA_NAMES:
        return f"{host} is a cloud metadata service"
    address = _literal_address(host)
    if address is None:
        return None  # a name: its addresses are checked when a delivery is sent
    problem = address_problem(address)
    return f"{host} is {problem}" if problem else None


def _literal_address(host: str) -> Address | None:
    """The address `host` spells, in any form the system resolver reads as one: the usual dotted
    and IPv6 forms, and the old decimal, hex and short forms ("2852039166" is 169.254.169.254)
    that `ipaddress` does not take but `getaddrinfo` does."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: the URL's host, and the checked address to connect to."""

    url: str
    host: str
    port: int
    address: str | None  # None: a listed host, connected to by name


def resolve_target(url: str, allowed: tuple[str, ...] | None = None) -> Target:
    """The checked target of `url` now; ValueError with the reason when it must not be sent to."""
    problem = target_problem(url, allowed)
    if problem:
        raise ValueError(problem)
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".")
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    allowed = allowed_hosts_setting() if allowed is None else allowed
    if allowed:
        return Target(url, host, port, None)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise ConnectionError(f"{host} does not resolve ({error})") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in found]
    for address in addresses:  # one bad answer refuses the name: a rebinding answer may mix them
        problem = address_problem(address)
        if problem:
            raise ValueError(f"{host} resolves to {address}, {problem}")
    if not addresses:
        raise ConnectionError(f"{host} has no address")
    return Target(url, host, port, str(addresses[0]))
