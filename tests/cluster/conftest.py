"""The multi-node cluster for infrastructure tests: started once per run through the real CLI
(`python -m devstack.cluster up`) in a temp dir on free ports with a small dataset, always
stopped at the end, and checked to have left no process behind.

Tests that break a part of it (an app node killed, the Redis primary killed) run after the ones
that need it whole: modules run in file-name order (test_edge, test_postgres, test_sentinel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
        }
    )
    return env


def cluster_cli(command: str, root: Path, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.cluster", command, "--dir", str(root)],
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
