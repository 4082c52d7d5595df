"""The Idempotency-Key header on creating writes (IETF httpapi draft, as Stripe does it).

A client that sends `Idempotency-Key: "<key>"` (a Structured Field String; a bare token is
accepted too) with POST /posts or POST /posts/{id}/comments may repeat that request as often as
it likes: the first one that commits is the only write, and every repetition gets its answer
again (status, body and Location, with `Idempotent-Replayed: true`), without running the write or
counting against the rate limit. The same key with another method, path or body is 422
`idempotency_key_reused`; while the first request is still in flight, 409
`idempotency_key_in_use` (with Retry-After). A request that fails (4xx, 5xx) records nothing,
so it may be retried with the same key. Keys are kept 24 h per author (IDEMPOTENCY_TTL).
The mechanism is app/services/idempotency.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, ParamSpec

import orjson
from flask import Response, current_app, request
from flask_jwt_extended import current_user

from app.errors import ApiError, unavailable, unconfirmed
from app.http.render import json_bytes
from app.http.respond import with_root
from app.schemas.writes import read_body
from app.services import idempotency

P = ParamSpec("P")
KEY_HEADER = "Idempotency-Key"
KEY_MAX = 255
_BARE = frozenset(chr(c) for c in range(0x21, 0x7F)) - {'"', "\\", ","}  # a token: no space, quote, comma


def _invalid_key(detail: str) -> ApiError:
    return ApiError(400, "invalid_idempotency_key", detail, title="Invalid idempotency key")


def parse_key(values: list[str]) -> str:
    """The one key sent: a Structured Field String (`"abc"`, RFC 8941) or a bare token, of 1 to
    255 printable ASCII characters; anything else is 400 invalid_idempotency_key."""
    if len(values) != 1:
        raise _invalid_key("Send one Idempotency-Key header.")
    value = values[0].strip(" \t")
    if value.startswith('"'):
        key = _sf_string(value)
    elif value and all(c in _BARE for c in value):
        key = value
    else:
        raise _invalid_key('An Idempotency-Key is a quoted string of printable ASCII, e.g. "8e03978e-40d5".')
    if not 1 <= len(key) <= KEY_MAX:
        raise _invalid_key(f"An Idempotency-Key is 1 to {KEY_MAX} characters long.")
    return key


def _sf_string(value: str) -> str:
    chars: list[str] = []
    i = 1
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value) and value[i + 1] in '"\\':
            chars.append(value[i + 1])
            i += 2
            continue
        if c == '"':
            if i != len(value) - 1:
                break  # characters after the closing quote
            return "".join(chars)
        if not 0x20 <= ord(c) <= 0x7E or c == "\\":
            break
        chars.append(c)
        i += 1
    raise _invalid_key('An Idempotency-Key is a quoted string of printable ASCII, e.g. "8e03978e-40d5".')


def _canonical(body: bytes) -> bytes:
    """The body as compared between a request and its retries: JSON with sorted keys and no
    spacing (a client may re-serialize it), else the bytes as sent."""
    try:
        return orjson.dumps(orjson.loads(body), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        return body


def idempotent(
    status: int, location: Callable[[Any], str | None]
) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
    """Honour Idempotency-Key on a write view that answers `status` with a JSON document (its
    service calls idempotency.record_answer before committing); `location` names the resource."""

    def decorator(view: Callable[P, Response]) -> Callable[P, Response]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            values = request.headers.getlist(KEY_HEADER)
            if not values:
                return view(*args, **kwargs)
            key = parse_key(values)
            printed = idempotency.fingerprint(request.method, request.path, _canonical(read_body(request)))
            ttl = timedelta(seconds=float(current_app.config["IDEMPOTENCY_TTL"]))
            render = lambda answer: (status, json_bytes(answer), location(answer))  # noqa: E731
            stored = idempotency.begin(int(current_user.id), key, printed, ttl, render)
            if stored is not None:
                return replayed(stored)
            try:
                return view(*args, **kwargs)
            except Exception as exc:
                if unconfirmed(exc):  # committed or not, a retry with this key is safe: it replays or runs
                    detail = "The database did not confirm this write in time; retry it with the same Idempotency-Key."
                    raise unavailable(detail) from None
                raise
            finally:
                idempotency.release()

        return wrapper

    return decorator


def replayed(stored: idempotency.Stored) -> Response:
    """The first answer again; the API's own URLs in it get this request's root, as they did."""
    response = Response(with_root(bytes(stored.body)), status=stored.status, mimetype="application/json")
    if stored.location:
        response.headers["Location"] = stored.location
    response.headers["Idempotent-Replayed"] = "true"
    return response
