"""Wall-clock microbenchmarks of the hot paths (bench/workloads.py), saved as JSON by
`make bench`. The same workloads are instruction-counted by the gate (bench/gate.py)."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from flask import Flask

from bench.workloads import WORKLOADS


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_hot_path(benchmark, app: Flask, name: str) -> None:  # type: ignore[no-untyped-def]
    with ExitStack() as stack:
        run = WORKLOADS[name](app, stack)
        benchmark.group = "hot paths"
        benchmark(run)
