"""`python -m jobs_core <command>`: submit, status, list, worker, repair (and more from other modules).

Every command takes the store from --jobs-dir, else JOBS_STORE_URL, else JOBS_DIR (default
./.jobs). Bad input prints one clear line on stderr and exits 2; a failed job exits 1.
"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .api.serve import add_serve_command
from .bulk import add_bulk_commands
from .errors import InvalidInput, JobNotFound, JobsError, TransitionConflict, UnreadableJob
from .logs import configure_logging
from .metrics_server import add_metrics_options, metrics_from_options
from .models import Job, JobStatus, parse_request
from .service import JobService
from .worker import Worker

EXIT_FAILED_JOB = 1
EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not a usage dump
        command = self.prog.split()[-1]
        where = "" if command == "jobs_core" else f" {command}"  # the top-level parser is jobs_core itself
        raise InvalidInput(f"{message} (see: python -m jobs_core{where} --help)")


def _read_inputs(raw: str | None) -> dict:
    if raw is None:
        return {}
    if raw.startswith("@"):
        try:
            raw = Path(raw[1:]).read_text()
        except OSError as error:
            raise InvalidInput(f"Cannot read --inputs file {raw[1:]}: {error.strerror}.") from None
    try:
        data = json.loads(raw)
    except ValueError as error:
        raise InvalidInput(f"--inputs is not valid JSON: {error}.") from None
    if not isinstance(data, dict):
        raise InvalidInput("--inputs must be a JSON object such as '{\"floors\": 4}'.")
    return data


# -- submit ------------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace, service: JobService) -> int:
    if args.vary:  # a design study: one job per combination (jobs_core.studies_cli)
        from .studies_cli import cmd_submit_study

        return cmd_submit_study(args, service, _read_inputs(args.inputs))
    if args.idempotency_key is not None:
        raise InvalidInput("--idempotency-key is for a design study (with --vary); a single job takes its key "
                           "through the API's Idempotency-Key header.")
    request = parse_request({"projectId": args.project_id, "renderType": args.render_type,
                             "conceptInputs": _read_inputs(args.inputs),
                             **({"webhook": args.webhook} if args.webhook is not None else {})})
    job = service.submit(request)
    if not args.wait:
        print(job.job_id)
        return 0
    print(job.job_id, file=sys.stderr)
    final = wait_for(service, job, ProgressBar(sys.stderr))
    print(final.to_json())
    return 0 if final.status is JobStatus.COMPLETED else EXIT_FAILED_JOB


def wait_for(service: JobService, job: Job, on_update: Callable[[Job], None],
             poll_seconds: float = 0.2) -> Job:
    """Run the job here if no other worker has it, else watch it; return it once final."""
    worker = Worker(service, concurrency=1)
    worker.start(claiming=False)  # heartbeats only: this process runs just this one job
    try:
        while not job.status.is_final:
            if job.status is JobStatus.PENDING:
                _try_run(service, worker, job)
            job = service.get(job.job_id, job.project_id)
            on_update(job)
            if not job.status.is_final:
                service.store.wait_for_work(poll_seconds)
    finally:
        worker.stop()
    return job


def _try_run(service: JobService, worker: Worker, job: Job) -> None:
    try:
        claimed = service.claim(job.job_id, worker.worker_id, job.project_id)
    except TransitionConflict:
        return  # another worker has it, or it is backing off: keep watching
    thread = threading.Thread(target=worker.run, args=(claimed,), daemon=True)
    thread.start()


class ProgressBar:
    """A one-line progress bar on a terminal; one line per stage change elsewhere."""

    def __init__(self, stream, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self.last = ""

    def __call__(self, job: Job) -> None:
        filled = job.progress * self.width // 100
        line = f"[{'#' * filled}{'-' * (self.width - filled)}] {job.progress:3d}% {job.status.value}: {job.stage}"
        if line == self.last:
            return
        self.last = line
        if self.tty:
            end = "\n" if job.status.is_final else ""
            self.stream.write(f"\r\x1b[K{line}{end}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


# -- status and list ---------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace, service: JobService) -> int:
    if args.job_id.startswith("study_"):  # a design study's id (jobs_core.studies)
        from .studies_cli import cmd_study_status

        return cmd_study_status(args, service)
    job = service.get(args.job_id, args.project_id)
    print(job.to_json())
    waiting = service.waiting_reason(job)
    if waiting:  # on stderr: stdout stays the job document, for scripts
        print(waiting, file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace, service: JobService) -> int:
    page = service.list(args.project_id, args.status, args.limit)
    for bad in page.unreadable:
        print(f"unreadable: {bad.location} ({bad.reason})", file=sys.stderr)
    if args.json:
        for job in page.jobs:
            print(job.model_dump_json())
        return 0
    rows = [(j.job_id, j.project_id, j.render_type, j.status.value, f"{j.progress}%", j.stage,
             j.updated_at.strftime("%Y-%m-%d %H:%M:%S"), (j.error or "")[:60]) for j in page.jobs]
    header = ("JOB", "PROJECT", "TYPE", "STATUS", "PROG", "STAGE", "UPDATED (UTC)", "ERROR")
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)).rstrip())
    if page.next_cursor:
        print(f"... more jobs; raise --limit (now {args.limit}) to see them", file=sys.stderr)
    return 0


# -- worker ------------------------------------------------------------------------------------
def cmd_worker(args: argparse.Namespace, service: JobService) -> int:
    if args.concurrency < 1:
        raise InvalidInput(f"--concurrency must be at least 1, not {args.concurrency}.")
    metrics = metrics_from_options(args, service.store)  # --metrics-port: serving before any job is claimed
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if hasattr(service.store, "sweep_temp_files"):
        service.store.sweep_temp_files()
    worker = Worker(service, args.concurrency, poll_seconds=args.poll).start()
    logging.getLogger("jobs_core").info("worker %s on %s, concurrency %d%s", worker.worker_id,
                                        service.store.describe(), args.concurrency,
                                        ", draining" if args.drain else "")
    while not stop.wait(args.poll):
        if args.drain and worker.idle() and not service.has_work():
            break
    worker.stop()
    if metrics is not None:
        metrics.close()
    logging.getLogger("jobs_core").info("worker %s stopped after %d jobs", worker.worker_id, worker.processed)
    return 0


# -- repair ------------------------------------------------------------------------------------
def cmd_repair(args: argparse.Namespace, service: JobService) -> int:
    """Make the store whole again (see JobService.repair); changes nothing when nothing is wrong."""
    print(service.repair().summary())
    return 0


# -- wiring ------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--jobs-dir", help="the store directory (overrides JOBS_DIR and JOBS_STORE_URL)")
    parser = _Parser(prog="python -m jobs_core", description="Concept render jobs.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    submit = commands.add_parser("submit", parents=[common], help="create a render job")
    submit.add_argument("--project-id", required=True)
    submit.add_argument("--render-type", default="axonometric")
    submit.add_argument("--inputs", help="the concept brief as JSON, or @FILE")
    submit.add_argument("--wait", action="store_true", help="run or wait for the job, with a progress bar")
    submit.add_argument("--webhook", metavar="URL",
                        help="POST the job (with --vary: each job), signed, to this URL when it starts and "
                             "when it is final")
    submit.add_argument("--vary", action="append", default=[], metavar="FIELD=A,B,C",
                        help="a design study: one job per value (twice: per combination, at most 36)")
    submit.add_argument("--idempotency-key", metavar="KEY",
                        help="with --vary: a rerun with the same KEY finishes the same study, never a second one")
    submit.set_defaults(handler=cmd_submit)

    status = commands.add_parser("status", parents=[common], help="print a job (or a study: STUDY_ID) as JSON")
    status.add_argument("job_id")
    status.add_argument("--project-id")
    status.set_defaults(handler=cmd_status)

    listing = commands.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--project-id")
    listing.add_argument("--status", choices=[s.value for s in JobStatus])
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    listing.set_defaults(handler=cmd_list)

    worker = commands.add_parser("worker", parents=[common], help="run a worker process")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--drain", action="store_true", help="exit once no job is pending or reclaimable")
    worker.add_argument("--poll", type=float, default=0.5, help="seconds between looks for new work")
    add_metrics_options(worker)  # --metrics-port, --metrics-host
    worker.set_defaults(handler=cmd_worker)

    repair = commands.add_parser("repair", parents=[common],
                                 help="rebuild the queue index from the jobs, requeue completed jobs whose image is "
                                      "lost; safe to run twice")
    repair.set_defaults(handler=cmd_repair)

    from .renderers.listing import cmd_renderers  # issue 3: renderers and whether each is configured
    renderers = commands.add_parser("renderers", parents=[common], help="list renderers, render types, configuration")
    renderers.add_argument("--json", action="store_true", help="one JSON object per renderer")
    renderers.set_defaults(handler=cmd_renderers)

    add_serve_command(commands, common)  # the HTTP API
    add_bulk_commands(commands, common)  # retry / cancel every job a filter matches

    from .migrate import cmd_migrate  # issue 7: copy a store into another (files <-> PostgreSQL)
    migrate = commands.add_parser("migrate", parents=[common],
                                  help="copy this store into another (files <-> PostgreSQL), or its renders into or "
                                       "out of a bucket; idempotent")
    migrate.add_argument("--to", help="a postgresql:// URL or a jobs directory")
    migrate.add_argument("--renders-to", metavar="s3://BUCKET/PREFIX|store",
                         help="where the target keeps renders (default: as this store, JOBS_ARTIFACTS_URL)")
    migrate.set_defaults(handler=cmd_migrate)

    from .retention import add_prune_command  # issue 19: retention
    add_prune_command(commands, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    try:
        args = build_parser().parse_args(argv)
        service = JobService.from_env(args.jobs_dir)
        return args.handler(args, service)
    except (InvalidInput, JobNotFound, UnreadableJob, TransitionConflict) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except JobsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED_JOB
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
