"""Hostile identifiers are refused before they reach a path; foreign files never break a listing.

The CLI side of hostile identifiers is in test_cli.py (BAD_INPUT); the CLI side of corrupt files
is here, next to the files it reads.
"""
from __future__ import annotations

import json

import pytest
from proc_helpers import run_cli, tree_snapshot

from jobs_core.errors import InvalidInput, JobNotFound, UnreadableJob
from jobs_core.models import Concept, Job, JobStatus
from jobs_core.renderers.noop import _tiny_png
from jobs_core.store import FileJobStore

HOSTILE = {
    "../x": "must start with a letter or a digit",
    "a/b": "may only contain letters, digits, '-' and '_'",
    "..": "must start with a letter or a digit",
    "": "is empty",
    "\x00": "must start with a letter or a digit",
    "ok\x00../../etc": "may only contain letters, digits, '-' and '_'",
    "x" * 65: "is 65 characters long; at most 64 are allowed",
    ".hidden": "must start with a letter or a digit",
    "/etc/passwd": "must start with a letter or a digit",
    "a\\b": "may only contain",
    "tab\there": "may only contain",
    "é": "must start with a letter or a digit",
}
IDS = [repr(value)[:20] for value in HOSTILE]


def refused(action, field: str, reason: str) -> str:
    with pytest.raises(InvalidInput) as caught:
        action()
    message = str(caught.value)
    assert message.startswith(field) and reason in message, message
    assert message.endswith(".") and "\n" not in message  # one sentence, printable on one line
    return message


@pytest.fixture
def seeded(service, tmp_path):
    """A service with one job of each kind of state, and a way to prove nothing changed."""
    job = service.submit({"projectId": "p1", "conceptInputs": {"floors": 3}})
    other = service.submit({"projectId": "p2"})
    service.cancel(other.job_id)

    def state():
        listing = service.list()
        return tree_snapshot(tmp_path), [j.model_dump_json() for j in listing.jobs], service.store.projects()
    return service, job, state


@pytest.mark.parametrize(("bad", "reason"), HOSTILE.items(), ids=IDS)
def test_service_refuses_hostile_identifiers_and_touches_nothing(seeded, bad, reason):
    service, job, state = seeded
    before = state()
    refused(lambda: service.submit({"projectId": bad}), "projectId", reason)
    refused(lambda: service.submit({"projectId": "p1", "conceptId": bad}), "conceptId", reason)
    refused(lambda: service.get(bad), "jobId", reason)
    refused(lambda: service.get(job.job_id, bad), "projectId", reason)
    refused(lambda: service.cancel(bad), "jobId", reason)
    refused(lambda: service.cancel(job.job_id, bad), "projectId", reason)
    refused(lambda: service.retry(bad), "jobId", reason)
    refused(lambda: service.delete(bad), "jobId", reason)
    refused(lambda: service.delete(job.job_id, bad), "projectId", reason)
    refused(lambda: service.events(bad), "jobId", reason)
    refused(lambda: service.list(bad), "projectId", reason)
    refused(lambda: service.list(cursor=bad), "cursor", reason)
    refused(lambda: service.resubmit(bad, "plan"), "jobId", reason)
    assert state() == before


@pytest.mark.parametrize(("bad", "reason"), HOSTILE.items(), ids=IDS)
def test_store_refuses_hostile_identifiers_and_touches_nothing(seeded, bad, reason):
    service, job, state = seeded
    store = service.store
    before = state()
    forged = job.model_copy(update={"project_id": bad})
    refused(lambda: store.create(forged, None), "projectId", reason)
    refused(lambda: store.create(job.model_copy(update={"job_id": bad}), None), "jobId", reason)
    refused(lambda: store.get(bad), "jobId", reason)
    refused(lambda: store.get(job.job_id, bad), "projectId", reason)
    refused(lambda: store.modify(bad, "p1", lambda j: (j, None)), "jobId", reason)
    refused(lambda: store.modify(job.job_id, bad, lambda j: (j, None)), "projectId", reason)
    refused(lambda: store.delete(bad, "p1", lambda j: None), "jobId", reason)
    refused(lambda: store.delete(job.job_id, bad, lambda j: None), "projectId", reason)
    refused(lambda: store.events(bad, "p1"), "jobId", reason)
    refused(lambda: store.save_image(bad, job.job_id, _tiny_png()), "projectId", reason)
    refused(lambda: store.save_image("p1", bad, _tiny_png()), "jobId", reason)
    refused(lambda: store.load_image(bad, job.job_id), "projectId", reason)
    refused(lambda: store.load_image("p1", bad), "jobId", reason)
    concept = Concept(concept_id="cpt_1", project_id="p1", concept_inputs={})
    refused(lambda: store.save_concept(concept.model_copy(update={"project_id": bad})), "projectId", reason)
    refused(lambda: store.save_concept(concept.model_copy(update={"concept_id": bad})), "conceptId", reason)
    refused(lambda: store.load_concept(bad, "cpt_1"), "projectId", reason)
    refused(lambda: store.load_concept("p1", bad), "conceptId", reason)
    refused(lambda: store.list_jobs(bad), "projectId", reason)
    assert state() == before


def test_the_longest_valid_identifier_is_accepted(service):
    longest = "P" + "x" * 62 + "9"
    job = service.submit({"projectId": longest})
    assert service.get(job.job_id, longest).project_id == longest


def test_reads_of_an_unknown_project_do_not_create_it(service, tmp_path):
    job = service.submit({"projectId": "real"})
    before = tree_snapshot(tmp_path)
    with pytest.raises(JobNotFound):
        service.get(job.job_id, "ghost")
    with pytest.raises(JobNotFound):
        service.store.load_concept("ghost", job.concept_id)
    with pytest.raises(JobNotFound):
        service.store.load_image("ghost", job.job_id)
    assert service.list("ghost").jobs == []
    assert service.store.projects() == ["real"]
    assert tree_snapshot(tmp_path) == before


# -- corrupt and foreign files (file store only: they are files) -----------------------------------
FOREIGN = {
    "job_TRUNCATED.json": b'{"jobId": "job_TRUNCATED", "status": "pend',
    "job_EMPTY.json": b"",
    "job_BLANK.json": b"  \n",
    "job_LIST.json": b'[{"jobId": "job_LIST"}]',
    "job_WRONGSHAPE.json": b'{"hello": "world"}',
    "job_BINARY.json": bytes(range(256)),
    ".DS_Store": b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00",
    "notes.txt": b"remember to render the tower",
}


@pytest.fixture
def littered(tmp_path):
    """A file store with two good jobs and every kind of foreign file beside them."""
    from jobs_core.config import load_settings
    from jobs_core.service import JobService

    root = tmp_path / "store"
    service = JobService(FileJobStore(root), load_settings(root))
    good = [service.submit({"projectId": "p1"}), service.submit({"projectId": "p2"})]
    for name, data in FOREIGN.items():
        (root / "jobs" / "p1" / name).write_bytes(data)
    (root / "jobs" / ".DS_Store").write_bytes(b"Bud1")
    (root / "jobs" / "README").write_text("not a project")
    return service, root, good


def test_listing_reports_each_foreign_file_as_unreadable_and_lists_the_good_jobs(littered):
    service, root, good = littered
    before = tree_snapshot(root)
    page = service.list()
    assert sorted(j.job_id for j in page.jobs) == sorted(j.job_id for j in good)
    reasons = {bad.location.split("/jobs/", 1)[1].removeprefix("p1/"): bad.reason for bad in page.unreadable}
    assert set(reasons) == {*FOREIGN, "README", ".DS_Store"} and len(page.unreadable) == len(FOREIGN) + 2
    assert reasons["job_EMPTY.json"] == reasons["job_BLANK.json"] == "the file is empty"
    assert reasons["job_TRUNCATED.json"] == "not valid JSON at line 1, column 38 (unterminated string starting at)"
    assert reasons["job_LIST.json"] == "holds a JSON list, not a job object"
    assert reasons["job_WRONGSHAPE.json"].startswith("not a job document (")
    assert reasons[".DS_Store"] == reasons["notes.txt"] == "not a job file"
    assert reasons["README"] == "not a project folder"
    top_level = [bad.reason for bad in page.unreadable if bad.location.endswith("jobs/.DS_Store")]
    assert top_level == ["not a project folder"]
    assert [j.job_id for j in service.list("p1").jobs] == [good[0].job_id]
    assert [j.job_id for j in service.list(status=JobStatus.PENDING).jobs] == [j.job_id for j in reversed(good)]
    assert tree_snapshot(root) == before  # listing reports; it never "repairs" a user's files


def test_foreign_files_do_not_disturb_claims_or_projects(littered):
    service, _, good = littered
    assert service.store.projects() == ["p1", "p2"]
    claimed = [service.claim_next("w1").job_id, service.claim_next("w1").job_id]
    assert claimed == [j.job_id for j in good] and service.claim_next("w1") is None


def test_getting_a_corrupt_job_says_why(littered):
    service, root, _ = littered
    with pytest.raises(UnreadableJob, match=r"job_LIST\.json: holds a JSON list, not a job object\."):
        service.get("job_LIST", "p1")
    with pytest.raises(UnreadableJob, match=r"job_EMPTY\.json: the file is empty\."):
        service.get("job_EMPTY")
    # a corrupt job can be deleted (it is nobody's job), and only it goes
    service.delete("job_TRUNCATED", "p1")
    assert not (root / "jobs" / "p1" / "job_TRUNCATED.json").exists()
    assert (root / "jobs" / "p1" / ".DS_Store").exists()


def test_cli_list_survives_foreign_files_in_table_and_json(littered):
    _, root, good = littered
    table = run_cli("list", jobs_dir=root)
    assert table.returncode == 0 and "Traceback" not in table.stderr
    assert {row.split()[0] for row in table.stdout.splitlines()[1:]} == {j.job_id for j in good}
    warnings = table.stderr.splitlines()
    assert len(warnings) == len(FOREIGN) + 2 and all(w.startswith("unreadable: ") for w in warnings)
    assert any("job_LIST.json (holds a JSON list, not a job object)" in w for w in warnings)
    lines = run_cli("list", "--json", jobs_dir=root)
    assert lines.returncode == 0
    assert {json.loads(line)["jobId"] for line in lines.stdout.splitlines()} == {j.job_id for j in good}


def test_cli_status_of_a_corrupt_job_is_one_line_and_exit_2(littered):
    _, root, _ = littered
    result = run_cli("status", "job_TRUNCATED", "--project-id", "p1", jobs_dir=root)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "job_TRUNCATED.json: not valid JSON at line 1" in result.stderr


def test_a_job_file_with_a_forged_identity_is_not_trusted_for_paths(littered):
    """A job file whose *contents* carry a hostile projectId cannot steer a write out of the store."""
    service, root, _ = littered
    forged = Job(job_id="job_FORGED", concept_id="cpt_1", project_id="../../outside", render_type="axonometric")
    (root / "jobs" / "p1" / "job_FORGED.json").write_text(forged.to_json())
    def data_files():  # the striped lock files are created on first use; they hold no data
        return {path: entry for path, entry in tree_snapshot(root.parent).items() if ".state/locks" not in path}
    before = data_files()
    # The file names another job than the place it holds: it is nobody's job, so it is not read.
    with pytest.raises(UnreadableJob, match=r"names job job_FORGED of project \.\./\.\./outside but holds the place"):
        service.cancel("job_FORGED", "p1")
    assert data_files() == before
