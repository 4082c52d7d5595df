"""docker-compose.yml's `cluster` profile has the topology of `make cluster`. Checked with
`docker compose config` (or docker-compose v1) when a client is installed; otherwise the YAML
itself, with compose's ${NAME:-default} / ${NAME:?error} interpolation done here."""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import yaml

from devstack.stack import ENV_FILE, nginx_placeholders, read_env_file, upstream_servers
from tests.stack.conftest import REPO

CLUSTER = {
    "postgres-replica",
    "redis-replica",
    "sentinel-1",
    "sentinel-2",
    "sentinel-3",
    "app-1",
    "app-2",
    "nginx-cluster",
}
SINGLE = {"postgres", "redis", "migrate", "app", "nginx"}
SECRETS = {"SECRET_KEY": "s" * 40, "POSTGRES_PASSWORD": "pw"}


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _interpolate(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if values.get(name):
            return values[name]
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return arg or ""

    text = re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)([^}]*))?\}", one, text)
    return text.replace("$$", "$")


def cluster_config() -> dict[str, Any]:
    """The configuration with the cluster profile, interpolated from stack.env and the secrets."""
    compose = _compose_command()
    if compose is None:
        settings = read_env_file()
        text = _interpolate((REPO / "docker-compose.yml").read_text(), {**settings, **SECRETS})
        config: dict[str, Any] = yaml.safe_load(text)
        for service in config["services"].values():  # env_file: stack.env, under `environment`
            if service.get("env_file") == "stack.env":
                service["environment"] = {**settings, **service.get("environment", {})}
        return config
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", **SECRETS}
    args = [*compose, "--env-file", str(ENV_FILE), "--profile", "cluster", "config"]
    res = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(res.stdout.replace("$$", "$"))
    return config


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {k: str(v) for k, v in environment.items()}


def _depends(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    return (
        {name: "service_started" for name in depends}
        if isinstance(depends, list)
        else {name: spec.get("condition", "service_started") for name, spec in depends.items()}
    )


def test_cluster_profile_adds_the_topology_and_leaves_the_single_stack_alone() -> None:
    services = cluster_config()["services"]
    assert set(services) == SINGLE | CLUSTER
    for name in CLUSTER:
        assert services[name].get("profiles") == ["cluster"], name
    for name in SINGLE:
        assert not services[name].get("profiles"), name
        assert not set(_depends(services[name])) & CLUSTER, f"{name} must not need a cluster service"
    for name, service in services.items():
        assert set(_depends(service)) <= set(services), name
        assert service.get("healthcheck", {}).get("test") or name == "migrate", f"{name} has no healthcheck"


def test_replica_is_a_hot_standby_copied_from_the_primary_through_a_slot() -> None:
    services = cluster_config()["services"]
    replica = services["postgres-replica"]
    script = " ".join(replica["command"]) if isinstance(replica["command"], list) else replica["command"]
    assert "pg_basebackup -h postgres" in script and " -R " in script and "-S replica_1" in script
    assert "pg_create_physical_replication_slot('replica_1')" in script
    assert "hot_standby=on" in script
    assert _depends(replica) == {"postgres": "service_healthy", "migrate": "service_completed_successfully"}
    # The primary lets replication connections in from the network (a script run at initdb).
    mounts = " ".join(map(str, services["postgres"]["volumes"]))
    assert "postgres-replication.sh" in mounts and "/docker-entrypoint-initdb.d/" in mounts
    assert "host replication all all" in (REPO / "scripts/compose/postgres-replication.sh").read_text()


def test_redis_replica_and_three_sentinels_watch_the_primary() -> None:
    services = cluster_config()["services"]
    settings = read_env_file()
    command = services["redis-replica"]["command"]
    assert command[-3:] == ["--replicaof", "redis", "6379"]
    master = settings["REDIS_SENTINEL_MASTER"]
    for name in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = " ".join(services[name]["command"])
        assert f"sentinel monitor {master} redis 6379 {settings['SENTINEL_QUORUM']}" in script
        assert f"down-after-milliseconds {master} {settings['SENTINEL_DOWN_AFTER_MS']}" in script
        assert f"failover-timeout {master} {settings['SENTINEL_FAILOVER_TIMEOUT_MS']}" in script
        assert "--sentinel" in script
        assert _depends(services[name]) == {"redis": "service_healthy", "redis-replica": "service_healthy"}


def test_app_nodes_and_their_edge() -> None:
    services = cluster_config()["services"]
    settings = read_env_file()
    for name in ("app-1", "app-2"):
        node = services[name]
        env = _env(node)
        assert node["command"][:3] == ["gunicorn", "-c", "gunicorn.conf.py"]
        assert env["DATABASE_URL"].startswith("postgresql://postgres:pw@postgres:5432/")
        assert env["DATABASE_REPLICA_URLS"].startswith("postgresql://postgres:pw@postgres-replica:5432/")
        assert env["REDIS_SENTINELS"] == "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379"
        assert env["REDIS_SENTINEL_MASTER"] == settings["REDIS_SENTINEL_MASTER"]
        assert env["WEB_CONCURRENCY"] == settings["CLUSTER_WEB_CONCURRENCY"]
        # X-Forwarded-For is trusted from the cluster's edge only (issue 12 item 6).
        assert env["TRUSTED_PROXIES"] == services["nginx-cluster"]["networks"]["default"]["ipv4_address"]
        assert "FORWARDED_ALLOW_IPS" not in env
        needs = _depends(node)
        assert needs["migrate"] == "service_completed_successfully"
        assert all(needs[s] == "service_healthy" for s in ("postgres", "postgres-replica", "redis", "sentinel-1"))
    edge = services["nginx-cluster"]
    env = _env(edge)
    assert nginx_placeholders() <= set(env)
    # The same upstream lines devstack renders for the local cluster, one per node.
    expected = upstream_servers(["app-1:8000", "app-2:8000"], settings)
    assert env["NGINX_UPSTREAM_SERVERS"].split() == expected.split()
    assert _env(services["nginx"])["NGINX_UPSTREAM_SERVERS"].split() == upstream_servers(["app:8000"], settings).split()
    assert _depends(edge) == {"app-1": "service_healthy", "app-2": "service_healthy"}
    assert any(
        str(port).startswith(f"127.0.0.1:{settings['CLUSTER_NGINX_PORT']}:")
        or (isinstance(port, dict) and str(port.get("published")) == settings["CLUSTER_NGINX_PORT"])
        for port in edge["ports"]
    )


def test_upstream_servers_one_socket_twice_several_nodes_with_passive_checks() -> None:
    settings = {"NGINX_MAX_FAILS": "3", "NGINX_FAIL_TIMEOUT": "5s"}
    assert upstream_servers(["h:1"], settings).split() == ["server", "h:1", "max_fails=0;"] * 2
    lines = upstream_servers(["h:1", "h:2", "h:3"], settings).split(";")
    assert [line.split() for line in lines if line.strip()] == [
        ["server", f"h:{i}", "max_fails=3", "fail_timeout=5s"] for i in (1, 2, 3)
    ]
