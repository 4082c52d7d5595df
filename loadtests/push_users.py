"""Locust users for issue 13 (pollers that revalidate, SSE streamers, the writer they watch) and the
figures the runner adds to their reports (push_figures). Kept apart from loadtests/users.py.

- RevalidatingPollerUser: PollerUser that also counts bytes, and counts each subscription's first
  fetch apart (it cannot be a 304): `poll_304` / (`poll_304` + `poll_200`) is then the 304 share of
  revalidations, what the pollers SLO asks (>= 99% for unchanged feeds).
- StreamerUser: holds one Server-Sent Events stream (from its own loopback source address, so the
  per-address cap is per client as in production), drops its connection every --streamer-reconnect
  seconds (random +-50%) and resumes with Last-Event-ID. Every event it gets is fired as a Locust
  request (so Locust's percentiles are the delay's), one of two (loadtests/push_delivery.py): a live
  delivery, `SSE commit-to-event`, from its `written_at` (just before the write's commit) to its
  arrival at the client's socket (the kernel's receive timestamp, ArrivalReader); or a replay to a
  resumed connection of an event written before it asked, `SSE replay after reconnect`, from that
  request to the arrival. The connections and their reading are loadtests/sse_client.py's (no Locust:
  tests drive it against the app).
- PushWriterUser: an editor publishing, retitling and deleting posts; every acknowledged write is
  an event every stream must get. At the end, each stream's missing events are failures named
  `sse: event lost`, and repeated ones `sse: duplicate event`.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import gevent
from locust import User, constant, events, tag, task
from locust.env import Environment

from loadtests import users
from loadtests.push_delivery import Delivery, before_split_counters
from loadtests.sse_client import SseClient
from loadtests.users import API, Shared, option

# (kind, post_id, acked monotonic), StreamerUser list, every Delivery (push_delivery.before_split_counters)
STREAM_STATE: dict[str, Any] = {"expected": [], "streams": [], "deliveries": []}
_LOCK = threading.Lock()
# PUSH_TRACE (a directory, app/observability/push_trace.py): every delivery is also written to
# <dir>/client-<pid>.jsonl at the end (stream, event, written_at, delay from it, live or replay), to be
# joined with the stack's per-write trace.
TRACE_DIR = os.environ.get("PUSH_TRACE", "")


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    add = parser.add_argument
    add("--streamer-reconnect", type=float, default=20.0, help="Mean seconds between forced reconnects.")
    add("--streamer-path", default=f"{API}/stream", help="The stream every StreamerUser holds.")
    add("--push-writer-rate", type=float, default=0.8, help="Writes/s per PushWriterUser.")
    add("--idle-settle", type=float, default=5.0, help="Seconds after spawning before the idle memory reading.")


# --- pollers ---------------------------------------------------------------------------------------------------


class RevalidatingPollerUser(users.ApiUser):
    """PollerUser's subscriptions and pacing; not its subclass (Locust would run both poll tasks)."""

    abstract = True
    rate_option, rate_default = "poller_rate", 0.5

    def on_start(self) -> None:
        super().on_start()
        self.subscriptions = [self.pick_scope() for _ in range(self.rng.randint(1, 3))]
        self.etags: dict[Any, str] = {}
        self.turn = 0

    @tag("poll")
    @task
    def poll(self) -> None:
        scope = self.subscriptions[self.turn % len(self.subscriptions)]
        self.turn += 1
        etag = self.etags.get(scope)
        headers = {"If-None-Match": etag} if etag else None
        with self.client.get(scope.path, name=f"poll {scope.label}", headers=headers, catch_response=True) as resp:
            if resp.status_code not in (200, 304):
                resp.failure(f"HTTP {resp.status_code}")
                return
            resp.success()
            size = len(resp.content or b"")
            if etag is None:
                Shared.pacing.count("poll_first")
                Shared.pacing.count("poll_first_bytes", size)
            elif resp.status_code == 304:
                Shared.pacing.count("poll_304")
                Shared.pacing.count("poll_304_bytes", size)
            else:
                Shared.pacing.count("poll_200")
                Shared.pacing.count("poll_200_bytes", size)
            if resp.status_code == 200 and resp.headers.get("ETag"):
                self.etags[scope] = resp.headers["ETag"]


# --- streams ---------------------------------------------------------------------------------------------------


def _stack_workers() -> list[int]:
    """The stack's gunicorn worker pids (LOADTEST_STACK_DIR/state.json, else .stack/), for memory readings."""
    state_dir = Path(os.environ.get("LOADTEST_STACK_DIR") or Path(__file__).resolve().parent.parent / ".stack")
    try:
        master = int(json.loads((state_dir / "state.json").read_text())["services"]["app"]["pid"])
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except (OSError, ValueError, KeyError):
        return []
    return [int(pid) for pid in children]


def _rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class StreamerUser(User):
    abstract = True
    wait_time = constant(1.0)
    serial = 0

    def on_start(self) -> None:
        StreamerUser.serial += 1
        number = self.serial_number = StreamerUser.serial
        # 127.0.0.2 .. 127.0.0.254, two streams per address (500 streams), under the per-address cap (8) as for
        # real clients. Room to spare: a client's dropped stream holds its slot until a write to it fails (the
        # next event or heartbeat but one), so a stream that reconnects briefly counts twice; with four streams
        # an address, an unlucky run of reconnects went over the cap (429).
        host = self.environment.host or ""
        hostport = host.split("://", 1)[-1].rstrip("/")
        hostname, _, port = hostport.partition(":")
        self.client = SseClient(
            hostname,
            int(port or 80),
            str(option(self.environment, "streamer_path", f"{API}/stream")),
            source=f"127.0.0.{2 + (number // 2) % 253}",
        )
        self.reconnect_mean = float(option(self.environment, "streamer_reconnect", 20.0))
        self.rng = random.Random(number)
        self.received: dict[tuple[str, int], int] = {}
        self.reconnects = 0
        self.reader = gevent.spawn(self._hold)
        with _LOCK:
            STREAM_STATE["streams"].append(self)

    @property
    def connected_at(self) -> float | None:
        return self.client.connected_at

    def on_stop(self) -> None:
        self.reader.kill(block=False)
        self.client.close()

    @task
    def drop_now_and_then(self) -> None:
        if self.client.sock is not None and self.rng.random() < 1.0 / max(1.0, self.reconnect_mean):
            self.reconnects += 1
            Shared.pacing.count("sse_forced_reconnects")
            self.client.drop()  # the reader's read ends; it resumes with Last-Event-ID

    def _fire(self, name: str, elapsed_ms: float, exception: Exception | None = None) -> None:
        self.environment.events.request.fire(
            request_type="SSE", name=name, response_time=elapsed_ms, response_length=0, exception=exception, context={}
        )

    def _hold(self) -> None:
        while True:
            started = time.monotonic()
            try:
                self.client.stream(self._dispatch)
            except (OSError, ValueError) as exc:
                if not self.client.dropped:
                    self._fire("sse: connection", (time.monotonic() - started) * 1000, exc)
            finally:
                self.client.close()
            gevent.sleep(0.05)

    def _dispatch(self, event: dict[str, Any], delivery: Delivery | None) -> None:
        if delivery is None:
            Shared.pacing.count("sse_resets")
            return
        key = (event["type"], int(event["post"]["id"]))
        self.received[key] = self.received.get(key, 0) + 1
        if self.received[key] > 1:
            self._fire("sse: duplicate event", 0, RuntimeError(f"{key} received twice"))
        STREAM_STATE["deliveries"].append(delivery)
        if TRACE_DIR:
            STREAM_STATE.setdefault("trace", []).append(
                (self.serial_number, *key, event["written_at"], delivery.name, delivery.since_written_ms)
            )
        if delivery.cut:
            Shared.pacing.count("sse_replays_cut")
        self._fire(delivery.name, delivery.ms)


class PushWriterUser(users.WriterUser):
    """Creates a post, retitles it, deletes it (three events per post), recording each acknowledged write."""

    abstract = True
    rate_option, rate_default = "push_writer_rate", 0.8

    def on_start(self) -> None:
        super().on_start()
        self.cycle: list[int] = []

    def _expect(self, kind: str, post_id: int) -> None:
        with _LOCK:
            STREAM_STATE["expected"].append((kind, post_id, time.monotonic()))

    @tag("write")
    @task
    def write(self) -> None:
        self._ensure_token()
        if self.cycle and len(self.cycle) == 1:
            post_id = self.cycle[0]
            ok, _, _ = self._send(
                "PATCH", f"{API}/posts/{post_id}", "/posts/[id] (title)", 200, {"title": f"Streamed {post_id} v2"}
            )
            if ok:
                self._expect("post.updated", post_id)
            self.cycle.append(post_id)
            return
        if self.cycle:
            post_id = self.cycle[0]
            ok, _, _ = self._send("DELETE", f"{API}/posts/{post_id}", "/posts/[id] (delete)", 204)
            if ok:
                self._expect("post.deleted", post_id)
            self.cycle = []
            return
        c = self.catalog
        body = {"title": f"Streamed {time.time():.3f}", "summary": "Load test.", "body": "Pushed to streams.",
                "category": c.category_picker.pick(self.rng), "tags": []}  # fmt: skip
        ok, post, _ = self._send("POST", f"{API}/posts", "/posts", 201, body)
        if ok:
            self._expect("post.created", int(post["id"]))
            self.cycle = [int(post["id"])]


# Only this writer's cycle: Locust would also collect WriterUser's own tasks from the base class.
PushWriterUser.tasks = [PushWriterUser.write]


# --- run-level hooks -------------------------------------------------------------------------------------------


@events.spawning_complete.add_listener
def _memory_per_idle_stream(user_count: int, **_: Any) -> None:
    """RSS of the stack's workers before the streams (test_start) and once they are all open and idle."""
    env: Environment | None = _ENV.get("env")
    if env is None or not STREAM_STATE["streams"]:
        return

    def measure() -> None:
        gevent.sleep(float(option(env, "idle_settle", 5.0)))
        pids = _stack_workers()
        open_streams = sum(1 for s in STREAM_STATE["streams"] if s.connected_at is not None)
        if pids and open_streams and STREAM_STATE.get("rss_before"):
            grown = _rss(pids) - int(STREAM_STATE["rss_before"])
            Shared.pacing.count("sse_idle_streams", open_streams)
            Shared.pacing.count("sse_rss_growth_bytes", max(0, grown))

    gevent.spawn(measure)


_ENV: dict[str, Environment] = {}


@events.test_start.add_listener
def _before_streams(environment: Environment, **_: Any) -> None:
    _ENV["env"] = environment
    pids = _stack_workers()
    if pids:
        STREAM_STATE["rss_before"] = _rss(pids)


@events.test_stop.add_listener
def _losses(environment: Environment, **_: Any) -> None:
    """Every write acknowledged while a stream was held (1 s after it first connected, 3 s before the end)
    must have reached it, across its forced reconnects."""
    end = time.monotonic()
    lost = 0
    for stream in STREAM_STATE["streams"]:
        if stream.connected_at is None:
            continue
        for kind, post_id, acked in STREAM_STATE["expected"]:
            if stream.connected_at + 1.0 <= acked <= end - 3.0 and (kind, post_id) not in stream.received:
                lost += 1
                environment.events.request.fire(
                    request_type="SSE", name="sse: event lost", response_time=0, response_length=0,
                    exception=RuntimeError(f"{kind} {post_id}"), context={},
                )  # fmt: skip
    Shared.pacing.count("sse_checked_streams", sum(1 for s in STREAM_STATE["streams"] if s.connected_at is not None))
    Shared.pacing.count("sse_expected_events", len(STREAM_STATE["expected"]))
    Shared.pacing.count("sse_lost_events", lost)
    for name, value in before_split_counters(STREAM_STATE["deliveries"]).items():
        Shared.pacing.count(name, value)
    if TRACE_DIR:
        fields = ("stream", "kind", "post", "written_at", "name", "since_written_ms")
        with open(os.path.join(TRACE_DIR, f"client-{os.getpid()}.jsonl"), "w") as out:
            for row in STREAM_STATE.get("trace", []):
                out.write(json.dumps(dict(zip(fields, row, strict=True))) + "\n")
