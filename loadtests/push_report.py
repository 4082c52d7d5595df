"""Issue 13's figures for the runner's summary (no Locust import: run.py must stay unpatched by gevent)."""

from __future__ import annotations


def push_figures(counters: dict[str, int]) -> dict[str, str]:
    """What the runner prints and keeps for these scenarios (from pacing.json's counters)."""
    figures: dict[str, str] = {}
    conditional = counters.get("poll_304", 0) + counters.get("poll_200", 0)
    if conditional:
        share = counters.get("poll_304", 0) / conditional
        polls = conditional + counters.get("poll_first", 0)
        sent = sum(counters.get(k, 0) for k in ("poll_first_bytes", "poll_304_bytes", "poll_200_bytes"))
        figures["304 share of revalidations"] = f"{share:.2%} ({counters.get('poll_304', 0)} of {conditional})"
        figures["body bytes per poll"] = (
            f"{sent / polls:.1f} over all {polls} polls; {counters.get('poll_200_bytes', 0) / conditional:.1f} per "
            f"revalidation ({counters.get('poll_first', 0)} first fetches: "
            f"{counters.get('poll_first_bytes', 0) / max(1, counters.get('poll_first', 0)):.0f} bytes each)"
        )
    if counters.get("sse_idle_streams"):
        per = counters.get("sse_rss_growth_bytes", 0) / counters["sse_idle_streams"]
        figures["memory per idle stream"] = (
            f"{per / 1024:.1f} KiB (workers' RSS grew {counters.get('sse_rss_growth_bytes', 0) / 2**20:.1f} MiB "
            f"for {counters['sse_idle_streams']} streams)"
        )
    if counters.get("sse_checked_streams"):
        figures["events lost across forced reconnects"] = (
            f"{counters.get('sse_lost_events', 0)} ({counters['sse_checked_streams']} streams, "
            f"{counters.get('sse_expected_events', 0)} writes, {counters.get('sse_forced_reconnects', 0)} forced "
            f"reconnects, {counters.get('sse_resets', 0)} resets)"
        )
    return figures
