"""A claimer process for the named-claim cap test: `python tests/named_claimer.py STORE RENDERER`.

Opens the store at STORE (a jobs directory or a postgresql:// URL) with a cap of 1 on RENDERER,
says "ready" and waits for a line on stdin (the test sends it once every claimer is ready),
then claims until no job is pending: one thread claims the next job, two claim pending jobs by
name (as the API's /process does), each in its own shuffled order. Right after each claim it
counts the RENDERER jobs in processing (at most the cap, 1, if the cap holds), then completes
the job, freeing the slot for the next race. It prints one JSON line {"jobId", "running"} per claim.
"""
from __future__ import annotations

import json
import os
import random
import sys
import threading
from dataclasses import replace

from jobs_core.config import load_settings
from jobs_core.errors import TransitionConflict
from jobs_core.lifecycle import Lease
from jobs_core.models import Job
from jobs_core.renderers.noop import _tiny_png
from jobs_core.service import JobService
from jobs_core.store import open_store


def main(location: str, renderer: str) -> None:
    settings = replace(load_settings(), lease_seconds=60.0, renderer_limits={renderer: 1})
    service = JobService(open_store(location), settings)
    claimed: list[dict] = []
    guard = threading.Lock()

    def hold_and_finish(job: Job) -> None:
        running = sum(1 for other in service.store.processing() if other.renderer == renderer)
        with guard:
            claimed.append({"jobId": job.job_id, "running": running})
        service.complete(Lease.of(job), _tiny_png())

    def claim_the_next(name: str) -> None:
        while service.store.pending():
            if (job := service.claim_next(name)) is not None:
                hold_and_finish(job)

    def claim_by_name(name: str) -> None:
        while pending := [job_id for _, job_id in service.store.pending()]:
            for job_id in random.sample(pending, len(pending)):
                try:
                    job = service.claim(job_id, name)
                except TransitionConflict:
                    continue  # taken by another claimer, or its renderer is at its cap
                hold_and_finish(job)

    print("ready", flush=True)  # every claimer says so, then waits for the test's one "go" to all
    sys.stdin.readline()
    worker = f"{os.getpid()}"
    threads = [threading.Thread(target=claim_the_next, args=(f"next-{worker}",))]
    threads += [threading.Thread(target=claim_by_name, args=(f"named{index}-{worker}",)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for item in claimed:
        print(json.dumps(item))
    service.store.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
