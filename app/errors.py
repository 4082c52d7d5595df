"""problem+json (RFC 9457) for every error the API can answer; never a stack trace.

Views raise ApiError for what is about HTTP itself (a bad query parameter, a missing token);
services raise the domain exceptions of app/exceptions.py, mapped to their answers here.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from app.deadline import CommitUnconfirmed, DeadlineExceeded
from app.exceptions import (
    DomainError,
    Forbidden,
    Invalid,
    InvalidCursor,
    KeyInFlight,
    KeyReused,
    NotFound,
    OutcomeUnknown,
)

log = logging.getLogger(__name__)

PROBLEM_MIMETYPE = "application/problem+json"
# Seconds a client should wait before retrying a 503 (database unreachable).
UNAVAILABLE_RETRY_AFTER = 5

# Every `code` a problem body can carry (the OpenAPI document's enum; tests keep it complete).
PROBLEM_CODES = (
    "invalid_parameter",
    "invalid_cursor",
    "invalid_json",
    "invalid_idempotency_key",
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "not_acceptable",
    "request_timeout",
    "payload_too_large",
    "uri_too_long",
    "unsupported_media_type",
    "validation_failed",
    "idempotency_key_in_use",
    "idempotency_key_reused",
    "header_too_large",
    "rate_limited",
    "internal_error",
    "not_implemented",
    "outcome_unknown",
    "unavailable",
    "error",
)

_CODES_BY_STATUS = {
    400: "invalid_parameter",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_failed",
    429: "rate_limited",
    503: "unavailable",
}


class ApiError(Exception):
    """An error the API answers on purpose, with a stable machine-readable code."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        title: str | None = None,
        errors: dict[str, list[str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title or code.replace("_", " ").capitalize()
        self.errors = errors
        self.headers = headers or {}


def invalid_parameter(detail: str, errors: dict[str, list[str]] | None = None) -> ApiError:
    return ApiError(400, "invalid_parameter", detail, title="Invalid parameter", errors=errors)


def validation_failed(errors: dict[str, list[str]], detail: str = "The request body is invalid.") -> ApiError:
    return ApiError(422, "validation_failed", detail, title="Validation failed", errors=errors)


def problem_for(exc: DomainError) -> ApiError:
    """The answer to a domain exception (app/exceptions.py)."""
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", exc.detail, title="Not found")
    if isinstance(exc, Forbidden):
        return ApiError(403, "forbidden", exc.detail, title="Forbidden")
    if isinstance(exc, Invalid):
        return validation_failed(exc.errors, exc.detail)
    if isinstance(exc, InvalidCursor):
        return ApiError(400, "invalid_cursor", exc.detail, title="Invalid cursor", errors={"cursor": [exc.detail]})
    if isinstance(exc, KeyInFlight):
        retry = {"Retry-After": "1"}
        return ApiError(409, "idempotency_key_in_use", exc.detail, title="Request in progress", headers=retry)
    if isinstance(exc, KeyReused):
        return ApiError(422, "idempotency_key_reused", exc.detail, title="Idempotency key reused")
    if isinstance(exc, OutcomeUnknown):
        # 503, but no Retry-After: repeating a write that may have been applied could apply it twice.
        return ApiError(503, "outcome_unknown", exc.detail, title="Outcome unknown")
    raise TypeError(f"no problem+json mapping for {type(exc).__name__}")


def unavailable(detail: str = "The service is temporarily unavailable; retry later.") -> ApiError:
    return ApiError(
        503,
        "unavailable",
        detail,
        title="Service unavailable",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def problem_body(err: ApiError) -> bytes:
    body: dict[str, Any] = {
        "type": f"/problems/{err.code}",
        "title": err.title,
        "status": err.status,
        "detail": err.detail,
        "code": err.code,
    }
    if err.errors:
        body["errors"] = err.errors
    return orjson.dumps(body)


def problem_response(err: ApiError) -> Response:
    response = Response(problem_body(err), status=err.status, mimetype=PROBLEM_MIMETYPE)
    response.headers.update(err.headers)
    response.headers["Cache-Control"] = "no-store"
    return response


def _from_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _CODES_BY_STATUS.get(status, "error" if status >= 500 else "bad_request")
    detail = exc.description or exc.name
    if status == 404:
        detail = "No resource lives at this URL."
    err = ApiError(status, code, detail)
    response = problem_response(err)
    if status == 405 and exc.get_response().headers.get("Allow"):
        response.headers["Allow"] = exc.get_response().headers["Allow"]
    return response


def _from_database_error(exc: Exception) -> Response:
    log.warning("database unavailable: %s", type(exc).__name__)
    return problem_response(unavailable())


def _from_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error")
    return problem_response(
        ApiError(500, "internal_error", "The server failed to answer this request.", title="Internal server error")
    )


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(ApiError, problem_response)
    app.register_error_handler(DomainError, lambda exc: problem_response(problem_for(exc)))
    app.register_error_handler(HTTPException, _from_http_exception)
    # Connection-level failures (server down, pool exhausted) are a 503, not a 500.
    app.register_error_handler(PoolTimeout, _from_database_error)
    app.register_error_handler(DeadlineExceeded, _from_database_error)  # deadline.check(), unwrapped
    app.register_error_handler(DBAPIError, _database_or_unexpected)
    app.register_error_handler(Exception, _from_unexpected)


def unconfirmed(exc: BaseException) -> bool:
    """A write whose outcome nobody can tell now (COMMIT cut short by the database deadline)."""
    return isinstance(exc, OutcomeUnknown) or (isinstance(exc, DBAPIError) and isinstance(exc.orig, CommitUnconfirmed))


def _database_or_unexpected(exc: DBAPIError) -> Response:
    if isinstance(exc.orig, CommitUnconfirmed):
        log.warning("write outcome unknown: %s", type(exc.orig).__name__)
        return problem_response(problem_for(OutcomeUnknown()))
    if exc.connection_invalidated or isinstance(exc, OperationalError):
        return _from_database_error(exc)
    return _from_unexpected(exc)
