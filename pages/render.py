"""Render page: fill in a concept brief, press Render, watch the job finish, see the project's renders.

Thin on purpose: widgets and calls into jobs_core. State that must survive a reload or a second
tab lives in the store (the jobs) and in the URL (?project=...&job=...); session_state only
remembers what this browser tab is looking at and the brief being edited.
"""
from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import streamlit as st

from jobs_core import ConceptInputs, InvalidInput, Job, JobNotFound, JobsError, JobStatus
from jobs_core.brief_form import (
    EXAMPLE_BRIEFS,
    brief_problems,
    field_bounds,
    field_choices,
    field_default,
    field_max_length,
)
from jobs_core.direct_render import render_directly
from jobs_core.eta import Typical, eta_seconds, typical_run
from jobs_core.ids import validate_id
from jobs_core.renderers import get_renderer, renderer_names
from jobs_core.studies import group_by_study
from jobs_core.thumbnails import thumbnail
from jobs_core.words import (
    ago_text,
    attempt_seconds,
    brief_summary,
    count_text,
    duration_text,
    elapsed_seconds,
    plain,
    render_type_name,
    renderer_name,
)
from pages import app_runtime, direct_renders, job_changes, study_panel

runtime = app_runtime()
service = runtime.service
GALLERY_SIZE = 24
DIRECT_KEPT = 8
#: after Render, the run waits this share of a poll interval for the job to finish (a quick render
#: is then on screen as soon as it is stored); kept under the 0.5 s after which Streamlit shows "Running..."
WAIT_SHARE = 0.8
# Statuses are compared with ==, never `is`: when a source file changes under a running server,
# Streamlit imports the app's modules afresh while the cached runtime keeps returning jobs whose
# statuses belong to the first import (a StrEnum: equal by value, not the same object).
STATUS_BADGES = {JobStatus.PENDING: ("queued", "blue", ":material/schedule:"),
                 JobStatus.PROCESSING: ("rendering", "orange", ":material/autorenew:"),
                 JobStatus.COMPLETED: ("done", "green", ":material/check_circle:"),
                 JobStatus.FAILED: ("failed", "red", ":material/error:"),
                 JobStatus.CANCELED: ("canceled", "gray", ":material/cancel:")}
NOT_SET_UP = "not set up on this server: ask whoever runs it to add the key"

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
LABELS = {f[0]: f[2] for f in TEXT_FIELDS + CHOICE_FIELDS + NUMBER_FIELDS} | {"projectId": "Project"}


# -- renderers ------------------------------------------------------------------------------------
def renderer_choices() -> tuple[list[str], dict[str, str]]:
    """(renderers a person can pick here, {renderer not set up: why}).

    Usable: set up in this process (its key is here) or run by a live worker elsewhere. The
    machinery-measuring noop renderer is offered only when the server is configured to use it.
    """
    try:
        remote = {name for worker in service.live_workers() for name in worker.renderers}
    except JobsError:
        remote = set()
    usable, missing = [], {}
    for name in renderer_names():
        if name == "noop" and service.settings.renderer != "noop":
            continue
        problem = get_renderer(name).configuration_problem()
        if problem is None or name in remote:
            usable.append(name)
        else:
            missing[name] = problem
    usable.sort(key=lambda name: (name != service.settings.renderer, name))  # the server's default first
    return usable, missing


def render_types(renderer: str) -> list[str]:
    return list(get_renderer(renderer).render_types)


# -- remembered state ---------------------------------------------------------------------------
def remember_defaults() -> None:
    """First run of this tab: project and job from the URL, brief fields from the model defaults.

    Widget values are copied into non-widget keys (`saved_brief`) on every run, so the brief being
    edited survives a visit to another page (Streamlit forgets the state of widgets not drawn).
    """
    state = st.session_state
    if "project" not in state:
        state.project = st.query_params.get("project", "demo")
        state.active_job = st.query_params.get("job")
        state.active_study = st.query_params.get("study")  # a design study (pages/study_panel.py)
        state.watch_since = time.time()
    if "saved_brief" not in state:
        fields = TEXT_FIELDS + CHOICE_FIELDS + NUMBER_FIELDS
        state.saved_brief = {name: field_default(attr) for name, attr, *_ in fields}
        usable, _ = renderer_choices()
        state.renderer = usable[0] if usable else service.settings.renderer
        state.render_type = render_types(state.renderer)[0]
        state.use_jobs = True
        prefill_from_job(state.project, state.active_job)
    for name in ALL_FIELDS:
        state.setdefault(f"field_{name}", state.saved_brief[name])
    state.setdefault("field_project", state.project)
    state.setdefault("field_renderer", state.renderer)
    state.setdefault("field_render_type", state.render_type)
    state.setdefault("field_use_jobs", state.use_jobs)


def remember_form() -> None:
    """Keep what the widgets hold now, submitted or not."""
    state = st.session_state
    state.saved_brief = {name: state[f"field_{name}"] for name in ALL_FIELDS}
    state.renderer = state.field_renderer
    state.render_type = state.field_render_type
    state.use_jobs = state.field_use_jobs


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
    if job.renderer in renderer_names():
        st.session_state.renderer = job.renderer
    if job.render_type in render_types(st.session_state.renderer):
        st.session_state.render_type = job.render_type


def watch(job_id: str | None) -> None:
    st.session_state.active_job = job_id
    if job_id is not None:
        st.session_state.active_study = None
    st.session_state.watch_since = time.time()
    st.session_state.await_job = job_id is not None  # the panel's next run waits briefly for it to finish
    st.session_state.pop("showing_direct", None)


def sync_url(project_ok: bool) -> None:
    """Put the project and the watched job in the URL, so a reload or a second tab shows them."""
    if project_ok:
        st.query_params["project"] = st.session_state.project
    job_id = st.session_state.active_job
    if job_id:
        st.query_params["job"] = job_id
    elif "job" in st.query_params:
        del st.query_params["job"]
    if st.session_state.get("active_study"):
        st.query_params["study"] = st.session_state.active_study
    elif "study" in st.query_params:
        del st.query_params["study"]


# -- callbacks (run before the script; they change state, the script then shows it) -------------
def on_project_change() -> None:
    st.session_state.project = st.session_state.field_project.strip()
    watch(None)
    st.session_state.active_study = None


def on_example_chosen() -> None:
    example = EXAMPLE_BRIEFS.get(st.session_state.field_example)
    if example:
        for name in ALL_FIELDS:
            st.session_state[f"field_{name}"] = example[name]


def on_renderer_change() -> None:
    types = render_types(st.session_state.field_renderer)
    if st.session_state.field_render_type not in types:
        st.session_state.field_render_type = types[0]


def on_render() -> None:
    """Check the brief; in the background, create the job now (milliseconds) and watch it."""
    state = st.session_state
    if state.field_project.strip() != state.project:  # typed, then Render pressed before on_change ran
        on_project_change()
    remember_form()
    state.pop("form_problem", None)
    if brief_problems(state.project, state.saved_brief):
        state.render_refused = True  # the summary above the button says what to fix
        return
    request = {"projectId": state.project, "renderType": state.render_type, "conceptInputs": state.saved_brief}
    if not state.use_jobs:
        state.direct_request = request | {"renderer": state.renderer}  # rendered in the script body
        return
    try:
        job = service.submit(request, renderer=state.renderer)
    except InvalidInput as error:
        state.form_problem = str(error)
        return
    except (JobsError, OSError) as error:  # e.g. the disk is full: nothing was queued, say so
        state.form_problem = f"Your render could not be queued: {error}"
        return
    state.created_message = "Your render is queued."
    watch(job.job_id)


def on_reuse_brief(job_id: str, project_id: str) -> None:
    """Fill the form with a job's brief, renderer and render type."""
    try:
        job = service.get(job_id, project_id)
        brief = ConceptInputs.model_validate(job.concept_inputs).model_dump()
    except (JobsError, ValueError):
        st.session_state.form_problem = "That render's brief cannot be read, so the form was left as it was."
        return
    for name in ALL_FIELDS:
        st.session_state[f"field_{name}"] = brief[name]
    if job.renderer in renderer_choices()[0]:
        st.session_state.field_renderer = job.renderer
    if job.render_type in render_types(st.session_state.field_renderer):
        st.session_state.field_render_type = job.render_type
    st.session_state.created_message = "The form now holds that render's brief."


# -- the form -----------------------------------------------------------------------------------
def show_problem(problems: dict[str, str], name: str) -> None:
    if problem := problems.get(name):
        st.error(problem, icon=":material/warning:")


def project_picker() -> bool:
    """The project id field; True when it is valid."""
    st.text_input("Project", key="field_project", on_change=on_project_change, max_chars=64,
                  help="Renders are grouped by project. Letters, digits, '-' and '_'; the same project "
                       "shows the same renders in every tab and after a reload.")
    try:
        validate_id(st.session_state.project, "projectId")
    except InvalidInput as error:
        st.error(str(error), icon=":material/warning:")
        return False
    return True


def current_problems() -> dict[str, str]:
    """What is wrong with the brief in the widgets now (checked on every change, not only on Render)."""
    state = st.session_state
    brief = {name: state[f"field_{name}"] for name in ALL_FIELDS}
    problems = brief_problems(state.project, brief)
    problems.pop("projectId", None)  # shown under the project field already
    return problems


def brief_form(problems: dict[str, str]) -> None:
    st.selectbox("Start from an example", ["—", *EXAMPLE_BRIEFS], key="field_example",
                 on_change=on_example_chosen, help="Fills in the form below with a ready-made brief.")
    with st.container(border=True, key="brief"):
        for name, attr, label, help_text in TEXT_FIELDS:
            limit = field_max_length(attr)
            help_text = f"{help_text} Up to {limit} characters; longer text is cut."
            if name == "description":
                st.text_area(label, key=f"field_{name}", help=help_text, max_chars=limit, height=80)
            else:
                st.text_input(label, key=f"field_{name}", help=help_text, max_chars=limit)
            show_problem(problems, name)
        first, second = st.columns(2)
        for index, (name, attr, label, help_text) in enumerate(CHOICE_FIELDS):
            with (first if index % 2 == 0 else second):
                st.selectbox(label, field_choices(attr), key=f"field_{name}", help=help_text)
                show_problem(problems, name)
        for index, (name, attr, label, help_text, step) in enumerate(NUMBER_FIELDS):
            low, high = field_bounds(attr)
            # No min/max on the widget: out of range it would only outline the field in red and
            # keep the old value; here the value is taken and the page says what is wrong with it.
            with (first if index % 2 == 0 else second):
                st.number_input(label, step=step, key=f"field_{name}",
                                help=f"{help_text} Between {low:g} and {high:g}.")
                show_problem(problems, name)
        how_to_render()
        st.checkbox("Render in the background (recommended)", key="field_use_jobs",
                    help="On: the render runs as a background job (the job pattern): this page shows its "
                         "progress, and you may leave, reload or open another tab and find it still going. "
                         "Off: this page draws the image itself and waits until it is done; nothing is kept "
                         "in the project (only for comparison).")
        render_button(problems)


def how_to_render() -> None:
    usable, missing = renderer_choices()
    state = st.session_state
    if state.field_renderer not in usable and usable:
        state.field_renderer = usable[0]
    st.radio("How to render", usable, key="field_renderer", format_func=renderer_name,
             on_change=on_renderer_change,
             captions=[get_renderer(name).description for name in usable])
    for name in missing:  # shown, greyed out, never offered as a choice that fails a second later
        st.markdown(f":gray[:material/block: {plain(renderer_name(name))}: {NOT_SET_UP}.]",
                    help=f"Missing: {missing[name]}")
    st.selectbox("Render type", render_types(state.field_renderer), key="field_render_type",
                 format_func=render_type_name, help="The kind of drawing: a 3D view, an exploded 3D view "
                                                    "(floor by floor), a floor plan or a street elevation.")


def render_button(problems: dict[str, str]) -> None:
    state = st.session_state
    with st.container(key="render_summary"):
        if problems:
            lines = "\n".join(f"- **{LABELS.get(name, name)}**: {plain(text)}" for name, text in problems.items())
            heading = "Render cannot run until this is fixed:" if len(problems) == 1 else \
                f"Render cannot run until these {len(problems)} problems are fixed:"
            st.error(f"{heading}\n{lines}", icon=":material/warning:")
        elif problem := state.get("form_problem"):
            st.error(problem, icon=":material/error:")
    if state.pop("render_refused", False) and problems:
        st.toast("Nothing was rendered: fix the brief first (see the red notes).", icon=":material/warning:")
    st.button("Render", key="render", type="primary", on_click=on_render, width="stretch",
              icon=":material/brush:")


# -- the direct render (no job) -----------------------------------------------------------------
def run_direct_render(request: dict) -> None:
    bar = st.progress(0, text="Drawing in this page…")

    def progress(percent: int, stage: str) -> None:
        bar.progress(percent, text=f"Drawing in this page: {stage}")

    with st.spinner("This page waits until the image is drawn…"):
        try:
            result, seconds = render_directly(service, request["projectId"], request["renderType"],
                                              request["conceptInputs"], progress, request["renderer"])
        except JobsError as error:
            bar.empty()
            st.error(f"The render failed: {error}")
            return
        except Exception as error:  # a renderer bug: say so in one sentence, never a traceback
            bar.empty()
            st.error(f"The renderer failed unexpectedly ({type(error).__name__}: {error}).")
            return
    bar.empty()
    kept = direct_renders(request["projectId"])
    kept.insert(0, {"id": f"direct-{time.time_ns()}", "png": result.png, "seconds": seconds,
                    "brief": request["conceptInputs"], "renderType": request["renderType"],
                    "renderer": request["renderer"], "at": datetime.now(UTC)})
    del kept[DIRECT_KEPT:]
    st.session_state.showing_direct = kept[0]["id"]


def show_direct_result(render: dict) -> None:
    st.subheader(f"{plain(render['brief'].get('title', 'Concept'))} · {render_type_name(render['renderType'])}")
    st.caption(f"Drawn by this page in {duration_text(render['seconds'])}, not in the background: it is kept "
               "until the server restarts, but it is not in the project's renders.")
    with st.container(key="direct_result"):
        st.image(render["png"], width="stretch")
    st.download_button("Download PNG", render["png"], file_name="direct-render.png", mime="image/png",
                       icon=":material/download:")


def shown_direct(project_id: str) -> dict | None:
    wanted = st.session_state.get("showing_direct")
    return next((r for r in direct_renders(project_id) if r["id"] == wanted), None) if wanted else None


# -- the watched job ----------------------------------------------------------------------------
def load_job(job_id: str, project_id: str) -> Job | None:
    try:
        return service.get(job_id, project_id)
    except (JobNotFound, InvalidInput):
        st.info(f"There is no job {job_id} in project {project_id} (it may have been deleted).")
    except JobsError as error:
        st.error(f"This render cannot be read: {error}")
    return None


def waited_seconds(job: Job) -> float:
    since = max(job.created_at.timestamp(), st.session_state.watch_since)
    return time.time() - since


def job_panel(job_id: str, project_id: str) -> None:
    """The live part of the page: a fragment rerun every poll interval while the job runs.

    A tick never blocks, so a click in the page (Cancel) is handled at once. Only the first run
    after Render waits a moment (`await_quick_finish`), so that a quick render is on screen as soon
    as it is stored rather than at the first tick, a whole interval later. A job seen final is
    drawn, then the whole page is redrawn once (the gallery too), which stops the polling.
    """
    state = st.session_state
    job = watched_job(job_id, project_id)
    if job is None:
        return
    panel = st.empty()
    with panel.container():
        draw_job(job)
    if state.pop("await_job", False) and not job.status.is_final and (done := await_quick_finish(job)):
        job = done
        with panel.container():  # replaces the running job's panel
            draw_job(job)
    if job.status.is_final and state.get("panel_live"):
        st.rerun()


def draw_job(job: Job) -> None:
    st.subheader(f"{plain(job.concept_inputs.get('title', 'Concept'))} · {render_type_name(job.render_type)}")
    if job.status == JobStatus.COMPLETED:
        show_completed(job)
    elif job.status == JobStatus.FAILED:
        st.error(f"The render failed: {job.error or 'no reason was recorded.'}", icon=":material/error:")
        retry_button(job)
    elif job.status == JobStatus.CANCELED:
        st.warning("This render was canceled.", icon=":material/cancel:")
        retry_button(job)
    else:
        show_running(job)
    show_details(job)


def watched_job(job_id: str, project_id: str, force: bool = False) -> Job | None:
    """The watched job, read from the store only when its watcher said it changed (or once a poll
    interval as a safety net)."""
    state = st.session_state
    version = job_changes().version(project_id, job_id)  # before the read: a change during it is seen next time
    cached = state.get("panel_job")
    fresh = time.monotonic() - state.get("panel_read_at", 0.0) < runtime.settings.poll_seconds
    if not force and cached is not None and cached.job_id == job_id and version == state.get("panel_version") \
            and fresh:
        return cached
    job = load_job(job_id, project_id) if not force else quiet_load(job_id, project_id)
    state.panel_job, state.panel_version, state.panel_read_at = job, version, time.monotonic()
    state.panel_queue = queue_facts(job) if job is not None and job.status == JobStatus.PENDING else (None, None)
    return job


def quiet_load(job_id: str, project_id: str) -> Job | None:
    try:
        return service.get(job_id, project_id)
    except JobsError:
        return None  # the panel's own read says what is wrong


def await_quick_finish(job: Job) -> Job | None:
    """Wait up to WAIT_SHARE of a poll interval for the store's watcher to say `job` finished: the
    job then, else None (not in time, or it cannot be read: the ticks take over)."""
    changes, state = job_changes(), st.session_state
    deadline = time.monotonic() + runtime.settings.poll_seconds * WAIT_SHARE
    while (left := deadline - time.monotonic()) > 0:
        seen = state.get("panel_version", 0)
        if changes.wait(job.project_id, job.job_id, seen, left) == seen:
            return None
        fresh = watched_job(job.job_id, job.project_id, force=True)
        if fresh is None or fresh.status.is_final:
            return fresh
    return None


def queue_facts(job: Job) -> tuple[int | None, str | None]:
    """(queue position, why it cannot start) of a pending job: store reads, so once per read of the job."""
    try:
        return service.queue_position(job), service.waiting_reason(job)
    except JobsError:
        return None, None


@st.cache_data(ttl=30, show_spinner=False)
def usual_run(store: str, renderer: str, render_type: str) -> Typical | None:
    """The learned run time, read from the store (named by `store`, part of the cache key) at most
    every 30 s: a listing, not free."""
    try:
        return typical_run(service, renderer, render_type)
    except JobsError:
        return None


def estimate_text(job: Job) -> str:
    """"Usually 35-50 s; about 20 s left." or "" without enough history."""
    typical = usual_run(service.store.describe(), job.renderer, job.render_type)
    if typical is None:
        return ""
    try:
        left = eta_seconds(service, job, typical=typical,
                           position=st.session_state.get("panel_queue", (None, None))[0])
    except JobsError:
        left = None
    usual = duration_text(typical.median) if typical.high - typical.low < 1 else \
        f"{duration_text(typical.low)}–{duration_text(typical.high)}"
    if left is None:
        return f"Usually {usual}."
    return f"Usually {usual}; " + ("any moment now." if left < 1 else f"about {duration_text(left)} left.")


def show_running(job: Job) -> None:
    estimate = estimate_text(job)
    if job.status == JobStatus.PENDING:
        position, reason = st.session_state.get("panel_queue", (None, None))
        where = f"position {position} in the queue" if position else "waiting to be picked up"
        st.progress(0, text=f"Queued: {where}")
        note = f" The last attempt stopped: {plain(job.error)}" if job.error else ""
        st.caption(f"Waiting for {duration_text(elapsed_seconds(job))}. {estimate}{note}")
        if reason:
            st.info(reason, icon=":material/pause_circle:")
    else:
        text = "Canceling…" if job.cancel_requested else f"{job.stage} ({job.progress}%)"
        st.progress(job.progress, text=text)
        running = duration_text(attempt_seconds(job))
        if job.prompt:  # an AI renderer: the time goes into waiting on the provider
            st.caption(f"Waiting for {renderer_name(job.renderer)} to draw it: asked {running} ago. {estimate}")
        else:
            st.caption(f"Running for {running}. {estimate}")
    if waited_seconds(job) > runtime.settings.max_wait_seconds:
        st.warning(f"This render is still {job.status.value} after {duration_text(waited_seconds(job))}. "
                   "It keeps going in the background: you may leave and come back later, or keep waiting here.",
                   icon=":material/hourglass_top:")
        if st.button("Keep waiting", key="keep_waiting"):
            watch(job.job_id)
            st.rerun()
    if problem := st.session_state.pop("cancel_problem", None):
        st.error(problem)
    if not job.cancel_requested:
        st.button("Cancel", key=f"cancel_{job.job_id}", icon=":material/cancel:", on_click=on_cancel,
                  args=(job.job_id, job.project_id))


def on_cancel(job_id: str, project_id: str) -> None:
    """Cancel before the panel's run, which then shows the outcome at once (read afresh)."""
    try:
        service.cancel(job_id, project_id)
    except JobsError as error:
        st.session_state.cancel_problem = f"Cannot cancel: {error}"
    st.session_state.panel_read_at = 0.0


def retry_button(job: Job) -> None:
    if st.button("Retry", key=f"retry_{job.job_id}", type="primary", icon=":material/refresh:"):
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
        st.error(f"The image of this render cannot be read: {error}")
        return
    with st.container(key="job_result"):  # a stable hook for the browser tests: the watched job's image
        st.image(png, width="stretch")
    details, actions = st.columns([3, 2])
    with details:
        st.markdown(f":green-badge[:material/check_circle: done] in {duration_text(attempt_seconds(job))} · "
                    f"{plain(renderer_name(job.renderer))}  \n{plain(brief_summary(job.concept_inputs))}")
        if job.concept_inputs.get("description"):
            st.caption(plain(job.concept_inputs["description"]))
    with actions:
        st.download_button("Download PNG", png, file_name=f"{job.project_id}-{job.job_id}.png",
                           mime="image/png", type="primary", icon=":material/download:", width="stretch")
        render_again(job)


def render_again(job: Job) -> None:
    others = [kind for kind in render_types(job.renderer) if kind != job.render_type]
    if not others:
        return
    kind = st.selectbox("Render this concept as", others, key=f"again_{job.job_id}", format_func=render_type_name,
                        help="Renders the same brief again as another type of drawing.")
    name = render_type_name(kind)
    if st.button(f"Render as {name[0].lower() + name[1:]}", key=f"again_button_{job.job_id}", width="stretch"):
        try:
            again = service.resubmit(job.job_id, kind, job.project_id)
        except JobsError as error:
            st.error(f"Cannot render again: {error}")
            return
        watch(again.job_id)
        st.session_state.created_message = "Your render is queued."
        st.rerun()


def show_details(job: Job) -> None:
    """Ids, worker, attempts and the event log: for whoever runs the service, out of the main view."""
    with st.expander("Details"):
        started = f"{job.started_at:%Y-%m-%d %H:%M:%S} UTC" if job.started_at else "not yet"
        st.markdown(f"Job `{job.job_id}` · concept `{job.concept_id}` · project `{job.project_id}`  \n"
                    f"Renderer `{job.renderer}` · render type `{job.render_type}` · "
                    f"{count_text(job.attempts, 'attempt')} of {job.max_attempts}  \n"
                    f"Created {job.created_at:%Y-%m-%d %H:%M:%S} UTC · this attempt started {started}"
                    + (f" · worker `{job.worker_id}`" if job.worker_id else ""))
        if not job.status.is_final:
            return
        try:
            events = service.events(job.job_id, job.project_id)
        except JobsError as error:
            st.caption(f"The history of this render cannot be read: {error}")
            return
        st.caption(f"History ({count_text(len(events), 'event')}, times in UTC)")
        st.dataframe([{"when": f"{event.at:%Y-%m-%d %H:%M:%S}", "what": event.type, "status": event.status.value,
                       "attempt": event.attempt, "note": event.message or ""} for event in events],
                     hide_index=True, width="stretch")


def read_watched_job(project_id: str) -> Job | None:
    """The watched job, read afresh by a full run before the gallery (which checks the panel
    against it); it says why when there is none."""
    state = st.session_state
    state.panel_read_at = 0.0
    job = watched_job(state.active_job, project_id)
    if job is None:
        watch(None)
        return None
    state.panel_live = not job.status.is_final and waited_seconds(job) <= runtime.settings.max_wait_seconds
    return job


def show_watched_job(job: Job) -> None:
    live = st.session_state.panel_live
    st.fragment(run_every=runtime.settings.poll_seconds if live else None)(job_panel)(job.job_id, job.project_id)


# -- the gallery --------------------------------------------------------------------------------
@st.cache_data(max_entries=256, show_spinner=False)
def gallery_thumbnail(_png_loader, project_id: str, job_id: str) -> bytes:
    # Keyed by job id: a completed job's image never changes.
    return thumbnail(_png_loader())


@st.cache_data(max_entries=64, show_spinner=False)
def direct_thumbnail(render_id: str, _png: bytes) -> bytes:
    return thumbnail(_png)


def status_badge(job: Job) -> None:
    label, colour, icon = STATUS_BADGES[job.status]
    st.badge(label, color=colour, icon=icon)


def gallery_card(job: Job) -> None:
    with st.container(border=True, key=f"card_{job.job_id}"):
        if job.status == JobStatus.COMPLETED:
            try:
                st.image(gallery_thumbnail(lambda: service.image(job), job.project_id, job.job_id), width="stretch")
            except JobsError:
                st.caption("The image is missing.")
        status_badge(job)
        st.markdown(f"**{plain(render_type_name(job.render_type))}**  \n:gray[{ago_text(job.updated_at)}]")
        if job.status == JobStatus.PROCESSING:
            st.progress(job.progress, text=job.stage)
        elif job.status == JobStatus.FAILED and job.error:
            st.caption(plain(job.error))
        if st.button("Open", key=f"show_{job.job_id}", width="stretch"):
            if job.status == JobStatus.COMPLETED:
                st.session_state.dialog_job = job.job_id
            else:
                watch(job.job_id)
            st.rerun()


def concept_groups(jobs: list[Job]) -> list[list[Job]]:
    """Jobs of one concept together (newest concept first), its render types side by side."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(job.concept_id, []).append(job)
    return list(groups.values())


def gallery(project_id: str) -> None:
    try:
        page = service.list(project_id, limit=GALLERY_SIZE)
    except JobsError as error:
        st.error(f"The renders of project {project_id} cannot be listed: {error}")
        return
    if panel_is_behind(page.jobs):
        st.rerun()
    st.subheader(f"Renders in {project_id}")
    if page.unreadable:
        reasons = "; ".join(f"{Path(bad.location).name}: {bad.reason}" for bad in page.unreadable[:3])
        st.warning(f"{count_text(len(page.unreadable), 'file')} in this project are not readable jobs and are "
                   f"skipped: {reasons}", icon=":material/warning:")
    if not page.jobs:
        st.caption("No renders yet: fill in the brief and press Render.")
    singles = [job for job in page.jobs if job.study_id is None]
    for study_id, _ in group_by_study(page.jobs):
        if study_id is not None:  # a design study's renders: one card
            study_panel.study_card(study_id, project_id)
    for group in concept_groups(singles):
        first = group[0]
        with st.container(border=False, key=f"concept_{first.concept_id}"):
            st.markdown(f"**{plain(first.concept_inputs.get('title', 'Concept'))}** :gray[· "
                        f"{plain(brief_summary(first.concept_inputs))}]")
            columns = st.columns(4)
            for index, job in enumerate(group[:4]):
                with columns[index]:
                    gallery_card(job)
    direct_gallery(project_id)


def direct_gallery(project_id: str) -> None:
    kept = direct_renders(project_id)
    if not kept:
        return
    st.markdown("**Drawn in the page** :gray[· not in the background, kept until the server restarts]")
    columns = st.columns(4)
    for index, render in enumerate(kept[:4]):
        with columns[index], st.container(border=True, key=f"card_{render['id']}"):
            st.image(direct_thumbnail(render["id"], render["png"]), width="stretch")
            st.markdown(f"**{plain(render['brief'].get('title', 'Concept'))}**  \n"
                        f"{plain(render_type_name(render['renderType']))} · :gray[{ago_text(render['at'])}]")
            if st.button("Open", key=f"show_{render['id']}", width="stretch"):
                st.session_state.showing_direct = render["id"]
                st.session_state.field_use_jobs = False
                st.rerun()


@st.dialog("Render", width="large")
def open_render(job_id: str, project_id: str) -> None:
    """A completed render, large and in view, with what one does with it."""
    try:
        job = service.get(job_id, project_id)
        png = service.image(job)
    except JobsError as error:
        st.error(f"This render cannot be opened: {error}")
        return
    st.subheader(f"{plain(job.concept_inputs.get('title', 'Concept'))} · {render_type_name(job.render_type)}")
    st.image(png, width="stretch")
    st.caption(f"{plain(brief_summary(job.concept_inputs))} · {plain(renderer_name(job.renderer))} · "
               f"done {ago_text(job.finished_at or job.updated_at)}")
    download, reuse = st.columns(2)
    download.download_button("Download PNG", png, file_name=f"{job.project_id}-{job.job_id}.png",
                             mime="image/png", type="primary", icon=":material/download:", width="stretch")
    if reuse.button("Reuse this brief", key=f"reuse_{job.job_id}", width="stretch", icon=":material/edit:",
                    on_click=on_reuse_brief, args=(job.job_id, job.project_id)):
        st.rerun()
    render_again(job)


def live_gallery(project_id: str) -> None:
    """Refresh the gallery while any of its jobs is running (e.g. started in another tab), and
    every half minute anyway, so "2 min ago" stays true."""
    try:
        busy = any(not job.status.is_final for job in service.list(project_id, limit=GALLERY_SIZE).jobs)
    except JobsError:
        busy = False
    st.fragment(run_every=runtime.settings.poll_seconds * 2 if busy else 30)(gallery)(project_id)


def panel_is_behind(jobs: list[Job]) -> bool:
    """Whether the gallery sees the watched job finished while its live panel still shows it running.

    A safety net, should a tick of the panel be lost; the gallery's refresh then redraws the page
    once. (The freezes once seen came from comparing statuses with `is`: see STATUS_BADGES.)
    """
    state = st.session_state
    shown = state.get("panel_job")
    if not state.get("panel_live") or shown is None or shown.status.is_final:
        return False
    return any(job.job_id == shown.job_id and job.status.is_final for job in jobs)


# -- the page -----------------------------------------------------------------------------------
remember_defaults()
st.title("Render a concept")
st.caption("Describe the building, press **Render**, and watch it being drawn. Renders run in the background: "
           "you can leave this page, reload it or open it in another tab, and your renders are still here.")
form_column, result_column = st.columns([5, 7], gap="large")
with form_column:
    project_ok = project_picker()
    brief_form(current_problems())
    remember_form()
    study_panel.variations_form(project_ok, remember_form)
if message := st.session_state.pop("created_message", None):
    st.toast(message, icon=":material/check_circle:")
watched = None
with result_column:
    if request := st.session_state.pop("direct_request", None):
        run_direct_render(request)
    direct = shown_direct(st.session_state.project) if project_ok else None
    if direct and not st.session_state.field_use_jobs:
        show_direct_result(direct)
    elif project_ok and st.session_state.get("active_study"):
        if (study := study_panel.read_active_study(st.session_state.project)) is not None:
            study_panel.study_section(study)
    elif project_ok and st.session_state.active_job:
        job_slot = st.container(key="job_panel")  # its panel is drawn last (see below)
        with job_slot:
            watched = read_watched_job(st.session_state.project)
    else:
        st.info("Your render appears here. Fill in the brief (or start from an example) and press **Render**.",
                icon=":material/draw:")
if project_ok:
    st.divider()
    live_gallery(st.session_state.project)
    if dialog_job := st.session_state.pop("dialog_job", None):
        open_render(dialog_job, st.session_state.project)
if watched is not None:
    with job_slot:  # last: right after Render its first run may wait a moment, with the rest on screen
        show_watched_job(watched)
sync_url(project_ok)  # the URL names what the page ended up showing
