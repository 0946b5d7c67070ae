"""Bulk retry and cancel over a filter (jobs_core/bulk.py): the command line and the batches the
monitor page uses too. Every job goes through JobService's lifecycle rules, on every backend."""
from __future__ import annotations

import argparse

import pytest

from jobs_core import cli
from jobs_core.bulk import (
    ActionReport,
    BulkFilter,
    BulkInterrupted,
    add_bulk_commands,
    apply_in_batches,
    select_jobs,
)
from jobs_core.errors import InvalidInput
from jobs_core.lifecycle import Lease
from jobs_core.models import JobStatus
from jobs_core.service import JobService


def failed_job(service: JobService, project: str, message: str):
    job = service.submit({"projectId": project})
    service.fail(Lease.of(service.claim(job.job_id, "w1", project)), message)
    return job


@pytest.fixture
def jobs(service: JobService) -> dict[str, list]:
    """Failed jobs in two projects with two messages, pending jobs, one completed and one running."""
    made = {
        "memory": [failed_job(service, "p1", "The renderer ran out of memory.") for _ in range(5)],
        "timeout": [failed_job(service, "p1", "The image provider timed out.") for _ in range(2)],
        "other": [failed_job(service, "p2", "The renderer ran out of memory.") for _ in range(3)],
        "pending": [service.submit({"projectId": "p1"}) for _ in range(4)],
        "running": [service.submit({"projectId": "p1"})],
    }
    service.claim(made["running"][0].job_id, "w2", "p1")
    return made


def parser() -> argparse.ArgumentParser:
    """The commands as jobs_core/cli.py wires them (one line there: add_bulk_commands)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--jobs-dir")
    built = argparse.ArgumentParser(prog="python -m jobs_core")
    add_bulk_commands(built.add_subparsers(dest="command", required=True), common)
    return built


def run(service: JobService, *argv: str) -> int:
    args = parser().parse_args(argv)
    return args.handler(args, service)


def status_of(service: JobService, job) -> JobStatus:
    return service.get(job.job_id, job.project_id).status


def test_retry_picks_by_status_project_and_error_text(service: JobService, jobs, capsys) -> None:
    assert run(service, "retry", "--status", "failed", "--project-id", "p1", "--error-contains", "OUT OF MEMORY") == 0
    assert capsys.readouterr().out.splitlines()[0] == "Retried 5 jobs."
    assert {status_of(service, job) for job in jobs["memory"]} == {JobStatus.PENDING}
    assert {status_of(service, job) for job in jobs["timeout"] + jobs["other"]} == {JobStatus.FAILED}
    retried = service.get(jobs["memory"][0].job_id, "p1")
    assert retried.attempts == 0 and retried.error is None  # the lifecycle's retry rule, not a plain write
    assert service.events(retried.job_id, "p1")[-1].type == "retried"


def test_a_dry_run_lists_the_jobs_and_changes_none(service: JobService, jobs, capsys) -> None:
    assert run(service, "retry", "--status", "failed", "--error-contains", "memory", "--dry-run") == 0
    out, err = capsys.readouterr()
    listed = {line.split("\t")[0] for line in out.splitlines()}
    assert listed == {job.job_id for job in jobs["memory"] + jobs["other"]}
    assert err.strip() == "Would retry 8 failed jobs whose error contains 'memory' (dry run: nothing changed)."
    assert {status_of(service, job) for job in jobs["memory"] + jobs["other"]} == {JobStatus.FAILED}


def test_cancel_pending_in_batches_reports_progress(service: JobService, jobs, capsys) -> None:
    assert run(service, "cancel", "--status", "pending", "--batch-size", "3") == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "Canceled 4 jobs."
    assert err.splitlines() == ["cancel: 3 of 4", "cancel: 4 of 4"]
    assert {status_of(service, job) for job in jobs["pending"]} == {JobStatus.CANCELED}
    assert status_of(service, jobs["running"][0]) is JobStatus.PROCESSING  # not picked: not pending


def test_nothing_to_do_says_so(service: JobService, jobs, capsys) -> None:
    assert run(service, "retry", "--status", "canceled", "--project-id", "nobody") == 0
    assert capsys.readouterr().out.strip() == "No canceled jobs of project nobody: nothing to retry."


@pytest.mark.parametrize(("argv", "message"), [
    (("retry", "--status", "completed"), "retry --status must be failed or canceled, not 'completed'."),
    (("cancel", "--status", "failed"), "cancel --status must be pending or processing, not 'failed'."),
    (("retry", "--status", "failed", "--project-id", "a/b"), "projectId"),
    (("retry", "--status", "failed", "--batch-size", "0"), "--batch-size must be at least 1, not 0."),
])
def test_bad_input_is_one_sentence_and_changes_nothing(memory_service: JobService, argv, message) -> None:
    job = failed_job(memory_service, "p1", "boom")
    with pytest.raises(InvalidInput, match=message.replace(".", r"\.").replace("(", r"\(")):
        run(memory_service, *argv)
    assert status_of(memory_service, job) is JobStatus.FAILED


def test_a_job_changed_meanwhile_is_refused_by_the_rules_and_left_as_it_is(service: JobService, jobs) -> None:
    chosen = select_jobs(service, BulkFilter("failed", "p2"))
    assert len(chosen) == 3
    service.retry(chosen[1].job_id, "p2")  # another person got there first
    service.claim(chosen[1].job_id, "w9", "p2")  # and a worker took it
    report = apply_in_batches(service, "retry", chosen)
    assert [ref.job_id for ref in report.done] == [chosen[0].job_id, chosen[2].job_id]
    [(ref, reason)] = report.refused
    assert ref == chosen[1] and reason.startswith(f"Cannot retry job {ref.job_id}: it is processing")
    assert status_of(service, chosen[1]) is JobStatus.PROCESSING
    assert report.summary() == "Retried 2 jobs. 1 could not be changed."


def test_an_interrupted_run_leaves_every_job_changed_or_untouched(service: JobService, jobs) -> None:
    chosen = select_jobs(service, BulkFilter("failed"))
    assert len(chosen) == 10

    def stop_after_the_first_batch(handled: int, total: int) -> None:
        raise KeyboardInterrupt  # Ctrl-C arrives while the first batch is reported

    with pytest.raises(BulkInterrupted) as stopped:
        apply_in_batches(service, "retry", chosen, batch_size=4, on_batch=stop_after_the_first_batch)
    report: ActionReport = stopped.value.report
    assert len(report.done) == 4 and report.not_reached == 6
    assert report.summary() == "Retried 4 jobs. Stopped before 6 more, which are untouched."
    for ref in chosen:
        job = service.get(ref.job_id, ref.project_id)
        if ref in report.done:
            assert (job.status, job.attempts, job.error) == (JobStatus.PENDING, 0, None)
        else:
            assert job.status is JobStatus.FAILED and job.error  # untouched: still its failure
    # running it again finishes the rest: the done ones are no longer failed, so not picked twice
    again = apply_in_batches(service, "retry", select_jobs(service, BulkFilter("failed")))
    assert len(again.done) == 6 and not again.refused


def test_the_monitor_actions_use_the_same_batches(service: JobService, jobs) -> None:
    import pandas as pd

    from jobs_core.monitor import JobIndex
    from jobs_core.monitor.actions import bulk_targets, run_action

    index = JobIndex.for_store(service.store, watch="off")
    view = index.frame()
    view = view[view["project"] == "p1"]
    targets = bulk_targets(view, "cancel")
    assert {ref.job_id for ref in targets} == {job.job_id for job in jobs["pending"]}
    progress: list[tuple[int, int]] = []
    report = run_action(service, "cancel", targets, index, on_batch=lambda done, total: progress.append((done, total)),
                        batch_size=3)
    assert progress == [(3, 4), (4, 4)] and len(report.done) == 4
    refreshed = index.frame()  # the index re-read exactly the jobs it changed
    assert set(refreshed.loc[refreshed["status"] == "canceled", "job"]) == {job.job_id for job in jobs["pending"]}
    assert isinstance(refreshed, pd.DataFrame)


@pytest.mark.skipif("retry" not in cli.build_parser()._subparsers._group_actions[0].choices,
                    reason="jobs_core/cli.py does not wire add_bulk_commands yet (the lead adds the line)")
def test_the_command_line_runs_it(tmp_path, capsys) -> None:
    from jobs_core import FileJobStore

    store = FileJobStore(tmp_path / "store")
    service = JobService(store)
    job = failed_job(service, "p1", "boom")
    assert cli.main(["retry", "--status", "failed", "--jobs-dir", str(tmp_path / "store")]) == 0
    assert "Retried 1 job." in capsys.readouterr().out
    assert status_of(service, job) is JobStatus.PENDING
    assert cli.main(["cancel", "--status", "done", "--jobs-dir", str(tmp_path / "store")]) == 2
