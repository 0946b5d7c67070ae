"""Design studies (jobs_core.studies) through the API and the command line, on every backend."""
from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from argparse import Namespace

import pytest
from fastapi.testclient import TestClient
from proc_helpers import ROOT, cli_env, run_cli, start_worker, wait_until
from test_webhooks import (  # noqa: F401  (the fixtures: a real receiver, short webhook retries, a store per process)
    fast_retries,
    hook,
    receiver,
    store_every_process_opens,
)

from jobs_core.api import ApiSettings, create_app
from jobs_core.errors import InvalidInput, TransitionConflict
from jobs_core.lifecycle import Lease
from jobs_core.models import JobStatus, RenderRequest
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.studies import (
    KEY_PREFIX,
    _create_cell,
    cell_job_id,
    create_study,
    number_range,
    plan_study,
    read_study,
)
from jobs_core.studies_cli import StudyProgressBar, cmd_study_status, cmd_submit_study, parse_vary
from jobs_core.webhooks_sender import signing_secret
from jobs_core.worker import Worker

BODY = {"projectId": "harbour", "renderType": "axonometric", "conceptInputs": {"title": "Harbour Library"},
        "vary": {"floors": [4, 8, 12], "roof": ["flat", "gable"]}}


@pytest.fixture
def http(service):
    with TestClient(create_app(service, workers=0, settings=ApiSettings(), render_size=128)) as client:
        yield client


def _drain(service: JobService) -> None:
    """Run every queued job here, as a worker process would."""
    worker = Worker(service, concurrency=1, render_size=128)
    while (job := service.claim_next(worker.worker_id)) is not None:
        worker.run(job)


def _error(response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert message.endswith(".") and "Traceback" not in message
    return message


# -- the API ---------------------------------------------------------------------------------------
def test_a_study_is_one_job_per_combination_and_fills_as_they_finish(http, service):
    created = http.post("/api/studies", json=BODY)
    assert created.status_code == 201, created.text
    body = created.json()
    study_id, job_ids = body["studyId"], body["jobIds"]
    assert len(job_ids) == 6 and len(set(job_ids)) == 6
    assert body["pollUrl"] == f"/api/studies/{study_id}?projectId=harbour"
    assert created.headers["location"] == body["pollUrl"]
    for job_id in job_ids:  # ordinary jobs, each sharing the studyId and saying what it varies
        job = http.get(f"/api/jobs/{job_id}").json()["job"]
        assert job["studyId"] == study_id and job["status"] == "pending"
        assert job["conceptInputs"]["floors"] == job["study"]["values"]["floors"]
        assert job["conceptInputs"]["roof"] == job["study"]["values"]["roof"]
    polled = http.get(body["pollUrl"])
    assert polled.status_code == 200 and polled.headers["retry-after"] == "1"
    study = polled.json()["study"]
    assert study["status"] == "running" and study["title"] == "Harbour Library: variations"
    assert study["summary"] == {"total": 6, "done": 0, "running": 0, "queued": 6, "failed": 0, "canceled": 0,
                                "missing": 0}
    assert [cell["values"] for cell in study["cells"]] == [
        {"floors": floors, "roof": roof} for floors in (4, 8, 12) for roof in ("flat", "gable")]

    _drain(service)
    study = http.get(f"/api/studies/{study_id}").json()["study"]  # the projectId is optional
    assert study["status"] == "completed" and study["progress"] == 100 and study["summary"]["done"] == 6
    for cell in study["cells"]:
        image = http.get(cell["job"]["imageUrl"])
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


def test_a_combination_that_is_not_a_building_refuses_the_whole_study(http, service):
    body = {**BODY, "conceptInputs": {"footprint": "courtyard"}, "vary": {"width": [24, 6], "floors": [2, 3]}}
    message = _error(http.post("/api/studies", json=body), 422)
    assert message == ("The variation width 6, floors 2 cannot be drawn: a courtyard footprint needs width and depth "
                       "of at least 9 m (got 6 x 18 m). No job was created.")
    assert service.list().jobs == [] and service.store.projects() == []


@pytest.mark.parametrize(("vary", "words"), [
    ({}, "vary names no field"),
    ({"floors": [2], "roof": ["flat"], "material": ["brick"]}, "a study varies at most 2"),
    ({"floors": list(range(1, 8)), "roof": ["flat", "gable", "hip", "shed", "sawtooth", "flat"]},
     "That makes 42 renders; a study has at most 36"),
    ({"title": ["a", "b"]}, "vary.title is not a field a study can vary"),
    ({"floors": [4, "4"]}, "vary.floors lists the same value twice"),
    ({"floors": []}, "vary.floors lists no value"),
    ({"roof": ["dome"]}, "The variation roof dome cannot be drawn: conceptInputs.roof must be"),
    ({"floors": [True]}, "vary.floors values must be numbers or words"),
    ({"roof": ["x" * 5000]}, "The variation roof " + "x" * 39 + "… cannot be drawn"),
])
def test_a_bad_vary_is_one_sentence_and_changes_nothing(http, service, vary, words):
    assert words in _error(http.post("/api/studies", json={**BODY, "vary": vary}), 422)
    assert service.list().jobs == []


def test_the_same_idempotency_key_answers_the_same_study(http, service):
    first = http.post("/api/studies", json=BODY, headers={"Idempotency-Key": "press-1"})
    again = http.post("/api/studies", json=BODY, headers={"Idempotency-Key": "press-1"})
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert len(service.list(limit=100).jobs) == 6
    other = http.post("/api/studies", json={**BODY, "vary": {"floors": [4, 8]}}, headers={"Idempotency-Key": "press-1"})
    assert "different request body" in _error(other, 409)
    # a study's key is not a plain job's key
    job = http.post("/api/jobs/render", json={"projectId": "harbour"}, headers={"Idempotency-Key": "press-1"})
    assert job.status_code == 201 and len(service.list(limit=100).jobs) == 7


def test_a_create_that_died_half_way_is_finished_by_a_retry_with_its_key(http, service):
    # What a create killed after its third job leaves: the first three jobs, the first holding the key.
    plan = plan_study(BODY)
    study_id = "study_01M8S0000000000000000DIED"
    for index in range(3):
        _create_cell(service, plan, study_id, index, plan.cells[index], KEY_PREFIX + "press-2" if index == 0 else None,
                     None)
    half = http.get(f"/api/studies/{study_id}").json()["study"]
    assert half["status"] == "incomplete" and half["summary"]["missing"] == 3
    assert [cell["job"] is None for cell in half["cells"]] == [False] * 3 + [True] * 3

    retried = http.post("/api/studies", json=BODY, headers={"Idempotency-Key": "press-2"})
    assert retried.status_code == 201 and retried.json()["studyId"] == study_id
    assert retried.json()["jobIds"] == [cell_job_id(study_id, index) for index in range(6)]
    assert len(service.list(limit=100).jobs) == 6  # no duplicate
    whole = http.get(f"/api/studies/{study_id}").json()["study"]
    assert whole["status"] == "running" and whole["summary"]["queued"] == 6


def test_cancel_and_retry_the_whole_study_and_one_failed_cell_alone(http, service):
    study_id = http.post("/api/studies", json=BODY).json()["studyId"]
    one = cell_job_id(study_id, 1)
    worker = Worker(service, concurrency=1, render_size=128)
    worker.run(service.claim(cell_job_id(study_id, 0), worker.worker_id))  # one done before the cancel
    canceled = http.post(f"/api/studies/{study_id}/cancel").json()["study"]
    assert canceled["status"] == "canceled" and canceled["summary"]["canceled"] == 5
    assert canceled["summary"]["done"] == 1  # a finished job is left as it is
    retried = http.post(f"/api/studies/{study_id}/retry", params={"projectId": "harbour"}).json()["study"]
    assert retried["status"] == "running" and retried["summary"]["queued"] == 5 and retried["summary"]["done"] == 1

    service.fail(Lease.of(service.claim(one, "w")), "the walls intersect")
    assert read_study(service, study_id).summary.failed == 1
    assert http.post(f"/api/jobs/{one}/retry").json()["job"]["status"] == "pending"
    assert read_study(service, study_id).summary.queued == 5


def test_unknown_and_bad_study_ids_are_404_and_400(http):
    assert "No study with id study_01M8S0000000000000000NONE" in _error(
        http.get("/api/studies/study_01M8S0000000000000000NONE"), 404)
    assert "study ids look like study_" in _error(http.get("/api/studies/job_01M8S00000000000000000000"), 404)
    assert "may only contain" in _error(http.get("/api/studies/a.b"), 400)
    assert "No study" in _error(http.post("/api/studies/study_01M8S0000000000000000NONE/cancel"), 404)


# -- the command line, in this process on every backend ----------------------------------------------
def _args(**values) -> Namespace:
    defaults = {"project_id": "harbour", "render_type": "axonometric", "vary": ["floors=4,8,12", "roof=flat,gable"],
                "wait": False, "job_id": None, "idempotency_key": None}
    return Namespace(**{**defaults, **values})


def test_submit_vary_prints_the_study_and_status_shows_it(service, capsys):
    assert cmd_submit_study(_args(), service, {"title": "Harbour Library"}) == 0
    study_id = capsys.readouterr().out.strip()
    assert study_id.startswith("study_") and len(read_study(service, study_id).jobs) == 6
    assert cmd_study_status(_args(job_id=study_id), service) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["studyId"] == study_id and document["summary"]["queued"] == 6
    assert err.strip() == "Harbour Library: variations: running, 0 of 6 done, 6 queued."


def test_submit_vary_wait_runs_the_study_with_one_progress_bar(service, capsys):
    assert cmd_submit_study(_args(wait=True, vary=["roof=flat,gable,hip"]), service, {}) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)
    assert document["status"] == "completed" and [cell["status"] for cell in document["cells"]] == ["completed"] * 3
    bars = [line for line in err.splitlines() if line.startswith("[")]
    assert bars[-1] == "[" + "#" * 30 + "] 100% 3 of 3 done"
    assert len(bars) >= 3  # it moved on the way


def test_submit_vary_with_a_key_finishes_the_study_a_cut_off_run_began(service, capsys):
    # What a run killed after its third job leaves: the first three jobs, the first holding the key.
    plan = plan_study({**BODY, "conceptInputs": {}})
    study_id = "study_01M8S0000000000000000DIED"
    for index in range(3):
        _create_cell(service, plan, study_id, index, plan.cells[index], KEY_PREFIX + "run-7" if index == 0 else None,
                     None)
    assert cmd_submit_study(_args(idempotency_key="run-7"), service, {}) == 0
    out, err = capsys.readouterr()
    assert out.strip() == study_id and f"already made study {study_id}" in err
    assert read_study(service, study_id).summary.queued == 6 and len(service.list(limit=100).jobs) == 6
    assert cmd_submit_study(_args(idempotency_key="run-7"), service, {}) == 0  # once more: still that study
    assert capsys.readouterr().out.strip() == study_id and len(service.list(limit=100).jobs) == 6
    assert cmd_submit_study(_args(idempotency_key="run-8"), service, {}) == 0  # a new key: a new study
    assert capsys.readouterr().out.strip() != study_id and len(service.list(limit=100).jobs) == 12
    with pytest.raises(TransitionConflict, match="Give a new --idempotency-key for a different study"):
        cmd_submit_study(_args(idempotency_key="run-7", vary=["floors=4,8"]), service, {})
    with pytest.raises(InvalidInput, match="--idempotency-key must be 1 to 255 printable ASCII characters"):
        cmd_submit_study(_args(idempotency_key="x" * 256), service, {})
    assert len(service.list(limit=100).jobs) == 12  # the refused ones made nothing


def test_parse_vary_refuses_what_is_not_field_equals_values():
    assert parse_vary(["floors=4, 8", "roof=flat"]) == {"floors": ["4", "8"], "roof": ["flat"]}
    for bad, words in ((["floors"], "must look like FIELD=VALUE"), (["a=1", "b=2", "c=3"], "at most 2"),
                       (["floors=1", "floors=2"], "names floors twice")):
        with pytest.raises(InvalidInput, match=words):
            parse_vary(bad)


def test_the_bar_is_one_line_per_change_off_a_terminal(memory_service):
    study, _ = create_study(memory_service, BODY)
    stream = io.StringIO()
    bar = StudyProgressBar(stream)
    bar(study)
    bar(study)
    assert stream.getvalue() == "[" + "-" * 30 + "]   0% 0 of 6 done, 6 queued\n"


def test_number_range_includes_its_end_and_refuses_a_bad_step():
    assert number_range(4, 12, 4) == [4, 8, 12]
    assert number_range(0.3, 0.5, 0.1) == [0.3, 0.4, 0.5]
    with pytest.raises(InvalidInput, match="more than 0"):
        number_range(1, 2, 0)
    with pytest.raises(InvalidInput, match="37 values"):
        number_range(1, 37, 1)


# -- the command line as a user runs it: real processes, on files and PostgreSQL ---------------------
@pytest.mark.slow
@pytest.mark.parametrize("backend", ["files", "postgres"])
def test_the_cli_submits_waits_for_and_shows_a_study(backend, tmp_path, request):
    env = cli_env(JOBS_RENDERER="axonometric")
    if backend == "postgres":
        env["JOBS_STORE_URL"] = request.getfixturevalue("pg_url")
    run = (lambda *args: run_cli(*args, jobs_dir=tmp_path / "s", env=env)) if backend == "files" else \
        (lambda *args: _run_on_url(env, *args))
    waited = run("submit", "--project-id", "harbour", "--vary", "floors=4,8,12", "--vary", "roof=flat,gable",
                 "--wait")
    assert waited.returncode == 0, waited.stderr
    study = json.loads(waited.stdout)
    assert study["status"] == "completed" and study["summary"]["done"] == 6
    assert waited.stderr.splitlines()[0] == study["studyId"]
    assert waited.stderr.splitlines()[-1] == "[" + "#" * 30 + "] 100% 6 of 6 done"
    shown = run("status", study["studyId"])
    assert shown.returncode == 0 and json.loads(shown.stdout)["cells"] == study["cells"]
    refused = run("submit", "--project-id", "harbour", "--inputs", '{"footprint": "courtyard"}', "--vary", "width=6,12")
    assert refused.returncode == 2 and refused.stderr.startswith("error: The variation width 6 cannot be drawn")
    listed = run("list", "--json")
    assert len(listed.stdout.splitlines()) == 6  # nothing of the refused study was made
    keyed = [run("submit", "--project-id", "harbour", "--vary", "roof=flat,hip", "--idempotency-key", "nightly-3")
             for _ in range(2)]
    assert [done.returncode for done in keyed] == [0, 0], keyed[1].stderr
    assert keyed[0].stdout == keyed[1].stdout and "already made study" in keyed[1].stderr
    assert len(run("list", "--json").stdout.splitlines()) == 8  # the rerun made no job twice
    plain = run("submit", "--project-id", "harbour", "--idempotency-key", "nightly-3")
    assert plain.returncode == 2 and "--idempotency-key is for a design study" in plain.stderr
    missing = run("status", "study_01M8S0000000000000000NONE")
    assert missing.returncode == 2 and missing.stderr == "error: No study with id study_01M8S0000000000000000NONE.\n"


def _run_on_url(env: dict, *args: str):
    return subprocess.run([sys.executable, "-m", "jobs_core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_a_finished_job_without_the_study_is_not_a_cell(service):
    """A job someone named like a study's, but that does not carry the study, is not one of it."""
    service.submit(RenderRequest(project_id="p"), job_id="job_01M8S0000000000000000FAKE-00")
    with pytest.raises(Exception, match="No study"):
        read_study(service, "study_01M8S0000000000000000FAKE")
    assert service.get("job_01M8S0000000000000000FAKE-00").status is JobStatus.PENDING


# -- a create killed half-way, for real ---------------------------------------------------------------
CREATE_IN_CHILD = """
import sys
from jobs_core.service import JobService
from jobs_core.studies import create_study
service = JobService.from_env(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
create_study(service, {"projectId": "harbour", "vary": {"floors": list(range(1, 7)),
             "roof": ["flat", "gable", "hip", "shed", "sawtooth"]}}, idempotency_key="press-9")
"""


@pytest.mark.slow
def test_a_create_killed_half_way_is_finished_by_its_retry_on_the_file_store(tmp_path, settings):
    """SIGKILL the creating process once some of its 30 jobs exist; the same request with the same
    key then makes exactly the rest, in the same study, and the store needs no repair."""
    root = tmp_path / "jobs"
    folder = root / "jobs" / "harbour"
    for _attempt in range(10):
        child = subprocess.Popen([sys.executable, "-c", CREATE_IN_CHILD, str(root)], cwd=ROOT, env=cli_env(),
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "ready"
        child.stdin.write("go\n")
        child.stdin.flush()
        while child.poll() is None and not (folder.exists() and any(folder.glob("*.json"))):
            time.sleep(0.0005)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        made = len(list(folder.glob("*.json"))) if folder.exists() else 0
        if 0 < made < 30:
            break
        shutil.rmtree(root, ignore_errors=True)
    else:
        pytest.skip("the create was never caught half-way in 10 tries (this machine is too quick or too slow)")

    service = JobService(FileJobStore(root), settings)
    [first] = [job for job in service.list("harbour", limit=100).jobs if job.job_id.endswith("-00")]
    half = read_study(service, first.study_id)
    assert half.status == "incomplete" and half.summary.missing == 30 - made
    study, replayed = create_study(service, {"projectId": "harbour", "vary": {
        "floors": list(range(1, 7)), "roof": ["flat", "gable", "hip", "shed", "sawtooth"]}}, idempotency_key="press-9")
    assert replayed and study.study_id == first.study_id
    assert study.summary.total == 30 and study.summary.queued == 30 and study.summary.missing == 0
    assert len(service.list("harbour", limit=100).jobs) == 30  # none twice
    # Every job is whole (the listing read them all). The kill may leave the queue marker of the job
    # it was writing (the file store writes a job's marker first, so a job is never unseen by
    # workers); claimers and repair drop such a marker, and nothing else is left to fix.
    repaired = service.repair()
    assert all(fix.startswith("removed the stale queue entry") for fix in repaired.index_fixes), repaired
    assert not repaired.images_requeued and service.repair().changed is False


def test_a_studys_jobs_keep_their_place_in_listings_newest_first(service):
    before = service.submit({"projectId": "harbour"})
    study, _ = create_study(service, BODY)
    after = service.submit({"projectId": "harbour"})
    listed = [job.job_id for job in service.list("harbour", limit=100).jobs]
    assert listed[0] == after.job_id and listed[-1] == before.job_id
    assert sorted(listed[1:-1]) == [cell.job_id for cell in study.cells]
    assert [job_id for _, job_id in service.store.pending()] == [before.job_id, *listed[1:-1][::-1], after.job_id]


# -- a webhook for each of the study's jobs, to a real receiver ----------------------------------------
def test_each_job_of_a_study_posts_its_signed_webhook(http, service, receiver, fast_retries):  # noqa: F811
    created = http.post("/api/studies", json={**BODY, "vary": {"roof": ["flat", "gable", "hip"]},
                                              **hook(receiver.url, ["completed"])})
    assert created.status_code == 201, created.text
    study_id, job_ids = created.json()["studyId"], created.json()["jobIds"]
    assert all(service.get(job_id).webhook == receiver.url for job_id in job_ids)
    worker = Worker(service, poll_seconds=0.05, render_size=128).start()
    try:
        wait_until(lambda: len(receiver.snapshot()) >= 3 and not service.store.deliveries(), what="3 deliveries")
    finally:
        worker.stop()
    docs = receiver.verify(signing_secret(service.store))  # raises unless every signature is good
    assert sorted(doc["jobId"] for doc in docs) == job_ids and {doc["status"] for doc in docs} == {"completed"}
    assert {doc["studyId"] for doc in docs} == {study_id}  # a receiver can tell the study's jobs apart
    assert sorted(doc["study"]["values"]["roof"] for doc in docs) == ["flat", "gable", "hip"]


@pytest.mark.parametrize(("fields", "words"), [
    (hook("ftp://example.com/hook"), "webhook: only http and https URLs are allowed, not ftp."),
    (hook("http://169.254.169.254/latest/meta-data"), "webhook: 169.254.169.254 is a cloud metadata address."),
    (hook("http://127.0.0.1:9/hook", ["start", "finished"]),
     "webhookEventsFilter.1 must be 'start', 'progress' or 'completed' (got 'finished')."),
])
def test_a_bad_webhook_refuses_the_whole_study_with_a_sentence(http, service, fields, words):
    assert _error(http.post("/api/studies", json={**BODY, **fields}), 422) == words  # as for a single job
    assert service.list().jobs == []


def test_the_same_key_with_another_webhook_is_a_conflict(http, service, receiver):  # noqa: F811
    first = http.post("/api/studies", json={**BODY, **hook(receiver.url)}, headers={"Idempotency-Key": "hooked"})
    assert first.status_code == 201
    again = http.post("/api/studies", json={**BODY, **hook(receiver.url)}, headers={"Idempotency-Key": "hooked"})
    assert again.status_code == 201 and again.json() == first.json()
    other = http.post("/api/studies", json={**BODY, **hook(receiver.url, ["completed"])},
                      headers={"Idempotency-Key": "hooked"})
    assert "different request body" in _error(other, 409)
    assert len(service.list(limit=100).jobs) == 6


def test_submit_vary_webhook_in_a_process_reaches_the_receiver_from_a_worker(
        tmp_path, store_every_process_opens, receiver):  # noqa: F811
    store_env, service = store_every_process_opens
    by_env = bool(store_env)
    jobs_dir = tmp_path / "store"
    env = cli_env(JOBS_WEBHOOK_BACKOFF_SECONDS="0.05", JOBS_WEBHOOK_POLL_SECONDS="0.05", JOBS_RENDERER="axonometric",
                  **store_env)
    refused = run_cli("submit", "--project-id", "harbour", "--vary", "roof=flat,gable", "--webhook", "ftp://x/h",
                      jobs_dir=None if by_env else jobs_dir, env=env)
    assert refused.returncode == 2 and refused.stderr.startswith("error: webhook: only http and https")
    submitted = run_cli("submit", "--project-id", "harbour", "--vary", "roof=flat,gable", "--webhook", receiver.url,
                        jobs_dir=None if by_env else jobs_dir, env=env)
    assert submitted.returncode == 0, submitted.stderr
    study = read_study(service, submitted.stdout.strip())
    worker = start_worker(jobs_dir, env=env, by_env=by_env)
    try:
        wait_until(lambda: len(receiver.snapshot()) >= 4 and not service.store.deliveries(), timeout=60,
                   what="start and completed of both jobs")
    finally:
        worker.terminate()
        worker.wait(20)
    docs = receiver.verify(signing_secret(service.store))
    assert sorted((doc["jobId"], doc["status"]) for doc in docs) == sorted(
        (cell.job_id, status) for cell in study.cells for status in ("processing", "completed"))
