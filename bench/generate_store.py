"""Fill a file store with realistic jobs in every state, across many projects and weeks.

    python3 -m bench.generate_store --jobs-dir /tmp/store100k --jobs 100000 --projects 500 --weeks 12

Job files are written directly in the store's layout (pretty JSON, the Job model's camelCase
fields, `.state` queue markers for pending and processing jobs) because going through JobService
would take minutes at 100,000 jobs. Every document is valid per `jobs_core.models.Job`
(tests/test_generate_store.py checks a sample). `--images` also writes a small PNG for each
completed job and `--events` an event log, for stores small enough to browse in the page.
"""
from __future__ import annotations

import argparse
import io
import json
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from jobs_core.ids import _encode
from jobs_core.renderers.axonometric import RENDER_TYPES

ERRORS = (
    "The renderer ran out of memory while drawing 120 floors.",
    "The image provider refused the prompt (content policy).",
    "The image provider timed out after 60 seconds.",
    "conceptInputs.width must be at most 300 (got 420).",
    "worker stopped responding",
    "The image provider's API key was rejected (HTTP 401).",
    "The renderer could not close the courtyard outline.",
)
STAGES = ("starting", "validating brief", "massing", "drawing facades", "drawing openings",
          "roof", "shading", "encoding image")
FOOTPRINTS = ("bar", "L", "U", "courtyard", "tower")
ROOFS = ("flat", "gable", "hip", "shed", "sawtooth")
MATERIALS = ("concrete", "brick", "timber", "glass", "stone", "metal")
PALETTES = ("warm", "cool", "monochrome", "earth", "pastel")
# Old jobs are finished; recent ones may still be queued or running (see _status).
FINISHED_WEIGHTS = (("completed", 86), ("failed", 9), ("canceled", 5))


@dataclass(frozen=True)
class Plan:
    jobs: int
    projects: int
    weeks: int
    now: datetime
    stuck: int = 25  # processing jobs whose worker died (heartbeat far older than any lease)
    seed: int = 7


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _id(prefix: str, moment: datetime, rng: random.Random) -> str:
    return f"{prefix}_{_encode(_ms(moment), 10)}{_encode(rng.getrandbits(79), 16)}"


def _status(age: timedelta, rng: random.Random) -> str:
    if age < timedelta(hours=2):
        return rng.choice(("pending", "pending", "processing", "completed", "failed"))
    names, weights = zip(*FINISHED_WEIGHTS, strict=True)
    return rng.choices(names, weights)[0]


def _inputs(rng: random.Random, number: int) -> dict:
    floors = rng.randint(1, 40)
    return {"title": f"Concept {number}", "description": "", "buildingType": rng.choice(
                ("housing", "office", "school", "library", "mixed-use")),
            "footprint": rng.choice(FOOTPRINTS), "width": float(rng.randint(12, 90)),
            "depth": float(rng.randint(9, 40)), "floors": floors, "floorHeight": 3.5,
            "roof": rng.choice(ROOFS), "material": rng.choice(MATERIALS), "palette": rng.choice(PALETTES)}


def make_job(plan: Plan, number: int, rng: random.Random, stuck: bool = False) -> dict:
    """One job document (camelCase, as Job.to_json writes it) in a state fitting its age."""
    span = plan.weeks * 7 * 86400
    created = plan.now - timedelta(seconds=span * (rng.random() ** 1.6))  # more jobs recently
    project = f"project-{rng.randrange(plan.projects):04d}"
    job_id = _id("job", created, rng)
    status = "processing" if stuck else _status(plan.now - created, rng)
    doc = {"jobId": job_id, "conceptId": _id("cpt", created, rng), "projectId": project,
           "renderType": rng.choice(RENDER_TYPES), "renderer": "axonometric", "status": status,
           "progress": 0, "stage": "queued", "imageUrl": None, "error": None,
           "conceptInputs": _inputs(rng, number), "prompt": None, "attempts": 0, "maxAttempts": 3,
           "createdAt": _iso(created), "updatedAt": _iso(created), "startedAt": None,
           "finishedAt": None, "heartbeatAt": None, "workerId": None, "cancelRequested": False,
           "availableAt": _iso(created), "idempotencyKey": None}
    if status == "pending":
        return doc
    started = min(created + timedelta(seconds=rng.expovariate(1 / 20)), plan.now)
    worker = f"worker-{rng.randrange(8)}-{rng.randrange(4)}"
    doc.update(status=status, startedAt=_iso(started), workerId=worker, attempts=1,
               heartbeatAt=_iso(started), updatedAt=_iso(started), stage="starting")
    if status == "processing":
        beat = started - timedelta(hours=1) if stuck else plan.now - timedelta(seconds=rng.uniform(0, 5))
        doc.update(progress=rng.randint(0, 95), stage=rng.choice(STAGES), heartbeatAt=_iso(beat),
                   updatedAt=_iso(max(beat, started)))
        return doc
    run = rng.lognormvariate(3.2, 0.5)  # median ~25 s, a long tail
    finished = min(started + timedelta(seconds=run), plan.now)
    doc.update(finishedAt=_iso(finished), updatedAt=_iso(finished), heartbeatAt=_iso(finished))
    if status == "completed":
        doc.update(progress=100, stage="done", imageUrl=f"/api/renders/{project}/{job_id}.png",
                   prompt=f"{doc['renderType']} drawing of a {doc['conceptInputs']['floors']}-storey building")
    elif status == "failed":
        doc.update(progress=rng.randint(0, 90), stage="failed", error=rng.choice(ERRORS),
                   attempts=rng.choice((1, 3)))
    else:
        doc.update(progress=rng.randint(0, 60), stage="canceled")
    return doc


def _placeholder_png() -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 64), (236, 226, 208))
    ImageDraw.Draw(image).rectangle((30, 14, 66, 58), fill=(190, 120, 80))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def _event_lines(doc: dict) -> str:
    lines = [{"at": doc["createdAt"], "jobId": doc["jobId"], "type": "created", "status": "pending",
              "attempt": 0, "workerId": None, "progress": 0, "message": f"{doc['renderType']} render queued"}]
    if doc["startedAt"]:
        lines.append({"at": doc["startedAt"], "jobId": doc["jobId"], "type": "claimed", "status": "processing",
                      "attempt": 1, "workerId": doc["workerId"], "progress": 0, "message": "attempt 1 of 3"})
    if doc["finishedAt"]:
        lines.append({"at": doc["finishedAt"], "jobId": doc["jobId"], "type": doc["status"],
                      "status": doc["status"], "attempt": doc["attempts"], "workerId": doc["workerId"],
                      "progress": doc["progress"], "message": doc["error"]})
    return "".join(json.dumps(line) + "\n" for line in lines)


def generate(root: Path, plan: Plan, *, images: bool = False, events: bool = False) -> int:
    """Write `plan.jobs` job files under `root` (a FileJobStore directory); returns the count."""
    rng = random.Random(plan.seed)
    ready, running = root / ".state" / "ready", root / ".state" / "running"
    for directory in (root / "jobs", root / "concepts", root / "renders", root / "events", ready, running):
        directory.mkdir(parents=True, exist_ok=True)
    made: set[str] = set()
    png = _placeholder_png() if images else b""
    for number in range(plan.jobs):
        doc = make_job(plan, number, rng, stuck=number < plan.stuck)
        project, job_id = doc["projectId"], doc["jobId"]
        if project not in made:
            for kind in ("jobs", "renders", "events") if images or events else ("jobs",):
                (root / kind / project).mkdir(parents=True, exist_ok=True)
            made.add(project)
        (root / "jobs" / project / f"{job_id}.json").write_text(json.dumps(doc, indent=2))
        if doc["status"] == "pending":
            available = datetime.fromisoformat(doc["availableAt"])
            (ready / f"{_ms(available):013d}.{job_id}.{project}").touch()
        elif doc["status"] == "processing":
            (running / f"{job_id}.{project}").touch()
        if images and doc["status"] == "completed":
            (root / "renders" / project / f"{job_id}.png").write_bytes(png)
        if events:
            (root / "events" / project / f"{job_id}.jsonl").write_text(_event_lines(doc))
    return plan.jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs-dir", required=True, help="the store directory to fill (created if missing)")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--projects", type=int, default=500)
    parser.add_argument("--weeks", type=int, default=12)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--images", action="store_true", help="write a small PNG for each completed job")
    parser.add_argument("--events", action="store_true", help="write an event log for each job")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.projects < 1 or args.weeks < 1:
        parser.error("--jobs, --projects and --weeks must be at least 1.")
    root = Path(args.jobs_dir)
    if (root / "jobs").exists() and any((root / "jobs").iterdir()):
        parser.error(f"{root} already holds jobs; give an empty or new directory.")
    started = time.perf_counter()
    plan = Plan(jobs=args.jobs, projects=args.projects, weeks=args.weeks, now=datetime.now(UTC), seed=args.seed)
    count = generate(root, plan, images=args.images, events=args.events)
    print(f"wrote {count} jobs over {args.projects} projects and {args.weeks} weeks to {root} "
          f"in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
