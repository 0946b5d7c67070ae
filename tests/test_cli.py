"""`python -m jobs_core` as a user runs it: real processes on a real store directory."""
from __future__ import annotations

import json
import re
import signal

import pytest
from proc_helpers import cli_env, run_cli, start_worker, tree_snapshot, wait_until, worker_log

from jobs_core.models import Job, JobStatus
from jobs_core.service import JobService
from jobs_core.store import FileJobStore

pytestmark = pytest.mark.slow
JOB_ID = re.compile(r"job_[0-9A-Z]{26}")


def submitted(result) -> str:
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert JOB_ID.fullmatch(job_id), result.stdout
    return job_id


def status(jobs_dir, job_id: str, *args: str) -> Job:
    result = run_cli("status", job_id, *args, jobs_dir=jobs_dir)
    assert result.returncode == 0, result.stderr
    return Job.model_validate_json(result.stdout)


def test_submit_prints_the_job_id_and_status_prints_the_job(tmp_path):
    job_id = submitted(run_cli("submit", "--project-id", "tower-7", "--inputs", '{"floors": 4, "roof": "gable"}',
                               jobs_dir=tmp_path))
    for job in (status(tmp_path, job_id), status(tmp_path, job_id, "--project-id", "tower-7")):
        assert job.job_id == job_id and job.status is JobStatus.PENDING and job.project_id == "tower-7"
        assert job.concept_inputs["floors"] == 4 and job.concept_inputs["roof"] == "gable"
    assert (tmp_path / "jobs" / "tower-7" / f"{job_id}.json").exists()  # the seed's layout


def test_submit_reads_inputs_from_a_file(tmp_path):
    brief = tmp_path / "brief.json"
    brief.write_text(json.dumps({"title": "Harbour offices", "floors": 9, "material": "timber"}))
    job_id = submitted(run_cli("submit", "--project-id", "harbour", "--inputs", f"@{brief}", jobs_dir=tmp_path / "s"))
    job = status(tmp_path / "s", job_id)
    assert job.concept_inputs["title"] == "Harbour offices" and job.concept_inputs["material"] == "timber"


def test_submit_wait_runs_the_job_with_progress_and_prints_the_final_json(tmp_path):
    result = run_cli("submit", "--project-id", "demo", "--render-type", "plan", "--inputs", '{"floors": 3}', "--wait",
                     jobs_dir=tmp_path, env=cli_env(JOBS_RENDERER="axonometric"))
    assert result.returncode == 0, result.stderr
    final = Job.model_validate_json(result.stdout)
    assert final.status is JobStatus.COMPLETED and final.progress == 100 and final.attempts == 1
    progress_lines = [line for line in result.stderr.splitlines() if "%" in line]
    assert progress_lines[-1].startswith("[" + "#" * 30 + "] 100% completed")
    assert len(progress_lines) >= 2  # more than the final line: progress was shown on the way
    assert result.stderr.splitlines()[0] == final.job_id
    png = tmp_path / "renders" / "demo" / f"{final.job_id}.png"
    assert png.read_bytes().startswith(b"\x89PNG")


def test_submit_wait_exits_1_and_prints_the_failed_job(tmp_path):
    result = run_cli("submit", "--project-id", "demo", "--wait", jobs_dir=tmp_path,
                     env=cli_env(JOBS_RENDERER="broken"))
    assert result.returncode == 1, result.stderr
    final = Job.model_validate_json(result.stdout)
    assert final.status is JobStatus.FAILED and final.error == "the brief cannot be drawn: walls intersect"
    assert "Traceback" not in result.stderr


def test_list_prints_a_table_or_json_lines_filtered_by_project_and_status(tmp_path):
    first = submitted(run_cli("submit", "--project-id", "alpha", jobs_dir=tmp_path))
    second = submitted(run_cli("submit", "--project-id", "beta", jobs_dir=tmp_path))
    FileJobStore(tmp_path)  # (the store exists; below the CLI changes it)
    assert run_cli("worker", "--drain", jobs_dir=tmp_path, env=cli_env(JOBS_RENDERER="noop")).returncode == 0
    third = submitted(run_cli("submit", "--project-id", "alpha", jobs_dir=tmp_path))

    table = run_cli("list", jobs_dir=tmp_path)
    assert table.returncode == 0 and table.stderr == ""
    header, *rows = table.stdout.splitlines()
    assert header.split()[:4] == ["JOB", "PROJECT", "TYPE", "STATUS"]
    assert [row.split()[:4] for row in rows] == [[third, "alpha", "axonometric", "pending"],
                                                [second, "beta", "axonometric", "completed"],
                                                [first, "alpha", "axonometric", "completed"]]
    lines = run_cli("list", "--json", "--project-id", "alpha", "--status", "completed", jobs_dir=tmp_path)
    assert lines.returncode == 0
    assert [json.loads(line)["jobId"] for line in lines.stdout.splitlines()] == [first]
    assert json.loads(lines.stdout)["status"] == "completed"


BAD_INPUT = [
    (["submit", "--project-id", "../x"], "projectId '../x' must start with a letter or a digit."),
    (["submit", "--project-id", "a/b"], "projectId 'a/b' may only contain letters, digits, '-' and '_'."),
    (["submit", "--project-id", ""], "projectId is empty"),
    (["submit", "--project-id", "x" * 65], "projectId is 65 characters long; at most 64 are allowed."),
    (["submit", "--project-id", ".hidden"], "projectId '.hidden' must start with a letter or a digit."),
    (["submit", "--project-id", "p", "--inputs", "{floors: 4"], "--inputs is not valid JSON"),
    (["submit", "--project-id", "p", "--inputs", "[1, 2]"], "--inputs must be a JSON object"),
    (["submit", "--project-id", "p", "--inputs", "@/no/such/brief.json"], "Cannot read --inputs file"),
    (["submit", "--project-id", "p", "--inputs", '{"floors": 0}'], "floors must be at least 1"),
    (["submit", "--project-id", "p", "--render-type", "sketchy"], "renderType 'sketchy' is not one of"),
    (["submit"], "the following arguments are required: --project-id"),
    (["status", "job_00000000000000000000000000"], "No job with id job_00000000000000000000000000."),
    (["status", "../../etc/passwd"], "jobId '../../etc/passwd' must start with a letter or a digit."),
    (["list", "--status", "lost"], "invalid choice: 'lost'"),
    (["list", "--project-id", "a/b"], "projectId 'a/b' may only contain"),
    (["list", "--limit", "0"], "limit must be at least 1, not 0."),
    (["worker", "--concurrency", "0"], "--concurrency must be at least 1, not 0."),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUT, ids=[" ".join(a)[:40] for a, _ in BAD_INPUT])
def test_bad_input_prints_one_clear_line_exits_2_and_changes_nothing(tmp_path, args, message):
    FileJobStore(tmp_path)
    before = tree_snapshot(tmp_path)
    result = run_cli(*args, jobs_dir=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert message in result.stderr
    assert tree_snapshot(tmp_path) == before


def test_bad_environment_setting_is_one_line_too(tmp_path):
    result = run_cli("list", jobs_dir=tmp_path, env=cli_env(JOBS_LEASE_SECONDS="soon"))
    assert result.returncode == 2 and result.stderr == "error: JOBS_LEASE_SECONDS='soon' is not a number.\n"


def test_worker_drain_exits_0_once_every_job_is_done(tmp_path):
    job_ids = [submitted(run_cli("submit", "--project-id", "p", jobs_dir=tmp_path)) for _ in range(3)]
    result = run_cli("worker", "--drain", "--concurrency", "2", "--poll", "0.05", jobs_dir=tmp_path,
                     env=cli_env(JOBS_RENDERER="noop"))
    assert result.returncode == 0, result.stderr
    assert "stopped after 3 jobs" in result.stderr
    assert [status(tmp_path, job_id).status for job_id in job_ids] == [JobStatus.COMPLETED] * 3
    empty = run_cli("worker", "--drain", jobs_dir=tmp_path / "empty")
    assert empty.returncode == 0 and "stopped after 0 jobs" in empty.stderr


def test_sigterm_mid_job_releases_the_job_to_pending_and_exits_0(tmp_path):
    jobs_dir, gate = tmp_path / "store", tmp_path / "gate"
    gate.mkdir()
    job_id = submitted(run_cli("submit", "--project-id", "p", "--inputs", json.dumps({"gateDir": str(gate)}),
                               jobs_dir=jobs_dir, env=cli_env(JOBS_RENDERER="gate")))
    worker = start_worker(jobs_dir)
    wait_until(lambda: (gate / "started").exists(), what="the render to start")
    assert status(jobs_dir, job_id).status is JobStatus.PROCESSING
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker_log(worker)

    released = status(jobs_dir, job_id)
    assert released.status is JobStatus.PENDING and released.attempts == 0 and released.worker_id is None
    service = JobService(FileJobStore(jobs_dir))
    assert [e.type for e in service.events(job_id) if e.type != "progress"] == ["created", "claimed", "released"]
    assert [job for _, job in service.store.pending()] == [job_id]  # back in the queue, not lost

    (gate / "open").touch()
    assert run_cli("worker", "--drain", "--poll", "0.05", jobs_dir=jobs_dir).returncode == 0
    done = status(jobs_dir, job_id)
    assert done.status is JobStatus.COMPLETED and done.attempts == 1  # the released attempt was not spent


def test_repair_finds_a_job_lost_from_the_queue_and_a_second_run_has_nothing_to_fix(tmp_path):
    job_id = submitted(run_cli("submit", "--project-id", "p", jobs_dir=tmp_path))
    for marker in (tmp_path / ".state" / "ready").iterdir():  # as if removed by hand, or lost in a crash
        marker.unlink()
    assert [job for _, job in FileJobStore(tmp_path).pending()] == []  # no worker would find it now

    first = run_cli("repair", jobs_dir=tmp_path)
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 1, first.stderr
    assert [job for _, job in FileJobStore(tmp_path).pending()] == [job_id]
    before = tree_snapshot(tmp_path)
    second = run_cli("repair", jobs_dir=tmp_path)
    assert second.returncode == 0 and second.stdout != first.stdout
    assert tree_snapshot(tmp_path) == before  # safe to run twice: the second run changed nothing
    nothing = JobService(FileJobStore(tmp_path)).repair()
    assert not nothing.changed and second.stdout == nothing.summary() + "\n"

    assert run_cli("worker", "--drain", jobs_dir=tmp_path, env=cli_env(JOBS_RENDERER="noop")).returncode == 0
    assert status(tmp_path, job_id).status is JobStatus.COMPLETED  # found again and claimed


def test_status_says_plainly_when_no_worker_can_run_a_pending_job(tmp_path, capsys):
    from jobs_core.cli import main

    store = str(tmp_path / "store")
    assert main(["submit", "--jobs-dir", store, "--project-id", "p1"]) == 0
    job_id = capsys.readouterr().out.strip()  # submit prints the new job's id
    assert main(["status", "--jobs-dir", store, job_id]) == 0
    captured = capsys.readouterr()
    assert '"status": "pending"' in captured.out
    assert captured.err.strip() == "No worker is running, so the job waits until one starts."
