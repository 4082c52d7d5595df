"""/popular on the real stack: each worker's builder makes the next snapshot before its interval
starts (one process computes it), so the first requests of an interval read it, none builds it."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.stack.conftest import POPULAR_INTERVAL, StackInfo, request

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)


def _snapshots(stack: StackInfo) -> list[int]:
    with psycopg.connect(stack.state["database_url"], autocommit=True) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM popular_snapshots ORDER BY id")]


def test_each_snapshot_exists_before_its_interval_and_first_pages_never_wait(stack: StackInfo) -> None:
    port = stack.port("app")
    assert request(port, "/api/v1/popular").status == 200
    for _ in range(2):
        upcoming = (int(time.time()) // POPULAR_INTERVAL + 1) * POPULAR_INTERVAL
        time.sleep(max(0.0, upcoming - 1.0 - time.time()))
        assert upcoming in _snapshots(stack), (upcoming, _snapshots(stack))  # built ahead, by now
        slowest = 0.0
        while time.time() < upcoming + 2:  # first pages across the boundary, straight to gunicorn
            started = time.monotonic()
            response = request(port, "/api/v1/popular?limit=50")
            slowest = max(slowest, time.monotonic() - started)
            assert response.status == 200
            time.sleep(0.05)
        assert slowest < 1.0, slowest
    assert len(set(_snapshots(stack))) == len(_snapshots(stack))
