"""The render page's design studies: "Explore variations" (what to vary, how many renders, how
long), the study's live grid with compare and the contact sheet, and the gallery's study card.

Widgets only: the rules are in jobs_core.studies and jobs_core.contact_sheet. The page keeps in
session state only what this tab looks at (`active_study`, the cells picked to compare); the
study itself is its jobs in the store, and the URL carries ?project=..&study=.. .
"""
from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from typing import Any

import streamlit as st
from PIL import Image

from jobs_core import InvalidInput, Job, JobNotFound, JobsError, JobStatus
from jobs_core.contact_sheet import cell_images, contact_sheet_pdf, contact_sheet_png
from jobs_core.studies import (
    CHOICE_FIELDS,
    MAX_STUDY_JOBS,
    VARIABLE_FIELDS,
    Cell,
    Study,
    brief_differences,
    cancel_study,
    create_study,
    describe_values,
    estimate_seconds,
    number_range,
    plan_study,
    read_study,
    retry_study,
)
from jobs_core.thumbnails import thumbnail
from jobs_core.words import duration_text, plain, render_type_name
from pages import app_runtime

#: (from, to, step) a number field's range starts at, around the brief's value
NUMBER_RANGES = {"floors": (0, 8, 4), "width": (0, 24, 12), "depth": (0, 12, 6), "floorHeight": (0, 1, 0.5),
                 "windowRatio": (-0.2, 0.2, 0.2)}
BADGES = {JobStatus.PENDING: ("queued", "blue"), JobStatus.PROCESSING: ("rendering", "orange"),
          JobStatus.COMPLETED: ("done", "green"), JobStatus.FAILED: ("failed", "red"),
          JobStatus.CANCELED: ("canceled", "gray")}
COMPARE_MARGIN = 120  # the dialog's padding and the gap between the two drawings, in pixels


def _service():
    return app_runtime().service


# -- before it starts: what to vary ------------------------------------------------------------------
def variations_form(project_ok: bool, remember_form: Callable[[], None]) -> None:
    """The "Explore variations" expander under the brief (the brief, renderer and render type are
    the form's: `remember_form` saves what its widgets hold)."""
    state = st.session_state
    with st.expander("Explore variations", icon=":material/grid_view:", expanded=bool(state.get("vary_fields"))):
        st.caption("Render the brief several ways at once and compare them side by side: pick up to two fields "
                   "and the values to try.")
        fields = st.multiselect("Fields to vary", list(VARIABLE_FIELDS), format_func=VARIABLE_FIELDS.get,
                                max_selections=2, key="vary_fields", placeholder="Choose one or two fields")
        for name in fields:
            _values_picker(name)
        if not fields:
            return
        vary, problem = _chosen_vary()
        request = _study_request(vary)
        if problem is None:
            problem = _plan_problem(request)
        count = _count(vary)
        if problem:
            st.error(problem, icon=":material/warning:")
        else:
            st.markdown(f"That makes **{count} renders** ({' × '.join(str(len(v)) for v in vary.values())}). "
                        f"{_estimate_words(count)}")
        st.button(f"Render {count} variations" if count else "Render variations", key="render_study", type="primary",
                  icon=":material/grid_view:", width="stretch", disabled=bool(problem) or not project_ok,
                  on_click=on_render_study, args=(remember_form,))
        if trouble := state.pop("study_problem", None):
            st.error(trouble, icon=":material/error:")


def _values_picker(name: str) -> None:
    state, label = st.session_state, VARIABLE_FIELDS[name]
    current = state.saved_brief.get(name)
    if name in CHOICE_FIELDS:
        st.pills(label, CHOICE_FIELDS[name], selection_mode="multi", key=f"vary_{name}",
                 default=[current] if current in CHOICE_FIELDS[name] else None)
        return
    low, high, step = NUMBER_RANGES[name]
    start = current if isinstance(current, int | float) else 1
    first, second, third = st.columns(3)
    number = int if name == "floors" else float
    first.number_input(f"{label}: from", value=number(max(start + low, 1 if name == "floors" else 0.1)),
                       key=f"vary_{name}_from")
    second.number_input("to", value=number(start + high), key=f"vary_{name}_to")
    third.number_input("step", value=number(step), key=f"vary_{name}_step")


def _chosen_vary() -> tuple[dict[str, list[Any]], str | None]:
    """What the widgets ask to vary now, and the first problem with it (read from the session,
    so a press right after an edit sees the edit)."""
    state, vary, problem = st.session_state, {}, None
    for name in state.get("vary_fields", []):
        label = VARIABLE_FIELDS[name]
        if name in CHOICE_FIELDS:
            vary[name] = list(state.get(f"vary_{name}") or [])
            if not vary[name]:
                problem = problem or f"Pick at least one {label.lower()} to try."
            continue
        bounds = [state.get(f"vary_{name}_{part}") for part in ("from", "to", "step")]
        if None in bounds:  # chosen in this very run: its fields are drawn below
            vary[name], problem = [], problem or f"{label}: give the values to try."
            continue
        try:
            values = number_range(*bounds)
        except InvalidInput as error:
            vary[name], problem = [], problem or f"{label}: {error}"
            continue
        vary[name] = [int(value) if name == "floors" else value for value in values]
    return vary, problem


def _study_request(vary: dict[str, list[Any]]) -> dict:
    state = st.session_state
    return {"projectId": state.project, "renderType": state.render_type, "conceptInputs": state.saved_brief,
            "vary": vary}


def _count(vary: dict[str, list[Any]]) -> int:
    count = 1
    for values in vary.values():
        count *= len(values)
    return count if vary and count else 0


def _plan_problem(request: dict) -> str | None:
    if _count(request["vary"]) > MAX_STUDY_JOBS:
        return f"That makes {_count(request['vary'])} renders; a study has at most {MAX_STUDY_JOBS}. Try fewer values."
    try:
        plan_study(request)
    except InvalidInput as error:
        return str(error).replace(" No job was created.", "")
    return None


@st.cache_data(ttl=30, show_spinner=False)
def _estimate(store: str, renderer: str, render_type: str, count: int) -> float | None:
    try:
        return estimate_seconds(_service(), render_type, count, renderer)
    except JobsError:
        return None


def _estimate_words(count: int) -> str:
    state = st.session_state
    seconds = _estimate(_service().store.describe(), state.renderer, state.render_type, count)
    if seconds is None:
        return "How long they take is shown once a few renders of this type have finished."
    return f"About {duration_text(seconds)} in all, from what renders of this type usually take."


def on_render_study(remember_form: Callable[[], None]) -> None:
    """Create the study (all of it or nothing) and show it. One key per press: a press that
    failed half-way (the store went away) is finished by the next press of the same study."""
    state = st.session_state
    remember_form()  # the brief as the widgets hold it now (an edit just before the press included)
    vary, problem = _chosen_vary()
    if problem:
        state.study_problem = problem
        return
    request = _study_request(vary)
    key = state.setdefault("study_key", uuid.uuid4().hex)
    try:
        study, _ = create_study(_service(), request, idempotency_key=key, renderer=state.renderer)
    except InvalidInput as error:
        state.study_problem = str(error)
        return
    except (JobsError, OSError) as error:  # e.g. another study was asked with this key: a fresh one next time
        state.pop("study_key", None)
        state.study_problem = f"The variations could not be queued: {error}"
        return
    state.pop("study_key", None)
    show_study(study.study_id)
    state.created_message = f"{study.summary.total} variations are queued."


def show_study(study_id: str | None) -> None:
    """Look at a study (None: at nothing): the page's job panel makes room for it."""
    state = st.session_state
    state.active_study = study_id
    state.compare = []
    if study_id is not None:
        state.active_job = None


# -- the study: progress, grid, compare, contact sheet -------------------------------------------------
def read_active_study(project_id: str) -> Study | None:
    state = st.session_state
    try:
        return read_study(_service(), state.active_study, project_id)
    except (JobNotFound, InvalidInput):
        st.info(f"There is no study {state.active_study} in project {project_id} (it may have been deleted).")
    except JobsError as error:
        st.error(f"This study cannot be read: {error}")
    show_study(None)
    return None


def study_section(study: Study) -> None:
    """The live grid: a fragment rerun every poll interval while any variation is queued or running."""
    live = not study.is_final
    st.session_state.study_live = live
    every = app_runtime().settings.poll_seconds if live else None
    st.fragment(run_every=every)(study_panel)(study.study_id, study.project_id)


def study_panel(study_id: str, project_id: str) -> None:
    try:
        study = read_study(_service(), study_id, project_id)
    except JobsError as error:
        st.error(f"This study cannot be read: {error}")
        return
    with st.container(key="study_panel"):
        st.subheader(plain(study.title))
        st.caption(f"{render_type_name(study.render_type)} · varying "
                   f"{' and '.join(VARIABLE_FIELDS[name].lower() for name in study.vary)}")
        st.progress(study.progress, text=study.summary.words().capitalize())
        study_actions(study)
        study_grid(study)
        compare(study)
        contact_sheet(study)
    if study.is_final and st.session_state.get("study_live"):
        st.rerun()  # the whole page once: the gallery shows the study done, the polling stops


def study_actions(study: Study) -> None:
    summary = study.summary
    cancel, retry, close = st.columns(3)
    if summary.queued or summary.running:
        cancel.button("Cancel study", key="cancel_study", icon=":material/cancel:", width="stretch",
                      on_click=_whole_study, args=(cancel_study, study))
    if summary.failed or summary.canceled:
        retry.button(f"Retry {summary.failed + summary.canceled} not done", key="retry_study",
                     icon=":material/refresh:", width="stretch", on_click=_whole_study, args=(retry_study, study))
    if close.button("Close study", key="close_study", width="stretch"):
        show_study(None)
        st.rerun()  # the whole page: the study makes room for the render panel
    if message := st.session_state.pop("study_action", None):
        st.caption(message)


def _whole_study(action, study: Study) -> None:
    try:
        _, report = action(_service(), study.study_id, study.project_id)
    except JobsError as error:
        st.session_state.study_action = f"Nothing was changed: {error}"
        return
    st.session_state.study_action = report.summary()


def study_grid(study: Study) -> None:
    column_name, column_values = study.columns
    row_name, _ = study.rows
    widths = ([1] if row_name else []) + [3] * len(column_values)
    header = st.columns(widths)
    for place, value in zip(header[-len(column_values):], column_values, strict=True):
        place.markdown(f"**{plain(describe_values({column_name: value}))}**")
    for row in study.grid():
        places = st.columns(widths, vertical_alignment="center")
        if row_name:
            places[0].markdown(f"**{plain(describe_values({row_name: row[0].values[row_name]}))}**")
        for place, cell in zip(places[-len(row):], row, strict=True):
            with place:
                grid_cell(cell)


def grid_cell(cell: Cell) -> None:
    job = cell.job
    with st.container(border=True, key=f"cell_{cell.index}"):
        if job is None:
            st.caption("Not created (start the study again to finish it).")
            return
        if job.status == JobStatus.COMPLETED:
            image = _thumbnail(job)
            if image is not None:
                st.image(image, width="stretch")
        label, colour = BADGES[JobStatus(job.status)]
        st.badge(label, color=colour)
        if job.status == JobStatus.PROCESSING:
            st.progress(job.progress, text=job.stage)
        elif job.status == JobStatus.FAILED:
            st.caption(plain(job.error or "no reason was recorded"))
        if job.status in (JobStatus.FAILED, JobStatus.CANCELED):
            st.button("Retry", key=f"retry_cell_{job.job_id}", icon=":material/refresh:", on_click=_retry_cell,
                      args=(job,))
        if job.status == JobStatus.COMPLETED:
            st.checkbox("Compare", key=f"compare_{job.job_id}", on_change=_toggle_compare, args=(job.job_id,))


def _retry_cell(job: Job) -> None:
    try:
        _service().retry(job.job_id, job.project_id)
    except JobsError as error:
        st.session_state.study_action = f"Cannot retry: {error}"


def _toggle_compare(job_id: str) -> None:
    """Keep the last two cells ticked; a third tick unticks the oldest. The second tick opens
    the comparison."""
    state = st.session_state
    picked = [picked for picked in state.get("compare", []) if picked != job_id]
    ticked = bool(state.get(f"compare_{job_id}"))
    if ticked:
        picked.append(job_id)
    while len(picked) > 2:
        state[f"compare_{picked.pop(0)}"] = False
    state.compare = picked
    state.compare_open = ticked and len(picked) == 2


def _open_compare() -> None:
    st.session_state.compare_open = True


def _close_compare() -> None:
    st.session_state.compare_open = False


def compare(study: Study) -> None:
    """The two ticked cells, side by side at full size in a dialog over the page (opened by the
    second tick, or the button once it was closed)."""
    state = st.session_state
    jobs = {job.job_id: job for job in study.jobs if job.status == JobStatus.COMPLETED}
    picked = [jobs[job_id] for job_id in state.get("compare", []) if job_id in jobs]
    if len(picked) < 2:
        state.compare_open = False
        st.caption("Tick **Compare** on two finished renders to see them side by side at full size.")
        return
    names = " and ".join(plain(describe_values(job.study.values if job.study else {})) for job in picked)
    st.button(f"Compare {names} side by side", key="open_compare", icon=":material/compare:",
              on_click=_open_compare)
    if state.get("compare_open"):
        images = [_image(job) for job in picked]
        # As wide as the two drawings at their own size (the browser shrinks it to fit the window).
        width = sum(_pixel_width(image) for image in images) + COMPARE_MARGIN if all(images) else "large"
        st.dialog("Side by side", width=width, on_dismiss=_close_compare)(compare_dialog)(picked, images)


def compare_dialog(picked: list[Job], images: list[bytes | None]) -> None:
    with st.container(key="study_compare"):
        for place, job, image in zip(st.columns(2), picked, images, strict=True):
            with place:
                st.markdown(f"**{plain(describe_values(job.study.values if job.study else {}))}**")
                if image is None:
                    st.caption("This image cannot be read.")
                else:
                    st.image(image, width="content")  # its own size, smaller only to fit the window
        differences = brief_differences(picked[0], picked[1])
        st.markdown("**What differs**\n" + "\n".join(f"- {plain(line)}" for line in differences)
                    if differences else "The two briefs are the same.")


def _pixel_width(image: bytes | None) -> int:
    if image is None:
        return 0
    try:
        return Image.open(io.BytesIO(image)).width
    except (OSError, ValueError):  # not an image we can read: it is shown as a caption
        return 0


def contact_sheet(study: Study) -> None:
    if not study.is_final:
        st.caption("The contact sheet can be downloaded once every variation has finished.")
        return
    versions = tuple((job.job_id, job.updated_at.isoformat()) for job in study.jobs)
    png, pdf = _sheets(study.study_id, study.project_id, versions)
    name = f"{study.project_id}-{study.study_id}-contact-sheet"
    first, second = st.columns(2)
    first.download_button("Download contact sheet (PNG)", png, file_name=f"{name}.png", mime="image/png",
                          type="primary", icon=":material/download:", width="stretch", key="sheet_png")
    second.download_button("Download contact sheet (PDF)", pdf, file_name=f"{name}.pdf", mime="application/pdf",
                           icon=":material/picture_as_pdf:", width="stretch", key="sheet_pdf")


@st.cache_data(max_entries=8, show_spinner="Making the contact sheet…")
def _sheets(study_id: str, project_id: str, versions: tuple) -> tuple[bytes, bytes]:
    # Keyed by each job's last change: the sheet is made once per state of the study.
    service = _service()
    study = read_study(service, study_id, project_id)
    images = cell_images(study, service.image)
    return contact_sheet_png(study, images), contact_sheet_pdf(study, images)


@st.cache_data(max_entries=256, show_spinner=False)
def _thumbnail_of(project_id: str, job_id: str, updated_at: str) -> bytes | None:
    image = _image_of(project_id, job_id, updated_at)
    return None if image is None else thumbnail(image)


@st.cache_data(max_entries=16, show_spinner=False)
def _image_of(project_id: str, job_id: str, updated_at: str) -> bytes | None:
    service = _service()
    try:
        return service.image(service.get(job_id, project_id))
    except JobsError:
        return None


def _thumbnail(job: Job) -> bytes | None:
    return _thumbnail_of(job.project_id, job.job_id, job.updated_at.isoformat())


def _image(job: Job) -> bytes | None:
    return _image_of(job.project_id, job.job_id, job.updated_at.isoformat())


# -- the gallery's card -----------------------------------------------------------------------------
def study_card(study_id: str, project_id: str) -> None:
    """One card for a study in the project's gallery: its first drawings and how far it is."""
    try:
        study = read_study(_service(), study_id, project_id)
    except JobsError:
        return  # deleted meanwhile, or unreadable: the study panel says why when opened
    with st.container(border=True, key=f"study_card_{study_id}"):
        finished = [job for job in study.jobs if job.status == JobStatus.COMPLETED]
        pictures = st.columns(4)
        for place, job in zip(pictures, finished[:4], strict=False):
            image = _thumbnail(job)
            if image is not None:
                place.image(image, width="stretch")
        st.markdown(f"**{plain(study.title)}** :gray[· study of {study.summary.total} variations · "
                    f"{plain(study.summary.words())}]")
        if st.button("Open study", key=f"open_study_{study_id}"):
            show_study(study_id)
            st.rerun()
