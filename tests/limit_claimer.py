"""A claimer process for the renderer-limit tests: `python tests/limit_claimer.py STORE LIMITS`.

Opens the store at STORE (a jobs directory or a postgresql:// URL) with JOBS_RENDERER_LIMITS=LIMITS,
says "ready" and waits for a line on stdin (the test sends it once every claimer is ready),
then claims with two threads until nothing is left to claim, and prints what it claimed as JSON
lines {"jobId", "renderer"}. It never completes a job: the claimed jobs hold their slots.
"""
from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import replace

from jobs_core.config import load_settings
from jobs_core.limits import parse_renderer_limits
from jobs_core.service import JobService
from jobs_core.store import open_store


def main(location: str, limits: str) -> None:
    settings = replace(load_settings(), lease_seconds=60.0, renderer_limits=parse_renderer_limits(limits))
    service = JobService(open_store(location), settings)
    claimed: list[dict] = []
    guard = threading.Lock()

    def claim_all(name: str) -> None:
        while (job := service.claim_next(f"{name}-{os.getpid()}")) is not None:
            with guard:
                claimed.append({"jobId": job.job_id, "renderer": job.renderer})

    print("ready", flush=True)  # every claimer says so, then waits for the test's one "go" to all
    sys.stdin.readline()
    threads = [threading.Thread(target=claim_all, args=(f"t{index}",)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for item in claimed:
        print(json.dumps(item))
    service.store.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
