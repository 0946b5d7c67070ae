"""Monitor page: every project's jobs, completion rates, failures and stuck work, live.

Thin: the numbers come from `jobs_core.monitor` (an index of every job, kept current by a watcher,
held by the app's runtime); changes go through the runtime's `JobService`. The browser gets
aggregates and one page of rows.
"""
from __future__ import annotations

import hashlib
import os
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd
import streamlit as st

from jobs_core import JobNotFound, JobsError, JobService
from jobs_core.models import utcnow
from jobs_core.monitor import JobIndex, stats
from jobs_core.monitor.actions import JobRef, run_action
from jobs_core.monitor.index import FEED, WATCHING
from pages import app_runtime

REFRESH_SECONDS = 3
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
def read_filters(index: JobIndex) -> stats.JobFilter:
    projects_known = index.memo("projects", lambda frame: sorted(frame["project"].unique()))
    render_types_known = index.memo("render_types", lambda frame: sorted(frame["render_type"].unique()))
    with st.container(border=True):
        cols = st.columns([3, 2, 2, 2, 2])
        projects = cols[0].multiselect("Project", projects_known, key="filter_projects",
                                       placeholder="all projects")
        statuses = cols[1].multiselect("Status", stats.STATUS_ORDER + [stats.STUCK], key="filter_statuses",
                                       placeholder="all statuses",
                                       help="stuck: processing, with a heartbeat older than the lease")
        render_types = cols[2].multiselect("Render type", render_types_known,
                                           key="filter_render_types", placeholder="all render types")
        period = cols[3].date_input("Created between", value=(), key="filter_period", format="YYYY-MM-DD")
        error_text = cols[4].text_input("Error contains", key="filter_error", placeholder="e.g. timed out")
    start = end = None
    if isinstance(period, (tuple, list)) and len(period) >= 1:
        start = datetime.combine(period[0], time.min, UTC)
        last: date = period[1] if len(period) == 2 else period[0]
        end = datetime.combine(last + timedelta(days=1), time.min, UTC)
    return stats.JobFilter(tuple(projects), tuple(statuses), tuple(render_types), start, end, error_text)


# -- the live part ---------------------------------------------------------------------------------
def show_headline(figures: stats.Headline) -> None:
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
        "last_activity": st.column_config.DatetimeColumn("last activity", format="YYYY-MM-DD HH:mm:ss"),
        "_index": st.column_config.TextColumn(label),
    }


def table_key(view_filter: stats.JobFilter, sort: str, size: int, page: int) -> str:
    # A new key per view (and per action) starts with no selection, so a selection always means
    # rows of the page the user is looking at.
    generation = st.session_state.setdefault("monitor_generation", 0)
    digest = hashlib.sha1(repr((view_filter, sort, size, page)).encode()).hexdigest()[:10]
    return f"monitor_jobs_{generation}_{digest}"


def page_rows(index: JobIndex, view: pd.DataFrame, key: str, sort: str, size: int, page: int) -> pd.DataFrame:
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
    rows = stats.page_of(view, page, size, sort)
    st.session_state["monitor_shown"] = {key: list(rows.index)}
    return rows


def display_table(rows: pd.DataFrame, now: datetime, lease_seconds: float) -> pd.DataFrame:
    table = rows.reset_index(drop=True)[["job", "project", "render_type", "status", "progress", "stage",
                                         "attempts", "created", "started", "finished", "run_time",
                                         "queue_wait", "error", "worker", "image_url"]].copy()
    table.insert(4, "stuck", stats.stuck_mask(rows, now, lease_seconds).to_numpy())
    # Images are served by the API; JOBS_API_URL says where it runs (else the link is relative).
    api = os.environ.get("JOBS_API_URL", "").rstrip("/")
    table["image_url"] = [api + url if isinstance(url, str) else None for url in table["image_url"]]
    return table


JOB_COLUMNS = {
    "job": st.column_config.TextColumn("job", width="medium"),
    "render_type": st.column_config.TextColumn("render type"),
    "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=100, format="%d%%"),
    "stuck": st.column_config.CheckboxColumn("stuck", help="heartbeat older than the lease"),
    "created": st.column_config.DatetimeColumn("created", format="YYYY-MM-DD HH:mm:ss"),
    "started": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm:ss"),
    "finished": st.column_config.DatetimeColumn("finished", format="YYYY-MM-DD HH:mm:ss"),
    "run_time": st.column_config.NumberColumn("run time", format="%.1f s"),
    "queue_wait": st.column_config.NumberColumn("queue wait", format="%.1f s"),
    "error": st.column_config.TextColumn("error", width="large"),
    "image_url": st.column_config.LinkColumn("image", display_text="open image",
                                             help="served by the API (python -m jobs_core serve; set JOBS_API_URL)"),
}


def show_jobs(service: JobService, index: JobIndex, view: pd.DataFrame, view_filter: stats.JobFilter,
              now: datetime) -> None:
    controls = st.columns([2, 1, 1, 3])
    sort = controls[0].selectbox("Order", list(stats.SORTS), key="monitor_sort")
    size = controls[1].selectbox("Rows per page", PAGE_SIZES, index=1, key="monitor_page_size")
    pages = stats.page_count(len(view), size)
    if st.session_state.get("monitor_page", 1) > pages:
        st.session_state["monitor_page"] = pages  # the view shrank (a filter, deletions): stay in range
    page = int(controls[2].number_input("Page", min_value=1, max_value=pages, step=1, key="monitor_page",
                                        help=f"of {pages:,}"))
    with controls[3]:
        st.download_button("Export the filtered jobs (CSV)", data=lambda: view.to_csv(index=False).encode(),
                           file_name="jobs.csv", mime="text/csv", icon=":material/download:",
                           help=f"{len(view):,} rows, every column", on_click="ignore")
    key = table_key(view_filter, sort, size, page)
    rows = page_rows(index, view, key, sort, size, page)
    event = st.dataframe(display_table(rows, now, index.lease_seconds), key=key, on_select="rerun",
                         selection_mode="multi-row", hide_index=True, column_config=JOB_COLUMNS,
                         width="stretch")
    st.caption(f"Page {page:,} of {pages:,}: {len(rows):,} of {len(view):,} jobs. Select rows to act on them; "
               "select one to see its brief, image and history.")
    chosen = [JobRef(rows.iloc[i]["project"], rows.iloc[i]["job"]) for i in event.selection.rows if i < len(rows)]
    show_report()
    if chosen:
        show_actions(service, index, chosen)
    if len(chosen) == 1:
        show_detail(service, chosen[0])


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


def act(service: JobService, index: JobIndex, action: str, chosen: list[JobRef]) -> None:
    report = run_action(service, action, chosen, index)
    st.session_state["monitor_report"] = (report, datetime.now())
    st.session_state["monitor_generation"] = st.session_state.get("monitor_generation", 0) + 1
    st.rerun()


def show_report() -> None:
    notice = st.session_state.pop("monitor_notice", None)
    if notice:
        st.info(notice)
    report, when = st.session_state.get("monitor_report", (None, None))
    if report is None or datetime.now() - when > timedelta(seconds=REPORT_SECONDS):
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
                     column_config={"at": st.column_config.DatetimeColumn("at", format="YYYY-MM-DD HH:mm:ss.SSS")})


def show_failures(view: pd.DataFrame) -> None:
    table = stats.failures_by_error(view)
    if table.empty:
        st.info("No failed jobs in this view.")
        return
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "error": st.column_config.TextColumn("error", width="large"),
        "count": st.column_config.NumberColumn("jobs"),
        "latest": st.column_config.DatetimeColumn("latest", format="YYYY-MM-DD HH:mm:ss"),
        "latest_job": st.column_config.TextColumn("latest example"),
        "latest_project": st.column_config.TextColumn("in project"),
    })


def show_charts(view: pd.DataFrame) -> None:
    left, right = st.columns(2)
    with left:
        bucket = stats.time_bucket(view)
        st.markdown(f"**Jobs created per {dict([('1h', 'hour'), ('1D', 'day'), ('7D', 'week')])[bucket]}, by status**")
        if view.empty:
            st.info("No jobs in this view.")
        else:
            st.bar_chart(stats.jobs_over_time(view, bucket), stack=True, x_label="created", y_label="jobs")
    with right:
        st.markdown("**Run time of completed jobs**")
        histogram = stats.run_time_histogram(view)
        if histogram.empty:
            st.info("No completed jobs in this view.")
        else:
            st.bar_chart(histogram, x_label="run time (s)", y_label="jobs")


def live(service: JobService, index: JobIndex, view_filter: stats.JobFilter) -> None:
    started = datetime.now()
    frame = index.frame()
    now = utcnow()
    view = view_filter.apply(frame, now, index.lease_seconds)
    if index.mode not in (WATCHING, FEED):
        st.info(index.describe_mode(), icon=":material/sync_problem:")
    if frame.empty:
        st.info("No jobs in the store yet. Jobs created on the Render page, through the API or with "
                "`python -m jobs_core submit` appear here within a few seconds.")
    show_headline(stats.headline(view, now, index.lease_seconds))
    unreadable = index.unreadable()
    if unreadable:
        st.warning(f"{len(unreadable)} file(s) in the store are not readable jobs; see the Unreadable tab.")
    names = ["Jobs", "Projects", "Render types", "Failures", "Charts", f"Unreadable ({len(unreadable)})"]
    tabs = st.tabs(names)
    with tabs[0]:
        show_jobs(service, index, view, view_filter, now)
    with tabs[1]:
        st.dataframe(stats.by_group(view, "project", now, index.lease_seconds), width="stretch",
                     column_config=group_config("project"), height=420)
    with tabs[2]:
        st.dataframe(stats.by_group(view, "render_type", now, index.lease_seconds), width="stretch",
                     column_config=group_config("render type"))
    with tabs[3]:
        show_failures(view)
    with tabs[4]:
        show_charts(view)
    with tabs[5]:
        if unreadable:
            st.dataframe(pd.DataFrame([{"file": bad.location, "reason": bad.reason} for bad in unreadable]),
                         hide_index=True, width="stretch")
        else:
            st.caption("Every file in the store is a readable job.")
    elapsed = (datetime.now() - started).total_seconds()
    st.caption(f"{index.describe_mode()} {len(frame):,} jobs indexed; view computed at "
               f"{datetime.now():%H:%M:%S} in {elapsed * 1000:.0f} ms.")


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
st.fragment(live, run_every=REFRESH_SECONDS if live_updates else None)(service, index, view_filter)
