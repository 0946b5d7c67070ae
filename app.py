"""Streamlit entry: the shared runtime, its status in the sidebar, navigation over pages/."""
from pathlib import Path

import streamlit as st

from jobs_core import JobsError
from jobs_core.app_runtime import AppRuntime
from jobs_core.artifacts import StoreRenders
from jobs_core.words import count_text, plain, renderer_name
from pages import app_runtime, navigation

# A local icon: an emoji or a :material/...: icon would make the browser fetch it from a CDN,
# and the app must work with no request leaving the machine.
FAVICON = Path(__file__).parent / ".streamlit" / "favicon.png"
st.set_page_config(page_title="Concept render jobs", page_icon=str(FAVICON), layout="wide")


def show_runtime_status(runtime: AppRuntime) -> None:
    """The sidebar: who is rendering, in plain words; where the store is, under Details."""
    service = runtime.service
    with st.sidebar:
        if runtime.workers_running:
            worker = runtime.worker
            busy = len(worker.running_jobs())
            st.success(f"This server renders in the background: {count_text(busy, 'render')} in progress.",
                       icon=":material/check_circle:")
            if worker.store_problem:  # e.g. the disk is full: say it as a sentence, keep it short
                st.error(f"Rendering is paused: the job store cannot be written ({worker.store_problem}).",
                         icon=":material/error:")
        elif runtime.worker is None:
            st.warning("This server does not render by itself: renders wait until a separate worker "
                       "picks them up.", icon=":material/pause_circle:")
        else:
            st.error("This server's background rendering has stopped; ask whoever runs it to restart it.",
                     icon=":material/error:")
        try:
            own = runtime.worker.worker_id if runtime.worker else None
            others = [info for info in service.live_workers() if info.worker_id != own]
            queued = len(service.store.pending())
        except JobsError as error:
            st.error(f"The job store cannot be read: {error}")
            return
        for info in others:
            if info.problem:
                st.warning(f"A worker elsewhere has paused: {plain(info.problem)}", icon=":material/warning:")
        st.caption(f"{count_text(queued, 'render')} waiting to start"
                   + (f" · {count_text(len(others), 'other worker')} at work" if others else "") + ".")
        with st.expander("Details"):
            st.caption("Store")
            st.code(service.store.describe(), language=None, wrap_lines=True)
            if not isinstance(service.renders, StoreRenders):  # a bucket (JOBS_ARTIFACTS_URL)
                st.caption(f"Renders: {service.renders.describe()}")
            if runtime.worker is not None:
                st.caption(f"Worker `{runtime.worker.worker_id}`: {count_text(runtime.worker.concurrency, 'thread')}"
                           f", renderers {', '.join(sorted(runtime.worker.renderers)) or 'none'}.")
            else:
                st.caption("No worker in this app (JOBS_APP_WORKERS=0): start `python -m jobs_core worker`.")
            for info in others:
                names = ", ".join(renderer_name(name) for name in info.renderers)
                st.caption(f"Worker `{info.worker_id}` (seen {info.seen_at:%H:%M:%S} UTC): {plain(names)}")


# Navigation first: until it is declared, the first run of a fresh server shows Streamlit's
# folder navigation (every file in pages/), and a click there would run a page without this script.
page = navigation()
show_runtime_status(app_runtime())  # also the check of the settings: a bad one stops here, explained
page.run()
