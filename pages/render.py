"""Render page: fill in a concept brief, press Render, watch the job finish, see the project's jobs.

Thin on purpose: widgets and calls into jobs_core. State that must survive a reload or a second
tab lives in the store (the jobs) and in the URL (?project=...&job=...); session_state only
remembers what this browser tab is looking at.
"""
from __future__ import annotations

import time
from pathlib import Path

import streamlit as st

from jobs_core import ConceptInputs, InvalidInput, Job, JobNotFound, JobsError, JobStatus
from jobs_core.app_runtime import live_workers
from jobs_core.brief_form import (
    EXAMPLE_BRIEFS,
    brief_problems,
    field_bounds,
    field_choices,
    field_default,
    field_max_length,
    render_types,
)
from jobs_core.direct_render import render_directly
from jobs_core.ids import validate_id
from jobs_core.renderers import get_renderer
from jobs_core.thumbnails import thumbnail
from jobs_core.words import ago_text, brief_summary, duration_text, elapsed_seconds
from pages import app_runtime

runtime = app_runtime()
service = runtime.service
GALLERY_SIZE = 12
STATUS_COLOURS = {JobStatus.PENDING: "blue", JobStatus.PROCESSING: "orange", JobStatus.COMPLETED: "green",
                  JobStatus.FAILED: "red", JobStatus.CANCELED: "gray"}

# (camelCase field, model attribute, label, help) of the brief, in form order.
TEXT_FIELDS = [
    ("title", "title", "Title", "A short name for the concept; it is printed on the drawing."),
    ("buildingType", "building_type", "Building type", "What the building is for: housing, school, office..."),
    ("description", "description", "Description", "A sentence or two about the idea (used by AI renderers)."),
]
CHOICE_FIELDS = [
    ("footprint", "footprint", "Footprint shape", "The plan shape: a bar, an L, a U, a courtyard block or a tower."),
    ("roof", "roof", "Roof", "The roof form drawn on top of the last floor."),
    ("material", "material", "Main material", "Tints the facades."),
    ("palette", "palette", "Colour palette", "Background, accent and line colours of the drawing."),
]
NUMBER_FIELDS = [
    ("width", "width", "Width (m)", "Size of the site along the street, in metres.", 1.0),
    ("depth", "depth", "Depth (m)", "Size of the site front to back, in metres.", 1.0),
    ("floors", "floors", "Floors", "Number of storeys above ground.", 1),
    ("floorHeight", "floor_height", "Floor height (m)", "Floor to floor height, in metres.", 0.1),
    ("windowRatio", "window_ratio", "Glazing (share of facade)", "0.1 is mostly wall, 0.9 is mostly glass.", 0.05),
]
ALL_FIELDS = [f[0] for f in TEXT_FIELDS + CHOICE_FIELDS + NUMBER_FIELDS]


# -- remembered state ---------------------------------------------------------------------------
def remember_defaults() -> None:
    """First run of this tab: project and job from the URL, brief fields from the model defaults.

    Widget values are copied into non-widget keys so they survive a visit to another page
    (Streamlit forgets the state of widgets that were not drawn).
    """
    state = st.session_state
    if "project" not in state:
        state.project = st.query_params.get("project", "demo")
        state.active_job = st.query_params.get("job")
        state.watch_since = time.time()
    if "saved_brief" not in state:
        fields = TEXT_FIELDS + CHOICE_FIELDS + NUMBER_FIELDS
        state.saved_brief = {name: field_default(attr) for name, attr, *_ in fields}
        state.render_type = render_types(service)[0]
        state.use_jobs = True
        prefill_from_job(state.project, state.active_job)
    for name in ALL_FIELDS:
        state.setdefault(f"field_{name}", state.saved_brief[name])
    state.setdefault("field_project", state.project)
    state.setdefault("field_render_type", state.render_type)
    state.setdefault("field_use_jobs", state.use_jobs)
    state.setdefault("problems", {})


def prefill_from_job(project_id: str, job_id: str | None) -> None:
    """A tab opened on a job's URL starts with that job's brief in the form."""
    if not job_id:
        return
    try:
        job = service.get(job_id, project_id)
        brief = ConceptInputs.model_validate(job.concept_inputs).model_dump()
    except (JobsError, ValueError):
        return  # the job panel explains what is wrong with the job
    st.session_state.saved_brief.update({name: brief[name] for name in ALL_FIELDS if name in brief})
    if job.render_type in render_types(service):
        st.session_state.render_type = job.render_type


def watch(job_id: str | None) -> None:
    st.session_state.active_job = job_id
    st.session_state.watch_since = time.time()


def sync_url(project_ok: bool) -> None:
    """Put the project and the watched job in the URL, so a reload or a second tab shows them."""
    if project_ok:
        st.query_params["project"] = st.session_state.project
    job_id = st.session_state.active_job
    if job_id:
        st.query_params["job"] = job_id
    elif "job" in st.query_params:
        del st.query_params["job"]


# -- callbacks (run before the script; they change state, the script then shows it) -------------
def on_project_change() -> None:
    st.session_state.project = st.session_state.field_project.strip()
    watch(None)


def on_example_chosen() -> None:
    example = EXAMPLE_BRIEFS.get(st.session_state.field_example)
    if example:
        for name in ALL_FIELDS:
            st.session_state[f"field_{name}"] = example[name]
        st.session_state.problems = {}


def on_render() -> None:
    """Validate the form; with the job pattern, create the job now (milliseconds) and watch it."""
    state = st.session_state
    if state.field_project.strip() != state.project:  # typed, then Render pressed before on_change ran
        on_project_change()
    state.saved_brief = {name: state[f"field_{name}"] for name in ALL_FIELDS}
    state.render_type = state.field_render_type
    state.use_jobs = state.field_use_jobs
    state.problems = brief_problems(state.project, state.saved_brief)
    if state.problems:
        return
    request = {"projectId": state.project, "renderType": state.render_type, "conceptInputs": state.saved_brief}
    if not state.use_jobs:
        state.direct_request = request  # rendered in the script body, under a spinner
        return
    started = time.perf_counter()
    try:
        job = service.submit(request)
    except InvalidInput as error:
        state.problems = {"renderType" if "renderType" in str(error) else "form": str(error)}
        return
    except (JobsError, OSError) as error:  # e.g. the disk is full: nothing was queued, say so
        state.problems = {"form": f"The job could not be created: {error}"}
        return
    state.created_message = f"Job {job.job_id} created in {(time.perf_counter() - started) * 1000:.0f} ms."
    watch(job.job_id)


def show_problem(name: str) -> None:
    problem = st.session_state.problems.get(name)
    if problem:
        st.error(problem, icon=":material/warning:")


# -- the form -----------------------------------------------------------------------------------
def project_picker() -> bool:
    """The project id field; True when it is valid."""
    st.text_input("Project", key="field_project", on_change=on_project_change, max_chars=64,
                  help="Jobs are grouped by project. Letters, digits, '-' and '_'; the same project "
                       "shows the same jobs in every tab and after a reload.")
    try:
        validate_id(st.session_state.project, "projectId")
    except InvalidInput as error:
        st.error(str(error), icon=":material/warning:")
        return False
    return True


def brief_form(types: list[str]) -> None:
    st.selectbox("Start from an example", ["—", *EXAMPLE_BRIEFS], key="field_example",
                 on_change=on_example_chosen, help="Fills in the form below with a ready-made brief.")
    with st.form("brief", border=True):
        for name, attr, label, help_text in TEXT_FIELDS:
            if name == "description":
                st.text_area(label, key=f"field_{name}", help=help_text, max_chars=field_max_length(attr),
                             height=80)
            else:
                st.text_input(label, key=f"field_{name}", help=help_text, max_chars=field_max_length(attr))
            show_problem(name)
        first, second = st.columns(2)
        for index, (name, attr, label, help_text) in enumerate(CHOICE_FIELDS):
            with (first if index % 2 == 0 else second):
                st.selectbox(label, field_choices(attr), key=f"field_{name}", help=help_text)
                show_problem(name)
        for index, (name, attr, label, help_text, step) in enumerate(NUMBER_FIELDS):
            low, high = field_bounds(attr)
            kind = type(step)  # Streamlit wants value, bounds and step of one numeric type
            low, high = kind(low), kind(high)
            with (first if index % 2 == 0 else second):
                st.number_input(label, min_value=low, max_value=high, step=step, key=f"field_{name}",
                                help=f"{help_text} Between {low:g} and {high:g}.")
                show_problem(name)
        st.selectbox("Render type", types, key="field_render_type",
                     help="The kind of drawing: a 3D axonometric view, an exploded one, a plan or an elevation.")
        mode_column, button_column = st.columns([3, 2], vertical_alignment="center")
        mode_column.checkbox("Use job pattern", key="field_use_jobs",
                             help="On: the render runs as a background job and this page shows its progress; "
                                  "you may leave and come back. Off: the page renders directly and waits "
                                  "(the old way, for comparison).")
        button_column.form_submit_button("Render", type="primary", on_click=on_render, width="stretch")
        show_problem("renderType")
        show_problem("form")


# -- the direct render (no job) -----------------------------------------------------------------
def run_direct_render(request: dict) -> None:
    bar = st.progress(0, text="Rendering directly (no job)…")

    def progress(percent: int, stage: str) -> None:
        bar.progress(percent, text=f"Rendering directly (no job): {stage}")

    with st.spinner("Rendering directly: this page waits until the image is drawn…"):
        try:
            result, seconds = render_directly(service, request["projectId"], request["renderType"],
                                              request["conceptInputs"], progress)
        except JobsError as error:
            bar.empty()
            st.error(f"The direct render failed: {error}")
            return
        except Exception as error:  # a renderer bug: say so in one sentence, never a traceback
            bar.empty()
            st.error(f"The renderer failed unexpectedly ({type(error).__name__}: {error}).")
            return
    bar.empty()
    st.session_state.direct_result = (result.png, seconds, request["conceptInputs"]["title"], request["renderType"])


def show_direct_result() -> None:
    png, seconds, title, render_type = st.session_state.direct_result
    st.subheader(f"{title} · {render_type} (direct render)")
    st.caption(f"Rendered in this page's own thread in {duration_text(seconds)}; no job was stored.")
    with st.container(key="direct_result"):
        st.image(png, width="stretch")
    st.download_button("Download PNG", png, file_name="direct-render.png", mime="image/png")


# -- the watched job ----------------------------------------------------------------------------
def load_job(job_id: str, project_id: str) -> Job | None:
    try:
        return service.get(job_id, project_id)
    except (JobNotFound, InvalidInput):
        st.info(f"There is no job {job_id} in project {project_id} (it may have been deleted).")
    except JobsError as error:
        st.error(f"Job {job_id} cannot be read: {error}")
    return None


def waited_seconds(job: Job) -> float:
    since = max(job.created_at.timestamp(), st.session_state.watch_since)
    return time.time() - since


def job_panel(job_id: str, project_id: str) -> None:
    """The live part of the page: re-reads the job from the store on every run."""
    job = load_job(job_id, project_id)
    if job is None:
        return
    settle = job.status.is_final and st.session_state.get("panel_live")
    if settle and st.session_state.get("shown_final") == job.job_id:
        st.rerun()  # shown once already: now redraw the whole page (gallery) and stop polling
    if settle:
        st.session_state.shown_final = job.job_id  # show the result at once; the next tick settles
    st.subheader(f"{job.concept_inputs.get('title', 'Concept')} · {job.render_type}")
    if job.status is JobStatus.COMPLETED:
        show_completed(job)
    elif job.status is JobStatus.FAILED:
        st.error(f"The render failed: {job.error or 'no reason was recorded.'}", icon=":material/error:")
        st.caption(f"After {job.attempts} attempt(s); job {job.job_id}.")
        retry_button(job)
    elif job.status is JobStatus.CANCELED:
        st.warning("This render was canceled.", icon=":material/cancel:")
        retry_button(job)
    else:
        show_running(job)
    if job.status.is_final:
        show_history(job)


def show_history(job: Job) -> None:
    """The job's event log: every attempt, retry and cancel, oldest first."""
    try:
        events = service.events(job.job_id, job.project_id)
    except JobsError as error:
        st.caption(f"The history of job {job.job_id} cannot be read: {error}")
        return
    with st.expander(f"History ({len(events)} events)"):
        st.dataframe([{"when": f"{event.at:%Y-%m-%d %H:%M:%S}", "what": event.type, "status": event.status.value,
                       "attempt": event.attempt, "note": event.message or ""} for event in events],
                     hide_index=True, width="stretch")


def show_running(job: Job) -> None:
    elapsed = duration_text(elapsed_seconds(job))
    if job.status is JobStatus.PENDING:
        position = service.queue_position(job)
        where = f"position {position} in the queue" if position else "waiting to be picked up"
        st.progress(0, text=f"Queued: {where}")
        note = f" Last attempt: {job.error}" if job.error else ""
        st.caption(f"Waiting for {elapsed}.{note}")
        if not runtime.workers_running and not live_workers(service):
            st.info("No worker is running here. Start one with `python -m jobs_core worker` "
                    "(same JOBS_DIR) and the job will begin.")
    else:
        text = "Canceling…" if job.cancel_requested else f"{job.stage} ({job.progress}%)"
        st.progress(job.progress, text=text)
        st.caption(f"Running for {elapsed} · attempt {job.attempts} of {job.max_attempts} · "
                   f"worker {job.worker_id}")
    if waited_seconds(job) > runtime.settings.max_wait_seconds:
        st.warning(f"This render is still {job.status.value} after {duration_text(waited_seconds(job))}. "
                   "It keeps going in the background: you may leave and come back later, or keep waiting here.",
                   icon=":material/hourglass_top:")
        if st.button("Keep waiting", key="keep_waiting"):
            watch(job.job_id)
            st.rerun()
    if not job.cancel_requested and st.button("Cancel", key=f"cancel_{job.job_id}"):
        try:
            service.cancel(job.job_id, job.project_id)
        except JobsError as error:
            st.error(f"Cannot cancel: {error}")
        st.rerun()


def retry_button(job: Job) -> None:
    if st.button("Retry", key=f"retry_{job.job_id}", type="primary"):
        try:
            service.retry(job.job_id, job.project_id)
        except JobsError as error:
            st.error(f"Cannot retry: {error}")
            return
        watch(job.job_id)
        st.rerun()


def show_completed(job: Job) -> None:
    try:
        png = service.image(job)
    except JobsError as error:
        st.error(f"The image of job {job.job_id} cannot be read: {error}")
        return
    with st.container(key="job_result"):  # a stable hook for the browser tests: the watched job's image
        st.image(png, width="stretch", caption=job.concept_inputs.get("description") or None)
    details, actions = st.columns([3, 2])
    with details:
        st.markdown(f":green-badge[:material/check_circle: completed] in {duration_text(elapsed_seconds(job))}  \n"
                    f"**Brief** {brief_summary(job.concept_inputs)}  \n"
                    f"**Job** `{job.job_id}`  \n**Concept** `{job.concept_id}` · renderer {job.renderer}")
    with actions:
        st.download_button("Download PNG", png, file_name=f"{job.project_id}-{job.job_id}.png",
                           mime="image/png", type="primary", icon=":material/download:", width="stretch")
        others = [kind for kind in render_types(service) if kind != job.render_type]
        if others:
            kind = st.selectbox("Render this concept as", others, key=f"again_{job.job_id}",
                                help="Queues a new job for the same concept (same conceptId).")
            if st.button(f"Render as {kind}", key=f"again_button_{job.job_id}", width="stretch"):
                try:
                    again = service.resubmit(job.job_id, kind, job.project_id)
                except JobsError as error:
                    st.error(f"Cannot render again: {error}")
                    return
                watch(again.job_id)
                st.rerun()


def show_watched_job(project_id: str) -> None:
    job_id = st.session_state.active_job
    if not job_id:
        return
    job = load_job(job_id, project_id)
    if job is None:
        watch(None)
        return
    live = not job.status.is_final and waited_seconds(job) <= runtime.settings.max_wait_seconds
    st.session_state.panel_live = live
    with st.container(key="job_panel"):
        st.fragment(run_every=runtime.settings.poll_seconds if live else None)(job_panel)(job_id, project_id)


# -- the gallery --------------------------------------------------------------------------------
@st.cache_data(max_entries=256, show_spinner=False)
def gallery_thumbnail(_png_loader, project_id: str, job_id: str) -> bytes:
    # Keyed by job id: a completed job's image never changes.
    return thumbnail(_png_loader())


def gallery_card(job: Job) -> None:
    with st.container(border=True):
        if job.status is JobStatus.COMPLETED:
            try:
                st.image(gallery_thumbnail(lambda: service.image(job), job.project_id, job.job_id),
                         width="stretch")
            except JobsError:
                st.caption("image missing")
        st.badge(job.status.value, color=STATUS_COLOURS[job.status])
        st.markdown(f"**{job.concept_inputs.get('title', 'Concept')}**  \n{job.render_type} · "
                    f"{ago_text(job.created_at)}")
        if job.status is JobStatus.PROCESSING:
            st.progress(job.progress, text=job.stage)
        elif job.status is JobStatus.FAILED and job.error:
            st.caption(job.error)
        if job.job_id != st.session_state.active_job and st.button("Show", key=f"show_{job.job_id}"):
            watch(job.job_id)
            st.rerun()


def gallery(project_id: str) -> None:
    try:
        page = service.list(project_id, limit=GALLERY_SIZE)
    except JobsError as error:
        st.error(f"The jobs of project {project_id} cannot be listed: {error}")
        return
    st.subheader(f"Recent jobs in {project_id}")
    if page.unreadable:
        reasons = "; ".join(f"{Path(bad.location).name}: {bad.reason}" for bad in page.unreadable[:3])
        st.warning(f"{len(page.unreadable)} file(s) in this project are not readable jobs and are skipped: "
                   f"{reasons}", icon=":material/warning:")
    if not page.jobs:
        st.caption("No jobs yet: fill in the brief and press Render.")
        return
    columns = st.columns(4)
    for index, job in enumerate(page.jobs):
        with columns[index % 4]:
            gallery_card(job)


def live_gallery(project_id: str) -> None:
    """Refresh the gallery while any of its jobs is still running (e.g. started in another tab)."""
    try:
        busy = any(not job.status.is_final for job in service.list(project_id, limit=GALLERY_SIZE).jobs)
    except JobsError:
        busy = False
    st.fragment(run_every=runtime.settings.poll_seconds * 2 if busy else None)(gallery)(project_id)


# -- the page -----------------------------------------------------------------------------------
remember_defaults()
st.title("Render a concept")
st.caption("Describe the building, press **Render**, and watch it being drawn. Renders run as background "
           "jobs: you can leave this page, reload it or open it in another tab, and your jobs are still here.")
problem = get_renderer(service.settings.renderer).configuration_problem()
if problem:
    st.warning(f"The {service.settings.renderer} renderer cannot run here: {problem}")
form_column, result_column = st.columns([5, 7], gap="large")
with form_column:
    project_ok = project_picker()
    brief_form(render_types(service))
if message := st.session_state.pop("created_message", None):
    st.toast(message, icon=":material/check_circle:")
with result_column:
    if request := st.session_state.pop("direct_request", None):
        run_direct_render(request)
    if st.session_state.get("direct_result") and not st.session_state.field_use_jobs:
        show_direct_result()
    elif project_ok and st.session_state.active_job:
        show_watched_job(st.session_state.project)
    else:
        st.info("Your render appears here. Fill in the brief (or start from an example) and press **Render**.",
                icon=":material/draw:")
if project_ok:
    st.divider()
    live_gallery(st.session_state.project)
sync_url(project_ok)  # last: the URL names what the page ended up showing
