"""The multi-node cluster for infrastructure tests: started once per run through the real CLI
(`python -m devstack.cluster up`) in a temp dir on free ports with a small dataset, always
stopped at the end, and checked to have left no process behind.

Tests that break a part of it run after the ones that need it whole, in file-name order: an
app node killed (test_edge, which starts it again), replay paused (test_postgres,
test_replicas: resumed after), the Redis primary killed (test_sentinel: for good)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import free_port, traversable_tmpdir
from devstack.stack import alive, group_members
from tests.stack.conftest import REPO, live_processes_mentioning

CLUSTER_POSTS = 200
STRIPPED = {"DATABASE_URL", "DATABASE_REPLICA_URLS", "REDIS_URL", "REDIS_SENTINELS", "SECRET_KEY"}


def missing_binaries() -> list[str]:
    """Server binaries the cluster needs that this machine lacks (the tests skip, naming them)."""
    from devstack.servers import find_pg_bindir

    missing = [
        name for name in ("redis-server", "nginx") if not shutil.which(name) and not Path(f"/usr/sbin/{name}").exists()
    ]
    try:
        bindir = find_pg_bindir()
    except FileNotFoundError:
        return [*missing, "postgresql"]
    return missing + [name for name in ("pg_basebackup", "psql") if not (bindir / name).exists()]


@dataclass
class ClusterInfo:
    root: Path
    state: dict[str, Any]

    def service(self, name: str) -> dict[str, Any]:
        info: dict[str, Any] = self.state["services"][name]
        return info

    def port(self, name: str) -> int:
        return int(self.service(name)["port"])

    def pid(self, name: str) -> int:
        return int(self.service(name)["pid"])

    def url(self, name: str) -> str:
        return str(self.service(name)["url"])

    def of_kind(self, kind: str) -> list[str]:
        return [name for name, info in self.state["services"].items() if info["kind"] == kind]

    @property
    def settings(self) -> dict[str, str]:
        settings: dict[str, str] = self.state["settings"]
        return settings

    @property
    def logs(self) -> Path:
        return Path(self.state["paths"]["logs"])


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env.update(
        {
            "CLUSTER_POSTGRES_PORTS": f"{free_port()},{free_port()}",
            "CLUSTER_REDIS_PORTS": f"{free_port()},{free_port()}",
            "CLUSTER_SENTINEL_PORTS": ",".join(str(free_port()) for _ in range(3)),
            "CLUSTER_APP_PORTS": f"{free_port()},{free_port()}",
            "CLUSTER_NGINX_PORT": str(free_port()),
            "STACK_POSTS": str(CLUSTER_POSTS),
            "CLUSTER_WEB_CONCURRENCY": "1",
            "NGINX_WORKER_PROCESSES": "1",
            "ACCESS_LOG": "json",  # each node logs the requests it served: the balancing is visible
            # A replica whose replay stalls stays in rotation: the LSN rule alone keeps reads of a
            # write off it (tests/cluster/test_replicas.py); leaving it out is tested in tests/replicas.
            "DB_REPLICA_MAX_STALL": "300",
        }
    )
    return env


def cluster_cli(
    command: str, root: Path, env: Mapping[str, str], timeout: float, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.cluster", command, "--dir", str(root), *args],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def cluster_cli_env() -> dict[str, str]:
    return cluster_env()


@pytest.fixture(scope="session")
def cluster(cluster_cli_env: dict[str, str]) -> Iterator[ClusterInfo]:
    if missing := missing_binaries():
        pytest.skip(f"not installed: {', '.join(missing)} (bash scripts/ensure-servers.sh)")
    with traversable_tmpdir("readwire-cluster-") as root:
        yield from _run_cluster(root, cluster_cli_env)


def _run_cluster(root: Path, env: dict[str, str]) -> Iterator[ClusterInfo]:
    try:
        up = cluster_cli("up", root, env, timeout=300)
        assert up.returncode == 0, f"cluster up failed:\n{up.stdout}\n{up.stderr}"
        yield ClusterInfo(root, json.loads((root / "state.json").read_text()))
    finally:
        state_file = root / "state.json"
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        down = cluster_cli("down", root, env, timeout=180)
        left = [
            (name, pid)
            for name, info in state.get("services", {}).items()
            for pid in [info["pid"], *group_members(info["pid"] or -1)]
            if pid and alive(pid)
        ]
        assert down.returncode == 0, f"cluster down failed:\n{down.stdout}\n{down.stderr}"
        assert not left, f"processes left after cluster down: {left}"
        assert not live_processes_mentioning(str(root)), live_processes_mentioning(str(root))


# --- the app on the cluster: an editor, posts of our own, the pages that show them, the metrics ---


@pytest.fixture(scope="session")
def editor_token(cluster: ClusterInfo) -> str:
    from devstack.capacity import make_editors

    return make_editors(cluster.state, 1, cluster.port("nginx"))[0]


def api(port: int, path: str, method: str = "GET", token: str | None = None, body: Any = None) -> Any:
    from tests.stack.conftest import request

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = request(port, path, method, headers=headers, body=body, timeout=30)
    assert response.status < 300, (method, path, response.status, response.body[:300])
    return response.json() if response.body else None


@dataclass
class TrackedPost:
    id: int
    title: str
    category: str
    tags: list[str]
    author: str

    def pages(self, limit: int = 20) -> list[str]:
        """Every cached page that shows this (newest) post's title."""
        feeds = [
            "/api/v1/feed",
            f"/api/v1/categories/{self.category}/feed",
            f"/api/v1/authors/{self.author}/feed",
            *(f"/api/v1/tags/{tag}/feed" for tag in self.tags),
        ]
        return [
            *(f"{feed}?limit={limit}" for feed in feeds),
            "/api/v1/feed.json",
            "/api/v1/feed.atom",
            f"/api/v1/categories/{self.category}/feed.atom",
            f"/api/v1/posts/{self.id}",
            f"/api/v1/posts/{self.id}?fields=id,title",
            f"/api/v1/posts?ids={self.id}",
        ]


# The edge (Nginx) keeps a page until the end of the second it fetched it in: a write shows there
# within 1 s of its acknowledgement (the contract), so reads of the edge after a write wait this long.
EDGE_BOUND = 1.2


def past_edge_bound(written: float) -> None:
    """Wait until a write acknowledged at `written` (time.monotonic()) must show at the edge."""
    time.sleep(max(0.0, written + EDGE_BOUND - time.monotonic()))


def create_post(port: int, token: str, title: str) -> TrackedPost:
    category = api(port, "/api/v1/categories")["data"][0]["slug"]
    tags = [tag["slug"] for tag in api(port, "/api/v1/tags?limit=2")["data"]]
    body = {"title": title, "body": "Written by tests/cluster.", "category": category, "tags": tags}
    created = api(port, "/api/v1/posts", "POST", token, body)
    return TrackedPost(int(created["id"]), title, category, tags, created["author"]["username"])


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of a metric's samples matching `labels` on one node (/metrics, Prometheus text)."""
    from tests.stack.conftest import request

    text = request(port, "/metrics").body.decode()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{key}="{val}"' in head for key, val in labels.items()):
            total += float(value)
    return total


def wal_position(url: str, replica: bool = False) -> int:
    import psycopg

    query = "pg_last_wal_replay_lsn()" if replica else "pg_current_wal_insert_lsn()"
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(f"SELECT coalesce(pg_wal_lsn_diff({query}, '0/0'), 0)::bigint").fetchone()
    assert row is not None
    return int(row[0])


def replica_caught_up(cluster: ClusterInfo) -> bool:
    return wal_position(cluster.url("postgres-replica-1"), replica=True) >= wal_position(
        cluster.url("postgres-primary")
    )


def set_replay(cluster: ClusterInfo, paused: bool) -> None:
    import psycopg

    from tests.stack.conftest import wait_for

    url = cluster.url("postgres-replica-1")
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")
        want = ("paused",) if paused else ("not paused",)
        assert wait_for(lambda: conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone() == want, 30)
