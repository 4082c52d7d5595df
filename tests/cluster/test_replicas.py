"""Replica reads on the cluster: replay paused on the replica, a write, then every page that
shows it read through every node (each node filling pages of its own) and through Nginx: never
the old content; the nodes keep the replica in rotation (the LSN rule, not its health, kept
those fills on the primary), and once it has caught up they fill from it again."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.cluster.conftest import (
    ClusterInfo,
    create_post,
    metric,
    past_edge_bound,
    replica_caught_up,
    set_replay,
    wal_position,
)
from tests.stack.conftest import request, wait_for

pytestmark = pytest.mark.slow


def shows(port: int, path: str, title: str, old: str) -> None:
    response = request(port, path, timeout=30)
    assert response.status == 200, (port, path, response.status, response.body[:300])
    body = response.body.decode()
    assert old not in body, f"{path} on :{port} served the pre-write content ({response.headers.get('X-App-Cache')})"
    assert title in body, (port, path, response.headers.get("X-App-Cache"), body[:300])


def fills(port: int, database: str, reason: str) -> float:
    return metric(port, "readwire_page_fills_total", database=database, reason=reason)


def test_paused_replay_then_a_write_no_node_serves_the_old_page_and_the_replica_comes_back(
    cluster: ClusterInfo, editor_token: str
) -> None:
    nodes = {name: cluster.port(name) for name in cluster.of_kind("app")}
    edge = cluster.port("nginx")
    old = f"Before the pause {secrets.token_hex(4)}"
    post = create_post(edge, editor_token, old)
    created = time.monotonic()
    assert wait_for(lambda: replica_caught_up(cluster), 30)
    past_edge_bound(created)  # the edge may hold a copy fetched just before the create
    for port in [*nodes.values(), edge]:  # the pre-write pages, cached everywhere
        for path in post.pages():
            shows(port, path, old, "\x00")
    new = f"Written while replay is paused {secrets.token_hex(4)}"
    before = {name: fills(port, "primary", "behind") for name, port in nodes.items()}
    set_replay(cluster, paused=True)
    try:
        response = request(nodes["app-1"], f"/api/v1/posts/{post.id}", "PATCH",
                           headers={"Authorization": f"Bearer {editor_token}"}, body={"title": new})  # fmt: skip
        assert response.status == 200, response.body[:300]
        written = time.monotonic()
        # The write reached the replica's disk but is not replayed: a fill there would be stale.
        assert wal_position(cluster.url("postgres-replica-1"), replica=True) < wal_position(
            cluster.url("postgres-primary")
        )
        for i, port in enumerate(nodes.values()):
            for path in post.pages() + post.pages(limit=30 + i):  # shared entries, and fills of this node's own
                shows(port, path, new, old)
        time.sleep(max(0.0, written + 1.2 - time.monotonic()))  # the edge's 1 s bound
        for path in post.pages():
            shows(edge, path, new, old)
        for name, port in nodes.items():
            assert fills(port, "primary", "behind") > before[name], name  # the LSN rule sent them there
            # ... while the replica stayed in rotation (its health did not keep it out).
            assert metric(port, "readwire_db_replica_up", replica="replica-1") == 1.0, name
    finally:
        set_replay(cluster, paused=False)
    assert wait_for(lambda: replica_caught_up(cluster), 60), "the replica did not catch up"
    for i, (name, port) in enumerate(nodes.items()):
        replica_fills = fills(port, "replica", "replayed")
        for path in post.pages(limit=50 + i):  # new keys: filled now, from the replica again
            shows(port, path, new, old)
        assert fills(port, "replica", "replayed") > replica_fills, f"{name} did not read the replica again"
