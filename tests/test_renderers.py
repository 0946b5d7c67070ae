"""The embedded `axonometric` renderer: real drawings, through the real job machinery.

What a user relies on: `{}` renders a building; the same brief gives the same bytes and another
brief a visibly different drawing; bad briefs and render types are refused at submit; progress
goes through the real stages and a cancel stops the render between them; the painter's order
hides exactly what a ray from the viewer would hit first.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import math
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs_core.errors import InvalidInput, JobCanceled, RenderError
from jobs_core.models import ConceptInputs, JobStatus
from jobs_core.renderers import RenderTask, get_renderer
from jobs_core.renderers.axonometric import RENDER_TYPES, draw
from jobs_core.renderers.drawing.camera import AXONOMETRIC, ELEVATION, Camera, painter_order
from jobs_core.renderers.drawing.massing import Block, massing
from jobs_core.service import JobService
from jobs_core.store import FileJobStore
from jobs_core.worker import Worker

FOOTPRINTS = ["bar", "L", "U", "courtyard", "tower"]
ROOFS = ["flat", "gable", "hip", "shed", "sawtooth"]
STAGES = ["validating", "massing", "facades", "shading", "encoding", "saving"]


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def visibly_different(a: bytes, b: bytes) -> float:
    """Share of pixels whose colour changed by more than a faint tint (0..1)."""
    pa, pb = pixels(a), pixels(b)
    assert pa.shape == pb.shape
    return float((np.abs(pa - pb).max(axis=2) > 16).mean())


def render(brief: dict, render_type: str = "axonometric", size: int = 1024, job_id: str = "job-1") -> bytes:
    result = get_renderer("axonometric").render(RenderTask(job_id, "demo", render_type, brief, size),
                                                lambda percent, stage: None)
    return result.png


@pytest.fixture
def jobs(tmp_path: Path, settings) -> JobService:
    store = FileJobStore(tmp_path / "jobs-store")
    yield JobService(store, replace(settings, retry_backoff_seconds=0.0))
    store.close()


def run(jobs: JobService, request: dict, worker: Worker | None = None, timeout: float = 30.0):
    job = jobs.submit(request)
    worker = (worker or Worker(jobs, concurrency=1, poll_seconds=0.05)).start()
    try:
        deadline = time.monotonic() + timeout
        while not (job := jobs.get(job.job_id, job.project_id)).status.is_final:
            assert time.monotonic() < deadline, f"job still {job.status.value} after {timeout} s"
            jobs.store.wait_for_work(0.05)
    finally:
        worker.stop()
    return job


# -- through the job machinery ---------------------------------------------------------------
def test_an_empty_brief_renders_a_building_through_a_real_worker(jobs):
    job = run(jobs, {"projectId": "demo", "conceptInputs": {}})
    assert job.status is JobStatus.COMPLETED, job.error
    image = pixels(jobs.image(job))
    assert image.shape == (724, 1024, 3)
    assert job.prompt is None  # a drawing renderer asks no AI anything
    # The renderer reports every stage; the worker writes them at most twice a second, so they are
    # read from the renderer's own callback here.
    stages: list[str] = []
    get_renderer("axonometric").render(RenderTask(job.job_id, "demo", "axonometric", job.concept_inputs),
                                       lambda percent, stage: stages.append(stage))
    assert stages == STAGES


def test_the_render_size_comes_from_jobs_render_size(jobs, monkeypatch):
    monkeypatch.setenv("JOBS_RENDER_SIZE", "640")
    job = run(jobs, {"projectId": "demo", "renderType": "plan", "conceptInputs": {"floors": 3}})
    assert pixels(jobs.image(job)).shape == (453, 640, 3)


def test_an_unknown_render_type_is_refused_at_submit_naming_the_valid_ones(jobs):
    with pytest.raises(InvalidInput) as refused:
        jobs.submit({"projectId": "demo", "renderType": "perspective", "conceptInputs": {}})
    assert str(refused.value) == ("renderType 'perspective' is not one of: axonometric, exploded-axonometric, "
                                  "plan, elevation.")
    assert jobs.list().jobs == []


@pytest.mark.parametrize("brief, message", [
    ({"floors": 0}, "conceptInputs.floors must be at least 1 (got 0)."),
    ({"width": 10000}, "conceptInputs.width must be at most 300 (got 10000)."),
    ({"floors": 100, "floorHeight": 6}, "100 floors of 6 m make a 600 m tall building; the most is 500 m."),
    ({"footprint": "courtyard", "width": 6}, "a courtyard footprint needs width and depth of at least 9 m"),
    ({"width": 200, "depth": 4}, "more than 20 times longer than it is deep"),
    ({"roof": "dome"}, "conceptInputs.roof must be 'flat', 'gable', 'hip', 'shed' or 'sawtooth'"),
    ({"windowRatio": 0}, "conceptInputs.windowRatio must be at least 0.1 (got 0)."),
])
def test_out_of_range_briefs_are_refused_at_submit_with_one_clear_sentence(jobs, brief, message):
    with pytest.raises(InvalidInput) as refused:
        jobs.submit({"projectId": "demo", "conceptInputs": brief})
    assert message in str(refused.value)
    assert "\n" not in str(refused.value) and "Traceback" not in str(refused.value)
    assert jobs.list().jobs == []


def test_unknown_brief_fields_are_kept_with_the_job(jobs):
    job = jobs.submit({"projectId": "demo", "conceptInputs": {"seaView": "north", "floors": 2}})
    stored = jobs.get(job.job_id, "demo").concept_inputs
    assert stored["seaView"] == "north" and stored["floors"] == 2 and stored["windowRatio"] == 0.4


def test_a_stored_brief_that_breaks_todays_rules_fails_without_retry(jobs):
    task = RenderTask("job-1", "demo", "axonometric", {"floors": 0})
    with pytest.raises(RenderError) as failed:
        get_renderer("axonometric").render(task, lambda percent, stage: None)
    assert not failed.value.retryable and "floors must be at least 1" in str(failed.value)


# -- stages and cancellation ---------------------------------------------------------------
def test_progress_goes_through_the_real_stages_in_order():
    seen: list[tuple[int, str]] = []
    render_task = RenderTask("job-1", "demo", "exploded-axonometric", {"floors": 4}, 256)
    get_renderer("axonometric").render(render_task, lambda percent, stage: seen.append((percent, stage)))
    assert [stage for _, stage in seen] == STAGES
    assert [percent for percent, _ in seen] == sorted(percent for percent, _ in seen)


@pytest.mark.parametrize("stop_at", STAGES[1:])
def test_a_cancel_stops_the_render_at_the_next_stage(stop_at):
    seen: list[str] = []

    def progress(percent: int, stage: str) -> None:
        seen.append(stage)
        if stage == stop_at:
            raise JobCanceled("Job job-1 was canceled.")

    with pytest.raises(JobCanceled):
        get_renderer("axonometric").render(RenderTask("job-1", "demo", "plan", {}, 256), progress)
    assert seen == STAGES[:STAGES.index(stop_at) + 1]


# -- the drawings ----------------------------------------------------------------------------
def test_the_same_brief_gives_the_same_bytes_whatever_the_job():
    brief = {"title": "Harbour Library", "footprint": "U", "roof": "gable", "material": "timber"}
    for render_type in RENDER_TYPES:
        assert render(brief, render_type, 512, "job-1") == render(brief, render_type, 512, "job-2")


@pytest.mark.parametrize("change", [
    {"footprint": "L"}, {"footprint": "courtyard", "width": 40, "depth": 32}, {"footprint": "tower", "floors": 20},
    {"floors": 12}, {"roof": "gable"}, {"roof": "sawtooth"}, {"material": "brick"}, {"material": "glass"},
    {"palette": "cool"}, {"width": 70}, {"windowRatio": 0.85},
])
def test_a_different_brief_gives_a_visibly_different_drawing(change):
    base = {"title": "Concept", "floors": 5}
    for render_type in ("axonometric", "elevation") if "palette" not in change else ("axonometric",):
        share = visibly_different(render(base, render_type, 512), render({**base, **change}, render_type, 512))
        assert share > 0.015, f"{change} changed only {share:.1%} of the {render_type}"


def test_each_render_type_is_its_own_view():
    drawings = {rt: render({"footprint": "L", "roof": "hip"}, rt, 512) for rt in RENDER_TYPES}
    for a, b in itertools.combinations(RENDER_TYPES, 2):
        assert visibly_different(drawings[a], drawings[b]) > 0.05, f"{a} and {b} look alike"


def test_drawings_are_anti_aliased():
    image = pixels(render({"footprint": "U", "roof": "gable"}, "axonometric", 512))
    # A flat-filled, aliased drawing has a few dozen colours; box-filtered edges add hundreds of blends.
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 500
    # And an ink edge fades through intermediate shades rather than jumping paper -> ink.
    row = image[image.shape[0] // 2]
    steps = np.abs(np.diff(row.sum(axis=1)))
    assert ((steps > 30) & (steps < 250)).sum() > 10


def test_the_size_is_configurable_per_task():
    assert pixels(render({}, "axonometric", 300)).shape == (212, 300, 3)
    assert pixels(render({}, "plan", 2048)).shape == (1448, 2048, 3)
    with pytest.raises(RenderError, match="between 128 and 4096 pixels, not 50"):
        render({}, "plan", 50)


@pytest.mark.parametrize("footprint", FOOTPRINTS)
@pytest.mark.parametrize("roof", ROOFS)
def test_every_footprint_and_roof_draws_in_every_view(footprint, roof):
    brief = {"footprint": footprint, "roof": roof, "width": 40, "depth": 30, "floors": 6}
    for render_type in RENDER_TYPES:
        image = pixels(draw(ConceptInputs.model_validate(brief), render_type, "demo", 200))
        assert image.shape == (141, 200, 3) and image.std() > 10


# -- occlusion: the painter's order against ray casting ----------------------------------------
def first_hit(blocks: list[Block], camera: Camera, sx: float, sy: float) -> list[tuple[float, int]]:
    """(entry depth, index) of every block the viewer's ray through screen point (sx, sy) meets."""
    h, down = camera.axes()
    view = camera.view
    origin = [sx * h[i] + sy * down[i] for i in range(3)]
    hits = []
    for index, block in enumerate(blocks):
        lo = (block.rect.x0, block.rect.y0, block.z0)
        hi = (block.rect.x1, block.rect.y1, block.top)
        t0, t1 = -math.inf, math.inf
        for axis in range(3):
            if abs(view[axis]) < 1e-12:
                if not lo[axis] < origin[axis] < hi[axis]:
                    break
                continue
            a = (lo[axis] - origin[axis]) / view[axis]
            b = (hi[axis] - origin[axis]) / view[axis]
            t0, t1 = max(t0, min(a, b)), min(t1, max(a, b))
        else:
            if t1 - t0 > 1e-6:
                hits.append((t1, index))  # t1: where the ray enters, coming from the viewer
    return hits


@pytest.mark.parametrize("footprint", FOOTPRINTS)
@pytest.mark.parametrize("view", ["axonometric", "exploded", "elevation"])
def test_painters_order_draws_whatever_a_ray_meets_first_last(footprint, view):
    concept = ConceptInputs(footprint=footprint, width=42, depth=33, floors=7, roof="gable")
    camera = ELEVATION if view == "elevation" else AXONOMETRIC
    blocks = painter_order(massing(concept, exploded=view == "exploded"), camera)
    projected = [camera.project((x, y, z)) for b in blocks for x in (b.rect.x0, b.rect.x1)
                 for y in (b.rect.y0, b.rect.y1) for z in (b.z0, b.top)]
    xs, ys = [p[0] for p in projected], [p[1] for p in projected]
    checked = 0
    for sx in np.linspace(min(xs), max(xs), 61):
        for sy in np.linspace(min(ys), max(ys), 61):
            hits = first_hit(blocks, camera, sx, sy)
            if len(hits) < 2:
                continue
            nearest = max(hits)[1]
            assert all(index <= nearest for _, index in hits), f"block {nearest} is hidden at ({sx:.1f}, {sy:.1f})"
            checked += 1
    # A single bar, or a tower seen straight on, has no block in front of another.
    no_overlap = (footprint == "bar" and view != "exploded") or (footprint, view) == ("tower", "elevation")
    assert checked > 20 or no_overlap


def test_the_same_brief_gives_the_same_bytes_in_another_process(tmp_path):
    """No hidden dependence on hash seeds, dict order or time: two fresh interpreters agree."""
    script = ("import hashlib, sys\n"
              "from jobs_core.renderers import RenderTask, get_renderer\n"
              "task = RenderTask('j', 'demo', 'axonometric', {'footprint': 'courtyard', 'width': 40, 'depth': 30,"
              " 'roof': 'hip', 'colour': 'red'}, 400)\n"
              "print(hashlib.sha256(get_renderer('axonometric').render(task, lambda p, s: None).png).hexdigest())\n")
    root = Path(__file__).resolve().parent.parent
    digests = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        digests.add(done.stdout.strip())
    brief = {"footprint": "courtyard", "width": 40, "depth": 30, "roof": "hip", "colour": "red"}
    here = hashlib.sha256(render(brief, "axonometric", 400)).hexdigest()
    assert digests == {here}
