"""Extension instances only; each is bound to the app in create_app() by its init_app().

Each keeps its per-app state in `app.extensions` under its own name, as Flask extensions do,
so several apps (tests) can live in one process; callers use the instance, never the mapping.
"""

from __future__ import annotations

from flask_jwt_extended import JWTManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

from app.cache.invalidation import Invalidation
from app.cache.pages import PageCache
from app.models.base import Base
from app.observability.metrics import Metrics
from app.pagination import Cursors
from app.push import Push
from app.ratelimit import RateLimiter
from app.replicas import ReadReplicas, RoutingSession

# The session reads from a replica while a page fill is routed there (app/replicas.py).
db = SQLAlchemy(model_class=Base, session_options={"class_": RoutingSession})
migrate = Migrate()
jwt = JWTManager()
invalidation = Invalidation()  # commit-gated generation bumps and the outbox (app/cache/invalidation.py)
page_cache = PageCache()  # the page cache (app/cache/pages.py)
replicas = ReadReplicas()  # which database computes a page: LSN-gated replica reads (app/replicas.py)
cursors = Cursors()  # signed keyset cursors (app/pagination.py)
limiter = RateLimiter()  # per-client quotas on sign-in and writes (app/ratelimit.py)
push = Push()  # Server-Sent Events of post changes (app/push)
metrics = Metrics()  # Prometheus metrics and the pool/breaker sampler (app/observability/metrics.py)
