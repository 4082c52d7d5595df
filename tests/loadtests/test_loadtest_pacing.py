"""Open-model pacing: arrivals due vs requests started, on a fake clock."""

from __future__ import annotations

import random

import pytest

from loadtests.pacing import Pacer, PacingLedger, percentile


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(pacer: Pacer, clock: FakeClock, service_times: list[float]) -> None:
    """Drive a user: sleep as told, serve each request for its service time."""
    clock.now += pacer.begin()
    for service in service_times:
        clock.now += service
        clock.now += pacer.wait()


def test_a_fast_server_gets_every_arrival_on_time() -> None:
    clock = FakeClock()
    pacer = Pacer(2.0, random.Random(1), poisson=False, clock=clock, wall=clock)
    run(pacer, clock, [0.01] * 100)
    due, started = pacer.counts(until=clock.now)
    assert started == due == 101  # the 101st was just due and is being sent
    assert max(pacer.lags) == 0.0


def test_a_slow_server_shows_as_lag_then_as_dropped_arrivals() -> None:
    """1 req/s asked; every response takes 2 s: a closed-loop generator would quietly halve its rate."""
    clock = FakeClock()
    pacer = Pacer(1.0, random.Random(1), poisson=False, max_backlog=5.0, clock=clock, wall=clock)
    run(pacer, clock, [2.0] * 30)
    due, started = pacer.counts(until=clock.now)
    assert started / due < 0.6
    assert pacer.omitted > 0
    assert percentile(pacer.lags, 0.99) == pytest.approx(5.0, abs=1.0)


def test_a_stall_is_caught_up_back_to_back() -> None:
    clock = FakeClock()
    pacer = Pacer(1.0, random.Random(1), poisson=False, clock=clock, wall=clock)
    run(pacer, clock, [0.01] * 5 + [3.0] + [0.01] * 10)
    due, started = pacer.counts(until=clock.now)
    assert started == due and pacer.omitted == 0
    assert max(pacer.lags) == pytest.approx(3.0 - 1.0 + 0.01, abs=0.02)  # late, but sent


def test_poisson_arrivals_average_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(4.0, random.Random(9), clock=clock, wall=clock)
    run(pacer, clock, [0.001] * 4000)
    assert 4000 / (clock.now - 1000.0) == pytest.approx(4.0, rel=0.05)


def test_ledger_totals_and_timeline() -> None:
    clock = FakeClock()
    ledger = PacingLedger()
    fast = ledger.add("Reader", Pacer(1.0, random.Random(1), poisson=False, clock=clock, wall=clock))
    idle = ledger.add("Poller", Pacer(0.5, random.Random(2), poisson=False, clock=clock, wall=clock))
    idle.begin()
    run(fast, clock, [0.01] * 9)
    fast.stop()
    ledger.count("poll_304", 3)
    summary = ledger.summary(until=clock.now)
    # 9 served, and the 10th was due at the stop (the sleep before it had just ended): sent, not dropped.
    assert summary["classes"]["Reader"]["due"] == summary["classes"]["Reader"]["started"] == 10
    poller = summary["classes"]["Poller"]  # begun but never served: its arrivals are a shortfall
    assert poller["started"] == 1 and poller["due"] >= 4
    assert summary["ratio"] < 1
    assert summary["counters"] == {"poll_304": 3}
    assert len(summary["intervals"]) == 2
    assert summary["intervals"][0][1] == fast.stopped_wall and summary["intervals"][1][1] is None  # still running


def test_bad_rate_and_order() -> None:
    with pytest.raises(ValueError):
        Pacer(0.0)
    with pytest.raises(RuntimeError):
        Pacer(1.0).wait()
