"""Monitor page: every project's jobs, completion rates, failures and stuck work, live.

Thin: the numbers come from `jobs_core.monitor` (an index of every job, kept current by a watcher,
held by the app's runtime); changes go through the runtime's `JobService`. The browser gets
aggregates and one page of rows.
"""
from __future__ import annotations

import base64
import hashlib
from datetime import UTC, date, datetime, time, timedelta
from urllib.parse import urlencode

import pandas as pd
import streamlit as st

from jobs_core import JobNotFound, JobsError, JobService
from jobs_core.models import utcnow
from jobs_core.monitor import JobIndex, alerts, stats
from jobs_core.monitor.actions import BULK, JobRef, bulk_targets, run_action
from jobs_core.monitor.index import FEED, WATCHING
from jobs_core.monitor.view import View
from jobs_core.thumbnails import thumbnail
from pages import app_runtime

REFRESH_SECONDS = 3
TIME_FORMAT = "YYYY-MM-DD HH:mm:ss"  # every time on the page is UTC, and its label says so
REPORT_SECONDS = 30  # how long the outcome of an action stays on screen
PAGE_SIZES = (25, 50, 100, 200)


def seconds(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "–"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def percent(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


# -- filters (a change reruns the page; the live part below reruns on its own) -------------------
def known_projects(index: JobIndex) -> list[str]:
    return index.memo("projects", lambda frame: sorted(frame["project"].unique()))


def read_filters(index: JobIndex) -> stats.JobFilter:
    projects_known = known_projects(index)
    st.session_state["monitor_projects_offered"] = projects_known
    render_types_known = index.memo("render_types", lambda frame: sorted(frame["render_type"].unique()))
    studies_known = index.memo("studies", lambda frame: sorted(frame["study"].dropna().unique()))
    with st.container(border=True):
        cols = st.columns([3, 2, 2, 2, 2, 2])
        projects = cols[0].multiselect("Project", projects_known, key="filter_projects",
                                       placeholder="all projects")
        statuses = cols[1].multiselect("Status", stats.STATUS_ORDER + [stats.STUCK], key="filter_statuses",
                                       placeholder="all statuses",
                                       help="stuck: processing, with a heartbeat older than the lease")
        render_types = cols[2].multiselect("Render type", render_types_known,
                                           key="filter_render_types", placeholder="all render types")
        period = cols[3].date_input("Created between", value=(), key="filter_period", format="YYYY-MM-DD",
                                   help="whole days in UTC")
        error_text = cols[4].text_input("Error contains", key="filter_error", placeholder="e.g. timed out")
        studies = cols[5].multiselect("Study", studies_known, key="filter_studies", placeholder="all jobs",
                                      help="the jobs of design studies (variations rendered as a set)")
    start = end = None
    if isinstance(period, (tuple, list)) and len(period) >= 1:
        start = datetime.combine(period[0], time.min, UTC)
        last: date = period[1] if len(period) == 2 else period[0]
        end = datetime.combine(last + timedelta(days=1), time.min, UTC)
    return stats.JobFilter(tuple(projects), tuple(statuses), tuple(render_types), start, end, error_text,
                           studies=tuple(studies))


# -- the live part ---------------------------------------------------------------------------------
def status_badges(figures: stats.Headline) -> None:
    """One badge per status, in the status's colour (the same as in the charts and the table)."""
    counts = {"pending": figures.pending, "processing": figures.running, "completed": figures.completed,
              "failed": figures.failed, "canceled": figures.canceled, stats.STUCK: figures.stuck}
    cells = st.columns(len(counts), gap="small")
    for cell, (status, count) in zip(cells, counts.items(), strict=True):
        with cell:
            st.badge(f"{status} {count:,}", color=stats.STATUS_COLORS[status][0])


def show_headline(figures: stats.Headline) -> None:
    status_badges(figures)
    row = st.columns(5)
    row[0].metric("Jobs", f"{figures.total:,}")
    row[1].metric("Completion rate", percent(figures.completion_rate),
                  help="completed ÷ finished (completed + failed + canceled)")
    row[2].metric("Failure rate", percent(figures.failure_rate), help="failed ÷ finished")
    row[3].metric("Running now", f"{figures.running:,}")
    row[4].metric("Pending", f"{figures.pending:,}")
    row = st.columns(5)
    row[0].metric("Stuck", f"{figures.stuck:,}", help="processing, with a heartbeat older than the lease")
    row[1].metric("Run time p50", seconds(figures.run_time_p50), help="completed jobs, start to finish")
    row[2].metric("Run time p95", seconds(figures.run_time_p95))
    row[3].metric("Queue wait p50", seconds(figures.queue_wait_p50), help="creation to (latest) start")
    row[4].metric("Queue wait p95", seconds(figures.queue_wait_p95))


def group_config(label: str) -> dict:
    return {
        "total": st.column_config.NumberColumn("jobs"),
        "completion_rate": st.column_config.ProgressColumn("completion", format="percent", min_value=0, max_value=1),
        "failure_rate": st.column_config.NumberColumn("failure rate", format="percent"),
        "run_time_p50": st.column_config.NumberColumn("run time p50", format="%.1f s"),
        "last_activity": st.column_config.DatetimeColumn("last activity (UTC)", format=TIME_FORMAT, timezone="UTC"),
        "_index": st.column_config.TextColumn(label),
    }


def table_key(view_filter: stats.JobFilter, sort: str, size: int, page: int) -> str:
    # A new key per view (and per action) starts with no selection, so a selection always means
    # rows of the page the user is looking at.
    generation = st.session_state.setdefault("monitor_generation", 0)
    digest = hashlib.sha1(repr((view_filter, sort, size, page)).encode()).hexdigest()[:10]
    return f"monitor_jobs_{generation}_{digest}"


def page_rows(index: JobIndex, view: View, key: str, sort: str, size: int, page: int) -> pd.DataFrame:
    """The rows to show. While rows are selected the page keeps its rows (their values still
    update), so a live refresh never shifts the selection onto other jobs."""
    state = st.session_state.get(key)
    shown = st.session_state.get("monitor_shown", {}).get(key)
    if state is not None and state["selection"]["rows"] and shown:
        rows = index.rows(shown)
        if len(rows) == len(shown):
            return rows
        # A job on this page was deleted elsewhere: positions no longer match, start afresh.
        st.session_state["monitor_generation"] = st.session_state.get("monitor_generation", 0) + 1
        st.session_state["monitor_notice"] = "A job on this page was deleted elsewhere; the selection was cleared."
        st.rerun()
    rows = view.page(page, size, sort)
    st.session_state["monitor_shown"] = {key: list(rows.index)}
    return rows


@st.cache_data(max_entries=2000, show_spinner=False)
def thumbnail_url(_service: JobService, project_id: str, job_id: str, image_url: str) -> str | None:
    """A small copy of a completed job's image as a data URL (cached: an image never changes
    while its job stays completed, and a new render gets a new imageUrl only after a retry)."""
    try:
        png = _service.image(_service.get(job_id, project_id))  # from the store, or the renders' bucket
        return "data:image/png;base64," + base64.b64encode(thumbnail(png, 64)).decode()
    except (JobsError, OSError, ValueError):  # no image (yet), or not one PIL can read
        return None


def render_link(project_id: str, job_id: str) -> str:
    """The job on the Render page, relative to this page (so it works behind any base path)."""
    return f"render?{urlencode({'project': project_id, 'job': job_id})}"


def display_table(service: JobService, rows: pd.DataFrame, now: datetime, lease_seconds: float):
    """The page's rows as a person scans them (title, project, status, progress, thumbnail, when),
    the status in its colour."""
    table = rows.reset_index(drop=True)[stats.TABLE_COLUMNS].copy()
    stuck = stats.stuck_mask(rows, now, lease_seconds).to_numpy()
    table["status"] = [stats.STUCK if is_stuck else str(status) for status, is_stuck in zip(table["status"], stuck,
                                                                                            strict=True)]
    # "" rather than None where there is no image: the grid shows a missing value as a grey "None"
    table.insert(4, "thumbnail", [
        (thumbnail_url(service, project, job, url) or "") if status == "completed" and isinstance(url, str) else ""
        for project, job, url, status in zip(table["project"], table["job"], table["image_url"], table["status"],
                                             strict=True)])
    table["title"] = table["title"].fillna("Untitled concept")
    # The full image opens on this app's own Render page (large, with its download button), so the
    # link works whether or not the HTTP API runs; it sits beside the thumbnail and the time.
    links = [render_link(project, job) if isinstance(url, str) else ""
             for project, job, url in zip(table["project"], table["job"], table["image_url"], strict=True)]
    table = table.drop(columns="image_url")
    table.insert(table.columns.get_loc("created") + 1, "image_url", links)
    colours = {status: f"color: {hex_colour}; font-weight: 600" for status, (_, hex_colour) in
               stats.STATUS_COLORS.items()}
    styled = table.style.map(lambda status: colours.get(status, ""), subset=["status"])
    # a Styler shows a missing value as "None": show nothing instead
    return styled.format(na_rep="", subset=["stage", "worker", "error"])


def time_column(label: str) -> st.column_config.DatetimeColumn:
    return st.column_config.DatetimeColumn(f"{label} (UTC)", format=TIME_FORMAT, timezone="UTC")


JOB_COLUMNS = {
    "title": st.column_config.TextColumn("title", width="medium"),
    "status": st.column_config.TextColumn("status", help="stuck: processing, but its worker stopped heartbeating "
                                                         "for longer than the lease"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100, format="%d%%"),
    "thumbnail": st.column_config.ImageColumn("image", width="small"),
    "created": time_column("created"),
    "updated": time_column("updated"),
    "started": time_column("started"),
    "finished": time_column("finished"),
    "render_type": st.column_config.TextColumn("render type"),
    "run_time": st.column_config.NumberColumn("run time", format="%.1f s"),
    "queue_wait": st.column_config.NumberColumn("queue wait", format="%.1f s"),
    "error": st.column_config.TextColumn("error", width="large"),
    "job": st.column_config.TextColumn("job id", width="medium"),
    "image_url": st.column_config.LinkColumn("full image", display_text="open image", width=96,
                                             help="opens the job on the Render page, large, with its download"),
}


def current_page(view_filter: stats.JobFilter, sort: str, size: int, pages: int) -> None:
    """Page 1 whenever the filters, the order or the page size change (the old page number means
    nothing in a new view); otherwise the page stays, within range when the view shrank."""
    view_key = repr((view_filter, sort, size))
    if st.session_state.get("monitor_view_key") != view_key:
        st.session_state["monitor_view_key"] = view_key
        st.session_state["monitor_page"] = 1
    elif st.session_state.get("monitor_page", 1) > pages:
        st.session_state["monitor_page"] = pages  # jobs were deleted meanwhile


def show_jobs(service: JobService, index: JobIndex, view: View, view_filter: stats.JobFilter) -> None:
    controls = st.columns([2, 1, 1, 3])
    sort = controls[0].selectbox("Order", list(stats.SORTS), key="monitor_sort")
    size = controls[1].selectbox("Rows per page", PAGE_SIZES, index=1, key="monitor_page_size")
    pages = stats.page_count(len(view.rows), size)
    current_page(view_filter, sort, size, pages)
    page = int(controls[2].number_input("Page", min_value=1, max_value=pages, step=1, key="monitor_page",
                                        help=f"of {pages:,}"))
    with controls[3]:
        st.download_button("Export the filtered jobs (CSV)", data=lambda: stats.to_csv(view.rows),
                           file_name="jobs.csv", mime="text/csv", icon=":material/download:",
                           help=f"{len(view.rows):,} rows, every column, times in UTC", on_click="ignore")
    key = table_key(view_filter, sort, size, page)
    rows = page_rows(index, view, key, sort, size, page)
    table = display_table(service, rows, view.computed_at, index.lease_seconds)
    event = st.dataframe(table, key=key, on_select="rerun", selection_mode="multi-row", hide_index=True,
                         column_config=JOB_COLUMNS, width="stretch", row_height=40)
    st.caption(f"Page {page:,} of {pages:,}: {len(rows):,} of {len(view.rows):,} jobs. Select rows to act on them; "
               "select one to see its brief, image and history.")
    chosen = [JobRef(rows.iloc[i]["project"], rows.iloc[i]["job"]) for i in event.selection.rows if i < len(rows)]
    show_report()
    show_bulk_actions(service, index, view)
    if chosen:
        show_actions(service, index, chosen)
    if len(chosen) == 1:
        show_detail(service, chosen[0])


def show_bulk_actions(service: JobService, index: JobIndex, view: View) -> None:
    """"Retry all N failed jobs shown", "Cancel all N pending jobs shown": the jobs are fixed when
    the button is pressed, so the confirmation acts on exactly the jobs it counted."""
    offers = {action: view.status_counts[status] for action, status in BULK.items() if view.status_counts[status]}
    buttons = st.columns([2, 2, 1])  # the buttons offered sit side by side from the left, never squeezed
    for cell, (action, count) in zip(buttons, offers.items(), strict=False):
        label = f"{action.capitalize()} all {count:,} {BULK[action]} job{'s' if count != 1 else ''} shown"
        if cell.button(label, key=f"monitor_bulk_{action}", width="stretch",
                                 icon=":material/replay:" if action == "retry" else ":material/cancel:"):
            st.session_state["monitor_bulk"] = (action, bulk_targets(view.rows, action))
    pending = st.session_state.get("monitor_bulk")
    if not pending:
        return
    action, targets = pending
    with st.container(border=True):
        st.warning(f"{action.capitalize()} {len(targets):,} {BULK[action]} job{'s' if len(targets) != 1 else ''}? "
                   "Each goes through the job rules on its own; a job that changed meanwhile is left as it is.")
        yes, no = st.columns([1, 5])
        if yes.button(f"Yes, {action} {len(targets):,}", type="primary", key="monitor_bulk_confirm"):
            st.session_state.pop("monitor_bulk", None)
            bar = st.progress(0.0, text=f"{action}: 0 of {len(targets):,}")

            def advance(handled: int, total: int) -> None:
                bar.progress(handled / total, text=f"{action}: {handled:,} of {total:,}")

            act(service, index, action, targets, on_batch=advance)
        if no.button("No, leave them", key="monitor_bulk_keep"):
            st.session_state.pop("monitor_bulk", None)
            st.rerun()


def show_actions(service: JobService, index: JobIndex, chosen: list[JobRef]) -> None:
    buttons = st.columns([1, 1, 1, 4])
    if buttons[0].button(f"Retry {len(chosen)}", icon=":material/replay:", key="monitor_retry"):
        act(service, index, "retry", chosen)
    if buttons[1].button(f"Cancel {len(chosen)}", icon=":material/cancel:", key="monitor_cancel"):
        act(service, index, "cancel", chosen)
    if buttons[2].button(f"Delete {len(chosen)}", icon=":material/delete:", key="monitor_delete"):
        st.session_state["monitor_confirm_delete"] = chosen
    pending_delete = st.session_state.get("monitor_confirm_delete")
    if pending_delete:
        with st.container(border=True):
            st.warning(f"Delete {len(pending_delete)} job(s) with their images and history? This cannot be undone.")
            yes, no = st.columns([1, 5])
            if yes.button("Yes, delete", type="primary", key="monitor_confirm"):
                st.session_state.pop("monitor_confirm_delete", None)
                act(service, index, "delete", pending_delete)
            if no.button("Keep them", key="monitor_keep"):
                st.session_state.pop("monitor_confirm_delete", None)
                st.rerun()


def act(service: JobService, index: JobIndex, action: str, chosen: list[JobRef], on_batch=None) -> None:
    # Each job is changed or untouched on its own: a rerun that interrupts this loop (the user
    # pressed something else) leaves no job half-changed, and the report of what was done is lost
    # only from the screen, never from the store.
    report = run_action(service, action, chosen, index, on_batch=on_batch)
    st.session_state["monitor_report"] = (report, datetime.now(UTC))
    st.session_state["monitor_generation"] = st.session_state.get("monitor_generation", 0) + 1
    st.rerun()


def show_report() -> None:
    notice = st.session_state.pop("monitor_notice", None)
    if notice:
        st.info(notice)
    report, when = st.session_state.get("monitor_report", (None, None))
    if report is None or report_expired():
        st.session_state.pop("monitor_report", None)
        return
    (st.success if not report.refused else st.warning)(report.summary())
    for job, reason in report.refused[:20]:
        st.caption(f"{job.job_id}: {reason}")


def show_detail(service: JobService, ref: JobRef) -> None:
    try:
        job = service.get(ref.job_id, ref.project_id)
    except JobNotFound:
        st.info(f"Job {ref.job_id} no longer exists.")
        return
    except JobsError as error:
        st.error(str(error))
        return
    with st.container(border=True):
        st.subheader(f"{job.concept_inputs.get('title', 'Untitled concept')} · {job.render_type}")
        st.caption(f"{job.job_id} in {job.project_id} · {job.status.value} · attempt {job.attempts} of "
                   f"{job.max_attempts} · {job.stage}")
        left, right = st.columns(2)
        with left:
            st.markdown("**Brief**")
            st.dataframe(pd.DataFrame({"field": list(job.concept_inputs),
                                       "value": [str(v) for v in job.concept_inputs.values()]}),
                         hide_index=True, width="stretch")
            st.markdown("**Prompt**")
            st.write(job.prompt or "No prompt recorded (the drawing renderer works from the brief).")
            if job.error:
                st.error(job.error)
        with right:
            st.markdown("**Image**")
            try:
                st.image(service.image(job), width="stretch")
            except JobsError as error:
                st.caption(str(error))
        st.markdown("**History**")
        events = service.events(job.job_id, job.project_id)
        st.dataframe(pd.DataFrame([{"at": e.at, "event": e.type, "status": e.status.value, "attempt": e.attempt,
                                    "worker": e.worker_id, "progress": e.progress, "message": e.message}
                                   for e in events]),
                     hide_index=True, width="stretch",
                     column_config={"at": st.column_config.DatetimeColumn("at (UTC)", format="YYYY-MM-DD HH:mm:ss.SSS",
                                                                          timezone="UTC")})


def show_failures(table: pd.DataFrame) -> None:
    if table.empty:
        st.info("No failed jobs in this view.")
        return
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "error": st.column_config.TextColumn("error", width="large"),
        "count": st.column_config.NumberColumn("jobs"),
        "latest": time_column("latest"),
        "latest_job": st.column_config.TextColumn("latest example"),
        "latest_project": st.column_config.TextColumn("in project"),
    })


def show_charts(view: View) -> None:
    left, right = st.columns(2)
    with left:
        bucket = view.bucket
        st.markdown(f"**Jobs created per {dict([('1h', 'hour'), ('1D', 'day'), ('7D', 'week')])[bucket]}, by status**")
        if view.rows.empty:
            st.info("No jobs in this view.")
        else:
            st.bar_chart(view.over_time, stack=True, x_label="created (UTC)", y_label="jobs",
                         color=[stats.STATUS_COLORS[status][1] for status in stats.STATUS_ORDER])
    with right:
        st.markdown("**Run time of completed jobs**")
        histogram = view.histogram
        if histogram.empty:
            st.info("No completed jobs in this view.")
        else:
            st.bar_chart(histogram, x_label="run time (s)", y_label="jobs", color=stats.STATUS_COLORS["completed"][1])


def alert_threshold() -> float:
    try:
        return alerts.failure_rate_threshold()
    except JobsError as error:
        st.error(str(error))
        return alerts.DEFAULT_FAILURE_RATE


def show_alerts(index: JobIndex) -> None:
    """The banner of what needs a person now; each alert is logged once per server (alerts.py)."""
    found = index.views.alerts(utcnow(), alert_threshold())  # cached until a job or the clock changes them
    index.alerts.update(found)
    for alert in found:
        st.error(alert.message, icon=":material/notifications_active:")


def show_stuck(service: JobService, index: JobIndex, view: View) -> None:
    """Which workers the stuck jobs wait on (one line), and the detail in an expander."""
    table = view.stuck_workers
    if table.empty:
        return
    try:
        alive = {worker.worker_id for worker in service.live_workers(view.computed_at)}
    except JobsError:
        alive = set()
    named = ", ".join(f"{row.worker} ({row.jobs:,})" for row in table.head(5).itertuples())
    more = f" and {len(table) - 5} more" if len(table) > 5 else ""
    jobs = int(table["jobs"].sum())
    st.warning(f"Stuck: {jobs:,} job{'s' if jobs != 1 else ''} whose worker stopped heartbeating for longer than "
               f"the lease ({index.lease_seconds:g} s): {named}{more}. The next worker reclaims them.",
               icon=":material/hourglass_disabled:")
    with st.expander(f"Workers of stuck jobs ({len(table):,})"):
        detail = table.assign(state=["alive, but not heartbeating these jobs" if worker in alive else "not seen since"
                                     for worker in table["worker"]])
        st.dataframe(detail, hide_index=True, width="stretch",
                     column_config={"jobs": st.column_config.NumberColumn("stuck jobs"),
                                    "last_heartbeat": time_column("last heartbeat"),
                                    "state": st.column_config.TextColumn("worker")})


def show_limits(service: JobService) -> None:
    """JOBS_RENDERER_LIMITS' slots in use and providers' pauses (a job starting or ending reruns
    the page, so this stays current without a look at the store on every tick)."""
    try:
        summary = service.limit_state().summary()
    except JobsError:
        return  # the store is out of reach: the page already says so
    if summary:
        st.caption(summary)


def figures(index: JobIndex, view_filter: stats.JobFilter, run: int) -> None:
    """The alerts and headline figures, and the live tick: rerun every few seconds, this fragment
    redraws only itself (a few badges and metrics) while nothing the rest of the page shows
    changed, and the whole page when something did (a job, a running job passing the lease, a new
    project, an action's outcome due to go). Redrawing every table and chart on each tick would
    cost some 200 ms of CPU per open browser at 100,000 jobs, even with nothing new.

    `run` numbers the page's whole runs: a different one than last time means this is part of a
    whole run (draw, and remember what the rest of the page shows); the same one, a tick."""
    state = st.session_state
    view = index.views.get(view_filter, utcnow())  # cached: a dictionary lookup when nothing changed
    if state.get("monitor_figures_run") != run:
        state["monitor_figures_run"], state["monitor_drawn"] = run, view
    elif view is not state.get("monitor_drawn") or report_expired() \
            or known_projects(index) != state.get("monitor_projects_offered"):
        st.rerun(scope="app")  # the tables, charts or the Project filter (outside this fragment) changed
    if index.mode not in (WATCHING, FEED):
        st.info(index.describe_mode(), icon=":material/sync_problem:")
    if not len(index.frame()):
        st.info("No jobs in the store yet. Jobs created on the Render page, through the API or with "
                "`python -m jobs_core submit` appear here within a few seconds.")
    show_alerts(index)
    show_headline(view.headline)
    index.size.latest()  # measured in the background, at most once a minute
    st.caption(index.size.describe())


def live(service: JobService, index: JobIndex, view_filter: stats.JobFilter) -> None:
    """The stuck workers, the tabs and the jobs table: drawn by the page's whole runs, and alone
    (a fragment) when one of its own widgets changes (order, page, rows selected)."""
    started = datetime.now(UTC)
    view = index.views.get(view_filter, utcnow())  # cached until a job or the clock changes it
    show_stuck(service, index, view)
    show_limits(service)
    unreadable = index.unreadable()
    if unreadable:
        st.warning(f"{len(unreadable)} file(s) in the store are not readable jobs; see the Unreadable tab.")
    names = ["Jobs", "Projects", "Render types", "Studies", "Failures", "Charts", f"Unreadable ({len(unreadable)})"]
    tabs = st.tabs(names)
    with tabs[0]:
        show_jobs(service, index, view, view_filter)
    with tabs[1]:
        st.dataframe(view.by_project, width="stretch", column_config=group_config("project"), height=420)
    with tabs[2]:
        st.dataframe(view.by_render_type, width="stretch", column_config=group_config("render type"))
    with tabs[3]:
        if view.by_study.empty:
            st.caption("No design study among these jobs (a study is made on the Render page, Explore variations).")
        else:
            st.dataframe(view.by_study, width="stretch", column_config=group_config("study"))
    with tabs[4]:
        show_failures(view.failures)
    with tabs[5]:
        show_charts(view)
    with tabs[6]:
        if unreadable:
            st.dataframe(pd.DataFrame([{"file": bad.location, "reason": bad.reason} for bad in unreadable]),
                         hide_index=True, width="stretch")
        else:
            st.caption("Every file in the store is a readable job.")
    elapsed = (datetime.now(UTC) - started).total_seconds()
    st.caption(f"{index.describe_mode()} {len(index.frame()):,} jobs indexed; view computed at "
               f"{view.computed_at:%H:%M:%S} UTC, shown in {elapsed * 1000:.0f} ms.")


def report_expired() -> bool:
    report, when = st.session_state.get("monitor_report", (None, None))
    return report is not None and datetime.now(UTC) - when > timedelta(seconds=REPORT_SECONDS)


# -- the page ----------------------------------------------------------------------------------------
st.title("Monitor")
runtime = app_runtime()
service = runtime.service
try:
    with st.spinner("Indexing every job in the store…"):  # shown only if it takes over half a second
        index = runtime.monitor_index()
except JobsError as error:
    st.error(str(error))
    st.stop()
header = st.columns([4, 1])
header[0].caption(f"Every project's jobs in {service.store.describe()}.")
live_updates = header[1].toggle("Live", value=True, key="monitor_live",
                                help=f"refresh every {REFRESH_SECONDS} s from the index")
view_filter = read_filters(index)
st.session_state["monitor_runs"] = st.session_state.get("monitor_runs", 0) + 1
st.fragment(figures, run_every=REFRESH_SECONDS if live_updates else None)(index, view_filter,
                                                                           st.session_state["monitor_runs"])
st.fragment(live)(service, index, view_filter)
