"""bench/scale_bench.py, small: 2 worker processes x 10 threads, 200 AI jobs, one SIGKILL midway.

The jobs run through the real `openai` renderer against the stand-in provider on 127.0.0.1
(0.2-0.5 s an answer). Each job must be completed exactly once with its image; only the jobs the
killed process held may have asked the provider twice; and twenty renders at once must share a
bounded pool per process (3 connections + 1 LISTEN), not take a connection each.
"""
from __future__ import annotations

import pytest
from postgres_scratch import require_postgres

pytestmark = pytest.mark.slow
POOL_SIZE = 3


@pytest.fixture(scope="module")
def outcome():
    server_url = require_postgres()  # skips without PostgreSQL (and so without psycopg)
    from bench.scale_bench import Plan, report, run

    plan = Plan(jobs=200, processes=2, threads=10, kills=1, provider_seconds=(0.2, 0.5), lease_seconds=3.0,
                pool_size=POOL_SIZE, timeout_seconds=120.0, restart=False, server_url=server_url)
    result = run(plan, say=lambda line: None)
    print("\n".join(report(result)))  # the figures, for whoever reads the test log
    return result


def test_every_job_completes_exactly_once_with_its_image(outcome):
    assert not outcome.timed_out, outcome.left
    assert outcome.statuses == {"completed": 200}
    assert sorted(outcome.completions) == sorted(outcome.job_ids)
    assert set(outcome.completions.values()) == {1}
    assert outcome.images == 200


def test_only_the_killed_process_jobs_ask_the_provider_twice(outcome):
    assert outcome.exit_codes == {"0": -9, "1": 0}
    assert outcome.held_at_kill  # it was killed while it held jobs
    assert set(outcome.requests) == set(outcome.job_ids)  # every job asked, nothing else did
    repeated = {job_id for job_id, count in outcome.requests.items() if count > 1}
    assert repeated <= outcome.held_at_kill
    assert max(outcome.requests.values()) <= 2
    reclaimed = {job_id for job_id, count in outcome.claims.items() if count > 1}
    assert repeated <= reclaimed


def test_twenty_renders_share_a_bounded_pool_per_process(outcome):
    assert outcome.peak_provider_in_flight > outcome.pool_bound  # more renders at once than connections
    assert 0 < outcome.peak_connections <= outcome.pool_bound == 2 * (POOL_SIZE + 1)
    assert all(peak <= POOL_SIZE + 1 for peak in outcome.peak_by_process.values())


def test_workers_are_woken_by_notifications_and_claims_are_timed(outcome):
    assert outcome.notifications["work"] >= 1 and outcome.notifications["change"] >= 200
    assert len(outcome.claim_ms) >= 200  # a claim per job at least (the reclaimed ones twice)
