"""The cheapest cooperative PostgreSQL driver path under gevent (issue 11), by numbers.

    python -m bench.drivers                    # ~16 min: 20 configurations x 3 interleaved rounds
    python -m bench.drivers --only app,sa-pg2 --rounds 5 --duration 8
    python -m bench.drivers --instructions 10 --concurrency 4    # client instructions per query (callgrind)

Each configuration runs in a fresh process (`taskset -c 0`, gevent's monkey patching first, as
gunicorn's gevent worker does), where CONCURRENCY greenlets execute the app's global feed page
statement (app/services/posts.py `_feed_statement`: `GET /api/v1/feed?limit=20`, 21 rows asked)
for a fixed time, first the first page, then a keyset page DEPTH into the feed. PostgreSQL
(devstack, data kept in DIR, migrated and seeded once with STACK_POSTS posts as `make stack` does)
runs on core 1. Per configuration and page: queries/s, the client process's CPU per query
(getrusage) and PostgreSQL's (every process of the cluster, /proc). Rounds are interleaved
(A B C ... A B C ...); the table gives medians and the median of per-round ratios against `app`,
the app's own path: psycopg 3 under SQLAlchemy Core with the app's engine options
(app/config.py: pool of POOL_SIZE, no overflow), its DeadlineConnection inside a request-like
deadline scope, the AUTOCOMMIT view page fills read through (app/replicas.py), psycopg's default
gevent wait (wait_poll), prepare_threshold 5, text results.

`sa-*` configurations go through SQLAlchemy Core the same way (`conn.execute(statement)` on an
engine of the app's options, pool of POOL_SIZE), `db-*` through the bare DBAPI (one connection per
greenlet, the SQL text SQLAlchemy compiles for that driver), which separates the driver's cost
from SQLAlchemy's. `-geventio` is a prototype kept here, not in the app: psycopg 3's wait loop on
gevent's own io watchers (`gevent.socket.wait_read/wait_write`, what psycogreen does for psycopg2)
instead of the patched `select.poll`.

The machine is shared: the load average and the CPU the rest of the machine used during each
run are reported beside the figures. Output: a Markdown table on stdout and in OUT/drivers.md,
every run in OUT/drivers.json. POSTGRES_PORT picks the server's port (default 55433).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# Nothing above may import ssl, socket users or a driver: the child process patches first.

REPO = Path(__file__).resolve().parents[1]
CLIENT_CPU, SERVER_CPU = 0, 1
PAGES = ("first", "deep")
BASELINE = "app"


@dataclass(frozen=True)
class Config:
    """One way of running the feed statement: layer, driver and its knobs."""

    name: str
    layer: str  # "sqlalchemy" | "dbapi"
    driver: str  # "psycopg" (3) | "psycopg2" (+ psycogreen)
    what: str
    autocommit: bool = True
    prepare_threshold: int | None = 5  # psycopg 3's default; None: never prepare
    binary: bool = False
    client_cursor: bool = False
    wait: str = ""  # psycopg 3's wait function: "" = its own choice (wait_poll under gevent)
    deadline: bool = False  # app/deadline.py's DeadlineConnection inside a deadline scope
    generic_plans: bool = False  # the server keeps one plan per prepared statement (plan_cache_mode)

    @property
    def options(self) -> str:
        """libpq `options` of its connections: the app's statement_timeout, and the plan cache mode."""
        generic = " -c plan_cache_mode=force_generic_plan" if self.generic_plans else ""
        return f"-c statement_timeout=5000{generic}"


def _configs() -> dict[str, Config]:
    sa, db = "sqlalchemy", "dbapi"
    found = [
        Config("app", sa, "psycopg", "the app today: app engine, DeadlineConnection in a 2 s scope", deadline=True),
        Config("sa-pg3", sa, "psycopg", "app engine, no deadline wrapper"),
        Config("sa-pg3-noprep", sa, "psycopg", "prepare_threshold=None", prepare_threshold=None),
        Config("sa-pg3-tx", sa, "psycopg", "a transaction per query (BEGIN ... ROLLBACK)", autocommit=False),
        Config("sa-pg3-generic", sa, "psycopg", "plan_cache_mode=force_generic_plan", generic_plans=True),
        Config("sa-pg3-binary", sa, "psycopg", "binary results", binary=True),
        Config("sa-pg3-client", sa, "psycopg", "ClientCursor (client-side binding)", client_cursor=True),
        Config("sa-pg3-select", sa, "psycopg", "PSYCOPG_WAIT_FUNC=wait_select", wait="wait_select"),
        Config("sa-pg3-geventio", sa, "psycopg", "wait on gevent io watchers (prototype)", wait="geventio"),
        Config("sa-pg2", sa, "psycopg2", "psycopg2-binary + psycogreen"),
        Config("sa-pg2-tx", sa, "psycopg2", "psycopg2 + psycogreen, a transaction per query", autocommit=False),
        Config("db-pg3", db, "psycopg", "psycopg 3 defaults (wait_poll, prepare_threshold=5, text)"),
        Config("db-pg3-deadline", db, "psycopg", "DeadlineConnection in a 2 s scope", deadline=True),
        Config("db-pg3-noprep", db, "psycopg", "prepare_threshold=None", prepare_threshold=None),
        Config("db-pg3-tx", db, "psycopg", "a transaction per query (BEGIN ... ROLLBACK)", autocommit=False),
        Config("db-pg3-generic", db, "psycopg", "plan_cache_mode=force_generic_plan", generic_plans=True),
        Config("db-pg3-binary", db, "psycopg", "binary results", binary=True),
        Config("db-pg3-client", db, "psycopg", "ClientCursor (client-side binding)", client_cursor=True),
        Config("db-pg3-select", db, "psycopg", "PSYCOPG_WAIT_FUNC=wait_select", wait="wait_select"),
        Config("db-pg3-geventio", db, "psycopg", "wait on gevent io watchers (prototype)", wait="geventio"),
        Config("db-pg2", db, "psycopg2", "psycopg2-binary + psycogreen"),
        Config("db-pg2-tx", db, "psycopg2", "psycopg2 + psycogreen, a transaction per query", autocommit=False),
    ]
    return {c.name: c for c in found}


CONFIGS = _configs()


def select_configs(only: str) -> list[Config]:
    """The configurations named in `only` (comma-separated, in the table's order), all when empty;
    the baseline is always measured (every ratio is against it)."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        raise SystemExit(f"unknown configuration(s): {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    return [c for c in CONFIGS.values() if not names or c.name in names or c.name == BASELINE]


# --- the child: one configuration, measured in a process of its own ---------------------------
def _geventio_wait(gen: Any, fileno: int, interval: float = 0.0, timeout: float | None = None) -> Any:
    """psycopg 3's wait protocol on gevent's io watchers (the prototype configuration)."""
    from gevent.socket import timeout as gevent_timeout
    from gevent.socket import wait_read, wait_readwrite, wait_write
    from psycopg.waiting import READY_NONE, READY_R, READY_RW, READY_W, WAIT_R, WAIT_W

    bound = interval if interval > 0 else None
    try:
        state = next(gen)
        while True:
            try:
                if state == WAIT_R:
                    wait_read(fileno, bound)
                    ready = READY_R
                elif state == WAIT_W:
                    wait_write(fileno, bound)
                    ready = READY_W
                else:
                    wait_readwrite(fileno, bound)
                    ready = READY_RW
            except gevent_timeout:
                ready = READY_NONE
            state = gen.send(ready)
    except StopIteration as stop:
        return stop.value


def _psycopg_connection_class(config: Config) -> Any:
    import psycopg

    from app.deadline import DeadlineConnection

    base = DeadlineConnection if config.deadline else psycopg.Connection
    if not config.binary:
        return base

    class BinaryConnection(base):  # type: ignore[valid-type, misc]
        def cursor(self, *args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("binary", True)
            return super().cursor(*args, **kwargs)

    return BinaryConnection


def _statement_params(position: Any, item_id: int) -> dict[str, Any]:
    # What feed_page passes for the global feed, limit 20 (one row more tells whether a next page exists).
    return {"position": position, "item_id": item_id, "row_limit": 21, "scope_id": 0}


def _sqlalchemy_runner(config: Config, url: str, pool_size: int) -> tuple[Any, Any]:
    """(run(params) -> rows, count_prepared()) through SQLAlchemy Core on the app's engine options."""
    from sqlalchemy import create_engine, event

    from app import deadline
    from app.config import _engine_options
    from app.services.posts import _feed_statement

    os.environ["DB_POOL_SIZE"] = str(pool_size)
    options = _engine_options({"DB_DEADLINE_MS": "2000"})
    connect_args = dict(options["connect_args"])
    connect_args["options"] = config.options
    if config.driver == "psycopg":
        import psycopg

        connect_args["prepare_threshold"] = config.prepare_threshold
        if config.client_cursor:
            connect_args["cursor_factory"] = psycopg.ClientCursor
    engine = create_engine(url.replace("postgresql://", f"postgresql+{config.driver}://"), **options | {
        "connect_args": connect_args
    })  # fmt: skip
    if config.driver == "psycopg" and config.deadline:
        deadline.bind(engine)  # exactly the app's DeadlineConnection
    elif config.driver == "psycopg" and config.binary:
        connection_class = _psycopg_connection_class(config)
        event.listen(engine, "do_connect", lambda d, r, cargs, cparams: connection_class.connect(*cargs, **cparams))
    reader = engine.execution_options(isolation_level="AUTOCOMMIT") if config.autocommit else engine
    statement = _feed_statement("postgresql", "all", "next")

    def run(params: dict[str, Any]) -> list[Any]:
        if config.deadline:
            with deadline.bounded(2.0), reader.connect() as conn:
                return list(conn.execute(statement, params).all())
        with reader.connect() as conn:
            return list(conn.execute(statement, params).all())

    def prepared() -> int:
        with reader.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements").scalar_one())

    return run, prepared


def _dbapi_runner(config: Config, url: str) -> tuple[Any, Any]:
    """(connect() -> run(params) -> rows, count_prepared(run)) on the bare DBAPI, the SQL text
    SQLAlchemy compiles for this driver."""
    import orjson

    from app.services.posts import _feed_statement

    statement = _feed_statement("postgresql", "all", "next")
    if config.driver == "psycopg2":
        import psycopg2
        import psycopg2.extras
        from sqlalchemy.dialects.postgresql import psycopg2 as dialect

        sql = str(statement.compile(dialect=dialect.dialect()))

        def connect2() -> Any:
            conn = psycopg2.connect(url, options=config.options)
            conn.autocommit = config.autocommit
            psycopg2.extras.register_default_json(conn, loads=orjson.loads)  # what SQLAlchemy's dialect does
            psycopg2.extras.register_default_jsonb(conn, loads=orjson.loads)

            def run(params: dict[str, Any]) -> list[Any]:
                with conn.cursor() as cur:
                    cur.execute(sql, params)
                    rows: list[Any] = cur.fetchall()
                if not config.autocommit:
                    conn.rollback()
                return rows

            run.conn = conn  # type: ignore[attr-defined]
            return run

        return connect2, _count_prepared

    import psycopg
    from psycopg.types.json import set_json_loads
    from sqlalchemy.dialects.postgresql import psycopg as dialect3

    from app import deadline

    sql3 = str(statement.compile(dialect=dialect3.dialect())).encode()
    connection_class = _psycopg_connection_class(config)

    def connect3() -> Any:
        conn = connection_class.connect(
            url,
            autocommit=config.autocommit,
            prepare_threshold=config.prepare_threshold,
            options=config.options,
            **({"cursor_factory": psycopg.ClientCursor} if config.client_cursor else {}),
        )
        set_json_loads(orjson.loads, conn)  # what SQLAlchemy's dialect does with json_deserializer

        def execute(params: dict[str, Any]) -> list[Any]:
            with conn.cursor() as cur:
                cur.execute(sql3, params)
                rows: list[Any] = cur.fetchall()
            if not config.autocommit:
                conn.rollback()
            return rows

        def run(params: dict[str, Any]) -> list[Any]:
            if config.deadline:
                with deadline.bounded(2.0):
                    return execute(params)
            return execute(params)

        run.conn = conn  # type: ignore[attr-defined]
        return run

    return connect3, _count_prepared


def _count_prepared(run: Any) -> int:
    conn = run.conn
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_prepared_statements")
        count = int(cur.fetchone()[0])
    if not conn.autocommit:
        conn.rollback()
    return count


def child(args: argparse.Namespace) -> int:
    """Measure one configuration; print one JSON object."""
    from gevent import monkey

    monkey.patch_all()
    import time

    config = CONFIGS[args.child]
    if config.driver == "psycopg2":
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    else:
        import psycopg.waiting

        if config.wait == "geventio":
            psycopg.waiting.wait = _geventio_wait
    import resource

    import gevent

    from bench.compare.run import tree_cpu

    position = _decode_position(args.position)
    params = {"first": _statement_params(*_decode_position("top")), "deep": _statement_params(*position)}
    if config.layer == "sqlalchemy":
        run_shared, prepared_of = _sqlalchemy_runner(config, args.url, args.pool_size)
        runners = [run_shared] * args.concurrency
        prepared: Any = prepared_of
    else:
        connect, count = _dbapi_runner(config, args.url)
        runners = [connect() for _ in range(args.concurrency)]
        prepared = lambda: count(runners[0])  # noqa: E731
    samples = {page: [row[0] for row in runners[0](params[page])[:3]] for page in PAGES}
    state: dict[str, Any] = {"page": "first", "stop": False, "count": 0}

    def worker(run: Any) -> None:
        while not state["stop"]:
            run(params[state["page"]])
            state["count"] += 1

    def snapshot() -> tuple[int, float, float, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return state["count"], usage.ru_utime + usage.ru_stime, tree_cpu(args.postmaster), time.perf_counter()

    if args.queries:
        return _counted(args, config, runners, params, prepared)
    greenlets = [gevent.spawn(worker, run) for run in runners]
    pages: dict[str, dict[str, float]] = {}
    try:
        for page in PAGES:
            state["page"] = page
            gevent.sleep(args.warmup)
            start = snapshot()
            gevent.sleep(args.duration)
            end = snapshot()
            queries = end[0] - start[0]
            pages[page] = {
                "queries": queries,
                "seconds": end[3] - start[3],
                "qps": queries / (end[3] - start[3]),
                "client_cpu_ms": (end[1] - start[1]) * 1000 / max(1, queries),
                "pg_cpu_ms": (end[2] - start[2]) * 1000 / max(1, queries),
            }
            failed = [g for g in greenlets if g.dead]
            if failed:
                raise RuntimeError(f"a worker failed: {failed[0].exception!r}")
    finally:
        state["stop"] = True
        gevent.joinall(greenlets, timeout=30)
    import psycopg

    result = {
        "config": config.name,
        "pages": pages,
        "sample_ids": samples,
        "prepared": prepared(),
        "wait": _wait_name(config),
        "versions": {"psycopg": psycopg.__version__, "gevent": gevent.__version__},
    }
    if config.driver == "psycopg2":
        import psycopg2

        result["versions"]["psycopg2"] = psycopg2.__version__.split()[0]
    print(json.dumps(result))
    return 0


def _counted(
    args: argparse.Namespace, config: Config, runners: list[Any], params: dict[str, Any], prepared: Any
) -> int:
    """Under callgrind (`--instructions`): every greenlet runs QUERIES statements, first and deep
    pages in turn, inside `sys.call_tracing`, the only stretch callgrind counts (bench/gate.py's
    toggle); a warm-up before it reaches psycopg's prepare threshold on every connection."""
    import gevent

    def batch(n: int) -> None:
        def one(run: Any) -> None:
            for i in range(n):
                run(params[PAGES[i % 2]])

        gevent.joinall([gevent.spawn(one, run) for run in runners], raise_error=True)

    batch(16)  # 8 of each page per greenlet: past psycopg's prepare_threshold (5) on every connection
    sys.call_tracing(batch, (args.queries,))
    print(json.dumps({"config": config.name, "queries": args.queries * len(runners), "prepared": prepared()}))
    return 0


def _wait_name(config: Config) -> str:
    if config.driver == "psycopg2":
        import psycopg2.extensions

        callback = psycopg2.extensions.get_wait_callback()
        return f"{callback.__module__}.{callback.__name__}" if callback else "none (blocking!)"
    import psycopg.waiting

    return str(getattr(psycopg.waiting.wait, "__name__", psycopg.waiting.wait))


def _decode_position(text: str) -> tuple[Any, int]:
    """`top` (the first page) or `ISO-TIMESTAMP,ID` (a keyset position)."""
    from datetime import datetime

    from app.pagination import TOP

    if text == "top":
        return TOP
    when, _, item = text.rpartition(",")
    return datetime.fromisoformat(when), int(item)


# --- the parent: servers, data, rounds, table -------------------------------------------------
def summarize(runs: list[dict[str, Any]], order: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per configuration and page: medians over rounds, and the median of per-round ratios to
    BASELINE (throughput, and total CPU per query). `runs`: the children's results, each with
    its `round`."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["config"]] = run
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name in order:
        out[name] = {}
        for page in PAGES:
            mine = [r[name]["pages"][page] for r in by_round.values() if name in r]
            if not mine:
                continue
            total = lambda p: p["client_cpu_ms"] + p["pg_cpu_ms"]  # noqa: E731
            qps_ratios, client_ratios, cpu_ratios = [], [], []
            for rnd in by_round.values():
                if name in rnd and BASELINE in rnd:
                    mine_p, base_p = rnd[name]["pages"][page], rnd[BASELINE]["pages"][page]
                    qps_ratios.append(mine_p["qps"] / base_p["qps"])
                    client_ratios.append(mine_p["client_cpu_ms"] / base_p["client_cpu_ms"])
                    cpu_ratios.append(total(mine_p) / total(base_p))
            out[name][page] = {
                "rounds": len(mine),
                "qps": statistics.median(p["qps"] for p in mine),
                "qps_min": min(p["qps"] for p in mine),
                "qps_max": max(p["qps"] for p in mine),
                "client_cpu_ms": statistics.median(p["client_cpu_ms"] for p in mine),
                "pg_cpu_ms": statistics.median(p["pg_cpu_ms"] for p in mine),
                "qps_vs_app": statistics.median(qps_ratios) if qps_ratios else None,
                "client_cpu_vs_app": statistics.median(client_ratios) if client_ratios else None,
                "cpu_vs_app": statistics.median(cpu_ratios) if cpu_ratios else None,
            }
    return out


def markdown(summary: dict[str, dict[str, dict[str, Any]]], meta: dict[str, Any]) -> str:
    ratio = lambda v: "" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [
        f"Feed statement (21 rows), {meta['concurrency']} greenlets, {meta['rounds']} interleaved rounds of "
        f"{meta['duration']:g} s per page; client on core {CLIENT_CPU}, PostgreSQL on core {SERVER_CPU}. "
        f"Load average {meta['load_min']}-{meta['load_max']} (1 min) during the run; the rest of the machine "
        f"used {meta['others_min']:.2f}-{meta['others_max']:.2f} cores meanwhile (shared machine).",
        "",
        "| config | what | page | q/s median (min-max) | q/s vs app | client CPU ms/q | client CPU/q vs app "
        "| PostgreSQL CPU ms/q | total CPU/q vs app | prepared | wait |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, pages in summary.items():
        config = CONFIGS[name]
        for page, s in pages.items():
            lines.append(
                f"| {name} | {config.layer}, {config.what} | {page} | {s['qps']:,.0f} ({s['qps_min']:,.0f}-"
                f"{s['qps_max']:,.0f}) | {ratio(s['qps_vs_app'])} | {s['client_cpu_ms']:.3f} | "
                f"{ratio(s['client_cpu_vs_app'])} | {s['pg_cpu_ms']:.3f} | "
                f"{ratio(s['cpu_vs_app'])} | {meta['prepared'].get(name, '')} | {meta['waits'].get(name, '')} |"
            )
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.drivers",
        description=__doc__.splitlines()[0],
        epilog=f"configurations: {', '.join(CONFIGS)}",
    )
    parser.add_argument("--dir", type=Path, default=REPO / ".drivers", help="PostgreSQL's data (kept) and logs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="drivers.md, drivers.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured per page, configuration, round")
    parser.add_argument("--warmup", type=float, default=1.5, help="seconds of load before each page's measurement")
    parser.add_argument("--concurrency", type=int, default=32, help="greenlets executing the statement")
    parser.add_argument("--pool-size", type=int, default=32, help="the SQLAlchemy pool (no overflow)")
    parser.add_argument("--depth", type=float, default=0.9, help="where the deep page starts, as a share of the feed")
    parser.add_argument("--only", default="", help="comma-separated configurations (app is always measured)")
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="QUERIES",
        help="instead of timing: client instructions per query under callgrind (QUERIES per greenlet, "
        "first and deep pages in turn; load-independent, PostgreSQL's side not counted)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="callgrind processes at once (--instructions)")
    parser.add_argument("--queries", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--postmaster", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--position", default="top", help=argparse.SUPPRESS)
    return parser


def _deep_position(url: str, depth: float) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        # The app's visibility predicate (app/models/post.py), the feed's order.
        visible = "status = 'published' AND deleted_at IS NULL"
        total = conn.execute(f"SELECT count(*) FROM posts WHERE {visible}").fetchone()[0]  # type: ignore[index]
        row = conn.execute(
            f"SELECT published_at, id FROM posts WHERE {visible} ORDER BY published_at DESC, id DESC OFFSET %s LIMIT 1",
            (int(total * depth),),
        ).fetchone()
    assert row is not None, "no visible posts"
    return f"{row[0].isoformat()},{row[1]}"


def parent(args: argparse.Namespace) -> int:
    import resource
    import shutil
    import subprocess
    import time
    from contextlib import ExitStack

    from bench.compare.run import load_average, machine_jiffies, pin_tree, tree_cpu
    from devstack.servers import Postgres
    from devstack.stack import migrate_and_seed, stack_settings

    configs = select_configs(args.only)
    if not shutil.which("taskset"):
        print("drivers: needs taskset (util-linux)", file=sys.stderr)
        return 2
    settings = stack_settings()
    posts = os.environ.get("STACK_POSTS") or settings.get("STACK_POSTS", "100000")
    args.dir.mkdir(parents=True, exist_ok=True)
    args.dir.chmod(0o755)
    args.out.mkdir(parents=True, exist_ok=True)
    tick = os.sysconf("SC_CLK_TCK")
    runs: list[dict[str, Any]] = []
    loads: list[float] = []
    others: list[float] = []
    with ExitStack() as stack:
        pg = Postgres.start(args.dir / "postgres", port=int(os.environ.get("POSTGRES_PORT") or 55433))
        stack.callback(pg.stop)
        if not pg.psql("SELECT 1 FROM pg_database WHERE datname = 'readwire'").strip():
            pg.create_database("readwire")
        url = pg.url_for("readwire")
        env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "drivers-bench-secret-0123456789abcdef"}
        env.pop("REDIS_URL", None)
        print(f"drivers: migrating and seeding {posts} posts if empty ({args.dir})", file=sys.stderr)
        migrate_and_seed(env, posts)
        pg.psql("ANALYZE", dbname="readwire")
        postmaster = int(pg.pid() or 0)
        pin_tree(postmaster, {SERVER_CPU})  # its backends are forked from it: they inherit the core
        position = _deep_position(url, args.depth)
        base = [sys.executable, "-m", "bench.drivers", "--url", url, "--postmaster", str(postmaster)]
        base += ["--position", position, "--duration", str(args.duration), "--warmup", str(args.warmup)]
        base += ["--concurrency", str(args.concurrency), "--pool-size", str(args.pool_size)]
        if args.instructions:
            return _instructions(args, configs, base, env)
        for round_ in range(1, args.rounds + 1):
            for config in configs:
                child_env = _child_env(env, config)
                busy0, _ = machine_jiffies()
                pg0, own0 = tree_cpu(postmaster), resource.getrusage(resource.RUSAGE_CHILDREN)
                wall0 = time.monotonic()
                budget = 60 + 2 * (args.warmup + args.duration)
                argv = ["taskset", "-c", str(CLIENT_CPU), *base, "--child", config.name]
                done = subprocess.run(argv, env=child_env, cwd=REPO, capture_output=True, text=True, timeout=budget)
                if done.returncode:
                    raise SystemExit(f"{config.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
                wall = time.monotonic() - wall0
                own1, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), machine_jiffies()[0]
                ours = own1.ru_utime + own1.ru_stime - own0.ru_utime - own0.ru_stime + tree_cpu(postmaster) - pg0
                others.append(max(0.0, ((busy1 - busy0) / tick - ours) / wall))
                loads.append(float(load_average().split()[0]))
                run = json.loads(done.stdout.strip().splitlines()[-1]) | {"round": round_, "load": loads[-1]}
                runs.append(run)
                first = run["pages"]["first"]
                print(
                    f"round {round_} {config.name:16} first {first['qps']:7.0f} q/s "
                    f"deep {run['pages']['deep']['qps']:7.0f} q/s  load {loads[-1]:.2f} others {others[-1]:.2f}",
                    file=sys.stderr,
                )
    ids = {json.dumps(r["sample_ids"]) for r in runs}
    if len(ids) != 1:
        raise SystemExit(f"configurations returned different rows: {ids}")
    meta = {
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "duration": args.duration,
        "pool_size": args.pool_size,
        "posts": posts,
        "deep_position": position,
        "load_min": f"{min(loads):.2f}",
        "load_max": f"{max(loads):.2f}",
        "others_min": min(others),
        "others_max": max(others),
        "prepared": {r["config"]: r["prepared"] for r in runs},
        "waits": {r["config"]: r["wait"] for r in runs},
        "versions": runs[-1]["versions"] | next((r["versions"] for r in runs if "psycopg2" in r["versions"]), {}),
    }
    summary = summarize(runs, [c.name for c in configs])
    table = markdown(summary, meta)
    (args.out / "drivers.md").write_text(table)
    payload = {"meta": meta, "configs": [asdict(c) for c in configs], "summary": summary, "runs": runs}
    (args.out / "drivers.json").write_text(json.dumps(payload, indent=1, default=str))
    print(table)
    return 0


def _child_env(env: dict[str, str], config: Config) -> dict[str, str]:
    child_env = {**env, "PYTHONPATH": str(REPO)}
    child_env.pop("PSYCOPG_WAIT_FUNC", None)
    if config.wait.startswith("wait_"):
        child_env["PSYCOPG_WAIT_FUNC"] = config.wait
    return child_env


def _instructions(args: argparse.Namespace, configs: list[Config], base: list[str], env: dict[str, str]) -> int:
    """Client instructions per query, each configuration once under callgrind (deterministic
    to well under 1%, whatever the machine's load)."""
    import re
    import shutil
    import subprocess
    import tempfile

    from bench.gate import TOGGLE

    if not shutil.which("valgrind"):
        print("drivers: --instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 2
    from concurrent.futures import ThreadPoolExecutor

    def count(config: Config, tmp: Path) -> dict[str, Any]:
        out = tmp / f"callgrind.{config.name}.out"
        argv = ["valgrind", "--tool=callgrind", "--collect-atstart=no", f"--toggle-collect={TOGGLE}"]
        argv += [f"--callgrind-out-file={out}", *base, "--child", config.name, "--queries", str(args.instructions)]
        done = subprocess.run(argv, env=_child_env(env, config), cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{config.name} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        match = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
        if match is None or int(match.group(1)) == 0:
            raise SystemExit(f"{config.name}: callgrind counted nothing")
        print(f"{config.name:16} {int(match.group(1)) / result['queries']:12,.0f} instructions/query", file=sys.stderr)
        return result | {"instructions": int(match.group(1)) / result["queries"]}

    with tempfile.TemporaryDirectory(prefix="readwire-drivers-") as tmp, ThreadPoolExecutor(args.jobs) as pool:
        found = list(pool.map(lambda c: count(c, Path(tmp)), configs))
    counted = {config.name: row for config, row in zip(configs, found, strict=True)}
    base_count = counted[BASELINE]["instructions"]
    lines = [
        f"Client instructions per query (callgrind), {args.concurrency} greenlets x {args.instructions} statements, "
        "first and deep pages in turn; PostgreSQL's side not counted.",
        "",
        "| config | what | instructions/query | vs app | prepared |",
        "|---|---|---|---|---|",
    ]
    for name, row in counted.items():
        config = CONFIGS[name]
        lines.append(
            f"| {name} | {config.layer}, {config.what} | {row['instructions']:,.0f} | "
            f"{row['instructions'] / base_count:.2f} | {row['prepared']} |"
        )
    table = "\n".join(lines) + "\n"
    (args.out / "drivers-instructions.md").write_text(table)
    (args.out / "drivers-instructions.json").write_text(json.dumps(counted, indent=1))
    print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.child:
        return child(args)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
