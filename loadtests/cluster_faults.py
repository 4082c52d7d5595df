"""Consistency under load on the cluster (issue 15, item 5): the `mixed` scenario through the cluster's Nginx
while the PostgreSQL replica's replay is paused and resumed, the Redis primary is SIGKILLed (Sentinel
failover) and an app node is SIGKILLed; then a report of stale reads, lost and duplicated acknowledged writes,
5xx inside and outside the fault windows and the failover time.

    make cluster
    .venv/bin/python -m loadtests.cluster_faults [--duration 150] [--users 80]

Timeline (fractions of --duration, measured from Locust's start): replay paused at 0.15, resumed at 0.35;
Redis primary SIGKILLed at 0.45; app-2 SIGKILLed at 0.70. After the run the killed Redis comes back as a
replica of the new primary and app-2 is restarted, so the cluster is whole again (the Redis roles swapped).

What counts:
- stale reads: every consistency violation the readers and checkers report (loadtests/consistency.py; the
  edge's 1 s microcache bound applies, the run goes through Nginx);
- lost / duplicated: loadtests/audit.py against the primary after the run;
- 5xx: answers >= 500 and transport failures, per window: the Redis failover window runs from the kill until
  every Sentinel names the new primary plus the apps' discovery interval (REDIS_SENTINEL_CHECK_INTERVAL,
  1 s) and one request timeout; the app-node window from its kill until Nginx has marked it failed (writes
  in flight on the killed node cannot be replayed by Nginx: their outcome is unknown by HTTP's rules, the
  writers treat them as uncertain); everything else is "outside".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devstack.cluster import DEFAULT_DIR, Cluster, sentinel_primary
from loadtests import audit, timings

REPO = Path(__file__).resolve().parent.parent
WINDOW_GRACE_S = 3.0  # discovery interval (1 s) + one request's worth of timeouts after the promotion


@dataclass
class Fault:
    name: str
    started: float  # epoch seconds
    ended: float | None = None  # end of its window (epoch)
    detail: dict[str, Any] = field(default_factory=dict)


def set_replay(url: str, paused: bool) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def replica_lag_bytes(primary_url: str, replica_url: str) -> int:
    import psycopg

    with psycopg.connect(primary_url, autocommit=True, connect_timeout=5) as p:
        row = p.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
    with psycopg.connect(replica_url, autocommit=True, connect_timeout=5) as r:
        rrow = r.execute("SELECT coalesce(pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0'), 0)::bigint").fetchone()
    assert row is not None and rrow is not None
    return max(0, int(row[0]) - int(rrow[0]))


class Faults(threading.Thread):
    """The fault timeline, run beside Locust; each fault recorded with its window."""

    def __init__(self, state: dict[str, Any], duration: float, start: threading.Event) -> None:
        super().__init__(daemon=True)
        self.state, self.duration, self.start_event = state, duration, start
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def at(self, fraction: float) -> bool:
        """Sleep until `fraction` of the run; False if the run is over."""
        return not self.stop.wait(max(0.0, self.t0 + fraction * self.duration - time.time()))

    def run(self) -> None:
        try:
            self.start_event.wait()
            self.t0 = time.time()
            self._timeline()
        except Exception as exc:  # reported, never a traceback in the middle of Locust's output
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def _timeline(self) -> None:
        services = self.state["services"]
        primary_url, replica_url = services["postgres-primary"]["url"], services["postgres-replica-1"]["url"]
        if not self.at(0.15):
            return
        paused = Fault("replica replay paused", time.time())
        set_replay(replica_url, True)
        self.faults.append(paused)
        if not self.at(0.35):
            return
        paused.detail["lag_bytes_at_resume"] = replica_lag_bytes(primary_url, replica_url)
        set_replay(replica_url, False)
        paused.ended = time.time()

        if not self.at(0.45):
            return
        master = self.state["settings"]["REDIS_SENTINEL_MASTER"]
        sentinels = [info["port"] for info in services.values() if info["kind"] == "sentinel"]
        old = sentinel_primary(sentinels[0], master)
        assert old is not None, "no Sentinel names a Redis primary"
        victim = next(n for n, i in services.items() if i["kind"] == "redis" and int(i["port"]) == old[1])
        failover = Fault("Redis primary SIGKILLed", time.time(), detail={"killed": victim})
        os.kill(int(services[victim]["pid"]), signal.SIGKILL)
        self.faults.append(failover)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            named = {sentinel_primary(p, master) for p in sentinels}
            if len(named) == 1 and None not in named and old not in named:
                break
            time.sleep(0.05)
        promoted = time.time()
        failover.detail["failover_s"] = round(promoted - failover.started, 2)
        failover.detail["new_primary"] = sorted(named)[0] if named and None not in named else None
        failover.ended = promoted + WINDOW_GRACE_S

        if not self.at(0.70):
            return
        node = Fault("app node app-2 SIGKILLed", time.time())
        pid = int(services["app-2"]["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the master and its workers, as a host going away
        self.faults.append(node)
        # Nginx marks it failed after max_fails refused connections (it retries GETs on the other node).
        node.ended = node.started + WINDOW_GRACE_S


def fault_record(fault: Fault, t0: float) -> dict[str, Any]:
    window = round(fault.ended - fault.started, 1) if fault.ended else None
    return {"name": fault.name, "at_s": round(fault.started - t0, 1), "window_s": window, **fault.detail}


def in_window(at: float, faults: list[Fault]) -> str | None:
    for fault in faults:
        if fault.name.startswith("replica"):
            continue  # replay paused is not an outage: no 5xx allowed at all
        if fault.started <= at <= (fault.ended or float("inf")):
            return fault.name
    return None


def classify(run_dir: Path, faults: list[Fault]) -> dict[str, Any]:
    """Requests, 5xx/transport failures per window and method, and consistency violations, from the request log."""
    rows = list(timings.read_rows(timings.log_paths(run_dir)))
    errors: Counter[str] = Counter()
    examples: list[str] = []
    checks = 0
    total = 0
    for row in rows:
        if row.type == "CHECK":
            checks += 1
            continue
        if row.type == "SETUP":
            continue
        total += 1
        if row.status >= 500 or row.status == 0:
            window = in_window(row.start, faults) or "outside"
            kind = "read" if row.type == "GET" else "write"
            errors[f"{window} / {kind}"] += 1
            if window == "outside" and len(examples) < 10:
                examples.append(
                    f"{datetime.fromtimestamp(row.start, UTC):%H:%M:%S.%f} {row.type} {row.name} {row.status}"
                )
    outside = sum(n for k, n in errors.items() if k.startswith("outside"))
    return {
        "requests": total,
        "stale_reads": checks,
        "errors": dict(errors),
        "5xx_outside": outside,
        "examples": examples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.cluster_faults", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the running cluster's dir (make cluster)")
    parser.add_argument("--duration", type=int, default=150, help="seconds of load (the faults scale with it)")
    parser.add_argument("--users", type=int, help="Locust users (default: the mixed scenario's)")
    parser.add_argument("--report-dir", type=Path, help="default: loadtests/reports/cluster-faults-<time>")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    state = cluster.read_state()
    if not state or not state.get("complete") or not all(cluster.running(state).values()):
        print("cluster_faults: needs a complete, running cluster (make cluster)", file=sys.stderr)
        return 2
    services = state["services"]
    primary_url = services["postgres-primary"]["url"]
    run_dir = (
        args.report_dir or REPO / "loadtests" / "reports" / f"cluster-faults-{datetime.now():%Y%m%d-%H%M%S}"
    ).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    since = datetime.now(UTC)
    cmd = [
        sys.executable, "loadtests/run.py", "mixed", "--no-stack", "--target", state["nginx_url"],
        "--database-url", primary_url, "--redis-url", state["redis_url"], "--duration", f"{args.duration}s",
        "--warmup", "0", "--report-dir", str(run_dir / "run"),
    ]  # fmt: skip
    if args.users:
        cmd += ["--users", str(args.users)]
    started = threading.Event()
    faults = Faults(state, args.duration, started)
    faults.start()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    with (run_dir / "run.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if not started.is_set() and "consistency bound" in line:
                started.set()
        rc = proc.wait()
    started.set()
    faults.stop.set()
    faults.join(30)
    # Whole again: the killed Redis as a replica of the new primary, app-2 restarted.
    for fault in faults.faults:
        if fault.name.startswith("Redis") and fault.detail.get("new_primary"):
            cluster.restart_redis(fault.detail["killed"], int(fault.detail["new_primary"][1]))
        if fault.name.startswith("app node"):
            cluster.restart_app("app-2")
    report: dict[str, Any] = {
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip(),
        "duration_s": args.duration,
        "load_average_before": load_before,
        "load_average_after": Path("/proc/loadavg").read_text().split()[:3],
        "locust_exit": rc,
        "fault_errors": faults.errors,
        "faults": [fault_record(f, getattr(faults, "t0", f.started)) for f in faults.faults],
    }
    if (run_dir / "run").exists():
        report.update(classify(run_dir / "run", faults.faults))
        result = audit.audit_run(run_dir / "run", primary_url, since)
        report["audit"] = result.as_dict()
    (run_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    ok = (
        rc in (0, 1)
        and not faults.errors
        and len(faults.faults) == 3  # every fault happened
        and report.get("stale_reads", 1) == 0
        and report.get("5xx_outside", 1) == 0
        and report.get("audit", {}).get("lost", 1) == 0
        and report.get("audit", {}).get("duplicated", 1) == 0
    )
    print(f"\ncluster_faults: {'PASS' if ok else 'FAIL'} (report: {run_dir / 'report.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
