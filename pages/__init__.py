"""What the pages share: the app's navigation, its one runtime per server process (reached
through `app_runtime()`), the watcher that pushes job changes to pages, and kept direct renders.

It lives in the package's __init__ because that is the one file in pages/ Streamlit never lists
as a page. With a pages/ folder next to app.py, Streamlit 1.67 serves the first script run of a
fresh server with its older folder navigation (a raw "app / monitor / render" list) until some run
calls st.navigation; a bookmark to /monitor on a fresh server would run pages/monitor.py alone,
without app.py's sidebar. `app_runtime()`, which every page calls first, declares the app's own
navigation in that case and reruns, so the same URL shows the real page (see `navigation()`).
"""
from __future__ import annotations

import threading

import streamlit as st

from jobs_core import JobsError
from jobs_core.app_runtime import AppRuntime
from jobs_core.app_settings import AppSettings, load_app_settings
from jobs_core.provider_keys import copy_provider_keys


@st.cache_resource(show_spinner=False, on_release=AppRuntime.stop)
def runtime_for(settings: AppSettings) -> AppRuntime:
    """The cached runtime for `settings`: one per server process, since the settings come from the
    environment, which does not change while the server runs.

    Created on first use (never at import time); released (watcher and workers stopped, running
    jobs handed back to the queue) when the cache is cleared. Pages call `app_runtime()`.
    """
    return AppRuntime.start(settings)


def copy_secrets_to_environment() -> None:
    # A missing or unreadable secrets file is normal (keys may come from the environment).
    if st.secrets.load_if_toml_exists():
        copy_provider_keys(st.secrets.to_dict())


PAGES = [("pages/render.py", "Render", ":material/palette:"), ("pages/monitor.py", "Monitor", ":material/monitoring:")]
_navigation_declared = threading.Event()  # once st.navigation ran in this process, Streamlit uses it for good


def navigation() -> st.navigation:
    """The app's pages (Render first, the default, at "/"), declared to Streamlit.

    The default page is served at the root, so a hidden second entry keeps /render working too
    (a link or a bookmark made from the page's name).
    """
    pages = [st.Page(path, title=title, icon=icon, default=index == 0, url_path="start" if index == 0 else None)
             for index, (path, title, icon) in enumerate(PAGES)]
    render_path, render_title, render_icon = PAGES[0]
    pages.append(st.Page(render_path, title=render_title, icon=render_icon, url_path="render", visibility="hidden"))
    declared = st.navigation(pages)
    _navigation_declared.set()
    return declared


def app_runtime() -> AppRuntime:
    """The runtime shared by every session of this server process.

    On a bad JOBS_* setting or an unusable store it says so on the page and stops the script.
    A page run by Streamlit's folder navigation (the first run of a fresh server, on a page's own
    URL) declares the app's navigation and reruns: the rerun goes through app.py, on the same URL.
    """
    if not _navigation_declared.is_set():
        navigation()
        st.rerun()
    try:
        copy_secrets_to_environment()
        return runtime_for(load_app_settings())
    except (JobsError, OSError) as error:  # no traceback for a person: one sentence they can act on
        st.error(f"The app cannot start: {error}")
        st.stop()


class JobChanges:
    """Tells a waiting page that a job changed, as soon as the store says so (`watch_jobs`: a file
    watcher, PostgreSQL notifications, the memory store's own writes), so the render page shows a
    finished image without waiting out a poll interval. One per server process."""

    def __init__(self, runtime: AppRuntime) -> None:
        self._changed = threading.Condition()
        self._versions: dict[str, int] = {}
        self._store = runtime.service.store
        self._watch = self._store.watch_jobs(self._on_change, poll_seconds=runtime.settings.poll_seconds)

    def _on_change(self, keys: set[str]) -> None:  # the watcher's thread
        with self._changed:
            for key in keys:
                self._versions[key] = self._versions.get(key, 0) + 1
            self._changed.notify_all()

    def version(self, project_id: str, job_id: str) -> int:
        with self._changed:
            return self._versions.get(self._store.record_key(project_id, job_id), 0)

    def wait(self, project_id: str, job_id: str, seen: int, seconds: float) -> int:
        """Block until the job's version differs from `seen`, or `seconds` pass; the version now."""
        key = self._store.record_key(project_id, job_id)
        with self._changed:
            self._changed.wait_for(lambda: self._versions.get(key, 0) != seen, seconds)
            return self._versions.get(key, 0)

    def close(self) -> None:
        self._watch.close()


@st.cache_resource(show_spinner=False, on_release=JobChanges.close)
def _job_changes_for(settings: AppSettings) -> JobChanges:
    return JobChanges(runtime_for(settings))


def job_changes() -> JobChanges:
    """The server process's one watcher of job changes (started on first use)."""
    return _job_changes_for(app_runtime().settings)


@st.cache_resource(show_spinner=False)
def _direct_renders(settings: AppSettings) -> dict[str, list]:
    return {}


def direct_renders(project_id: str) -> list:
    """This server process's direct renders (no job) of a project, newest first: kept so a reload
    does not lose them; they are not in the store, so a restart does."""
    return _direct_renders(app_runtime().settings).setdefault(project_id, [])
