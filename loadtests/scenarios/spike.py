"""Spike: the readers mix at a baseline, a sudden spike (every extra user within ~1 s), then back."""

from __future__ import annotations

from typing import Any

from locust import LoadTestShape

from loadtests import users
from loadtests.shapes import spike_plan


class Reader(users.ReaderUser):
    weight = 9


class Walker(users.WalkerUser):
    weight = 1


class SpikeShape(LoadTestShape):
    """Baseline (first 35% of --run-time), spike to --spike-peak users (to 65%), baseline again."""

    use_common_options = True  # reads --run-time

    def tick(self) -> tuple[int, float] | None:
        assert self.runner is not None
        opts: Any = self.runner.environment.parsed_options
        return spike_plan(self.get_run_time(), float(opts.run_time or 120), opts.spike_baseline, opts.spike_peak)
