"""Run one load-test scenario end to end: stack, warm-up, locust (headless, bounded), SLO check, plots, summary.

    python loadtests/run.py SCENARIO [--target URL] [--via nginx|app] [--duration 60s] [--users N] [--no-stack] ...
    python loadtests/run.py capacity [--mix readers|pollers|mixed] [--via nginx|app] [--step 15s] ...
    python loadtests/run.py compare RUN_A RUN_B [--out DIR]
    python loadtests/run.py --list

By default the local stack is used: if .stack/state.json (--stack-dir) describes a stack that answers, that
one (left running); otherwise `python -m devstack.stack up` starts one, and `down` stops it afterwards. The target is
the stack's Nginx (--via app for gunicorn directly). A warm-up (the scenario's own load, --warmup, not measured)
comes first so a fresh stack is measured in steady state; `cold` has none. Locust runs as one process, or as a
master and N worker processes (--processes N); every request's exact timing goes to a per-process log from which
the SLO percentiles are computed, and the CPU of the stack's processes and of the generator is sampled from
/proc. Reports go to loadtests/reports/<scenario>-<timestamp>/: Locust's HTML and CSVs (full history), the
request logs, throughput / latency / endpoints / outcomes / cpu PNGs, pacing.json, summary.json, summary.md.

`capacity` steps a mix's offered rate up until a step breaks an SLO, bisects, and reports the knee, the first
SLO to break and what saturated (loadtests/capacity.py). `compare` puts two runs side by side
(loadtests/compare.py).

Exit status: 0 every SLO met (capacity: a knee found), 1 an SLO breached (capacity: no rate met the SLOs), 2 the
run itself failed (stack, target, locust).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `loadtests` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests import capacity, cpu, push_delivery, report, slo, timings
from loadtests.catalog import EDITOR_PASSWORD_ENV, EDITOR_USERNAME_ENV, HERE, MIXES, SCENARIOS, Scenario
from loadtests.pacing import load_pacing
from loadtests.push_report import push_figures

REPO = HERE.parent
DEFAULT_STACK_DIR = REPO / ".stack"  # devstack/stack.py's default; it writes <dir>/state.json
REPORTS = HERE / "reports"
EDITOR_USERNAME = "loadtest_editor"
EDGE_TTL_S = 1.0  # the contract's bound behind the edge cache
LOCUST_GRACE_S = 90  # discovery, spawning and --stop-timeout on top of the run time, before the runner kills locust
STEP_GRACE_S = 30  # the same for one step of the capacity search (short steps, users spawned within a second)
STEP_OVERHEAD_S = 10.0  # first guess of a step's cost beyond its run time (locust start, discovery, analysis)
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


def _stop_session(proc: subprocess.Popen[str], timeout: float = 15.0) -> None:
    """SIGTERM locust's process group (the master and any workers it forked), SIGKILL it if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run_locust(
    conf_path: Path,
    env: dict[str, str],
    log_path: Path,
    timeout_s: float,
    echo: bool = True,
    on_start: Callable[[int], None] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> int:
    """Locust headless on `conf_path` in a session of its own, its output kept in `log_path` (and echoed unless
    `echo` is off); `on_start` gets its pid, `on_line` each line of its output as it comes; the whole group is
    stopped past `timeout_s`."""
    cmd = [sys.executable, "-m", "locust", "--config", str(conf_path)]
    timed_out = threading.Event()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )

        def stop() -> None:
            timed_out.set()
            _stop_session(proc)

        timer = threading.Timer(timeout_s, stop)
        timer.start()
        try:
            if on_start is not None:
                on_start(proc.pid)
            assert proc.stdout is not None
            for line in proc.stdout:
                if echo:
                    sys.stdout.write(line)
                log.write(line)
                if on_line is not None:
                    on_line(line)
            returncode = proc.wait()
        except BaseException:  # Ctrl-C: stop our locust (and its workers) before the stack goes down
            _stop_session(proc, 10)
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


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


# --- one run of locust: a phase --------------------------------------------------------------------------------


@dataclass
class Context:
    """What every locust run of one invocation shares: the target, its servers, the environment, CPU roots."""

    args: argparse.Namespace
    state: dict[str, Any]
    target: str
    app_url: str | None
    redis_url: str | None
    database_url: str | None
    bound: float
    env: dict[str, str]
    popular: str  # on | off
    roots: dict[str, list[int]]  # the stack's process groups for the CPU sampler
    ncpu: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Phase:
    run_dir: Path
    timings: timings.Timings | None
    usage: cpu.Usage | None
    cpu_timeline: list[tuple[float, dict[str, float]]]
    wall_s: float


def prepare(args: argparse.Namespace, state: dict[str, Any], writes: bool) -> Context:
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
    extra: dict[str, Any] = {"consistency bound": f"{bound:g} s"}
    popular = args.popular
    if popular == "auto":
        status = http_status(f"{target}/api/v1/popular")
        popular = "on" if status == 200 else "off"
        if popular == "off":
            print(f"loadtest: {target}/api/v1/popular answers {status}: leaving /popular out (--popular on forces it)")
    extra["/popular"] = "included" if popular == "on" else "left out"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    env["LOADTEST_STACK_DIR"] = str(args.stack_dir.resolve())  # issue 13: streamers read the workers' memory
    if writes:
        username, password = editor_credentials(database_url, redis_url, state)
        env[EDITOR_USERNAME_ENV], env[EDITOR_PASSWORD_ENV] = username, password
        extra["editor"] = username
    roots = cpu.stack_roots(state) if not args.no_stack else {}
    return Context(
        args, state, target, app_url, redis_url, database_url, bound, env, popular, roots, cpu.cpu_count(), extra
    )


def base_conf(ctx: Context, scenario: Scenario, *confs: Path) -> dict[str, str]:
    """locust.conf, then the scenario's conf (and any further ones) and the options every run shares."""
    conf = read_conf(HERE / "locust.conf") | read_conf(scenario.conf)
    for path in confs:
        conf |= read_conf(path)
    conf.update({"locustfile": str(scenario.locustfile), "host": ctx.target, "consistency-bound": f"{ctx.bound:g}"})
    if ctx.popular == "off":
        conf["exclude-tags"] = "popular"
    processes = ctx.args.processes
    if processes is not None:
        conf.pop("processes", None)
        if processes > 0:
            conf["processes"] = str(processes)
    return conf


def run_phase(
    ctx: Context,
    conf: dict[str, str],
    run_dir: Path,
    run_time: int,
    grace: int,
    echo: bool = True,
    on_line: Callable[[str], None] | None = None,
) -> Phase:
    """One bounded locust run into `run_dir` with the CPU sampler running; merges the processes' ledgers and
    analyses the request logs (nothing judged here). `on_line` sees Locust's output as it comes (the chaos
    scenario starts its fault timeline on it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = conf | {
        "run-time": f"{run_time}s",
        "html": str(run_dir / "locust.html"),
        "csv": str(run_dir / slo.CSV_PREFIX),
        "run-dir": str(run_dir),
    }
    conf_path = run_dir / "locust.conf"
    write_conf(conf_path, conf)
    started = time.monotonic()
    sampler = cpu.Sampler(ctx.roots).start()
    try:
        returncode = run_locust(
            conf_path,
            ctx.env,
            run_dir / "locust.log",
            run_time + grace,
            echo,
            on_start=lambda pid: sampler.add_root("generator", pid),
            on_line=on_line,
        )
    finally:
        samples = sampler.stop()
    if returncode:
        raise RunError(f"locust exited with {returncode}; see {run_dir / 'locust.log'}")
    load_pacing(run_dir, write=True)
    found = timings.analyze(run_dir)
    t0, t1 = (found.start, found.end) if found else (None, None)
    usage = cpu.usage(samples, ctx.ncpu, t0, t1)
    line = cpu.timeline(samples)
    if found is not None:
        line = [row for row in line if found.start <= row[0] <= found.end + 1.5]
    return Phase(run_dir, found, usage, line, time.monotonic() - started)


def judge_phase(
    ctx: Context, phase: Phase, slo_path: Path, title: str, meta: dict[str, Any]
) -> tuple[bool, list[slo.Check], slo.Measured, cpu.Attribution | None, list[Path]]:
    """The SLO check, plots and summary of a phase."""
    try:
        ok, checks, measured = slo.evaluate(phase.run_dir, slo_path)
        limits = slo.load_slo(slo_path)
    except slo.SloError as exc:
        raise RunError(str(exc)) from None
    attribution = cpu.attribute(phase.usage) if phase.usage else None
    plots = report.render_plots(phase.run_dir, title, limits, phase.timings, phase.cpu_timeline, ctx.ncpu)
    report.write_summary(phase.run_dir, meta, ok, checks, measured, plots, phase.timings, phase.usage, attribution)
    return ok, checks, measured, attribution, plots


def phase_line(phase: Phase) -> str:
    """One line about a phase: requests, exact percentiles, cache outcomes, CPU."""
    parts = []
    t = phase.timings
    if t is not None:
        o = t.overall
        parts.append(
            f"{o.count} requests ({t.rps:.0f}/s), {o.failures} failed, p50 {o.p50_ms:g} / p95 {o.p95_ms:g} / "
            f"p99 {o.p99_ms:g} ms"
        )
        total = o.count or 1
        parts.append("outcomes " + ", ".join(f"{k} {v.count / total:.0%}" for k, v in list(t.by_outcome.items())[:5]))
    if phase.usage is not None:
        parts.append(cpu_text(phase.usage))
    return "; ".join(parts) or "no requests logged"


def cpu_text(u: cpu.Usage) -> str:
    groups = ", ".join(f"{name} {g.cores:.2f}" for name, g in sorted(u.groups.items(), key=lambda kv: -kv[1].cores))
    return f"CPU cores: {groups}, others {u.others_cores:.2f}, steal {u.steal_cores:.2f} (machine {u.machine_load:.0%})"


def warm_up(ctx: Context, scenario: Scenario, conf: dict[str, str], run_dir: Path, seconds: int) -> str:
    """The scenario's own load for `seconds`, not measured: fills the caches, the pools, the near cache."""
    print(f"loadtest: warm-up for {seconds} s (not measured) -> {run_dir}", flush=True)
    phase = run_phase(ctx, conf, run_dir, seconds, LOCUST_GRACE_S, echo=False)
    line = phase_line(phase)
    print(f"loadtest: warm-up: {line}", flush=True)
    return f"{seconds} s of {scenario.name}, not measured: {line}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        from loadtests import compare

        return compare.main(argv[1:])
    args = build_parser().parse_args(argv)
    args.command = "python loadtests/run.py " + shlex.join(argv)
    if args.list or not args.scenario:
        for scenario in SCENARIOS.values():
            print(f"{scenario.name:8} {scenario.summary}")
        print(f"{'compare':8} two runs' summaries side by side: run.py compare RUN_A RUN_B")
        return 0 if args.list else 2
    if args.no_stack and not args.target:
        print("loadtest: --no-stack needs --target URL", file=sys.stderr)
        return 2
    scenario = SCENARIOS[args.scenario]
    if args.mix and not scenario.capacity:
        print("loadtest: --mix is for the capacity scenario", file=sys.stderr)
        return 2
    if scenario.one_process and args.processes:
        print(f"loadtest: {scenario.name} runs in one Locust process (its ledgers are per process)", file=sys.stderr)
        return 2
    try:
        if args.no_stack:
            return dispatch(scenario, args, {})
        with local_stack(args.stack_dir.resolve(), args.keep_stack) as state:
            return dispatch(scenario, args, state)
    except RunError as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2


def dispatch(scenario: Scenario, args: argparse.Namespace, state: dict[str, Any]) -> int:
    if scenario.chaos:
        from loadtests import chaos

        return chaos.execute(scenario, args, state, sys.modules[__name__])
    if scenario.capacity:
        return execute_capacity(scenario, args, state)
    return execute(scenario, args, state)


# --- a scenario ------------------------------------------------------------------------------------------------


def execute(scenario: Scenario, args: argparse.Namespace, state: dict[str, Any]) -> int:
    ctx = prepare(args, state, scenario.writes)
    extra = ctx.extra
    started_at = datetime.now(UTC)
    run_dir = args.report_dir or REPORTS / f"{scenario.name}-{started_at.astimezone():%Y%m%d-%H%M%S}"
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = base_conf(ctx, scenario)
    run_time = args.duration or parse_duration(conf.get("run-time", "60s"))
    if args.users is not None and "spike-peak" in conf:  # the spike's shape sets the users: scale it instead
        conf["spike-peak"], conf["spike-baseline"] = str(args.users), str(max(1, args.users // 4))
    elif args.users is not None:
        conf["users"] = str(args.users)
    if args.spawn_rate is not None:
        conf["spawn-rate"] = f"{args.spawn_rate:g}"
    if "processes" in conf:
        extra["generator"] = f"Locust master + {conf['processes']} worker processes"
        if scenario.writes:
            extra["generator"] += " (read-after-write checks only judge reads in the writer's own process)"
    extra["load average at start"] = loadavg()

    warmup = scenario.warmup_s if args.warmup is None else args.warmup
    if warmup:
        source = SCENARIOS[scenario.warmup_with] if scenario.warmup_with else scenario
        warm_conf = base_conf(ctx, source) if scenario.warmup_with else dict(conf)
        if args.users is not None and scenario.warmup_with:
            warm_conf["users"] = str(args.users)
        extra["warm-up"] = warm_up(ctx, source, warm_conf, run_dir / "warmup", warmup)
    else:
        extra["warm-up"] = "none (measured from a standing start)"

    if scenario.flush_cache:
        if not ctx.redis_url:
            raise RunError("the cold scenario flushes Redis first: give --redis-url (or use the stack)")
        redis_client(ctx.redis_url).flushdb()  # a test harness step, never a request path
        print(f"loadtest: flushed Redis ({ctx.redis_url})")
    redis_before = redis_stats(ctx.redis_url)

    print(f"loadtest: {scenario.name} against {ctx.target} for {run_time} s -> {run_dir}", flush=True)
    phase = run_phase(ctx, conf, run_dir, run_time, LOCUST_GRACE_S)

    redis_after = redis_stats(ctx.redis_url)
    if redis_before and redis_after:
        hits = redis_after["keyspace_hits"] - redis_before["keyspace_hits"]
        misses = redis_after["keyspace_misses"] - redis_before["keyspace_misses"]
        if hits + misses:
            extra["redis keyspace hit ratio"] = f"{hits / (hits + misses):.1%} ({hits} hits, {misses} misses)"
    extra["load average at end"] = loadavg()
    # Issue 13: pollers' 304 share and bytes per poll; streamers' losses and memory per idle stream, their live
    # deliveries and replays apart.
    counters = load_pacing(run_dir).get("counters", {})
    extra.update(push_figures(counters))
    extra.update(push_delivery.run_figures(run_dir, counters))
    meta = {
        "scenario": scenario.name,
        "target": ctx.target,
        "command": args.command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "git_rev": git_rev(),
        "slo_file": str(scenario.slo.relative_to(REPO)),
        "extra": extra,
    }
    ok, checks, measured, attribution, plots = judge_phase(
        ctx, phase, scenario.slo, f"{scenario.name} @ {ctx.target}", meta
    )
    print_outcome(scenario, run_dir, ok, checks, measured, plots, extra, phase.usage, attribution)
    return 0 if ok else 1


def print_outcome(
    scenario: Scenario,
    run_dir: Path,
    ok: bool,
    checks: list[slo.Check],
    m: slo.Measured,
    plots: list[Path],
    extra: dict[str, Any],
    usage: cpu.Usage | None = None,
    attribution: cpu.Attribution | None = None,
) -> None:
    print()
    print(f"== {scenario.name}: {'SLOs met' if ok else 'SLO BREACH'} ({scenario.slo.relative_to(REPO)})")
    print(slo.render_table(checks))
    print()
    print(
        f"achieved {m.rps:g} req/s (target {m.target_rps} req/s), {m.requests} requests, {m.failures} failures; "
        f"p50 {m.p50_ms} ms, p95 {m.p95_ms} ms, p99 {m.p99_ms} ms, max {m.max_ms} ms ({m.percentiles}); "
        f"schedule lag p99 {m.lag_p99_ms} ms"
    )
    for key, value in extra.items():
        print(f"{key}: {value}")
    if usage is not None:
        print(cpu_text(usage))
        note = report.generator_note(usage)
        if note:
            print(note.replace("**", ""))
    if attribution is not None:
        print(f"saturated: {attribution.text}")
    print(f"report: {run_dir}")
    for name in ("summary.md", "locust.html", *(p.name for p in plots)):
        print(f"  {run_dir / name}")


# --- the capacity search ---------------------------------------------------------------------------------------


def users_for(rate: float, args: argparse.Namespace) -> int:
    """Users for an offered rate: about --user-rate requests/s each, within [--min-users, --max-users] (a fixed
    --users wins). More users keep each one's share of the rate small (open-model arrivals, not a few busy
    loops); the cap keeps connections within what the app port accepts (gunicorn worker_connections)."""
    if args.users is not None:
        return int(args.users)
    return int(max(args.min_users, min(args.max_users, math.ceil(rate / args.user_rate))))


def settle(target: str, timeout: float = 15.0) -> None:
    """After an overloaded step: wait until the target answers /healthz quickly again (its queues drained)."""
    deadline = time.monotonic() + timeout
    quick = 0
    while time.monotonic() < deadline and quick < 3:
        began = time.monotonic()
        status = http_status(f"{target}/healthz", timeout=5)
        quick = quick + 1 if status == 200 and time.monotonic() - began < 0.05 else 0
        time.sleep(0.2)


def execute_capacity(scenario: Scenario, args: argparse.Namespace, state: dict[str, Any]) -> int:
    mix = SCENARIOS[args.mix or scenario.mix or "readers"]
    ctx = prepare(args, state, mix.writes)
    slo_path = (args.slo or scenario.slo).resolve()
    try:
        limits = slo.load_slo(slo_path)
        config = capacity.SearchConfig(
            start_rate=args.start_rate,
            factor=args.factor,
            max_rate=args.max_rate,
            min_rate=args.min_rate,
            resolution=args.resolution,
            max_steps=args.max_steps,
        )
    except (slo.SloError, ValueError) as exc:
        raise RunError(str(exc)) from None
    via = "app" if ctx.app_url == ctx.target else args.via if not args.target else "target"
    started_at = datetime.now(UTC)
    run_dir = args.report_dir or REPORTS / f"capacity-{mix.name}-{via}-{started_at.astimezone():%Y%m%d-%H%M%S}"
    run_dir = run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    conf = base_conf(ctx, mix, scenario.conf)
    step_time = args.step or parse_duration(conf.get("run-time", "15s"))
    processes = int(conf.get("processes", "0"))
    budget = args.budget
    began = time.monotonic()
    extra = ctx.extra
    load_start = loadavg()
    if processes and mix.writes:
        extra["read-after-write"] = "checks only judge reads in the writer's own Locust process"

    def step_conf(rate: float) -> dict[str, str]:
        users = users_for(rate, args)
        return conf | {"users": str(users), "spawn-rate": str(users), "offered-rate": f"{rate:g}"}

    warmup = scenario.warmup_s if args.warmup is None else args.warmup
    if warmup:
        rate = args.warmup_rate or config.start_rate
        extra["warm-up"] = warm_up(ctx, mix, step_conf(rate), run_dir / "warmup", warmup)
    print(
        f"loadtest: capacity of {mix.name} via {via} ({ctx.target}): from {config.start_rate:g} req/s "
        f"x{config.factor:g} up to {config.max_rate:g}, then bisect to {config.resolution:.0%}; {step_time} s steps, "
        f"{processes or 'one local'} Locust worker process(es), budget {budget} s -> {run_dir}",
        flush=True,
    )
    search = capacity.KneeSearch(config)
    steps: list[capacity.Step] = []
    phases: dict[int, Phase] = {}
    overhead = STEP_OVERHEAD_S
    while (rate := search.next_rate()) is not None:
        elapsed = time.monotonic() - began
        if elapsed + step_time + overhead > budget:
            search.stop(capacity.STOP_BUDGET)
            break
        index = len(steps) + 1
        sconf = step_conf(rate)
        step_dir = run_dir / "steps" / f"{index:02d}-{rate:g}rps"
        phase = run_phase(ctx, sconf, step_dir, step_time, STEP_GRACE_S, echo=False)
        try:
            ok, checks, measured = slo.evaluate(step_dir, slo_path)
        except slo.SloError as exc:
            raise RunError(str(exc)) from None
        search.record(rate, ok)
        attribution = cpu.attribute(phase.usage) if phase.usage else None
        step = capacity.Step(
            index=index,
            rate=rate,
            users=int(sconf["users"]),
            run_dir=str(step_dir.relative_to(run_dir)),
            ok=ok,
            breaches=[{"name": c.name, "limit": c.limit, "measured": c.measured} for c in checks if not c.ok],
            target_rps=measured.target_rps,
            achieved_rps=measured.rps,
            requests=measured.requests,
            failure_ratio=round(measured.failure_ratio, 6),
            rate_ratio=None if measured.rate_ratio is None else round(measured.rate_ratio, 4),
            lag_p99_ms=measured.lag_p99_ms,
            p50_ms=measured.p50_ms,
            p95_ms=measured.p95_ms,
            p99_ms=measured.p99_ms,
            max_ms=measured.max_ms,
            usage=phase.usage.as_dict() if phase.usage else None,
            saturation=attribution.text if attribution else "no CPU samples",
            saturated=attribution.saturated if attribution else [],
            generator_busiest=phase.usage.generator_busiest() if phase.usage else 0.0,
            wall_s=round(phase.wall_s, 1),
        )
        steps.append(step)
        phases[index] = phase
        overhead = max(overhead, phase.wall_s - step_time)
        print(f"step {index}: {step_line(step)}", flush=True)
        if not ok:
            settle(ctx.target)
    elapsed = time.monotonic() - began
    print(f"loadtest: search done ({search.stopped}) in {elapsed:.0f} s; rendering the steps' reports", flush=True)
    for step in steps:  # after the search, so the steps ran back to back
        phase = phases[step.index]
        meta = {
            "scenario": f"capacity step {step.index}: {mix.name} at {step.rate:g} req/s",
            "target": ctx.target,
            "command": args.command,
            "started_at": started_at.isoformat(timespec="seconds"),
            "git_rev": git_rev(),
            "slo_file": str(slo_path.relative_to(REPO)) if slo_path.is_relative_to(REPO) else str(slo_path),
            "extra": {"offered rate": f"{step.rate:g} req/s", "users": step.users},
        }
        judge_phase(ctx, phase, slo_path, f"{mix.name} @ {step.rate:g} req/s via {via}", meta)
    steal = [s.usage["steal_cores"] for s in steps if s.usage]
    others = [s.usage["others_cores"] for s in steps if s.usage]
    loads = [s.usage["loadavg_max"] for s in steps if s.usage]
    machine = (
        f"load average {load_start} at the start, {loadavg()} at the end, max {max(loads, default=0):g} during steps; "
        f"other processes {sum(others) / max(1, len(others)):.2f} cores and steal {sum(steal) / max(1, len(steal)):.2f}"
        f" cores on average per step ({ctx.ncpu} cores)"
    )
    meta = {
        "scenario": "capacity",
        "mix": mix.name,
        "via": via,
        "target": ctx.target,
        "command": args.command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "git_rev": git_rev(),
        "slo_file": str(slo_path.relative_to(REPO)) if slo_path.is_relative_to(REPO) else str(slo_path),
        "search": f"start {config.start_rate:g} req/s, x{config.factor:g} up to {config.max_rate:g}, bisect to "
        f"{config.resolution:.0%}, at most {config.max_steps} steps of {step_time} s, budget {budget} s",
        "processes": processes or "0 (one local process)",
        "elapsed_s": round(elapsed, 1),
        "machine": machine,
        "ncpu": ctx.ncpu,
        "extra": extra,
    }
    result = capacity.write_report(run_dir, meta, search, steps, limits.p99_ms)
    print_capacity(run_dir, meta, result, steps)
    return 0 if result["knee_rps"] is not None else 1


def step_line(s: capacity.Step) -> str:
    verdict = "SLOs met" if s.ok else "BREACH " + capacity.breach_text(s.breaches)
    return (
        f"{s.rate:g} req/s offered ({s.users} users): achieved {s.achieved_rps} req/s, p50 {s.p50_ms} / p95 "
        f"{s.p95_ms} / p99 {s.p99_ms} ms, failures {s.failure_ratio:.2%}, started/due {s.rate_ratio}, lag p99 "
        f"{s.lag_p99_ms} ms: {verdict}; saturated: {', '.join(s.saturated) or 'nothing'} "
        f"({cpu_text(cpu.Usage.from_dict(s.usage)) if s.usage else 'no CPU samples'})"
    )


def print_capacity(run_dir: Path, meta: dict[str, Any], result: dict[str, Any], steps: list[capacity.Step]) -> None:
    knee = result["knee_rps"]
    print()
    print(
        f"== capacity of {meta['mix']} via {meta['via']}: knee "
        + (f"{knee:g} req/s" if knee is not None else "not found (no step met every SLO)")
        + f" (search stopped: {result['stopped']})"
    )
    if result["lowest_failing_rps"] is not None:
        print(
            f"first SLO to break, at {result['lowest_failing_rps']:g} req/s: "
            f"{capacity.breach_text(result['first_breach'])}"
        )
        print(f"saturated there: {result['saturated_at_failure']}")
    else:
        print("no step broke an SLO up to the maximum rate")
    if result["saturated_at_knee"]:
        print(f"at the knee: {result['saturated_at_knee']}")
    if result["generator_flagged_steps"]:
        rates = ", ".join(f"{r:g}" for r in result["generator_flagged_steps"])
        print(f"GENERATOR above 80% of a core at {rates} req/s: those steps understate the stack")
    print(f"machine: {meta['machine']}")
    print(f"report: {run_dir}")
    print(f"  {run_dir / 'summary.md'}")
    print(f"  {run_dir / 'capacity.png'}")
    for key in ("knee_step", "failing_step"):
        if result[key]:
            print(
                f"  {run_dir / result[key] / 'summary.md'} ({key.replace('_', ' ')}: latency.png, endpoints.png, "
                "outcomes.png, cpu.png)"
            )


# --- options ---------------------------------------------------------------------------------------------------


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
    p.add_argument(
        "--processes",
        type=int,
        help="Locust worker processes under one master (0: one local process; default: 0, capacity 2)",
    )
    p.add_argument(
        "--warmup",
        type=lambda text: 0 if text.strip() in ("0", "0s") else parse_duration(text),
        help="warm-up before measuring, e.g. 20s; 0 for none (default: the scenario's, 20 s; cold none)",
    )
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
    c = p.add_argument_group("capacity (run.py capacity ...)")
    c.add_argument("--mix", choices=MIXES, help="the user mix whose offered rate is stepped (default: readers)")
    c.add_argument("--step", type=parse_duration, help="duration of each step (default 15s)")
    c.add_argument("--start-rate", type=float, default=100.0, help="first offered rate, req/s (default 100)")
    c.add_argument("--factor", type=float, default=2.0, help="step-up factor while the SLOs hold (default 2)")
    c.add_argument("--max-rate", type=float, default=6400.0, help="highest rate tried (default 6400)")
    c.add_argument("--min-rate", type=float, default=10.0, help="lowest rate tried when stepping down (default 10)")
    c.add_argument("--resolution", type=float, default=0.10, help="bisect until within this fraction (default 0.10)")
    c.add_argument("--max-steps", type=int, default=12, help="at most this many steps (default 12)")
    c.add_argument(
        "--budget", type=parse_duration, default=360, help="no step may end past this, warm-up included (default 6m)"
    )
    c.add_argument("--warmup-rate", type=float, help="offered rate of the warm-up (default: the start rate)")
    c.add_argument("--user-rate", type=float, default=4.0, help="about this many req/s per user (default 4)")
    c.add_argument("--min-users", type=int, default=20, help="users at least (default 20)")
    c.add_argument("--max-users", type=int, default=300, help="users at most (default 300)")
    c.add_argument("--slo", type=Path, help="SLO file every step must meet (default loadtests/slo/capacity.toml)")
    f = p.add_argument_group("chaos (run.py chaos ...; loadtests/chaos.py)")
    f.add_argument(
        "--faults",
        type=chaos_faults,
        help="comma-separated faults, or all (default) / short (redis-kill, postgres-stop, worker-kill, gunicorn-hup)",
    )
    f.add_argument("--pause", type=float, default=10.0, help="seconds Redis / PostgreSQL stay SIGSTOPped (default 10)")
    return p


def chaos_faults(text: str) -> list[str]:
    from loadtests.chaos import parse_faults

    return parse_faults(text)


if __name__ == "__main__":
    sys.exit(main())
