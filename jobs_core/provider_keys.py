"""AI provider keys: copied from the app's secrets into the environment, where renderers read them."""
from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

#: Provider keys the app copies from Streamlit secrets into the environment when not already set.
PROVIDER_KEYS = ("OPENAI_API_KEY", "STABILITY_API_KEY", "REPLICATE_API_TOKEN", "GEMINI_API_KEY",
                 "GOOGLE_API_KEY", "FAL_KEY", "HF_TOKEN")


def copy_provider_keys(secrets: Mapping[str, Any], environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Copy known provider keys from `secrets` (its `[providers]` table, else its top level) into
    the environment where they are not set yet.

    Returns the names copied (never the values). The environment wins: a key exported in the shell
    is not overridden by a secrets file.
    """
    environ = os.environ if environ is None else environ
    table = secrets.get("providers")
    sources = [table, secrets] if isinstance(table, Mapping) else [secrets]
    copied = []
    for name in PROVIDER_KEYS:
        value = next((source[name] for source in sources if source.get(name)), None)
        if isinstance(value, str) and not environ.get(name):
            environ[name] = value
            copied.append(name)
    return copied
