"""The multi-node topology on this machine, without Docker: every part a separate server.

    python -m devstack.cluster up|down|status [--dir .cluster]
    python -m devstack.cluster restart-app app-1 [--dir .cluster]

``up`` starts, detached from this process (it returns; the servers stay):

* PostgreSQL: a primary and one streaming replica per further port of CLUSTER_POSTGRES_PORTS,
  each made by ``pg_basebackup -R`` through a physical replication slot of its own, hot standby
  on (read-only queries; ``pg_last_wal_replay_lsn()`` shows how far it has replayed). The
  primary keeps its data across down/up; a replica is rebuilt from it at every ``up``.
* Redis: a primary and a replica (CLUSTER_REDIS_PORTS), three Sentinels (CLUSTER_SENTINEL_PORTS)
  watching the primary under REDIS_SENTINEL_MASTER, with SENTINEL_QUORUM,
  SENTINEL_DOWN_AFTER_MS and SENTINEL_FAILOVER_TIMEOUT_MS. ``up`` returns only once every
  Sentinel knows the replica and the other Sentinels (a failover needs both).
* App nodes: one gunicorn master per CLUSTER_APP_PORTS entry (gunicorn.conf.py, as separate
  hosts would run it), CLUSTER_WEB_CONCURRENCY workers each, DB_CONNECTION_BUDGET split
  between them. Each gets DATABASE_URL (the primary), DATABASE_REPLICA_URLS (page fills may
  read there, app/replicas.py), REDIS_SENTINELS and REDIS_SENTINEL_MASTER (the Redis primary
  is found through the Sentinels, app/cache/discovery.py; REDIS_URL, the initial primary, is
  then unused). ``restart-app`` starts a dead node again the same way.
* Nginx: the same nginx.conf template, its upstream listing every app node with passive
  health checks (NGINX_MAX_FAILS, NGINX_FAIL_TIMEOUT).

Migrations and the STACK_POSTS seed run on the primary first. ``<dir>/state.json`` (mode 0600)
records pids, ports, URLs, the app nodes' environment and the settings; ``down`` stops
everything (Sentinels before Redis, so shutting down triggers no failover) and checks that no
process is left; ``status`` shows each server, the replicas' replay lag and the Redis primary
the Sentinels name. Configuration: stack.env (the CLUSTER_* keys), overridden by the environment.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from devstack.servers import HOST, Postgres, Redis, Sentinel
from devstack.stack import (
    PG_SETTINGS,
    REPO,
    StackError,
    StateDir,
    alive,
    check_ports_free,
    leftovers,
    migrate_and_seed,
    nginx_values,
    say,
    stack_settings,
    start_gunicorn,
    start_nginx,
    stop_group,
    wait_until,
)
from devstack.stack import _run as run_checked

DEFAULT_DIR = REPO / ".cluster"
STATE_VERSION = 1
# Order of shutdown: the edge first, then the nodes, then the Sentinels (before Redis, so
# stopping Redis starts no failover), then the data servers, replicas before their primary.
KINDS = ("nginx", "app", "sentinel", "redis", "postgres-replica", "postgres")
# The primary's replication slots keep WAL for a replica that is down (rebuilt at the next up).
PRIMARY_SETTINGS = {"max_wal_senders": "10", "max_replication_slots": "10"}
# Replica: queries while replaying; feedback keeps the primary's vacuum from cancelling them;
# the primary's view of its replay position (pg_stat_replication) refreshes every second.
REPLICA_SETTINGS = {"hot_standby": "on", "hot_standby_feedback": "on", "wal_receiver_status_interval": "1s"}
# Environment variables of the app itself (app/config.py, gunicorn.conf.py) that `up` records
# for the nodes when they are not stack.env keys, so `restart-app` starts a node the same way.
APP_KNOBS = ("CACHE_", "DB_", "REDIS_", "OUTBOX_", "GUNICORN_", "RATELIMIT_", "METRICS_", "LOG_LEVEL")
# Pages expire, generation counters must not: evict only keys that carry a TTL.
REDIS_CONFIG = {"maxmemory": "512mb", "maxmemory-policy": "volatile-lru"}


def _ports(value: str) -> list[int]:
    return [int(p) for p in value.split(",") if p.strip()]


@dataclass(frozen=True)
class Layout:
    """Ports of every server, from the CLUSTER_* settings."""

    postgres: list[int]
    redis: list[int]
    sentinels: list[int]
    apps: list[int]
    nginx: int

    @classmethod
    def from_settings(cls, settings: Mapping[str, str]) -> Layout:
        layout = cls(
            postgres=_ports(settings["CLUSTER_POSTGRES_PORTS"]),
            redis=_ports(settings["CLUSTER_REDIS_PORTS"]),
            sentinels=_ports(settings["CLUSTER_SENTINEL_PORTS"]),
            apps=_ports(settings["CLUSTER_APP_PORTS"]),
            nginx=int(settings["CLUSTER_NGINX_PORT"]),
        )
        if len(layout.postgres) < 2 or len(layout.redis) != 2 or len(layout.sentinels) < 3 or len(layout.apps) < 2:
            raise StackError(
                "the cluster needs 2+ PostgreSQL ports (primary, replicas), 2 Redis ports (primary, replica), "
                f"3+ Sentinel ports and 2+ app ports; got {layout}"
            )
        all_ports = [*layout.postgres, *layout.redis, *layout.sentinels, *layout.apps, layout.nginx]
        if len(set(all_ports)) != len(all_ports):
            raise StackError(f"a port is used twice: {all_ports}")
        return layout

    def named(self) -> dict[str, int]:
        ports = {"postgres-primary": self.postgres[0]}
        ports.update({f"postgres-replica-{i}": p for i, p in enumerate(self.postgres[1:], 1)})
        ports.update({f"redis-{i}": p for i, p in enumerate(self.redis, 1)})
        ports.update({f"sentinel-{i}": p for i, p in enumerate(self.sentinels, 1)})
        ports.update({f"app-{i}": p for i, p in enumerate(self.apps, 1)})
        return {**ports, "nginx": self.nginx}


def redis_client(port: int, timeout: float = 1.0) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


def sentinel_view(port: int, master: str) -> dict[str, Any] | None:
    """What one Sentinel knows of ``master`` (SENTINEL MASTER), None if it does not answer."""
    try:
        with redis_client(port) as client:
            view: dict[str, Any] = client.sentinel_master(master)
            return view
    except (redis.RedisError, OSError):
        return None


def sentinel_primary(port: int, master: str) -> tuple[str, int] | None:
    """The primary's address according to one Sentinel (SENTINEL get-master-addr-by-name)."""
    try:
        with redis_client(port) as client:
            addr = client.sentinel_get_master_addr_by_name(master)
    except (redis.RedisError, OSError):
        return None
    return (str(addr[0]), int(addr[1])) if addr else None


def redis_role(port: int) -> str:
    try:
        with redis_client(port) as client:
            return str(client.info("replication")["role"])
    except (redis.RedisError, OSError):
        return "down"


def replica_lag(primary_url: str, replica_url: str) -> dict[str, Any]:
    """The replica's replayed LSN, the primary's current LSN, the gap in bytes, and whether
    replay is paused (pg_get_wal_replay_pause_state)."""
    with psycopg.connect(primary_url, connect_timeout=2, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
        assert row is not None
        primary_lsn = row[0]
    with psycopg.connect(replica_url, connect_timeout=2, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_last_wal_replay_lsn(), pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()),"
            " pg_get_wal_replay_pause_state()",
            (primary_lsn,),
        ).fetchone()
        assert row is not None
    return {
        "primary_lsn": str(primary_lsn),
        "replay_lsn": str(row[0]),
        "lag_bytes": max(0, int(row[1])),
        "replay": str(row[2]),
    }


class Cluster(StateDir):
    """One cluster rooted at ``root`` (default .cluster/): its files, its state, up/down/status."""

    def __init__(self, root: Path = DEFAULT_DIR) -> None:
        super().__init__(root)

    def running(self, state: Mapping[str, Any]) -> dict[str, bool]:
        return {name: alive(info.get("pid")) for name, info in state.get("services", {}).items()}

    # --- up -------------------------------------------------------------------------------------
    def up(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Start the cluster and return its state (already fully up: just the state)."""
        environ = dict(os.environ if environ is None else environ)
        state = self.read_state()
        if state and state.get("complete") and all(self.running(state).values()):
            say(f"already up ({self.state_file})")
            return state
        if state:
            say("a previous cluster is partly running: stopping it first")
            self.down()
        settings = stack_settings(environ)
        layout = Layout.from_settings(settings)
        self._prepare_dirs()
        run_checked(["bash", str(REPO / "scripts" / "ensure-servers.sh")], environ, "scripts/ensure-servers.sh")
        check_ports_free(layout.named())
        state = {"version": STATE_VERSION, "dir": str(self.root), "started_at": time.time(), "services": {}}
        try:
            self._up(state, settings, layout, environ)
        except BaseException:
            self.write_state(state)
            say("start failed: stopping what was started")
            self.down()
            raise
        return state

    def _record(self, state: dict[str, Any], name: str, kind: str, port: int, pid: int | None, **extra: Any) -> None:
        scheme = {"postgres": "postgresql", "postgres-replica": "postgresql", "app": "http", "nginx": "http"}
        url = extra.pop("url", None) or f"{scheme.get(kind, 'redis')}://{HOST}:{port}"
        state["services"][name] = {"kind": kind, "url": url, "port": port, "pid": pid, **extra}
        self.write_state(state)

    def _up(self, state: dict[str, Any], settings: dict[str, str], layout: Layout, environ: dict[str, str]) -> None:
        t0 = time.monotonic()
        dbname = settings.get("POSTGRES_DB", "readwire")
        max_connections = settings.get("POSTGRES_MAX_CONNECTIONS", "200")
        primary_settings = {**PG_SETTINGS, **PRIMARY_SETTINGS, "max_connections": max_connections}
        primary = Postgres.start(
            self.root / "postgres-primary", port=layout.postgres[0], settings=primary_settings, detached=True
        )
        self._record(
            state, "postgres-primary", "postgres", primary.port, primary.pid(), url=primary.url_for(dbname),
            dir=str(primary.base_dir),
        )  # fmt: skip
        if not primary.psql(f"SELECT 1 FROM pg_database WHERE datname = '{dbname}'").strip():
            primary.create_database(dbname)
        secret = self._secret(environ)
        posts = settings.get("STACK_POSTS", "100000")
        took = migrate_and_seed(
            {**environ, **settings, "DATABASE_URL": primary.url_for(dbname), "SECRET_KEY": secret}, posts
        )
        say(f"postgres primary up on {primary.port}; migrated and seeded ({posts} posts if empty; {took:.1f} s)")

        replica_urls = []
        for i, port in enumerate(layout.postgres[1:], 1):
            replica = Postgres.replica_of(
                primary,
                self.root / f"postgres-replica-{i}",
                port=port,
                slot=f"replica_{i}",
                settings={**PG_SETTINGS, **REPLICA_SETTINGS, "max_connections": max_connections},
                detached=True,
            )
            replica_urls.append(replica.url_for(dbname))
            self._record(
                state, f"postgres-replica-{i}", "postgres-replica", replica.port, replica.pid(),
                url=replica.url_for(dbname), dir=str(replica.base_dir), slot=f"replica_{i}",
            )  # fmt: skip
            say(f"postgres replica {i} up on {port} (slot replica_{i}, in recovery: {replica.is_in_recovery()})")

        redis_primary = Redis.start(self.root / "redis-1", port=layout.redis[0], config=REDIS_CONFIG, detached=True)
        self._record(state, "redis-1", "redis", redis_primary.port, redis_primary.proc.pid, role="primary")
        replica_config = {**REDIS_CONFIG, "replicaof": f"{HOST} {redis_primary.port}"}
        redis_replica = Redis.start(self.root / "redis-2", port=layout.redis[1], config=replica_config, detached=True)
        self._record(state, "redis-2", "redis", redis_replica.port, redis_replica.proc.pid, role="replica")
        if not wait_until(lambda: _link_up(redis_replica.port), 30):
            raise StackError(f"redis replica on {redis_replica.port} did not sync with {redis_primary.port}")
        say(f"redis primary {redis_primary.port}, replica {redis_replica.port} (in sync)")

        master = settings["REDIS_SENTINEL_MASTER"]
        watch = {
            "master": master,
            "host": HOST,
            "port": str(redis_primary.port),
            "quorum": settings["SENTINEL_QUORUM"],
            "down-after-milliseconds": settings["SENTINEL_DOWN_AFTER_MS"],
            "failover-timeout": settings["SENTINEL_FAILOVER_TIMEOUT_MS"],
        }
        for i, port in enumerate(layout.sentinels, 1):
            sentinel = Sentinel.start(self.root / f"sentinel-{i}", port=port, config=watch, detached=True)
            self._record(state, f"sentinel-{i}", "sentinel", port, sentinel.proc.pid)
        others = len(layout.sentinels) - 1
        if not wait_until(lambda: all(_sentinel_ready(p, master, others) for p in layout.sentinels), 60, 0.2):
            views = {p: sentinel_view(p, master) for p in layout.sentinels}
            raise StackError(f"the Sentinels did not discover the replica and each other in 60 s: {views}")
        say(f"sentinels up on {', '.join(map(str, layout.sentinels))} (quorum {settings['SENTINEL_QUORUM']})")

        nodes = len(layout.apps)
        state["env"] = {
            "DATABASE_URL": primary.url_for(dbname),
            "DATABASE_REPLICA_URLS": ",".join(replica_urls),
            "REDIS_URL": redis_primary.url,
            "REDIS_SENTINELS": ",".join(f"{HOST}:{p}" for p in layout.sentinels),
            "REDIS_SENTINEL_MASTER": master,
            "SECRET_KEY": secret,
        }
        node_env = {
            **environ,
            **settings,
            **state["env"],
            "WEB_CONCURRENCY": settings["CLUSTER_WEB_CONCURRENCY"],
            # Every node's pool draws on the same primary's max_connections.
            "DB_CONNECTION_BUDGET": str(max(4, int(settings.get("DB_CONNECTION_BUDGET") or 90) // nodes)),
            "PYTHONUNBUFFERED": "1",
        }
        state["node_env"] = {k: node_env[k] for k in ("WEB_CONCURRENCY", "DB_CONNECTION_BUDGET")}
        # The app's own knobs given to `up` (not in stack.env), so a restarted node gets them too.
        state["app_overrides"] = {k: v for k, v in environ.items() if k.startswith(APP_KNOBS) and k not in settings}
        for i, port in enumerate(layout.apps, 1):
            self._start_app(state, f"app-{i}", port, node_env)

        upstreams = [f"{HOST}:{p}" for p in layout.apps]
        values = nginx_values(
            {**settings, "NGINX_PORT": str(layout.nginx)}, self.nginx_dir, self.static_dir, self.logs, upstreams
        )
        pid = start_nginx(values, self.nginx_dir, self.logs, layout.nginx)
        self._record(state, "nginx", "nginx", layout.nginx, pid)

        state.update(
            nginx_url=f"http://{HOST}:{layout.nginx}",
            app_urls=[f"http://{HOST}:{p}" for p in layout.apps],
            database_url=state["env"]["DATABASE_URL"],
            redis_url=state["env"]["REDIS_URL"],
            settings=settings,
            paths={"logs": str(self.logs), "nginx_conf": str(self.nginx_dir / "nginx.conf")},
            complete=True,
        )
        self.write_state(state)
        say(f"up in {time.monotonic() - t0:.1f} s; state in {self.state_file}")

    def _start_app(self, state: dict[str, Any], name: str, port: int, node_env: Mapping[str, str]) -> None:
        log = self.logs / f"{name}.log"
        pid = start_gunicorn(port, node_env, log, f"readwire-cluster-{name}-{port}", self.root / name / "metrics")
        self._record(state, name, "app", port, pid, log=str(log))

    def restart_app(self, name: str, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Start app node ``name`` again (after it died or was killed), with the environment it
        was first started with; returns the new state. A node still running is left alone."""
        state = self.read_state()
        if not state or not state.get("complete"):
            raise StackError("no complete cluster to restart a node of")
        info = state["services"].get(name)
        if info is None or info["kind"] != "app":
            raise StackError(f"no app node {name!r}")
        if alive(info.get("pid")):
            say(f"{name} is running (pid {info['pid']})")
            return state
        stop_group(int(info["pid"]), "gunicorn", signal.SIGKILL, 5)  # any worker its master left behind
        node_env = {
            **(os.environ if environ is None else environ),
            **state["settings"],
            **state.get("app_overrides", {}),
            **state["env"],
            **state["node_env"],
            "PYTHONUNBUFFERED": "1",
        }
        self._start_app(state, name, int(info["port"]), node_env)
        say(f"{name} restarted on {info['port']} (pid {state['services'][name]['pid']})")
        return state

    def restart_redis(self, name: str, primary_port: int) -> dict[str, Any]:
        """Start Redis ``name`` again (after it was killed) as a replica of ``primary_port``, the
        primary the Sentinels now name (they would demote a returning old primary anyway)."""
        state = self.read_state()
        if not state or not state.get("complete"):
            raise StackError("no complete cluster to restart a server of")
        info = state["services"].get(name)
        if info is None or info["kind"] != "redis":
            raise StackError(f"no Redis server {name!r}")
        if alive(info.get("pid")):
            say(f"{name} is running (pid {info['pid']})")
            return state
        config = {**REDIS_CONFIG, "replicaof": f"{HOST} {primary_port}"}
        server = Redis.start(self.root / name, port=int(info["port"]), config=config, detached=True)
        self._record(state, name, "redis", server.port, server.proc.pid, role="replica")
        say(f"{name} restarted on {server.port} as a replica of {primary_port}")
        return state

    # --- down -------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every server of the state; returns leftovers (empty when all are gone)."""
        state = self.read_state()
        if not state:
            return []
        services: dict[str, dict[str, Any]] = state.get("services", {})
        graceful = float(state.get("settings", {}).get("GUNICORN_GRACEFUL_TIMEOUT") or 20)
        for kind in KINDS:
            for info in (info for info in services.values() if info.get("kind") == kind):
                if kind in ("postgres", "postgres-replica"):
                    Postgres(Path(info["dir"]), int(info["port"]), detached=True).stop()
                elif info.get("pid"):
                    marker, first, timeout = {
                        "nginx": ("nginx", signal.SIGQUIT, 10.0),
                        "app": ("gunicorn", signal.SIGTERM, graceful + 5),
                        "sentinel": ("redis-server", signal.SIGTERM, 10.0),
                        "redis": ("redis-server", signal.SIGTERM, 10.0),
                    }[kind]
                    stop_group(int(info["pid"]), marker, first, timeout)
        # A server stopped the hard way (a postmaster that ignored pg_ctl, e.g. while SIGSTOPped,
        # is SIGKILLed) takes a moment to leave the process table on a busy machine.
        wait_until(lambda: not leftovers(services), 15, 0.1)
        left = leftovers(services)
        if not left:
            self.state_file.unlink(missing_ok=True)
        return left

    # --- status -----------------------------------------------------------------------------------
    def status_lines(self, state: Mapping[str, Any]) -> Iterator[str]:
        """One line per server (running or not, its role), then the replicas' lag and the primary
        each Sentinel names."""
        services = state.get("services", {})
        running = self.running(state)
        master = state.get("settings", {}).get("REDIS_SENTINEL_MASTER", "readwire")
        for name, info in services.items():
            extra = ""
            if running[name] and info["kind"] == "redis":
                extra = f"  role={redis_role(int(info['port']))}"
            elif running[name] and info["kind"] == "postgres-replica":
                try:
                    lag = replica_lag(services["postgres-primary"]["url"], info["url"])
                    extra = f"  replay_lsn={lag['replay_lsn']} lag_bytes={lag['lag_bytes']} replay={lag['replay']}"
                except (psycopg.Error, KeyError) as exc:
                    extra = f"  lag unknown ({type(exc).__name__})"
            elif running[name] and info["kind"] == "sentinel":
                addr = sentinel_primary(int(info["port"]), master)
                extra = f"  primary={addr[0]}:{addr[1]}" if addr else "  primary=?"
            yield f"{name}  {info['url']}  {'running' if running[name] else 'STOPPED'}{extra}"


def _link_up(port: int) -> bool:
    try:
        with redis_client(port) as client:
            return client.info("replication").get("master_link_status") == "up"
    except (redis.RedisError, OSError):
        return False


def _sentinel_ready(port: int, master: str, others: int) -> bool:
    view = sentinel_view(port, master)
    return bool(view) and int(view["num-slaves"]) >= 1 and int(view["num-other-sentinels"]) >= others  # type: ignore[index]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "restart-app"])
    parser.add_argument("node", nargs="?", help="restart-app: the app node to start again (e.g. app-1)")
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="state, data and logs (default: .cluster/)")
    args = parser.parse_intermixed_args(argv)
    cluster = Cluster(args.dir)
    if args.command == "up":
        try:
            state = cluster.up()
        except StackError as exc:
            print(f"cluster: {exc}", file=sys.stderr)
            return 1
        print("\n".join(f"{name}  {info['url']}" for name, info in state["services"].items()))
        return 0
    if args.command == "restart-app":
        try:
            state = cluster.restart_app(args.node or "")
        except StackError as exc:
            print(f"cluster: {exc}", file=sys.stderr)
            return 1
        print(f"{args.node}  {state['services'][args.node]['url']}")
        return 0
    if args.command == "down":
        left = cluster.down()
        if left:
            print(f"cluster: still running: {', '.join(left)}", file=sys.stderr)
            return 1
        say("down: no process left")
        return 0
    current = cluster.read_state()
    if not current:
        print("cluster: not running", file=sys.stderr)
        return 3
    print("\n".join(cluster.status_lines(current)))
    return 0 if current.get("complete") and all(cluster.running(current).values()) else 1


if __name__ == "__main__":
    sys.exit(main())
