"""Run one load-test scenario end to end: stack, locust (headless, bounded), SLO check, plots, summary.

    python loadtests/run.py SCENARIO [--target URL] [--duration 60s] [--users N] [--no-stack] ...
    python loadtests/run.py --list

By default the local stack is used: if .stack/state.json (--stack-dir) describes a stack that answers, that
one (left running); otherwise `python -m devstack.stack up` starts one, and `down` stops it afterwards. The target is
the stack's Nginx (--via app for gunicorn directly). Reports go to loadtests/reports/<scenario>-<timestamp>/:
Locust's HTML and CSVs (full history), throughput.png, latency.png, pacing.json, summary.json, summary.md.

Exit status: 0 every SLO met, 1 an SLO breached, 2 the run itself failed (stack, target, locust).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `loadtests` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import report, slo
from loadtests.catalog import EDITOR_PASSWORD_ENV, EDITOR_USERNAME_ENV, HERE, SCENARIOS, Scenario

REPO = HERE.parent
DEFAULT_STACK_DIR = REPO / ".stack"  # devstack/stack.py's default; it writes <dir>/state.json
REPORTS = HERE / "reports"
EDITOR_USERNAME = "loadtest_editor"
EDGE_TTL_S = 1.0  # the contract's bound behind the edge cache
LOCUST_GRACE_S = 90  # discovery, spawning and --stop-timeout on top of the run time, before the runner kills locust
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


class RunError(RuntimeError):
    """The run could not be carried out (as opposed to an SLO breach)."""


def parse_duration(text: str) -> int:
    """'90', '90s', '2m', '1h30m', '1m30s' -> seconds (> 0)."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 60s, 2m, 1m30s)")
    hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError("the duration must be positive")
    return total


def read_conf(path: Path) -> dict[str, str]:
    """`key = value` lines of a locust conf file (comments and blank lines skipped), in order."""
    conf: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        key, sep, value = stripped.partition("=")
        if not sep:
            raise RunError(f"{path}: expected 'key = value', got {line!r}")
        conf[key.strip()] = value.strip()
    return conf


def write_conf(path: Path, conf: dict[str, str]) -> None:
    path.write_text("".join(f"{key} = {value}\n" for key, value in conf.items()))


def http_status(url: str, timeout: float = 3.0) -> int:
    """The status of a GET (0 when nothing answered)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


# --- the stack -------------------------------------------------------------------------------------------------


def read_state(stack_dir: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((stack_dir / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state


def state_url(state: dict[str, Any], service: str) -> str | None:
    """A service's URL in a stack state: `<service>_url`, `services.<service>.url`, or plain `<service>`."""
    url = state.get(f"{service}_url") or state.get("services", {}).get(service, {}).get("url") or state.get(service)
    return str(url).rstrip("/") if url else None


def stack_alive(state: dict[str, Any]) -> bool:
    urls = [url for service in ("app", "nginx") if (url := state_url(state, service))]
    return bool(urls) and all(http_status(f"{url}/healthz") == 200 for url in urls)


def stack_command(action: str, stack_dir: Path) -> None:
    if not (REPO / "devstack" / "stack.py").exists():
        raise RunError("devstack/stack.py is missing: pass --no-stack --target URL to test a running server")
    argv = [sys.executable, "-m", "devstack.stack", action, "--dir", str(stack_dir)]
    print(f"loadtest: {shlex.join(argv[1:])}", flush=True)
    result = subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL)
    if result.returncode:
        raise RunError(f"python -m devstack.stack {action} exited with {result.returncode}")


@contextlib.contextmanager
def local_stack(stack_dir: Path, keep: bool) -> Iterator[dict[str, Any]]:
    """The running local stack, or one started for this run (and stopped after it unless `keep`)."""
    state = read_state(stack_dir)
    if state is not None and stack_alive(state):
        print(f"loadtest: using the running stack ({stack_dir / 'state.json'})", flush=True)
        yield state
        return
    stack_command("up", stack_dir)
    try:
        state = read_state(stack_dir)
        if state is None or not stack_alive(state):
            raise RunError(f"the stack came up but {stack_dir / 'state.json'} does not describe one that answers")
        yield state
    finally:
        if not keep:
            stack_command("down", stack_dir)


# --- preparation -----------------------------------------------------------------------------------------------


def editor_credentials(database_url: str | None, redis_url: str | None, state: dict[str, Any]) -> tuple[str, str]:
    """LOADTEST_EDITOR_USERNAME/_PASSWORD from the environment, else a fresh password for `loadtest_editor`
    set through `flask create-editor` on the target's database (it creates or promotes the account)."""
    username, password = os.environ.get(EDITOR_USERNAME_ENV), os.environ.get(EDITOR_PASSWORD_ENV)
    if username and password:
        return username, password
    if not database_url:
        raise RunError(
            f"this scenario writes: set {EDITOR_USERNAME_ENV}/{EDITOR_PASSWORD_ENV}, or give --database-url "
            "so the runner can create an editor"
        )
    password = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        # Only the CLI's settings need a secret (the password hash does not use it).
        "SECRET_KEY": state.get("env", {}).get("SECRET_KEY")
        or os.environ.get("SECRET_KEY")
        or secrets.token_urlsafe(48),
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", "create-editor", EDITOR_USERNAME],
        input=f"{password}\n{password}\n",
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if result.returncode:
        raise RunError(f"flask create-editor failed:\n{result.stdout}{result.stderr}")
    return EDITOR_USERNAME, password


def redis_client(url: str) -> Any:
    import redis  # the app's dependency; imported here so --list and --help need no server libraries

    return redis.Redis.from_url(url, socket_timeout=5)


def redis_stats(url: str | None) -> dict[str, int] | None:
    if not url:
        return None
    try:
        info = redis_client(url).info("stats")
    except Exception as exc:  # informative only: never fail a run over it
        print(f"loadtest: could not read Redis INFO: {exc}", file=sys.stderr)
        return None
    return {k: int(info.get(k, 0)) for k in ("keyspace_hits", "keyspace_misses")}


# --- locust ----------------------------------------------------------------------------------------------------


def run_locust(conf_path: Path, env: dict[str, str], log_path: Path, timeout_s: float) -> int:
    """Locust headless on `conf_path`, its output echoed and kept in `log_path`; stopped past `timeout_s`."""
    cmd = [sys.executable, "-m", "locust", "--config", str(conf_path)]
    timed_out = threading.Event()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def stop() -> None:
            timed_out.set()
            proc.terminate()

        timer = threading.Timer(timeout_s, stop)
        timer.start()
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            returncode = proc.wait()
        except BaseException:  # Ctrl-C: stop our locust before the stack goes down
            proc.terminate()
            proc.wait(10)
            raise
        finally:
            timer.cancel()
    if timed_out.is_set():
        raise RunError(f"locust did not finish within {timeout_s:.0f} s and was stopped")
    return returncode


def git_rev() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{rev}+dirty" if git("status", "--porcelain", "--untracked-files=no") else rev


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python loadtests/run.py",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("scenario", nargs="?", choices=sorted(SCENARIOS), help="the scenario to run")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--target", help="base URL to load (default: the stack's Nginx, or its app with --via app)")
    p.add_argument("--via", choices=("nginx", "app"), default="nginx", help="which stack URL to target")
    p.add_argument("--duration", type=parse_duration, help="run time, e.g. 60s, 2m (default: the scenario's)")
    p.add_argument(
        "--users", type=int, help="users (default: the scenario's; for the spike: the peak, baseline = peak / 4)"
    )
    p.add_argument("--spawn-rate", type=float, help="users started per second (default: the scenario's)")
    p.add_argument("--no-stack", action="store_true", help="do not start or use the local stack (needs --target)")
    p.add_argument("--keep-stack", action="store_true", help="leave a stack this run started running")
    p.add_argument("--stack-dir", type=Path, default=DEFAULT_STACK_DIR, help="the stack's state dir (default: .stack/)")
    p.add_argument("--redis-url", help="Redis of the target (cold flush, hit ratio; default: the stack's)")
    p.add_argument("--database-url", help="database of the target (to create the editor; default: the stack's)")
    p.add_argument(
        "--popular",
        choices=("auto", "on", "off"),
        default="auto",
        help="include /popular: auto = only if the target answers it (it is being built)",
    )
    p.add_argument(
        "--consistency-bound",
        type=float,
        help=f"seconds a read may lag an acknowledged write (default 0 via app, {EDGE_TTL_S:g} otherwise)",
    )
    p.add_argument("--report-dir", type=Path, help="where the report goes (default: loadtests/reports/<name>-<time>)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = "python loadtests/run.py " + shlex.join(argv)
    if args.list or not args.scenario:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:8} {scenario.summary}")
        return 0 if args.list else 2
    if args.no_stack and not args.target:
        print("loadtest: --no-stack needs --target URL", file=sys.stderr)
        return 2
    scenario = SCENARIOS[args.scenario]
    try:
        if args.no_stack:
            return execute(scenario, args, {})
        with local_stack(args.stack_dir.resolve(), args.keep_stack) as state:
            return execute(scenario, args, state)
    except RunError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2


def execute(scenario: Scenario, args: argparse.Namespace, state: dict[str, Any]) -> int:
    app_url = state_url(state, "app")
    target = (args.target or state_url(state, args.via) or app_url or "").rstrip("/")
    if not target:
        raise RunError(f"no target: the stack state has no {args.via!r} URL; pass --target")
    if http_status(f"{target}/api/v1/categories", timeout=10) != 200:
        raise RunError(f"{target}/api/v1/categories does not answer 200: is the target up and seeded?")
    redis_url = args.redis_url or state.get("redis_url")
    database_url = args.database_url or state.get("database_url")
    bound = args.consistency_bound
    if bound is None:
        bound = 0.0 if app_url == target else EDGE_TTL_S

    conf = read_conf(HERE / "locust.conf") | read_conf(scenario.conf)
    started_at = datetime.now(UTC)
    run_dir = args.report_dir or REPORTS / f"{scenario.name}-{started_at.astimezone():%Y%m%d-%H%M%S}"
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    run_time = args.duration or parse_duration(conf.get("run-time", "60s"))
    conf.update(
        {
            "locustfile": str(scenario.locustfile),
            "host": target,
            "run-time": f"{run_time}s",
            "html": str(run_dir / "locust.html"),
            "csv": str(run_dir / slo.CSV_PREFIX),
            "run-dir": str(run_dir),
            "consistency-bound": f"{bound:g}",
        }
    )
    if args.users is not None and "spike-peak" in conf:  # the spike's shape sets the users: scale it instead
        conf["spike-peak"], conf["spike-baseline"] = str(args.users), str(max(1, args.users // 4))
    elif args.users is not None:
        conf["users"] = str(args.users)
    if args.spawn_rate is not None:
        conf["spawn-rate"] = f"{args.spawn_rate:g}"
    extra: dict[str, Any] = {"consistency bound": f"{bound:g} s"}
    popular = args.popular
    if popular == "auto":
        status = http_status(f"{target}/api/v1/popular")
        popular = "on" if status == 200 else "off"
        if popular == "off":
            print(f"loadtest: {target}/api/v1/popular answers {status}: leaving /popular out (--popular on forces it)")
    if popular == "off":
        conf["exclude-tags"] = "popular"
    extra["/popular"] = "included" if popular == "on" else "left out"

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env["LOADTEST_STACK_DIR"] = str(args.stack_dir.resolve())  # issue 13: streamers read the workers' memory
    if scenario.writes:
        username, password = editor_credentials(database_url, redis_url, state)
        env[EDITOR_USERNAME_ENV], env[EDITOR_PASSWORD_ENV] = username, password
        extra["editor"] = username
    if scenario.flush_cache:
        if not redis_url:
            raise RunError("the cold scenario flushes Redis first: give --redis-url (or use the stack)")
        redis_client(redis_url).flushdb()  # a test harness step, never a request path
        print(f"loadtest: flushed Redis ({redis_url})")
    redis_before = redis_stats(redis_url)

    conf_path = run_dir / "locust.conf"
    write_conf(conf_path, conf)
    print(f"loadtest: {scenario.name} against {target} for {run_time} s -> {run_dir}", flush=True)
    returncode = run_locust(conf_path, env, run_dir / "locust.log", run_time + LOCUST_GRACE_S)
    if returncode:
        raise RunError(f"locust exited with {returncode}; see {run_dir / 'locust.log'}")

    redis_after = redis_stats(redis_url)
    if redis_before and redis_after:
        hits = redis_after["keyspace_hits"] - redis_before["keyspace_hits"]
        misses = redis_after["keyspace_misses"] - redis_before["keyspace_misses"]
        if hits + misses:
            extra["redis keyspace hit ratio"] = f"{hits / (hits + misses):.1%} ({hits} hits, {misses} misses)"
    try:
        ok, checks, measured = slo.evaluate(run_dir, scenario.slo)
    except slo.SloError as exc:
        raise RunError(str(exc)) from None
    # --- issue 13 (push): pollers' 304 share and bytes per poll; streamers' losses and memory per stream
    from loadtests.push_report import push_figures

    extra.update(push_figures(measured.counters))
    # --- end issue 13
    plots = report.render_plots(run_dir, f"{scenario.name} @ {target}")
    meta = {
        "scenario": scenario.name,
        "target": target,
        "command": args.command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "git_rev": git_rev(),
        "slo_file": str(scenario.slo.relative_to(REPO)),
        "extra": extra,
    }
    report.write_summary(run_dir, meta, ok, checks, measured, plots)
    print_outcome(scenario, run_dir, ok, checks, measured, plots, extra)
    return 0 if ok else 1


def print_outcome(
    scenario: Scenario,
    run_dir: Path,
    ok: bool,
    checks: list[slo.Check],
    m: slo.Measured,
    plots: list[Path],
    extra: dict[str, Any],
) -> None:
    print()
    print(f"== {scenario.name}: {'SLOs met' if ok else 'SLO BREACH'} ({scenario.slo.relative_to(REPO)})")
    print(slo.render_table(checks))
    print()
    print(
        f"achieved {m.rps:g} req/s (target {m.target_rps} req/s), {m.requests} requests, {m.failures} failures; "
        f"p50 {m.p50_ms} ms, p95 {m.p95_ms} ms, p99 {m.p99_ms} ms, max {m.max_ms} ms; "
        f"schedule lag p99 {m.lag_p99_ms} ms"
    )
    for key, value in extra.items():
        print(f"{key}: {value}")
    print(f"report: {run_dir}")
    for name in ("summary.md", "locust.html", *(p.name for p in plots)):
        print(f"  {run_dir / name}")


if __name__ == "__main__":
    sys.exit(main())
