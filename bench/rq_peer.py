"""The peer for throughput benchmarks: the same no-op workload through RQ on this machine's Redis.

Used by bench/ scripts that print our figures beside RQ's in one run. RQ's SimpleWorker runs jobs
in its own process (no fork per job), the fairest match for our thread/process workers.
"""
from __future__ import annotations

import multiprocessing
import os
import time

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")


def noop_task() -> int:
    return 1


def _work(queue_name: str, start) -> None:
    from redis import Redis
    from rq import Queue, SimpleWorker

    connection = Redis.from_url(REDIS_URL)
    worker = SimpleWorker([Queue(queue_name, connection=connection)], connection=connection)
    connection.ping()
    start.wait()  # imported and connected: time the work, not the start-up (as for our workers)
    worker.work(burst=True, logging_level="ERROR")


def rq_throughput(jobs: int, workers: int) -> dict[str, float]:
    """Enqueue `jobs` no-op jobs, drain them with `workers` processes; jobs/s and enqueue cost.

    The clock starts once every worker process has imported RQ and connected, as bench/core_bench.py
    times our workers (bench/throughput_bench.py's clock also counts our forks' start-up, which only
    makes that comparison harder for us).
    """
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(REDIS_URL)
    name = f"bench-{os.getpid()}-{time.time_ns()}"
    queue = Queue(name, connection=connection)
    started = time.perf_counter()
    for _ in range(jobs):
        queue.enqueue("bench.rq_peer.noop_task")
    enqueued = time.perf_counter()
    start = multiprocessing.Barrier(workers + 1)
    processes = [multiprocessing.Process(target=_work, args=(name, start)) for _ in range(workers)]
    for process in processes:
        process.start()
    start.wait()
    draining = time.perf_counter()
    for process in processes:
        process.join()
    finished = time.perf_counter()
    connection.flushdb()
    return {"enqueue_ms": (enqueued - started) * 1000 / jobs,
            "jobs_per_s": jobs / (finished - draining),
            "total_s": finished - started}


if __name__ == "__main__":
    from bench.rq_peer import rq_throughput as imported  # RQ refuses functions from __main__

    for count in (1, 4):
        print(f"RQ SimpleWorker, {count} workers:", imported(2000, count))
