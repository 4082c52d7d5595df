"""A per-write trace of the push path, for finding where a late event's time went (off by default).

With PUSH_TRACE set to a directory, each process appends JSON lines to `<dir>/push-<pid>.jsonl`
(wall-clock times, `time.time()`, the clock of `written_at` and of the clients' kernel receive
timestamps; the streamers scenario's clients write theirs to `<dir>/client-<pid>.jsonl`, and
`python -m loadtests.push_trace_report <dir>` joins them):

- `write` (the writing worker): the write's event ids and the time of each stage: `written` (the
  `written_at` of its events), `locked` (the events' advisory lock), `inserted`, `commit_sent`,
  `committed`, `outbox_sql` (the outbox DELETE that reads the WAL position), `bumped` (the
  generations in Redis), `outbox_committed`, `publish_sent`, `published` (the PUBLISH returned),
  `rung` (this process's hub rung); `cpu_<stage>`,
  the process's CPU time then (a stage's CPU against its wall time: the worker ran, or it waited for
  a server or a core); `ran`, the milliseconds each kind of greenlet ran over the whole path;
- `msg` (every worker): a doorbell as the Redis subscription received it;
- `deliver` (every worker): one pass of the hub's fan-out, its first and last stream written;
- `lag` (every worker, PUSH_TRACE_LAG_MS > 0, 10 by default): the gevent loop came back to a 5 ms
  ticker later than that: something held the worker's only thread (`cpu`: what the process ran
  meanwhile; `ran`: which greenlets).

Unset, every hook is one test of a module global. Lines are written as they happen (one `write`
each, unbuffered): the trace must survive a worker killed at the end of a run.
"""

from __future__ import annotations

import os
import threading
import time
from typing import IO, Any

import orjson

DIRECTORY = os.environ.get("PUSH_TRACE", "")
ON = bool(DIRECTORY)
_local = threading.local()  # greenlet-local under gevent: the stages of the write this greenlet runs
_file: IO[bytes] | None = None
_file_pid = 0
# Seconds each kind of greenlet ran (start_monitors: greenlet switches), to say what else a worker ran
# while a write or the loop waited: "<outermost app function>><innermost>", or the greenlet's type.
_ran: dict[str, float] = {}


def _top(now: dict[str, float], before: dict[str, float], n: int = 6) -> dict[str, float]:
    diff = {k: v - before.get(k, 0.0) for k, v in now.items()}
    return {k: round(v * 1000, 2) for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:n] if v > 0}


def _emit(record: dict[str, Any]) -> None:
    global _file, _file_pid
    pid = os.getpid()
    if _file is None or _file_pid != pid:  # opened in each worker, after the fork
        _file = open(os.path.join(DIRECTORY, f"push-{pid}.jsonl"), "ab", buffering=0)  # noqa: SIM115
        _file_pid = pid
    _file.write(orjson.dumps({"pid": pid, **record}) + b"\n")


def begin(at: float) -> None:
    """A write's events were stamped `written_at` = `at` (the first stage)."""
    if ON:
        _local.stages = {"written": at}
        _local.cpu = {"written": time.process_time()}
        _local.ran = dict(_ran)


def mark(stage: str) -> None:
    """The write this greenlet runs reached `stage` (ignored when no write is being traced); with the
    process's CPU time then (the worker's own work in a stage, against waiting for a server or a core)."""
    if ON:
        stages: dict[str, float] | None = getattr(_local, "stages", None)
        if stages is not None and stage not in stages:
            stages[stage] = time.time()
            _local.cpu[stage] = time.process_time()


def end(ids: list[int]) -> None:
    """The write's doorbell was rung: emit its stages."""
    if ON:
        stages = getattr(_local, "stages", None)
        _local.stages = None
        if stages is not None:
            cpu = {f"cpu_{stage}": t for stage, t in _local.cpu.items()}
            _emit({"k": "write", "ids": ids, **stages, **cpu, "ran": _top(_ran, _local.ran)})


def drop() -> None:
    """The write rolled back."""
    if ON:
        _local.stages = None


def record(kind: str, **fields: Any) -> None:
    if ON:
        _emit({"k": kind, "t": time.time(), **fields})


def _label(frame: Any) -> str:
    inner = outer = other = ""
    depth = 0
    while frame is not None and depth < 80:
        name = frame.f_code.co_filename
        if "/app/" in name and "site-packages" not in name:
            outer = frame.f_code.co_name
            inner = inner or outer
        elif not other and "/gevent/" not in name:
            other = f"{os.path.basename(name)}:{frame.f_code.co_name}"
        frame, depth = frame.f_back, depth + 1
    if not inner:
        return other
    return f"{outer}>{inner}" if outer != inner else inner


def start_monitors() -> None:
    """Greenlet accounting, and a ticker that records each time the loop let it run late by more than
    PUSH_TRACE_LAG_MS (with the process's CPU time meanwhile, and which greenlets ran)."""
    if not ON:
        return
    import greenlet

    last = [time.perf_counter()]

    def switched(event: str, args: Any) -> None:
        now = time.perf_counter()
        if event in ("switch", "throw"):
            origin = args[0]
            label = _label(origin.gr_frame) or type(origin).__name__  # called after the switch
            _ran[label] = _ran.get(label, 0.0) + now - last[0]
        last[0] = now

    greenlet.settrace(switched)
    threshold = float(os.environ.get("PUSH_TRACE_LAG_MS", "10")) / 1000
    if threshold <= 0:
        return

    def tick() -> None:
        step = 0.005
        while True:
            before, cpu, ran = time.monotonic(), time.process_time(), dict(_ran)
            time.sleep(step)
            late = time.monotonic() - before - step
            if late > threshold:  # cpu: what this process ran meanwhile (the rest: it waited for a core)
                cpu_ms = round((time.process_time() - cpu) * 1000, 2)
                record("lag", ms=round(late * 1000, 2), cpu=cpu_ms, ran=_top(_ran, ran))

    threading.Thread(target=tick, name="push-trace-lag", daemon=True).start()
