"""Hundreds of malformed requests against a real server: ids in every encoding, bodies, headers and
methods. None may get a 5xx; every 4xx the app answers is JSON with a sentence; nothing is written
outside the store; the server is healthy afterwards. The counts by status are printed (-s)."""
from __future__ import annotations

import json
import os
import socket
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from jobs_core.api.app import create_app
from jobs_core.api.settings import ApiSettings
from jobs_core.config import load_settings
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from tests.api_server import serve_in_thread

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
IDS = ["..", "../x", "%2e%2e", "%2e%2e%2fetc", "..%2f..%2fetc%2fpasswd", "%252e%252e", "a%00b", "%00", "a/b",
       "%2F", "x" * 65, "x" * 5000, "%C0%AE%C0%AE", "%E2%80%AE", "job_%F0%9F%92%A3", "%ED%A0%80", ".hidden",
       "job_ok%20", "CON", "nul", "-x", "_x", "%5C..%5C", "~root", "job_01M8" + "Z" * 22, "%FF%FE", "%"]
BODIES = [
    b"", b"{", b"[]", b"null", b"1", b'"text"', b"{}", b'{"projectId": 7}', b'{"projectId": null}',
    b'{"projectId": "p1", "renderType": 5}', b'{"projectId": "p1", "conceptInputs": []}',
    b'{"projectId": "p1", "conceptInputs": {"floors": "many"}}', b'{"projectId": "p1", "extra": 1}',
    b'{"projectId": "p1", "conceptInputs": {"title": "a\\u0000b"}}',
    b'{"projectId": "p1", "conceptInputs": {"title": "\\ud800"}}',
    b'{"projectId": "\\ud800"}', b'{"projectId": "p1", "renderType": "\\udfff"}',
    b'{"projectId": "p1", "conceptInputs": {"width": NaN}}',
    b'{"projectId": "p1", "conceptInputs": {"x": Infinity}}',
    b'{"projectId": "p1", "conceptInputs": {"x": -1e400}}',
    b'{"projectId": "p1", "conceptInputs": {"floors": ' + b"9" * 5000 + b"}}",
    b'{"projectId": "p1", "conceptInputs": {"x": ' + b"[" * 20000 + b"]" * 20000 + b"}}",
    b'{"projectId": "p1", "conceptInputs": {"x": ' + b"[" * 12 + b"]" * 12 + b"}}",
    b'{"projectId": "p1", "conceptInputs": {"x": {"\\u0000": 1}}}',
    b"\xff\xfe\x00garbage", b"\x00" * 64, '{"projectId": "ü"}'.encode("utf-16"),
    b'{"projectId": "p1"' + b" " * 70_000 + b"}",
    b'{"projectId": "p1", "conceptId": "../../etc"}', b'{"projectId": "p1", "renderType": "../x"}',
]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                 "application/json; charset=latin-1", ""]
HEADER_CASES = [
    {"Idempotency-Key": ""}, {"Idempotency-Key": "k" * 300}, {"Idempotency-Key": "\t"},
    {"Prefer": "wait=abc"}, {"Prefer": "wait=-1"}, {"Prefer": "wait=1e400"}, {"Prefer": "wait=" + "9" * 500},
    {"Prefer": "wait=NaN"}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic Zm9vOmJhcg=="},
    {"Authorization": ""}, {"Authorization": "Bearer " + TOKEN + " "}, {"X-Filler": "x" * 8000},
]
#: what uvicorn's HTTP parser answers, as plain text, to a request it cannot parse (the README says so)
PARSER_REFUSAL = "Invalid HTTP request received."
METHODS = ["PUT", "DELETE", "PATCH", "TRACE", "OPTIONS", "HEAD", "FOO"]


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "store"
    service = JobService(FileJobStore(root), load_settings(root))
    known = service.submit({"projectId": "p1"})
    app = create_app(service, settings=replace(ApiSettings.from_env(), token=TOKEN))
    with serve_in_thread(app) as base:
        yield base, tmp_path, known.job_id


def _tree(folder: Path) -> set[str]:
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if "store" not in path.parts}


def _raw(base: str, request: bytes) -> int:
    """Send bytes as they are (what no client library would send); the status, or 0 if none came."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(request)
        answer = conn.recv(65536)
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def _requests(job_id: str):
    for bad in IDS:
        yield "GET", f"/api/jobs/{bad}", {}, None
        yield "GET", f"/api/jobs/{job_id}?projectId={bad}", {}, None
        yield "POST", f"/api/jobs/{bad}/cancel", {}, None
        yield "POST", f"/api/jobs/{bad}/retry?projectId=p1", {}, None
        yield "GET", f"/api/jobs/{bad}/events", {}, None
        yield "GET", f"/api/renders/{bad}/{job_id}.png", {}, None
        yield "GET", f"/api/renders/p1/{bad}.png", {}, None
        yield "GET", f"/api/jobs?projectId={bad}", {}, None
        yield "GET", f"/api/jobs?cursor={bad}&status={bad}", {}, None
        yield "POST", f"/api/jobs/{bad}/process", {"Content-Type": "application/json"}, b'{"projectId": "p1"}'
    for body in BODIES:
        for content_type in CONTENT_TYPES:
            yield "POST", "/api/jobs/render", {"Content-Type": content_type} if content_type else {}, body
        yield "POST", f"/api/jobs/{job_id}/process", {"Content-Type": "application/json"}, body
    for headers in HEADER_CASES:
        yield "POST", "/api/jobs/render", {"Content-Type": "application/json", **headers}, b'{"projectId": "p1"}'
        yield "GET", f"/api/jobs/{job_id}", headers, None
    for method in METHODS:
        for path in ("/api/jobs/render", f"/api/jobs/{job_id}", "/api/jobs", "/api/health"):
            yield method, path, {}, None
    for path in ("/api/jobs/", f"/api/jobs/{job_id}/", "//api/jobs", "/api//jobs", "/docs", "/openapi.json",
                 "/redoc", "/", "/api", "/api/webhooks/default/secret", "/%2e%2e/etc/passwd"):
        yield "GET", path, {"Host": "evil.example"}, None


def test_hundreds_of_hostile_requests_get_no_5xx_and_every_error_is_a_json_sentence(server):
    base, folder, job_id = server
    before = _tree(folder)
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=base, timeout=15, follow_redirects=False) as http:
        for method, path, headers, body in _requests(job_id):
            sent = {**AUTH, **headers} if "Authorization" not in headers else headers
            try:
                response = http.request(method, path, headers=sent, content=body)
            except httpx.LocalProtocolError:  # the client itself refuses to send it (a bad header value)
                statuses["refused by the client"] += 1
                continue
            assert response.status_code < 500, (method, path, headers, body and body[:80], response.text[:300])
            statuses[response.status_code] += 1
            if response.text == PARSER_REFUSAL:  # the HTTP parser's own answer, before the app (README)
                statuses["400 from the HTTP parser"] += 1
                continue
            if response.status_code >= 400 and method != "HEAD":
                assert response.headers.get("content-type", "").startswith("application/json"), \
                    (method, path, headers, response.status_code, response.text[:200])
                error = response.json()["error"]  # JSON with a sentence
                assert isinstance(error, str) and len(error) > 10 and error.endswith((".", "?")), error
            assert "Location" not in response.headers or "evil.example" not in response.headers["Location"]
    raws = [b"GET /api/jobs/%00 HTTP/1.1\r\nHost: x\r\n\r\n", b"BOGUS\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
            b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"]
    raws += [b"POST /api/jobs/render HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
             + b"\r\nContent-Type: application/json\r\nContent-Length: " + length + b"\r\n\r\n{}"
             for length in (b"-1", b"abc", b"99999999999999999999", b"2, 3")]
    for raw in raws:
        status = _raw(base, raw)
        statuses[f"raw {status}"] += 1
        assert status == 0 or status < 500
    print("\nhostile requests by status:", dict(sorted(statuses.items(), key=str)))
    assert sum(statuses.values()) >= 500
    assert _tree(folder) == before  # nothing written outside the store
    with httpx.Client(base_url=base, timeout=10) as http:
        assert http.get("/api/health").status_code == 200
        assert http.get(f"/api/jobs/{job_id}", headers=AUTH).json()["job"]["jobId"] == job_id  # still served


def test_the_docs_need_the_token_when_one_is_set(server):
    base, _, _ = server
    with httpx.Client(base_url=base, timeout=10) as http:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert http.get(path).status_code == 401
            assert http.get(path, headers=AUTH).status_code == 200
    assert json.loads(httpx.get(f"{base}/openapi.json", headers=AUTH).text)["openapi"]
    assert not os.environ.get("JOBS_API_TOKEN")  # the token came from the test's settings only


def test_a_partial_body_is_dropped_after_a_few_seconds_with_a_408(server):
    from jobs_core.api.guard import BODY_SECONDS

    base, _, _ = server
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=BODY_SECONDS + 10) as conn:
        conn.sendall(b"POST /api/jobs/render HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"projectId\"")
        answer = conn.recv(65536)  # then nothing more: the rest of the body never comes
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b"did not arrive within" in answer
    assert httpx.get(f"{base}/api/health", timeout=10).status_code == 200


def _send(base: str, chunks: list[bytes], pause: float = 0.0, timeout: float = 30) -> bytes:
    """Send `chunks` over one connection, `pause` seconds apart (a slow client), then read the answer
    until the server closes the connection or stops answering."""
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as conn:
        for chunk in chunks:
            try:
                conn.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server already answered and closed
            time.sleep(pause)  # the client's own slowness, which the server must not wait out
        answer = b""
        try:
            while data := conn.recv(65536):
                answer += data
        except (TimeoutError, ConnectionResetError):
            pass
    return answer


def _json_error(answer: bytes, status: int) -> str:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"content-type: application/json" in head.lower()
    return json.loads(body)["error"]


@pytest.mark.parametrize("request_bytes", [
    b"GET /api/health HTTP/1.1\r\nHost: x\r\nX-Filler: " + b"x" * 20_000 + b"\r\n\r\n",
    b"GET /api/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (n, b"y" * 100) for n in range(200))
    + b"\r\n",
    b"GET /api/jobs/" + b"j" * 20_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
], ids=["one large header", "many headers", "a long URL"])
def test_headers_over_the_limit_get_a_431_with_a_sentence(server, request_bytes):
    from jobs_core.api.http_limits import MAX_HEADER_BYTES

    base, _, _ = server
    error = _json_error(_send(base, [request_bytes]), 431)
    assert error == f"The request line and headers are larger than the limit of {MAX_HEADER_BYTES} bytes."
    assert httpx.get(f"{base}/api/health", headers={"X-Filler": "x" * 8000}, timeout=10).status_code == 200


@pytest.fixture
def short_header_deadline(monkeypatch):
    from jobs_core.api import http_limits

    monkeypatch.setattr(http_limits, "HEADER_SECONDS", 1.5)  # read when a connection opens
    return 1.5


def test_headers_sent_too_slowly_get_a_408_even_when_they_trickle(server, short_header_deadline):
    base, _, _ = server
    started = time.monotonic()
    trickle = [b"GET /api/health HTTP/1.1\r\nHost: x\r\n"] + [b"X-Slow: 1\r\n"] * 40  # a header every 0.1 s
    answer = _send(base, trickle, pause=0.1)
    assert _json_error(answer, 408).startswith("The request's headers did not arrive within")
    assert time.monotonic() - started < 4 * short_header_deadline  # cut at the deadline, not after 4 s of trickle


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server, short_header_deadline):
    base, _, _ = server
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10 * short_header_deadline) as conn:
        assert conn.recv(65536) == b""  # closed by the server, not a read timing out (that raises)


def test_each_request_on_a_kept_alive_connection_has_its_own_header_deadline(server, short_header_deadline):
    base, _, _ = server
    request = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        for _ in range(3):  # three requests, together longer than one deadline
            conn.sendall(request)
            answer = conn.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
            time.sleep(short_header_deadline / 2)  # the client idles between requests
