"""Observability: request ids, metrics and the access line as one WSGI middleware (hooks.py),
structured JSON logs (logs.py), Prometheus metrics (metrics.py). This package imports nothing,
so the cache tier can use metrics.py without a cycle."""
