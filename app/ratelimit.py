"""Per-client rate limits on writes and sign-in, advertised with the IETF RateLimit fields.

Fixed windows: one counter per (policy, client, window), incremented in Redis (shared by every
worker; it expires with its window) or, when Redis is unreachable or absent, in an in-process
store (each process then counts alone). A request past the quota is 429 `rate_limited` with
Retry-After. Every answer of a limited endpoint carries (draft-ietf-httpapi-ratelimit-headers)
`RateLimit-Policy: "write";q=60;w=60` and `RateLimit: "write";r=<remaining>;t=<seconds left>`.
Public GETs are limited at the edge (Nginx), not here.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec

import redis
from flask import Flask, Response, current_app, request
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.cache.discovery import RedisTarget
from app.cache.keys import PREFIX
from app.cache.store import CircuitBreaker
from app.errors import ApiError
from app.observability.metrics import RATELIMIT_REJECTIONS

log = logging.getLogger(__name__)

P = ParamSpec("P")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


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


class LocalCounters:
    """Fixed-window counters in this process (no Redis, or Redis unreachable), bounded."""

    def __init__(self, max_keys: int = 50_000) -> None:
        self.max_keys = max_keys
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def count(self, key: str, ttl: int) -> int:
        now = time.monotonic()
        with self._lock:
            if len(self._counts) >= self.max_keys:  # one counter per client and window
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
                if len(self._counts) >= self.max_keys:
                    self._counts.clear()
            current, expires = self._counts.get(key, (0, now + ttl))
            if expires <= now:
                current, expires = 0, now + ttl
            self._counts[key] = (current + 1, expires)
            return current + 1


class RedisCounters:
    """Fixed-window counters in Redis (shared by every process), found like the cache's (REDIS_URL
    or Sentinel, app/cache/discovery.py), with its timeouts and a breaker of their own: None when
    Redis cannot answer."""

    def __init__(self, target: RedisTarget, timeout: float, pool_size: int, breaker: CircuitBreaker) -> None:
        pool = target.pool(max_connections=pool_size, pool_wait=timeout, timeout=timeout)
        self.client = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
        self.breaker = breaker

    def count(self, key: str, ttl: int) -> int | None:
        if not self.breaker.allow():
            return None
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.set(key, 0, ex=ttl, nx=True)
            pipe.incr(key)
            count = int(pipe.execute()[1])
        except (redis.RedisError, OSError) as exc:
            self.breaker.failure()
            log.warning("rate-limit counters unreachable: %s", type(exc).__name__)
            return None
        self.breaker.success()
        return count


class Limits:
    """One app's quotas and counters."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.quotas = {name: Quota(name, *config[f"RATELIMIT_{name.upper()}"]) for name in ("auth", "write")}
        target = RedisTarget.from_config(config)
        breaker = CircuitBreaker(config["CACHE_BREAKER_THRESHOLD"], config["CACHE_BREAKER_COOLDOWN"])
        self.shared = (
            RedisCounters(target, config["CACHE_TIMEOUT"], config["CACHE_POOL_SIZE"], breaker) if target else None
        )
        self.local = LocalCounters()

    def hit(self, name: str, client: str) -> Decision:
        """Count one request of `client` against quota `name`."""
        quota = self.quotas[name]
        now = time.time()
        window = int(now // quota.window)
        key = f"{PREFIX}rl:{name}:{window}:{client}"
        count = self.shared.count(key, quota.window) if self.shared is not None else None
        if count is None:
            count = self.local.count(key, quota.window)
        reset = max(1, math.ceil((window + 1) * quota.window - now))
        return Decision(quota, count <= quota.limit, max(0, quota.limit - count), reset)


class RateLimiter:
    """Flask extension: per-client quotas (RATELIMIT_AUTH, RATELIMIT_WRITE); off when
    RATELIMIT_ENABLED is false."""

    key = "ratelimit"

    def init_app(self, app: Flask) -> None:
        app.extensions[self.key] = Limits(app.config) if app.config["RATELIMIT_ENABLED"] else None

    def limits(self, app: Flask | None = None) -> Limits | None:
        limits: Limits | None = (app or current_app).extensions[self.key]
        return limits


def _from_trusted_proxy(peer: str | None, proxies: Sequence[IPNetwork]) -> bool:
    if not peer or not proxies:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:  # a unix socket peer, or none
        return False
    return any(address in network for network in proxies)


def client_address() -> str:
    """The client's address: the socket peer, or, when the peer is a trusted proxy
    (TRUSTED_PROXIES), the entry TRUSTED_PROXY_HOPS from the right of X-Forwarded-For (each
    trusted proxy appends the address it received the request from)."""
    peer = request.remote_addr
    config = current_app.config
    hops = int(config["TRUSTED_PROXY_HOPS"])
    if hops > 0 and _from_trusted_proxy(peer, config["TRUSTED_PROXIES"]):
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        if len(forwarded) >= hops:
            return forwarded[-hops]
    return peer or "unknown"


def rate_limited(name: str, client: Callable[[], str]) -> Callable[[Callable[P, Response]], Callable[P, Response]]:
    """Count each call of the view against quota `name` for `client()`; 429 past it."""

    def decorator(view: Callable[P, Response]) -> Callable[P, Response]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Response:
            from app.extensions import limiter

            limits = limiter.limits()
            if limits is None:
                return view(*args, **kwargs)
            decision = limits.hit(name, client())
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
