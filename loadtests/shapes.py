"""Load-shape plans as pure functions of time (the LoadTestShape classes in scenarios/ call these)."""

from __future__ import annotations

SPIKE_START, SPIKE_END = 0.35, 0.65  # fractions of the run: baseline, then the spike, then baseline again
BASELINE_RAMP_S = 5.0  # the baseline users arrive over ~5 s; the spike arrives (and leaves) within ~1 s


def spike_plan(elapsed: float, run_time: float, baseline: int, peak: int) -> tuple[int, float] | None:
    """(users, spawn rate per second) at `elapsed` seconds into a run of `run_time` seconds; None once over."""
    if run_time <= 0 or elapsed >= run_time:
        return None
    if not 0 < baseline <= peak:
        raise ValueError("a spike needs 0 < baseline <= peak users")
    fraction = elapsed / run_time
    if fraction < SPIKE_START:
        return baseline, max(1.0, baseline / BASELINE_RAMP_S)
    if fraction < SPIKE_END:
        return peak, float(peak)
    return baseline, float(peak)
