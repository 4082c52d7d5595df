"""Generations in the database: how a process keeps serving its near copies while Redis is away.

With Redis reachable, a page's key carries the Redis generations of its namespaces, and the near
counters (app/cache/near.py) make reading them nearly free. With Redis unreachable nothing tells a
process that another one wrote, so until now every read went to the database (`bypass`). The
database can tell it instead, exactly:

- writer: every write transaction that invalidates namespaces also bumps their rows in
  `cache_generations` (one upsert, sorted, so two writers lock rows in the same order), inside
  the transaction, just before it commits (`before_commit`, after the last flush). The rows
  change exactly when the write becomes visible: no window, no dependence on Redis, the outbox or
  any process being alive after the commit;
- reader, only while the store is unreachable: one primary-key read of the page's namespaces
  (and the `@epoch` row) on the primary, in autocommit, *before* the page is looked up or
  computed. The page's degraded key carries those numbers; a near copy under that key is
  served, otherwise the page is computed (after the read, so its rows are at least as new as the
  numbers) and kept in this process under it.

Why a reader never serves a pre-write page: a write acknowledged before a request began had
committed, and its bumps with it; that request's read (a later snapshot) sees the new numbers, so
its key differs from any key a pre-write page was kept under. A page kept under numbers N was
computed after N was read, so it reflects every write up to N (and perhaps later ones: never
older). The numbers only grow (the epoch row changes only if the table is made again), so an old
key never comes back. Nothing here depends on Redis, so the switch either way is safe: degraded
keys (`rw:d:`) and Redis keys (`rw:p:`) never meet, and the Redis side keeps its own
outbox/epoch/replid rules (app/cache/invalidation.py, app/cache/discovery.py).

Cost: a write bumps its rows in one statement (the hot `feed` row is locked from there to the
commit; post writes already serialize on the events lock, app/push/events.py, at the same
point). A degraded read costs one tiny query instead of a page render. LISTEN/NOTIFY was not
used: a notification reaches other sessions only after the writer's commit, asynchronously, so it
cannot by itself stop a reader on another process from serving the old copy after the ack; it
would still need this read to be correct.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.types import Text

log = logging.getLogger(__name__)

EPOCH = "@epoch"  # the row holding the table's random epoch (migration 0007)

NAMES = bindparam("names", type_=ARRAY(Text))
# ORDER BY: rows are inserted (and their existing rows locked) in namespace order, so concurrent
# writers cannot deadlock on them. A write runs it inside its outbox statement
# (app/cache/invalidation.py: _RECORD).
BUMP_SQL = (
    "INSERT INTO cache_generations (namespace, generation)"
    " SELECT n, 1 FROM unnest(:names) AS n ORDER BY n"
    " ON CONFLICT (namespace) DO UPDATE SET generation = cache_generations.generation + 1"
)
_BUMP = text(BUMP_SQL).bindparams(NAMES)
_READ = text("SELECT namespace, generation FROM cache_generations WHERE namespace = ANY(:names)").bindparams(NAMES)


def bump(conn: Any, names: Sequence[str]) -> None:
    """Bump `names` in the caller's transaction (PostgreSQL only; see the module docstring)."""
    conn.execute(_BUMP, {"names": sorted(set(names))})


class _Read:
    """One query for every namespace its callers asked for; `rows` None if it failed."""

    __slots__ = ("done", "names", "rows", "turn")

    def __init__(self) -> None:
        self.names: set[str] = {EPOCH}
        self.turn = threading.Event()  # set: the caller that opened it may send it now
        self.done = threading.Event()
        self.rows: dict[str, int] | None = None


class DatabaseGenerations:
    """Reads pages' generations from the primary database, outside any transaction.

    Reads are grouped (a group commit, for reads): at most one query is in flight per process;
    callers that arrive meanwhile join the next one, sent when the current one is answered. A
    caller only ever joins a query that has not been sent yet, so the query's snapshot is later
    than the caller's arrival, as it must be (module docstring); under load many requests share
    one round trip, alone a caller sends at once."""

    def __init__(self, engine: Any, wait: float = 5.0) -> None:
        self.engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.wait = wait
        self._lock = threading.Lock()
        self._busy = False  # a query is in flight
        self._next: _Read | None = None  # the query being gathered, sent when the current one ends

    def token(self, namespaces: Sequence[str]) -> str | None:
        """`epoch:g1.g2...` for `namespaces` (0 for one never written), or None when it cannot be
        known (database unreachable, table without its epoch row): then nothing may be kept."""
        rows = self._rows(namespaces)
        epoch = rows.get(EPOCH) if rows is not None else None
        if rows is None or epoch is None:
            return None
        return f"{epoch}:" + ".".join(str(rows.get(n, 0)) for n in namespaces)

    def _rows(self, namespaces: Sequence[str]) -> dict[str, int] | None:
        with self._lock:
            read = self._next
            opened = read is None
            if read is None:
                read = self._next = _Read()
            read.names.update(namespaces)
            if not self._busy:  # nothing in flight: send now
                self._busy, self._next = True, None
                read.turn.set()
        if not opened:  # another caller sends it
            if not read.done.wait(self.wait):
                return self._query(namespaces)  # that caller is stuck: ask alone
            return read.rows
        if not read.turn.wait(self.wait):  # the query in flight is stuck: send this one anyway
            with self._lock:
                if self._next is read:
                    self._next = None
        try:
            read.rows = self._query(read.names)
        finally:
            read.done.set()
            with self._lock:  # hand over to the query gathered meanwhile, if any
                following = self._next
                if following is None:
                    self._busy = False
                else:
                    self._next = None
                    following.turn.set()
        return read.rows

    def _query(self, names: Iterable[str]) -> dict[str, int] | None:
        try:
            with self.engine.connect() as conn:
                return {name: generation for name, generation in conn.execute(_READ, {"names": sorted(names)})}
        except (DBAPIError, PoolTimeout) as exc:
            log.warning("database generations unreadable: %s", type(exc).__name__)
            return None
