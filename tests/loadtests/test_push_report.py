"""Issue 13's figures in the load-test summary: the pollers' 304 share of revalidations and bytes per
poll, the streamers' losses and memory per idle stream, from a run's counters."""

from __future__ import annotations

from loadtests.push_report import push_figures


def test_pollers_figures_count_first_fetches_apart() -> None:
    figures = push_figures(
        {
            "poll_first": 10,
            "poll_first_bytes": 150_000,
            "poll_304": 990,
            "poll_304_bytes": 0,
            "poll_200": 10,
            "poll_200_bytes": 150_000,
        }
    )
    assert figures["304 share of revalidations"] == "99.00% (990 of 1000)"
    assert figures["body bytes per poll"].startswith("297.0 over all 1010 polls; 150.0 per revalidation")


def test_streamers_figures() -> None:
    figures = push_figures(
        {
            "sse_idle_streams": 500,
            "sse_rss_growth_bytes": 500 * 30 * 1024,
            "sse_checked_streams": 500,
            "sse_expected_events": 70,
            "sse_lost_events": 0,
            "sse_forced_reconnects": 1200,
            "sse_resets": 0,
        }
    )
    assert figures["memory per idle stream"].startswith("30.0 KiB")
    assert figures["events lost across forced reconnects"].startswith("0 (500 streams, 70 writes, 1200 forced")
    assert push_figures({}) == {}
