"""What the pages share: the app's one runtime per server process, reached through `app_runtime()`.

It lives in the package's __init__ because that is the one file in pages/ Streamlit never lists
as a page: with a pages/ folder present, the first script run of a fresh server uses Streamlit's
older folder navigation (every other .py file here becomes a page) until app.py's st.navigation
takes over. This module holds the only Streamlit-side state that outlives a session: the cached
runtime.
"""
from __future__ import annotations

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


def app_runtime() -> AppRuntime:
    """The runtime shared by every session of this server process.

    On a bad JOBS_* setting or an unusable store it says so on the page and stops the script.
    """
    try:
        copy_secrets_to_environment()
        return runtime_for(load_app_settings())
    except (JobsError, OSError) as error:  # no traceback for a person: one sentence they can act on
        st.error(f"The app cannot start: {error}")
        st.stop()
