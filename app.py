"""Streamlit entry: the shared runtime, its status in the sidebar, navigation over pages/."""
import streamlit as st

from jobs_core import JobsError
from jobs_core.app_runtime import AppRuntime, live_workers
from pages import app_runtime

st.set_page_config(page_title="Concept render jobs", page_icon=":material/apartment:", layout="wide")


def show_runtime_status(runtime: AppRuntime) -> None:
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


# Navigation first: until it is declared, the first run of a fresh server shows Streamlit's
# folder navigation (every file in pages/), and a click there would run a page without this script.
navigation = st.navigation([
    st.Page("pages/render.py", title="Render", icon=":material/palette:", default=True),
    st.Page("pages/monitor.py", title="Monitor", icon=":material/monitoring:"),
])
show_runtime_status(app_runtime())  # also the check of the settings: a bad one stops here, explained
navigation.run()
