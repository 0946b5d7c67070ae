"""`python -m jobs_core worker --metrics-port N [--metrics-host H]`: the worker's metrics (see
jobs_core.metrics) on a small HTTP server of its own, in a background thread.

prometheus-client's WSGI app does the exposition; this adds what its `start_http_server` lacks:
the bearer token when JOBS_API_TOKEN is set (as on the API's /metrics), and bind errors told in a
sentence. It binds 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import argparse
import errno
import hmac
import logging
import os
import socket
import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from .errors import InvalidInput
from .metrics import scrape_registry

log = logging.getLogger("jobs_core.metrics")
TOKEN_ENV = "JOBS_API_TOKEN"  # the API's token (jobs_core.api.settings): one secret for every scrape
DEFAULT_HOST = "127.0.0.1"


def add_metrics_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics-port", type=int, metavar="N",
                        help="serve Prometheus metrics on this port (default: none)")
    parser.add_argument("--metrics-host", help=f"address the metrics port binds (default {DEFAULT_HOST}: this "
                                               "machine only)")


def metrics_from_options(args: argparse.Namespace, store) -> MetricsServer | None:
    """The metrics server `--metrics-port` asks for (None without it), started."""
    if args.metrics_port is None:
        if args.metrics_host is not None:
            raise InvalidInput("--metrics-host needs --metrics-port: say which port to serve metrics on.")
        return None
    return start_metrics_server(store, args.metrics_host or DEFAULT_HOST, args.metrics_port)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # a scrape every 15 s is not news
        pass


class _Server(ThreadingWSGIServer):
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running metrics server; `close()` stops it."""

    def __init__(self, httpd: _Server) -> None:
        self.httpd = httpd
        self.thread = threading.Thread(target=httpd.serve_forever, name="jobs-metrics", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def with_token(app, token: str | None):
    """The WSGI `app` behind `Authorization: Bearer <token>` (open when token is None)."""
    if token is None:
        return app
    expected = f"Bearer {token}".encode()

    def guarded(environ, start_response):
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        if hmac.compare_digest(given, expected):
            return app(environ, start_response)
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("WWW-Authenticate", "Bearer")])
        return [f"These metrics need 'Authorization: Bearer <{TOKEN_ENV}>'.\n".encode()]
    return guarded


def start_metrics_server(store, host: str, port: int) -> MetricsServer:
    """Serve the metrics of this process (and the store's gauges) on host:port. InvalidInput, in a
    sentence, for a port out of range, one in use, or an address not of this machine."""
    if not 0 < port < 65536:
        raise InvalidInput(f"--metrics-port must be between 1 and 65535, not {port}.")
    app = with_token(make_wsgi_app(scrape_registry(store)), os.environ.get(TOKEN_ENV) or None)
    try:
        httpd = make_server(host, port, app, server_class=_Server6 if ":" in host else _Server,
                            handler_class=_QuietHandler)
    except OSError as error:
        raise InvalidInput(_bind_problem(host, port, error)) from None
    server = MetricsServer(httpd)
    log.info("metrics on %s", server.url)
    return server


def _bind_problem(host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"--metrics-port {port} is already in use on {host}: pick another port."
    if error.errno == errno.EACCES:
        return f"--metrics-port {port} needs administrator rights on this machine: pick a port above 1023."
    if error.errno == errno.EADDRNOTAVAIL or isinstance(error, socket.gaierror):
        return f"--metrics-host {host!r} is not an address of this machine (127.0.0.1 and 0.0.0.0 always are)."
    return f"Cannot serve metrics on {host}:{port}: {error.strerror or error}."
