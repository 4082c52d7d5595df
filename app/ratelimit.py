"""Per-client rate limits on writes and sign-in, advertised with the IETF RateLimit fields.

Fixed windows: one counter per (policy, client, window), incremented in Redis (shared by every
worker; it expires with its window) or, when Redis is unreachable or absent, in an in-process
store (each process then counts alone). A request past the quota is 429 `rate_limited` with
Retry-After. Every answer of a limited endpoint carries (draft-ietf-httpapi-ratelimit-headers)
`RateLimit-Policy: "write";q=60;w=60` and `RateLimit: "write";r=<remaining>;t=<seconds left>`.
Public GETs are limited at the edge (Nginx), not here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import ParamSpec

from flask import Flask, Response, current_app, request

from app.cache.keys import PREFIX
from app.cache.store import LocalStore
from app.errors import ApiError
from app.observability.metrics import RATELIMIT_REJECTIONS

P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Quota:
    name: str
    limit: int
    window: int  # seconds

    @property
    def policy(self) -> str:
        return f'"{self.name}";q={self.limit};w={self.window}'


@dataclass(frozen=True, slots=True)
class Decision:
    quota: Quota
    allowed: bool
    remaining: int
    reset: int  # seconds until the window ends

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Policy": self.quota.policy,
            "RateLimit": f'"{self.quota.name}";r={self.remaining};t={self.reset}',
        }


class RateLimiter:
    def __init__(self, quotas: dict[str, Quota]) -> None:
        self.quotas = quotas
        self.fallback = LocalStore()  # counts for this process while Redis is unreachable

    def hit(self, name: str, client: str) -> Decision:
        """Count one request of `client` against quota `name`."""
        quota = self.quotas[name]
        now = time.time()
        window = int(now // quota.window)
        key = f"{PREFIX}rl:{name}:{window}:{client}"
        count = current_app.extensions["readwire.cache"].store.count(key, quota.window)
        if count is None:
            count = self.fallback.count(key, quota.window)
        reset = max(1, math.ceil((window + 1) * quota.window - now))
        return Decision(quota, count <= quota.limit, max(0, quota.limit - count), reset)


def client_address() -> str:
    """The client's address: the socket peer, or the entry TRUSTED_PROXY_HOPS from the right
    of X-Forwarded-For (each trusted proxy appends the address it received the request from)."""
    hops = int(current_app.config["TRUSTED_PROXY_HOPS"])
    if hops > 0:
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return request.remote_addr or "unknown"


def rate_limited(name: str, client: Callable[[], str]) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
    """Count each call of the view against quota `name` for `client()`; 429 past it."""

    def decorator(view: Callable[P, Response]) -> Callable[P, Response]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            limiter: RateLimiter | None = current_app.extensions.get("readwire.ratelimit")
            if limiter is None:
                return view(*args, **kwargs)
            decision = limiter.hit(name, client())
            headers = decision.headers()
            if not decision.allowed:
                RATELIMIT_REJECTIONS.labels(name).inc()
                raise ApiError(
                    429,
                    "rate_limited",
                    f"Too many requests; retry in {decision.reset} s.",
                    title="Too many requests",
                    headers={**headers, "Retry-After": str(decision.reset)},
                )
            try:
                response = view(*args, **kwargs)
            except ApiError as exc:
                exc.headers.update(headers)
                raise
            response.headers.update(headers)
            return response

        return wrapper

    return decorator


def init_ratelimits(app: Flask) -> None:
    if not app.config["RATELIMIT_ENABLED"]:
        return
    quotas = {name: Quota(name, *app.config[f"RATELIMIT_{name.upper()}"]) for name in ("auth", "write")}
    app.extensions["readwire.ratelimit"] = RateLimiter(quotas)
