"""`python -m jobs_core serve`: the API under uvicorn, with N embedded worker threads, in one
process or in several that share the port (`--processes`)."""
from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
from typing import TYPE_CHECKING

from ..errors import InvalidInput
from ..logs import configure_logging
from ..metrics import shared_counting
from ..service import JobService
from .settings import ApiSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger("jobs_core.api")
# How a parent started with --processes tells its server processes what to serve (they are
# spawned afresh by uvicorn and import `app_in_server_process`, so the command line is not theirs).
CHILD_CONFIG_ENV = "JOBS_SERVE_CHILD_CONFIG"
MAX_PROCESSES = 64


def add_serve_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser("serve", parents=[common], help="run the HTTP API (FastAPI + uvicorn)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1,
                       help="embedded worker threads; 0 = create/poll only, separate `worker` processes render")
    serve.add_argument("--processes", type=int, default=1,
                       help="server processes sharing the port, each with --workers threads (default 1); "
                            "Python runs one request at a time per process, so more use more cores")
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
    from .http_limits import LimitedHttpToolsProtocol

    if not 0 < args.port < 65536:
        raise InvalidInput(f"--port must be between 1 and 65535, not {args.port}.")
    if args.workers < 0:
        raise InvalidInput(f"--workers must be 0 or more, not {args.workers}.")
    if not 1 <= args.processes <= MAX_PROCESSES:
        raise InvalidInput(f"--processes must be between 1 and {MAX_PROCESSES}, not {args.processes}.")
    settings = ApiSettings.from_env()
    if not _is_loopback(args.host) and settings.token is None:
        log.warning("serving on %s without JOBS_API_TOKEN: anyone who reaches this port can create "
                    "and cancel jobs", args.host)
    if args.processes > 1:
        return _serve_in_processes(args, service)
    app = create_app(service, workers=args.workers, settings=settings)
    log.info("API on http://%s:%d over %s, %d embedded worker thread(s)", args.host, args.port,
             service.store.describe(), args.workers)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, access_log=args.access_log,
                                           log_config=None, lifespan="on", http=LimitedHttpToolsProtocol))
    server.run()
    return 0 if server.started else 1


def _serve_in_processes(args: argparse.Namespace, service: JobService) -> int:
    """uvicorn's supervisor: it binds the port, spawns the server processes, restarts one that
    dies, and on SIGINT/SIGTERM stops them all gracefully (each puts its running jobs back)."""
    import uvicorn

    from .http_limits import LimitedHttpToolsProtocol

    log.info("API on http://%s:%d over %s, %d processes with %d embedded worker thread(s) each",
             args.host, args.port, service.store.describe(), args.processes, args.workers)
    location = os.path.abspath(args.jobs_dir) if args.jobs_dir else None  # their cwd is ours, but be exact
    os.environ[CHILD_CONFIG_ENV] = json.dumps({"location": location, "workers": args.workers})
    service.store.close()  # this process only supervises
    with shared_counting(args.processes):  # GET /metrics of any server process counts them all
        uvicorn.run(f"{__name__}:app_in_server_process", factory=True, host=args.host, port=args.port,
                    workers=args.processes, access_log=args.access_log, log_config=None, lifespan="on",
                    http=LimitedHttpToolsProtocol)
    return 0


def app_in_server_process() -> FastAPI:
    """The app of one server process started by `serve --processes N` (a uvicorn factory)."""
    from .app import create_app

    configure_logging()
    config = json.loads(os.environ[CHILD_CONFIG_ENV])
    service = JobService.from_env(config["location"])
    return create_app(service, workers=config["workers"], settings=ApiSettings.from_env())
