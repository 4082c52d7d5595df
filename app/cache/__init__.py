"""The cache tier: a mechanism that knows nothing of HTTP requests or responses.

- keys.py          namespaces, generation keys, page addresses and versioned page keys
- entries.py       what is stored: a rendering (opaque to the cache) and its timestamps, as bytes
- store.py         Redis (redis-py + hiredis, tight timeouts, circuit breaker) or in-process
- near.py          the near cache: per-process copies of the counters and of hot entries
- pages.py         serving: near hit, hit, stale + background refresh, single-flight miss, bypass
- invalidation.py  collects namespaces while the session flushes, bumps them after commit,
                   with an outbox row as the backstop when Redis is unreachable
"""
