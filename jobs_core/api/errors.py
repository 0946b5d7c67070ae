"""Every error leaves the API as JSON `{"error": "<a sentence>"}` with a fitting status.

Validation problems in the body are 422, in the path, query or headers 400; a body that is not
JSON at all is 400; a damaged job document 409; a store that cannot write or be reached 503 with
Retry-After. Any other 5xx is a bug, logged with its traceback.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from .. import metrics
from ..errors import (
    InvalidInput,
    JobNotFound,
    RendersUnavailable,
    StoreUnavailable,
    StoreWriteError,
    TransitionConflict,
    UnreadableJob,
)
from ..models import shown_input

log = logging.getLogger("jobs_core.api")


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit} bytes.")


class BodyTimeout(Exception):
    """The client did not send its whole body in time (see guard.BODY_SECONDS)."""


class BadRequestBody(InvalidInput):
    """InvalidInput about the body's content: 422 rather than 400."""


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _sentence(item: Mapping[str, Any]) -> str:
    source, *rest = [str(part) for part in item["loc"]] or ["body"]
    kind, message = item["type"], str(item["msg"])
    if source == "body" and not rest:
        if kind == "missing":
            return "The request body is required: send a JSON object"
        if isinstance(item.get("input"), (bytes, str)):
            return "The request body must be a JSON object sent with Content-Type: application/json"
        return "The request body must be a JSON object"
    where = ".".join(rest) if source == "body" else f"{'.'.join(rest)} ({source})"
    if kind == "value_error":  # our validators wrote a whole sentence naming the field
        return message.removeprefix("Value error, ").rstrip(".")
    message = message.replace("Input should be", "must be").replace("Field required", "is required")
    message = message.replace("Extra inputs are not permitted", "is not a known field")
    message = message.replace("must be a valid dictionary or object to extract fields from", "must be a JSON object")
    message = message.replace("less than or equal to", "at most").replace("greater than or equal to", "at least")
    shown = "" if kind == "missing" else shown_input(item.get("input"))
    return f"{where} {message}{shown}"


def describe_validation(errors: Sequence[Mapping[str, Any]]) -> tuple[int, str]:
    """(status, sentences) for FastAPI's validation errors."""
    for item in errors:
        if item["type"] == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", "syntax error")
            return 400, f"The request body is not valid JSON ({reason})."
    status = 422 if all(item["loc"] and item["loc"][0] == "body" for item in errors) else 400
    return status, "; ".join(dict.fromkeys(_sentence(item) for item in errors)) + "."


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response(*describe_validation(error.errors()))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        if isinstance(error.__cause__, BodyTooLarge):  # raised while FastAPI read the body
            return error_response(413, str(error.__cause__))
        if isinstance(error.__cause__, BodyTimeout):
            return error_response(408, str(error.__cause__), {"Connection": "close"})
        if isinstance(error.__cause__, UnicodeDecodeError):  # a JSON body in no encoding JSON allows
            return error_response(400, "The request body is not valid JSON (not UTF-8, UTF-16 or UTF-32 text).")
        if error.status_code == 400 and str(error.detail).startswith("There was an error parsing the body"):
            return error_response(400, "The request body could not be read as JSON (it may hold a number with "
                                       "thousands of digits, or be nested too deep).")
        if error.status_code == 404:
            message = f"No such endpoint: {request.method} {request.url.path}."
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        else:
            message = str(error.detail).rstrip(".") + "."
        return error_response(error.status_code, message, error.headers)

    @app.exception_handler(BodyTimeout)
    async def _body_timeout(request: Request, error: BodyTimeout) -> JSONResponse:
        return error_response(408, str(error), {"Connection": "close"})

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return error_response(413, str(error))

    @app.exception_handler(BadRequestBody)
    async def _bad_body(request: Request, error: BadRequestBody) -> JSONResponse:
        return error_response(422, str(error))

    @app.exception_handler(InvalidInput)
    async def _invalid(request: Request, error: InvalidInput) -> JSONResponse:
        return error_response(400, str(error))

    @app.exception_handler(JobNotFound)
    async def _not_found(request: Request, error: JobNotFound) -> JSONResponse:
        return error_response(404, str(error))

    @app.exception_handler(TransitionConflict)
    async def _conflict(request: Request, error: TransitionConflict) -> JSONResponse:
        return error_response(409, str(error))

    @app.exception_handler(UnreadableJob)
    async def _unreadable(request: Request, error: UnreadableJob) -> JSONResponse:
        # The store holds something at the job's place that is not its document (damaged, or put
        # there by someone else): the job cannot be served as it is, which is a conflict, not a bug.
        log.error("unreadable job document: %s", error)  # the path goes to the log, not the client
        return error_response(409, "The stored job document is unreadable; an operator must repair or delete it.")

    @app.exception_handler(StoreUnavailable)
    async def _store_unavailable(request: Request, error: StoreUnavailable) -> JSONResponse:
        log.error("store unavailable: %s", error)
        metrics.store_error("api", error)
        return error_response(503, "The job store is unavailable for the moment; try again in a few seconds.",
                              {"Retry-After": "5"})

    @app.exception_handler(StoreWriteError)
    async def _store_write(request: Request, error: StoreWriteError) -> JSONResponse:
        log.error("store write failed: %s", error)
        metrics.store_error("api", error)
        return error_response(503, str(error), {"Retry-After": "10"})

    @app.exception_handler(RendersUnavailable)
    async def _renders_unavailable(request: Request, error: RendersUnavailable) -> JSONResponse:
        log.error("renders unavailable: %s", error)
        return error_response(503, "The storage that keeps renders is unavailable for the moment; try again in a "
                              "few seconds.", {"Retry-After": "5"})

    @app.exception_handler(Exception)
    async def _bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "Internal error; the server log has the details.")
