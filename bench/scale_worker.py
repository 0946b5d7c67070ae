"""`python -m jobs_core worker`, timing each claim: the worker process of bench/scale_bench.py.

The same parser, the same `cmd_worker` and the same Worker and store as the command line; only
the service is a subclass whose `claim_next` appends how long it took (ms, and whether it got a
job) to the file named by SCALE_CLAIM_TIMES, one line per claim, written at once so a SIGKILL
loses nothing already measured.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection
from datetime import datetime

from jobs_core.cli import build_parser, cmd_worker
from jobs_core.logs import configure_logging
from jobs_core.models import Job
from jobs_core.service import JobService


class ClaimTimingService(JobService):
    times_fd = -1  # opened with O_APPEND: each line is one write, whole even with 25 threads

    def claim_next(self, worker_id: str, now: datetime | None = None,
                   renderers: Collection[str] | None = None) -> Job | None:
        started = time.perf_counter()
        job = super().claim_next(worker_id, now, renderers)
        line = f"{(time.perf_counter() - started) * 1000:.3f} {int(job is not None)}\n".encode()
        os.write(self.times_fd, line)
        return job


def main(argv: list[str]) -> int:
    configure_logging()
    ClaimTimingService.times_fd = os.open(os.environ["SCALE_CLAIM_TIMES"], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    args = build_parser().parse_args(["worker", *argv])
    return cmd_worker(args, ClaimTimingService.from_env())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
