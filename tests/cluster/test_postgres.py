"""Streaming replication between the cluster's PostgreSQL primary and its replica: what the
primary commits shows on the replica; paused replay stops it there, resumed replay catches up;
the replica's position is observable (pg_last_wal_replay_lsn) and it refuses writes."""

from __future__ import annotations

import psycopg
import pytest

from tests.cluster.conftest import ClusterInfo
from tests.stack.conftest import wait_for

pytestmark = pytest.mark.slow

PROBE = "CREATE TABLE IF NOT EXISTS cluster_probe (id bigserial PRIMARY KEY, note text NOT NULL)"


def _connect(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True, connect_timeout=5)


def _write(primary: psycopg.Connection[tuple[object, ...]], note: str) -> tuple[int, str]:
    """Commit one row on the primary; its id and a WAL position at or after its commit."""
    primary.execute(PROBE)
    row = primary.execute("INSERT INTO cluster_probe (note) VALUES (%s) RETURNING id", (note,)).fetchone()
    lsn = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row and lsn
    return int(str(row[0])), str(lsn[0])


def _seen(replica: psycopg.Connection[tuple[object, ...]], row_id: int) -> bool:
    exists = replica.execute("SELECT to_regclass('cluster_probe') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return False
    return replica.execute("SELECT 1 FROM cluster_probe WHERE id = %s", (row_id,)).fetchone() is not None


def _replayed(replica: psycopg.Connection[tuple[object, ...]], lsn: str) -> bool:
    row = replica.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
    return bool(row and row[0])


def _received(replica: psycopg.Connection[tuple[object, ...]], lsn: str) -> bool:
    row = replica.execute("SELECT pg_last_wal_receive_lsn() >= %s::pg_lsn", (lsn,)).fetchone()
    return bool(row and row[0])


def test_a_row_committed_on_the_primary_shows_on_the_replica(cluster: ClusterInfo) -> None:
    with _connect(cluster.url("postgres-primary")) as primary, _connect(cluster.url("postgres-replica-1")) as replica:
        assert replica.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert primary.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        # The replica streams through its slot (WAL is kept for it while it is away).
        slot = primary.execute("SELECT active, slot_type FROM pg_replication_slots WHERE slot_name = 'replica_1'")
        assert slot.fetchone() == (True, "physical")
        streaming = primary.execute("SELECT state FROM pg_stat_replication").fetchall()
        assert streaming == [("streaming",)]
        row_id, lsn = _write(primary, "visible on the replica")
        assert wait_for(lambda: _seen(replica, row_id), 30), "the row never reached the replica"
        assert _replayed(replica, lsn)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            replica.execute("INSERT INTO cluster_probe (note) VALUES ('no writes on a standby')")
        # The app's seeded data is there too (copied by pg_basebackup, kept current by streaming).
        posts = primary.execute("SELECT count(*) FROM posts").fetchone()
        assert wait_for(lambda: replica.execute("SELECT count(*) FROM posts").fetchone() == posts, 30)


def test_paused_replay_hides_new_rows_until_resumed(cluster: ClusterInfo) -> None:
    with _connect(cluster.url("postgres-primary")) as primary, _connect(cluster.url("postgres-replica-1")) as replica:
        before, _ = _write(primary, "before the pause")
        assert wait_for(lambda: _seen(replica, before), 30)
        replica.execute("SELECT pg_wal_replay_pause()")
        try:
            paused = "SELECT pg_get_wal_replay_pause_state()"
            assert wait_for(lambda: replica.execute(paused).fetchone() == ("paused",), 30)
            row_id, lsn = _write(primary, "written while replay is paused")
            # The WAL of the write reaches the replica (received) but is not applied (replayed).
            assert wait_for(lambda: _received(replica, lsn), 30), "the WAL never reached the replica"
            assert not _replayed(replica, lsn)
            assert not _seen(replica, row_id)
            lag = replica.execute("SELECT pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn())", (lsn,)).fetchone()
            assert lag and int(str(lag[0])) > 0
        finally:
            replica.execute("SELECT pg_wal_replay_resume()")
        assert wait_for(lambda: _seen(replica, row_id), 30), "the replica did not catch up after resume"
        assert _replayed(replica, lsn)
        assert replica.execute(paused).fetchone() == ("not paused",)
