"""The command line of design studies (jobs_core.studies):

    python -m jobs_core submit --project-id P --vary floors=4,8,12 --vary roof=flat,gable [--wait]
        [--idempotency-key KEY] [--webhook URL]
    python -m jobs_core status STUDY_ID

`submit --vary` prints the study's id (with --wait: one progress bar for the whole study, then the
study as JSON); with --idempotency-key, a rerun after a crash or a lost connection finishes the
study the first run began (no job twice) instead of making another; `status` of a study id prints
the study as JSON and its summary on stderr.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from .errors import InvalidInput, TransitionConflict
from .models import JobStatus
from .service import JobService
from .studies import MAX_VARIED_FIELDS, Study, create_study, read_study
from .worker import Worker

EXIT_FAILED = 1


def parse_vary(items: list[str]) -> dict[str, list[str]]:
    """['floors=4,8,12', 'roof=flat,gable'] -> {'floors': ['4', '8', '12'], 'roof': [...]}."""
    if len(items) > MAX_VARIED_FIELDS:
        raise InvalidInput(f"--vary was given {len(items)} times; a study varies at most {MAX_VARIED_FIELDS} fields.")
    vary: dict[str, list[str]] = {}
    for item in items:
        name, equals, values = item.partition("=")
        name = name.strip()
        if not equals or not name:
            raise InvalidInput(f"--vary {item!r} must look like FIELD=VALUE,VALUE (such as floors=4,8,12).")
        if name in vary:
            raise InvalidInput(f"--vary names {name} twice; give its values once, separated by commas.")
        vary[name] = [value.strip() for value in values.split(",") if value.strip()]
    return vary


def checked_idempotency_key(value: str | None) -> str | None:
    """The key as the API's Idempotency-Key header takes it: 1 to 255 printable ASCII characters."""
    if value is not None and not (1 <= len(value) <= 255 and value.isascii() and value.isprintable()):
        raise InvalidInput("--idempotency-key must be 1 to 255 printable ASCII characters.")
    return value


def study_document(study: Study) -> dict[str, Any]:
    """The study as JSON data: what it varies, its status and summary, each variation's job."""
    return {"studyId": study.study_id, "projectId": study.project_id, "title": study.title,
            "renderType": study.render_type, "vary": study.vary, "createdAt": study.created_at.isoformat(),
            "status": study.status, "progress": study.progress, "summary": study.summary.__dict__,
            "cells": [{"index": cell.index, "values": cell.values, "jobId": cell.job_id,
                       "status": None if cell.job is None else cell.job.status.value,
                       "imageUrl": None if cell.job is None else cell.job.image_url,
                       "error": None if cell.job is None else cell.job.error} for cell in study.cells]}


def cmd_submit_study(args: argparse.Namespace, service: JobService, inputs: dict) -> int:
    key = checked_idempotency_key(getattr(args, "idempotency_key", None))
    request = {"projectId": args.project_id, "renderType": args.render_type, "conceptInputs": inputs,
               "vary": parse_vary(args.vary)}
    if getattr(args, "webhook", None) is not None:  # each job of the study POSTs to it, as one job would
        request["webhook"] = args.webhook
    try:
        study, replayed = create_study(service, request, idempotency_key=key)
    except TransitionConflict as error:
        if key is None:
            raise
        raise TransitionConflict(f"{error} Give a new --idempotency-key for a different study.") from None
    if replayed:
        print(f"This --idempotency-key already made study {study.study_id}: carrying on with it.", file=sys.stderr)
    if not args.wait:
        print(study.study_id)
        return 0
    print(study.study_id, file=sys.stderr)
    final = wait_for_study(service, study, StudyProgressBar(sys.stderr))
    print(json.dumps(study_document(final), indent=2))
    return 0 if final.status == "completed" else EXIT_FAILED


def cmd_study_status(args: argparse.Namespace, service: JobService) -> int:
    study = read_study(service, args.job_id, args.project_id)
    print(json.dumps(study_document(study), indent=2))
    print(f"{study.title}: {study.status}, {study.summary.words()}.", file=sys.stderr)
    return 0


def wait_for_study(service: JobService, study: Study, on_update: Callable[[Study], None],
                   poll_seconds: float = 0.2) -> Study:
    """Run the study's queued jobs here one at a time (a job another worker has is watched), and
    return the study once every job is final."""
    worker = Worker(service, concurrency=1)
    worker.start(claiming=False)  # heartbeats only: this process runs the study's jobs itself
    running: list[threading.Thread] = []
    try:
        while not study.is_final:
            running = [thread for thread in running if thread.is_alive()]
            if not running:
                running = _run_next(service, worker, study)
            study = read_study(service, study.study_id, study.project_id)
            on_update(study)
            if not study.is_final:
                service.store.wait_for_work(poll_seconds)
    finally:
        worker.stop()
    return study


def _run_next(service: JobService, worker: Worker, study: Study) -> list[threading.Thread]:
    for job in study.jobs:
        if job.status is not JobStatus.PENDING:
            continue
        try:
            claimed = service.claim(job.job_id, worker.worker_id, job.project_id)
        except TransitionConflict:
            continue  # another worker has it, or it is backing off
        thread = threading.Thread(target=worker.run, args=(claimed,), daemon=True)
        thread.start()
        return [thread]
    return []


class StudyProgressBar:
    """One bar for the whole study on a terminal; one line per change elsewhere."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width = stream, width
        self.tty = stream.isatty()
        self.last = ""

    def __call__(self, study: Study) -> None:
        filled = study.progress * self.width // 100
        line = f"[{'#' * filled}{'-' * (self.width - filled)}] {study.progress:3d}% {study.summary.words()}"
        if line == self.last:
            return
        self.last = line
        if self.tty:
            self.stream.write(f"\r\x1b[K{line}{chr(10) if study.is_final else ''}")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
