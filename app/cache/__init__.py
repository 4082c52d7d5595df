"""The cache tier: versioned keys, commit-gated invalidation, single-flight, serving stale.

- store.py         Redis (redis-py + hiredis, tight timeouts, circuit breaker) or in-process
- keys.py          namespaces, generation keys and normalized page keys
- pages.py         the read path: 304 from generations, hit, stale, single-flight miss
- invalidation.py  collects namespaces while the session flushes, bumps them after commit,
                   with an outbox row as the backstop when Redis is unreachable
"""
