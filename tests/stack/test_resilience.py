"""Worker loss and reloads under load through Nginx: no idempotent GET is lost."""

from __future__ import annotations

import os
import signal
import time

import pytest

from devstack.stack import children
from tests.stack.conftest import WORKERS, Load, StackInfo, wait_for

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)

UPSTREAM_FAILURE = ("upstream prematurely closed", "reset by peer", "Broken pipe", "upstream timed out")


def _paths(post_ids: list[int]) -> list[str]:
    # /healthz and /readyz are never cached, so they always reach gunicorn; the posts mostly miss too.
    return [path for pid in post_ids[:40] for path in ("/healthz", f"/api/v1/posts/{pid}", "/readyz")]


def _upstream_failures(stack: StackInfo, offset: int) -> list[str]:
    log = (stack.logs / "nginx-error.log").read_bytes()[offset:].decode(errors="replace")
    return [line for line in log.splitlines() if any(marker in line for marker in UPSTREAM_FAILURE)]


def _error_log_size(stack: StackInfo) -> int:
    path = stack.logs / "nginx-error.log"
    return path.stat().st_size if path.exists() else 0


def test_sigkill_of_a_worker_mid_load_loses_no_get(stack: StackInfo, post_ids: list[int]) -> None:
    master = stack.pid("app")
    assert wait_for(lambda: len(children(master)) == WORKERS, 30)
    victim = children(master)[0]
    log_offset = _error_log_size(stack)
    with Load(stack.port("nginx"), _paths(post_ids), threads=12) as load:
        time.sleep(0.7)
        # Its live gauges (pool states, sampled from the request path) are on disk.
        live = f"gauge_live*_{victim}.db"
        assert wait_for(lambda: any((stack.root / "prometheus").glob(live)), 5), "victim wrote no live gauge"
        # Stop it first so requests pile up on its keep-alive connections, then kill it with
        # those requests in flight: each must be replayed on another worker by Nginx.
        os.kill(victim, signal.SIGSTOP)
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: victim not in children(master) and len(children(master)) == WORKERS, 30)
        time.sleep(0.7)
    result = load.result
    assert result.total > 300, result
    assert not result.errors and set(result.statuses) == {200}, (result.statuses, result.errors, result.failures[:10])
    # The kill did cut requests off mid-flight (so the retry path was exercised, not dodged).
    assert _upstream_failures(stack, log_offset), "no upstream request was cut off by the kill"
    # gunicorn's child_exit dropped the dead worker's live gauges from the metrics files.
    assert not list((stack.root / "prometheus").glob(live))


def test_hup_reload_under_load_drops_nothing(stack: StackInfo, post_ids: list[int]) -> None:
    master = stack.pid("app")
    assert wait_for(lambda: len(children(master)) == WORKERS, 30)
    before = set(children(master))
    with Load(stack.port("nginx"), _paths(post_ids), threads=12) as load:
        time.sleep(0.7)
        os.kill(master, signal.SIGHUP)
        # New workers up, every old one retired (graceful: it finishes what it holds).
        assert wait_for(lambda: not before & set(children(master)) and len(children(master)) == WORKERS, 40)
        time.sleep(0.7)
    result = load.result
    assert result.total > 300, result
    assert not result.errors and set(result.statuses) == {200}, (result.statuses, result.errors, result.failures[:10])
    assert os.getpgid(master) == master  # same master: a reload, not a restart
