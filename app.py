"""Streamlit entry: provider keys, one worker pool per server process, navigation over pages/."""
import streamlit as st

from jobs_core import JobsError
from jobs_core.config import load_settings
from jobs_core.embedded import (
    EmbeddedRuntime,
    app_worker_count,
    copy_provider_keys,
    live_workers,
    start_runtime,
    store_location,
)
from jobs_core.renderers import get_renderer

st.set_page_config(page_title="Concept render jobs", page_icon=":material/apartment:", layout="wide")


@st.cache_resource(show_spinner=False, on_release=EmbeddedRuntime.stop)
def embedded_runtime(location: str, workers: int) -> EmbeddedRuntime:
    """One service and worker pool per server process and store, shared by every session.

    Created on first use (never at import time); released (workers stopped, running jobs handed
    back to the queue) when the cache is cleared.
    """
    return start_runtime(location, workers)


def copy_secrets_to_environment() -> None:
    # A missing or unreadable secrets file is normal (keys may come from the environment).
    if st.secrets.load_if_toml_exists():
        copy_provider_keys(st.secrets.to_dict())


def show_runtime_status(runtime: EmbeddedRuntime) -> None:
    """The sidebar: where the store is and which workers are running."""
    service = runtime.service
    with st.sidebar:
        st.caption("Store")
        st.code(service.store.describe(), language=None, wrap_lines=True)
        if runtime.workers_running:
            worker = runtime.worker
            busy = len(worker.running_jobs())
            st.success(f"This app runs {worker.concurrency} worker thread(s), {busy} busy.",
                       icon=":material/settings:")
        elif runtime.worker is None:
            st.warning("This app runs no worker (JOBS_APP_WORKERS=0): jobs wait for an external "
                       "`python -m jobs_core worker`.", icon=":material/pause_circle:")
        else:
            st.error("This app's workers have stopped; restart the app or run `python -m jobs_core worker`.",
                     icon=":material/error:")
        try:
            own = runtime.worker.worker_id if runtime.worker else None
            others = [worker_id for worker_id in live_workers(service) if worker_id != own]
            queued = len(service.store.pending())
        except JobsError as error:
            st.error(f"Cannot read the store: {error}")
            return
        if others:
            st.caption(f"Other workers at work (recent heartbeats): {', '.join(others)}")
        st.caption(f"Jobs waiting in the queue: {queued}")


try:
    copy_secrets_to_environment()
    get_renderer(load_settings().renderer)  # JOBS_RENDERER must name a known renderer
    runtime = embedded_runtime(store_location(), app_worker_count())
except (JobsError, OSError) as error:  # a bad JOBS_* setting or an unusable store: say so, no traceback
    st.error(f"The app cannot start: {error}")
    st.stop()

st.session_state["runtime"] = runtime  # pages read the shared runtime from here
show_runtime_status(runtime)
navigation = st.navigation([
    st.Page("pages/render.py", title="Render", icon=":material/palette:", default=True),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
])
navigation.run()
