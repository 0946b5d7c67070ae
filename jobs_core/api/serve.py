"""`python -m jobs_core serve`: the API under uvicorn, with N embedded worker threads."""
from __future__ import annotations

import argparse
import ipaddress
import logging

from ..errors import InvalidInput
from ..service import JobService
from .settings import ApiSettings

log = logging.getLogger("jobs_core.api")


def add_serve_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="run the HTTP API (FastAPI + uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="embedded worker threads; 0 = create/poll only, separate `worker` processes render")
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(handler=cmd_serve)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace, service: JobService) -> int:
    import uvicorn

    from .app import create_app

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port must be between 1 and 65535, not {args.port}.")
    if args.workers < 0:
        raise InvalidInput(f"--workers must be 0 or more, not {args.workers}.")
    settings = ApiSettings.from_env()
    if not _is_loopback(args.host) and settings.token is None:
        log.warning("serving on %s without JOBS_API_TOKEN: anyone who reaches this port can create "
                    "and cancel jobs", args.host)
    app = create_app(service, workers=args.workers, settings=settings)
    log.info("API on http://%s:%d over %s, %d embedded worker thread(s)", args.host, args.port,
             service.store.describe(), args.workers)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, access_log=args.access_log,
                                           log_config=None, lifespan="on"))
    server.run()
    return 0 if server.started else 1
