"""Settings: one object, read from the environment once; tests pass their own overrides."""

from __future__ import annotations

import ipaddress
import math
import os
import secrets
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson

from app.deadline import DeadlinePool

INSTANCE_DIR = Path(os.environ.get("READWIRE_INSTANCE_DIR", Path(__file__).resolve().parent.parent / "instance"))


def _dev_secret() -> str:
    """A per-checkout random secret for the embedded default only (kept in instance/)."""
    path = INSTANCE_DIR / "dev-secret"
    if path.exists():
        return path.read_text().strip()
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.write_text(value)
    path.chmod(0o600)
    return value


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def _flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() not in {"0", "false", "no", "off", ""}


def _list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def psycopg_url(url: str) -> str:
    """psycopg 3 is the driver for PostgreSQL; accept the common postgres:// spellings."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _networks(value: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """`127.0.0.1, 10.0.0.0/8` -> networks (a bare address is a /32 or /128)."""
    return tuple(ipaddress.ip_network(item, strict=False) for item in _list(value))


def _quota(value: str) -> tuple[int, int]:
    """`10/60` -> (10 requests, 60 s)."""
    count, _, window = value.partition("/")
    return int(count), int(window)


def worker_connections() -> int:
    """Greenlets per gunicorn worker (gunicorn.conf.py reads the same variable): how many
    requests one process may have in flight, so what its pools must serve without churning."""
    return _int("GUNICORN_WORKER_CONNECTIONS", 200)


def db_pool_size() -> int:
    """PostgreSQL connections per process, all kept open (no overflow).

    A pool that opens and closes connections under load pays a connect (~1.5 ms of PostgreSQL
    CPU plus a fork) per churned checkout: with 10 kept + overflow, 32 concurrent misses churned
    300-400 connections per 10 s (issue 11). So the pool holds every connection the process may
    use: one per concurrent request (worker_connections), capped by the deployment's budget
    (DB_CONNECTION_BUDGET, under PostgreSQL's max_connections) split across the workers and
    halved, because during a HUP the new workers are up before the old ones have left.
    Opened lazily, so an idle worker holds few. DB_POOL_SIZE overrides.
    """
    if "DB_POOL_SIZE" in os.environ:
        return _int("DB_POOL_SIZE", 0)
    budget = _int("DB_CONNECTION_BUDGET", 90)  # PostgreSQL's default max_connections 100, minus reserve
    workers = _int("WEB_CONCURRENCY", len(os.sched_getaffinity(0)))
    return max(2, min(worker_connections(), budget // (2 * max(1, workers))))


def db_deadline_ms(env: Mapping[str, str]) -> int:
    """The client-side database deadline (app/deadline.py): how long a request may wait on
    PostgreSQL in all (pool checkout, connect, statements, COMMIT), 0 = none.

    A hung server answers nothing and its own statement_timeout cannot fire: without a bound of
    the client's, requests waited as long as the hang (a 12 s SIGSTOP: /readyz 11.1 s, a PATCH
    11.6 s, warm pages 11.4-12.7 s, issue 12). Reads take milliseconds and a write tens of them,
    so 2 s is far past a healthy answer even on a busy machine, and short enough that a client
    gets stale bytes or a 503 (and Nginx's retry or the next request) instead of a hang.
    """
    return int(env.get("DB_DEADLINE_MS", 2000))


def db_plan_cache_mode(env: Mapping[str, str]) -> str:
    """PostgreSQL's `plan_cache_mode` for the app's connections (`DB_PLAN_CACHE_MODE`).

    Feed pages run as prepared statements (app/services/statements.py) whose LIMIT is a
    parameter. Under the default `auto`, a generic plan's LIMIT is costed as a tenth of the
    table, so the planner never trusts it and plans every execution anew: 0.5-0.7 ms of
    PostgreSQL's CPU per page, about half of what a miss costs it (issue 11). The generic plans
    of every feed, popular and bulk statement walk the same indexes as the custom ones
    (tests/test_explain.py checks both), so the plan is built once per connection and kept.
    """
    mode = env.get("DB_PLAN_CACHE_MODE", "force_generic_plan")
    if mode not in {"auto", "force_generic_plan", "force_custom_plan"}:
        raise RuntimeError(f"DB_PLAN_CACHE_MODE must be auto, force_generic_plan or force_custom_plan, not {mode!r}")
    return mode


def _engine_options(env: Mapping[str, str]) -> dict[str, Any]:
    deadline_s = db_deadline_ms(env) / 1000
    return {
        "pool_size": db_pool_size(),
        "max_overflow": 0,  # see db_pool_size: a connection opened past the pool would be closed again
        # A request waits this long for a connection when every one is busy, then gets 503 (by
        # default the database deadline: a checkout is one of its waits).
        "pool_timeout": float(env.get("DB_POOL_TIMEOUT", deadline_s or 2.0)),
        "poolclass": DeadlinePool,  # checkout waits end with the request's database deadline too
        "pool_pre_ping": False,  # a dead connection raises once and the pool invalidates it
        "pool_recycle": 1800,
        # Feed pages bring their tags as JSON (app/services/posts.py): orjson parses them.
        "json_deserializer": orjson.loads,
        "connect_args": {
            # The handshake of a new connection (libpq's minimum is 2 s; a request's handshake also
            # ends with its database deadline).
            "connect_timeout": _int("DB_CONNECT_TIMEOUT", max(2, math.ceil(deadline_s))),
            # A runaway query must not hold a worker: reads are milliseconds. The plan cache mode:
            # see db_plan_cache_mode.
            "options": f"-c statement_timeout={_int('DB_STATEMENT_TIMEOUT_MS', 5000)}"
            f" -c plan_cache_mode={db_plan_cache_mode(env)}",
        },
    }


def load_settings(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from the environment plus explicit overrides."""
    env = os.environ
    overrides = overrides or {}
    database_url = (
        overrides.get("SQLALCHEMY_DATABASE_URI")
        or env.get("DATABASE_URL")
        or f"sqlite:///{INSTANCE_DIR / 'readwire.sqlite3'}"
    )
    # psycopg 3 is the driver for PostgreSQL; accept the common postgres:// spellings.
    for prefix in ("postgres://", "postgresql://"):
        if database_url.startswith(prefix):
            database_url = "postgresql+psycopg://" + database_url[len(prefix) :]
    redis_url = env.get("REDIS_URL")
    embedded = database_url.startswith("sqlite")
    secret = overrides.get("SECRET_KEY") or env.get("SECRET_KEY")
    if not secret:
        if not embedded:
            raise RuntimeError("SECRET_KEY must be set when DATABASE_URL points at a real database")
        secret = _dev_secret()

    settings: dict[str, Any] = {
        "SECRET_KEY": secret,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_RECORD_QUERIES": False,
        "SQLALCHEMY_ENGINE_OPTIONS": {"json_deserializer": orjson.loads} if embedded else _engine_options(env),
        # The client-side database deadline per request, in ms (db_deadline_ms above; 0 = none).
        "DB_DEADLINE_MS": 0 if embedded else db_deadline_ms(env),
        # Cache tier (app/cache). Without REDIS_URL an in-process store (embedded default).
        "REDIS_URL": overrides.get("REDIS_URL", redis_url),
        # A cache answer takes well under 1 ms on loopback; 50 ms means "Redis is in trouble",
        # and with the breaker a dead Redis costs at most that once per cool-down per worker.
        "CACHE_TIMEOUT": float(env.get("CACHE_TIMEOUT", 0.05)),
        "CACHE_BREAKER_THRESHOLD": 3,
        "CACHE_BREAKER_COOLDOWN": float(env.get("CACHE_BREAKER_COOLDOWN", 2.0)),
        # Per worker: one connection per concurrent greenlet at most (worker_connections);
        # opened lazily, so the cap costs nothing until a burst needs it. An exhausted pool
        # is local contention, not a sick Redis, so waiting for a slot has its own budget.
        "CACHE_POOL_SIZE": _int("CACHE_POOL_SIZE", worker_connections()),
        "CACHE_POOL_WAIT": float(env.get("CACHE_POOL_WAIT", 0.25)),
        # The near cache (app/cache/near.py): version counters copied in-process with Redis
        # client tracking are trusted this long after Redis last answered, which is also how long
        # a write waits when its invalidation could not reach Redis (0 = no near counters) ...
        "CACHE_NEAR_TRUST": float(env.get("CACHE_NEAR_TRUST", 0.1)),
        # ... and the hottest page entries, up to this many bytes per process (0 = none); a hit on
        # one costs no round trip.
        "CACHE_NEAR_BYTES": _int("CACHE_NEAR_BYTES", 64 * 1024 * 1024),
        # A fresh near entry is answered (200 or 304) before Flask's request machinery when the
        # same URL already went through the view once (app/http/fast.py): routing, the request
        # context, query parsing and werkzeug's Response were about half of a hit's cost.
        # FAST_HIT_ROUTES bounds the URLs remembered per process (each ~0.5 kB; cleared when full,
        # a hot URL is learnt again by its next request).
        # On by default (FAST_HITS=0: every GET through Flask). The pre-create `near_hit` that
        # tests/cluster/test_sentinel.py once saw after a create was Nginx's microcache within
        # its 1 s bound, read too early by the test (the same with this off), not this layer.
        "FAST_HITS": _flag("FAST_HITS", True),
        "FAST_HIT_ROUTES": _int("FAST_HIT_ROUTES", 8192),
        # Fresh lifetimes (s). Content changes never wait for these (generations bump at
        # commit); they bound how long counters inside list items may lag (the contract).
        "CACHE_TTL_FEED": float(env.get("CACHE_TTL_FEED", 30)),
        "CACHE_TTL_POST": float(env.get("CACHE_TTL_POST", 60)),
        "CACHE_TTL_DIRECTORY": float(env.get("CACHE_TTL_DIRECTORY", 60)),
        "CACHE_NEGATIVE_TTL": 5.0,  # 404s: short, and a create bumps the namespace anyway
        "CACHE_STALE_TTL": float(env.get("CACHE_STALE_TTL", 600)),  # kept past fresh: DB down, refresh
        "CACHE_JITTER": 0.1,  # +-10% on every TTL so keys filled together do not expire together
        "CACHE_LOCK_TTL": 2.0,  # single-flight lock: longer than a slow page, short if its holder dies
        "CACHE_MISS_WAIT": 5.0,  # a miss waits for lock holders this long at most, then computes
        # --- several nodes (issue 15; docs/scaling.md) -------------------------------------------
        # Redis through Sentinel: `host:port,...` of the Sentinels and the name they watch (REDIS_URL
        # is then unused). Asking them happens once per new connection, hence its own timeout.
        "REDIS_SENTINELS": env.get("REDIS_SENTINELS", ""),
        "REDIS_SENTINEL_MASTER": env.get("REDIS_SENTINEL_MASTER", "readwire"),
        "REDIS_SENTINEL_TIMEOUT": float(env.get("REDIS_SENTINEL_TIMEOUT", 0.2)),
        # How often each process asks the Sentinels which primary they name (a primary replaced
        # without dying still answers the connections already open to it).
        "REDIS_SENTINEL_CHECK_INTERVAL": float(env.get("REDIS_SENTINEL_CHECK_INTERVAL", 1.0)),
        # A write whose INCRs Redis did not take keeps trying this long before it is acknowledged
        # without them (outbox + the near-trust wait): long enough to ride out a Sentinel failover
        # (down-after 1 s + election + promotion: 2.4 s measured), so an acknowledged write has
        # bumped its generations on the primary every node reads. Without Sentinels there is no
        # replacement to wait for: 0.
        "CACHE_INVALIDATION_WAIT": float(
            env.get("CACHE_INVALIDATION_WAIT", 10.0 if env.get("REDIS_SENTINELS") else 0.0)
        ),
        # WAIT <replicas> <timeout> after each write's INCRs (0 = off): a bump no replica took is
        # retried like a failed one. Off: the cache epoch (the primary's replid) already makes an
        # INCR lost in a crash failover harmless; see docs/scaling.md for what WAIT adds and costs.
        "CACHE_WAIT_REPLICAS": _int("CACHE_WAIT_REPLICAS", 0),
        "CACHE_WAIT_TIMEOUT": float(env.get("CACHE_WAIT_TIMEOUT", 0.03)),  # under CACHE_TIMEOUT
        # Read replicas (app/replicas.py): page fills may read from these when they have replayed
        # the page's last write; anything else reads the primary. Comma-separated URLs.
        "DATABASE_REPLICA_URLS": [psycopg_url(u) for u in _list(env.get("DATABASE_REPLICA_URLS", ""))],
        # A replica is left out (until it is back under half of each bound) when it lags the
        # primary by more than this much WAL, or has replayed nothing for this long while behind
        # (replay paused or stuck): lag never makes a read stale (the LSN rule does that), a
        # replica too far behind would only cost every fill a wasted check.
        "DB_REPLICA_MAX_LAG_BYTES": _int("DB_REPLICA_MAX_LAG_BYTES", 16 * 1024 * 1024),
        "DB_REPLICA_MAX_STALL": float(env.get("DB_REPLICA_MAX_STALL", 2.0)),
        "DB_REPLICA_CHECK_INTERVAL": float(env.get("DB_REPLICA_CHECK_INTERVAL", 1.0)),
        # A fill whose replica is behind the page's LSN may wait this long for it, else (0) it reads
        # the primary at once.
        "DB_REPLICA_WAIT": float(env.get("DB_REPLICA_WAIT", 0.0)),
        # HTTP caching: clients revalidate each second (cheap 304s); the edge (Nginx) holds a
        # page 1 s (the contract's edge bound), may serve it while refreshing, and serves it
        # for 5 min when the origin fails.
        "HTTP_CACHE_CONTROL": env.get(
            "HTTP_CACHE_CONTROL", "public, max-age=1, s-maxage=1, stale-while-revalidate=1, stale-if-error=300"
        ),
        # The public web site showing the posts, if the deployment has one: post `url`s are then
        # `<PUBLIC_SITE_URL>/posts/<slug>` (also the feeds' item links and website link). Unset, a
        # post's `url` is the API's own `<root>/api/v1/posts/<id>` (root: PUBLIC_BASE_URL, else the
        # request's host), so every link a client or feed reader gets is absolute and opens.
        "PUBLIC_SITE_URL": env.get("PUBLIC_SITE_URL", "").rstrip("/"),
        # Feed readers show this as the title of the syndication feeds (JSON Feed, Atom).
        "SITE_NAME": env.get("SITE_NAME", "Readwire"),
        # Absolute base for Link headers and the API's own URLs in bodies; empty means "derive
        # from the request's host" (a placeholder filled per request: set it where the host is known).
        "PUBLIC_BASE_URL": env.get("PUBLIC_BASE_URL", "").rstrip("/"),
        # /popular: the ranking is recomputed at most once per interval (aligned to the clock,
        # so every worker agrees on the current snapshot without talking to the others) over
        # the newest candidates; a cursor can walk its snapshot for the retention period.
        "POPULAR_INTERVAL": _int("POPULAR_INTERVAL", 60),
        "POPULAR_SIZE": _int("POPULAR_SIZE", 1000),
        "POPULAR_CANDIDATES": _int("POPULAR_CANDIDATES", 10_000),
        "POPULAR_GRAVITY": 1.8,  # Hacker News' exponent: a day-old post needs ~10x the comments
        "POPULAR_RETENTION": _int("POPULAR_RETENTION", 3600),
        # Each gunicorn worker builds the next snapshot this many seconds before its interval
        # starts (one process computes it, app/services/popular.py), so no request waits for a
        # ranking: the request that used to build one under load took 1.7-12.7 s (issue 12).
        # 0 = no builder: the first request of an interval computes its snapshot.
        "POPULAR_BUILD_AHEAD": float(env.get("POPULAR_BUILD_AHEAD", 15)),
        "CACHE_TTL_POPULAR": float(env.get("CACHE_TTL_POPULAR", 60)),
        # Observability (app/observability). OBSERVABILITY=0 removes the request hooks altogether
        # (the benchmark's baseline); production keeps it on: X-Request-ID on every response,
        # Prometheus metrics at /metrics and, on demand, one JSON access-log line per request.
        # Each part has its own switch so its cost can be measured (bench/test_observability.py).
        "OBSERVABILITY": _flag("OBSERVABILITY", True),
        "METRICS_ENABLED": _flag("METRICS_ENABLED", True),
        # The app's JSON access log (stderr, logger `readwire.access`). Off by default: it is the
        # layer's costliest part (~12 µs, a 10-15% throughput loss on cache hits under gunicorn),
        # and Nginx already logs every request with its X-Request-ID, status and upstream time.
        # Named REQUEST_LOG because gunicorn.conf.py reads ACCESS_LOG for gunicorn's own log.
        "REQUEST_LOG": _flag("REQUEST_LOG", False),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO").upper(),
        # Pool gauges (database, Redis, breaker) are sampled at most this often per process, from
        # the request path (no background thread), and at every scrape of /metrics.
        "METRICS_SAMPLE_INTERVAL": float(env.get("METRICS_SAMPLE_INTERVAL", 1.0)),
        # CORS. Public GETs answer `Access-Control-Allow-Origin: *` (never with credentials): the
        # answer is the same for every origin, so no `Vary: Origin`. Writes and sign-in carry bearer
        # tokens a browser app must hold itself (no cookies, so no CSRF surface), but cross-origin
        # writes are still opt-in per origin: a comma-separated allow-list, empty = none.
        "CORS_WRITE_ORIGINS": _list(env.get("CORS_WRITE_ORIGINS", "")),
        # Browsers may reuse a preflight answer this long (Chrome caps it at 2 h).
        "CORS_MAX_AGE": _int("CORS_MAX_AGE", 7200),
        # App-level rate limits, as (requests, window seconds) per client in fixed windows. Counters
        # live in Redis (shared by every worker), in-process when Redis is down or absent (then
        # each process counts alone). Public GETs are limited at the edge (Nginx), not here.
        "RATELIMIT_ENABLED": _flag("RATELIMIT_ENABLED", True),
        # Sign-in and refresh, per client address: a person mistyping a password needs two or three
        # tries a minute; a guesser is held to 14,400 a day per address, each paying the slow hash.
        "RATELIMIT_AUTH": _quota(env.get("RATELIMIT_AUTH", "10/60")),
        # Writes, per author: no editor sustains one write a second, and each write bumps cache
        # generations (a miss for every reader of the pages it touches), so one account (or a
        # leaked token) must not be able to keep the cache cold.
        "RATELIMIT_WRITE": _quota(env.get("RATELIMIT_WRITE", "60/60")),
        # Client address for per-address limits: the Nth address from the right of X-Forwarded-For
        # when N trusted proxies (Nginx = 1) append to it; 0 = the socket peer ...
        "TRUSTED_PROXY_HOPS": _int("TRUSTED_PROXY_HOPS", 0),
        # Server-Sent Events (app/push). A heartbeat comment at least this often (s): proxies and
        # clients drop connections silent for longer (Nginx's read timeout on streams is far longer).
        "SSE_HEARTBEAT": float(env.get("SSE_HEARTBEAT", 15)),
        # What EventSource waits before reconnecting (ms): with Last-Event-ID it loses nothing.
        "SSE_RETRY_MS": _int("SSE_RETRY_MS", 2000),
        # Events replayed to a reconnecting stream at most; past that it gets `reset` and refetches
        # its feed (cheaper than thousands of events, and the first page is cached).
        "SSE_REPLAY_MAX": _int("SSE_REPLAY_MAX", 1000),
        # Recent events each process keeps in memory for its live streams (older: the database).
        "SSE_RING": _int("SSE_RING", 4096),
        # The fetcher reads new events at each doorbell, and at least this often (s) when a doorbell
        # was lost (Redis and PostgreSQL both unreachable for the writer, a subscription reconnecting).
        "SSE_POLL_INTERVAL": float(env.get("SSE_POLL_INTERVAL", 5)),
        # Open streams per process (an idle stream is a parked greenlet: ~tens of KiB); gunicorn.conf.py
        # adds the same number to worker_connections, so streams never take a request's slot.
        "SSE_MAX_STREAMS": _int("SSE_MAX_STREAMS", 1000),
        # Per client address, cluster-wide (leases in Redis): a browser needs one or two; a page
        # opening streams in a loop must not hold a worker's slots.
        "SSE_MAX_PER_CLIENT": _int("SSE_MAX_PER_CLIENT", 8),
        # Events are kept this long (s) for resuming streams; a position older than that gets `reset`.
        "SSE_RETENTION": float(env.get("SSE_RETENTION", 7 * 86400)),
        # WebSub (app/push/websub.py): the hub the feeds advertise and every changed feed is announced
        # to (hub.mode=publish); empty = none. Topic URLs use PUBLIC_BASE_URL (else the writer's host).
        "WEBSUB_HUB_URL": env.get("WEBSUB_HUB_URL", "").strip(),
        "WEBSUB_TIMEOUT": float(env.get("WEBSUB_TIMEOUT", 5)),  # per announcement; the write never waits
        "WEBSUB_RETRY_BASE": float(env.get("WEBSUB_RETRY_BASE", 5)),  # s, doubled per failed attempt
        # ... and only when the socket peer is one of these proxies (addresses or CIDRs, comma-
        # separated; empty = none): anyone else reaching the app directly is known by its peer
        # address, whatever X-Forwarded-For it sends.
        "TRUSTED_PROXIES": _networks(env.get("TRUSTED_PROXIES", "")),
        # Idempotency-Key on POST /posts and POST comments (app/http/idempotency.py): the first
        # answer of a key is replayed to its retries this long (the draft and Stripe: 24 h), then
        # the key is free again; expired keys are swept every IDEMPOTENCY_SWEEP_INTERVAL s by each
        # gunicorn worker (one DELETE on an index; `flask purge-idempotency-keys` does it by hand).
        "IDEMPOTENCY_TTL": float(env.get("IDEMPOTENCY_TTL", 86400)),
        "IDEMPOTENCY_SWEEP_INTERVAL": float(env.get("IDEMPOTENCY_SWEEP_INTERVAL", 600)),
        "EMBEDDED": embedded,
        # JWTs (writes only). A separate JWT_SECRET_KEY lets tokens be rotated (everyone signed
        # out) without also invalidating every cursor signed with SECRET_KEY.
        "JWT_SECRET_KEY": env.get("JWT_SECRET_KEY") or secret,
        # Bearer tokens in the Authorization header only: no cookies, so no CSRF surface.
        "JWT_TOKEN_LOCATION": ["headers"],
        # Access tokens are not revocable (no blocklist lookup per write), so keep them short:
        # a demoted editor or a leaked token stops working within 15 minutes.
        "JWT_ACCESS_TOKEN_EXPIRES": timedelta(minutes=15),
        # Refresh tokens re-read the role from the database on every use; a week spares editors
        # a daily sign-in while bounding how long a stolen refresh token is useful.
        "JWT_REFRESH_TOKEN_EXPIRES": timedelta(days=7),
    }
    settings.update({k: v for k, v in overrides.items() if k != "SQLALCHEMY_DATABASE_URI"})
    return settings
