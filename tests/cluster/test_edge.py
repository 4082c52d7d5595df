"""The cluster as `make cluster` leaves it (state, status, the nodes' environment), Nginx
balancing across the app nodes, and an app node killed outright under a steady stream of GETs:
Nginx routes around it and no GET fails."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import group_members
from tests.cluster.conftest import ClusterInfo, cluster_cli
from tests.stack.conftest import Load, request, wait_for

pytestmark = pytest.mark.slow

UPSTREAM_FAILURE = ("upstream prematurely closed", "reset by peer", "Connection refused", "Broken pipe")


def _served(log: Path, offset: int = 0) -> int:
    """Requests a node logged (gunicorn's JSON access lines) past byte ``offset``."""
    text = log.read_bytes()[offset:].decode(errors="replace")
    return sum(1 for line in text.splitlines() if line.startswith("{") and '"gunicorn.access"' in line)


def test_up_records_every_server_and_status_reports_them(cluster: ClusterInfo, cluster_cli_env: dict[str, str]) -> None:
    state = cluster.state
    kinds = sorted(info["kind"] for info in state["services"].values())
    assert kinds == sorted(
        ["postgres", "postgres-replica", "redis", "redis", "sentinel", "sentinel", "sentinel", "app", "app", "nginx"]
    )
    assert (cluster.root / "state.json").stat().st_mode & 0o777 == 0o600  # it carries SECRET_KEY
    env = state["env"]
    # What the replica- and Sentinel-aware app of phase 2 reads, prepared for every node.
    assert env["DATABASE_URL"] == cluster.url("postgres-primary")
    assert env["DATABASE_REPLICA_URLS"].split(",") == [cluster.url("postgres-replica-1")]
    assert env["REDIS_SENTINELS"].split(",") == [f"127.0.0.1:{cluster.port(n)}" for n in cluster.of_kind("sentinel")]
    assert env["REDIS_SENTINEL_MASTER"] == cluster.settings["REDIS_SENTINEL_MASTER"]
    # Each node is its own gunicorn master (its own process group), with its own workers.
    masters = [cluster.pid(name) for name in cluster.of_kind("app")]
    assert len(set(masters)) == 2 and all(len(group_members(pid)) >= 2 for pid in masters)
    for name in cluster.of_kind("app"):
        assert request(cluster.port(name), "/readyz").status == 200, name
    status = cluster_cli("status", cluster.root, cluster_cli_env, timeout=60)
    assert status.returncode == 0, status.stdout + status.stderr
    lines = {line.split()[0]: line for line in status.stdout.splitlines()}
    assert set(lines) == set(state["services"])
    assert all("running" in line for line in lines.values())
    assert "lag_bytes=" in lines["postgres-replica-1"] and "replay=not paused" in lines["postgres-replica-1"]
    assert "role=master" in lines["redis-1"] and "role=slave" in lines["redis-2"]
    assert f"primary=127.0.0.1:{cluster.port('redis-1')}" in lines["sentinel-1"]
    # `up` on a running cluster changes nothing.
    again = cluster_cli("up", cluster.root, cluster_cli_env, timeout=60)
    assert again.returncode == 0 and "already up" in again.stderr
    assert json.loads((cluster.root / "state.json").read_text())["services"] == state["services"]


def test_nginx_spreads_requests_over_every_node(cluster: ClusterInfo) -> None:
    logs = {name: cluster.logs / f"{name}.log" for name in cluster.of_kind("app")}
    before = {name: _served(log) for name, log in logs.items()}
    for _ in range(40):  # /readyz is never cached at the edge: every one reaches a node
        assert request(cluster.port("nginx"), "/readyz").status == 200
    assert wait_for(lambda: all(_served(log) - before[name] >= 5 for name, log in logs.items()), 30), {
        name: _served(log) - before[name] for name, log in logs.items()
    }


@pytest.fixture
def revived(cluster: ClusterInfo, cluster_cli_env: dict[str, str]) -> Iterator[None]:
    """app-1 started again after the test (the later modules need every node)."""
    yield
    again = cluster_cli("restart-app", cluster.root, cluster_cli_env, 120, "app-1")
    assert again.returncode == 0, again.stdout + again.stderr
    cluster.state["services"] = json.loads((cluster.root / "state.json").read_text())["services"]
    assert request(cluster.port("app-1"), "/readyz").status == 200


def test_an_app_node_sigkilled_under_steady_gets_fails_none(cluster: ClusterInfo, revived: None) -> None:
    victim, survivor = cluster.pid("app-1"), cluster.logs / "app-2.log"
    error_log = cluster.logs / "nginx-error.log"
    errors_from = error_log.stat().st_size if error_log.exists() else 0
    posts = request(cluster.port("nginx"), "/api/v1/feed?limit=30").json()["data"]
    # /healthz and /readyz always reach a node; post pages reach one once a second each.
    paths = [p for post in posts for p in ("/healthz", f"/api/v1/posts/{post['id']}", "/readyz")]
    with Load(cluster.port("nginx"), paths, threads=4, rate=100, max_seconds=150) as load:
        assert wait_for(lambda: load.result.total >= 100, 60)
        # A host that freezes, then dies: requests pile up on its connections, then are cut off.
        os.killpg(victim, signal.SIGSTOP)
        time.sleep(0.5)
        os.killpg(victim, signal.SIGKILL)
        assert wait_for(lambda: not group_members(victim), 10)
        killed_at, killed_t, survivor_from = load.result.total, time.monotonic(), survivor.stat().st_size
        # Keep the stream going past the node's fail_timeout (5 s), so Nginx probes the dead node
        # again and routes around it once more (time and a count: a busy machine sends fewer).
        fail_timeout = float(cluster.settings["NGINX_FAIL_TIMEOUT"].rstrip("s"))
        assert wait_for(
            lambda: time.monotonic() > killed_t + fail_timeout + 1 and load.result.total >= killed_at + 100,
            fail_timeout + 60,
        )
    result = load.result
    assert not result.errors and set(result.statuses) == {200}, (result.statuses, result.errors, result.failures[:10])
    assert _served(survivor, survivor_from) >= 50  # the other node took the traffic
    log = error_log.read_bytes()[errors_from:].decode(errors="replace")
    # The kill did cut requests off (the retry path ran) and the passive check took the node out.
    assert any(marker in log for marker in UPSTREAM_FAILURE), log[-2000:]
    assert "upstream server temporarily disabled" in log, log[-2000:]
