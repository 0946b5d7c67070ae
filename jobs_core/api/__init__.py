"""The HTTP API: the seed's endpoints (create, poll, process) plus list, cancel, retry, images,
events and health. FastAPI is imported only when the app is built, so `jobs_core.client` and
`jobs_core.api.schemas` stay light to import.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import ApiSettings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = ["ApiSettings", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> FastAPI:
    """See `jobs_core.api.app.create_app`."""
    from .app import create_app as build

    return build(*args, **kwargs)
