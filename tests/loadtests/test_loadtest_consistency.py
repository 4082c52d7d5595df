"""Read-after-write judgements: what a read may show, given the writes acknowledged before it started."""

from __future__ import annotations

import pytest

from loadtests.consistency import (
    DELETED_VISIBLE,
    FEED_ORDER,
    STALE_TITLE,
    UNPUBLISHED_VISIBLE,
    VISIBLE_MISSING,
    ConsistencyLedger,
    order_violation,
)


def ledger_with_post(bound: float = 0.0) -> ConsistencyLedger:
    ledger = ConsistencyLedger(bound)
    ledger.created(
        7,
        title="v0",
        published_at="2026-11-21T10:00:00.5Z",
        category="books",
        tags=["python"],
        author="ed",
        sent_at=10.0,
        acked_at=10.1,
    )
    return ledger


def item(post_id: int, title: str, published_at: str = "2026-11-21T09:00:00Z") -> dict[str, object]:
    return {"id": post_id, "title": title, "published_at": published_at}


def test_an_edit_must_show_once_acknowledged() -> None:
    ledger = ledger_with_post()
    edit = ledger.begin(7, "edit", 20.0, title="v1")
    assert ledger.judge_seen(7, "v0", 20.5) is None  # in flight: either title
    assert ledger.judge_seen(7, "v1", 20.5) is None
    ledger.ack(edit, 21.0)
    assert ledger.judge_seen(7, "v0", 20.9) is None  # the read started before the acknowledgement
    stale = ledger.judge_seen(7, "v0", 21.2)
    assert stale is not None and stale.name == STALE_TITLE and stale.late_by == pytest.approx(0.2)
    assert ledger.judge_seen(7, "v1", 21.2) is None


def test_the_bound_gives_the_edge_its_ttl() -> None:
    ledger = ledger_with_post(bound=1.0)
    ledger.ack(ledger.begin(7, "edit", 20.0, title="v1"), 21.0)
    assert ledger.judge_seen(7, "v0", 21.9) is None
    violation = ledger.judge_seen(7, "v0", 22.3)
    assert violation is not None and violation.late_by == pytest.approx(0.3)


def test_an_older_title_than_the_last_acknowledged_is_stale_even_if_it_once_was_right() -> None:
    ledger = ledger_with_post()
    ledger.ack(ledger.begin(7, "edit", 20.0, title="v1"), 20.1)
    ledger.ack(ledger.begin(7, "edit", 30.0, title="v2"), 30.1)
    violation = ledger.judge_seen(7, "v1", 31.0)
    assert violation is not None and "expected 'v2'" in violation.detail


def test_delete_and_unpublish_hide_the_post() -> None:
    ledger = ledger_with_post()
    ledger.ack(ledger.begin(7, "unpublish", 20.0, visible=False), 20.1)
    unpublished = ledger.judge_seen(7, "v0", 20.2)
    assert unpublished is not None and unpublished.name == UNPUBLISHED_VISIBLE
    assert ledger.judge_absent(7, 20.2) is None
    ledger.ack(ledger.begin(7, "republish", 30.0, visible=True), 30.1)
    missing = ledger.judge_absent(7, 30.2)
    assert missing is not None and missing.name == VISIBLE_MISSING
    ledger.ack(ledger.begin(7, "delete", 40.0, visible=False), 40.1)
    deleted = ledger.judge_seen(7, "v0", 40.2)
    assert deleted is not None and deleted.name == DELETED_VISIBLE


def test_untracked_and_uncertain_posts_are_not_judged() -> None:
    ledger = ledger_with_post()
    assert ledger.judge_seen(99, "anything", 50.0) is None
    ledger.begin(7, "edit", 20.0, title="v1")
    ledger.abandon(7)  # the write timed out: it may or may not have applied
    assert ledger.judge_seen(7, "v0", 60.0) is None and ledger.judge_absent(7, 60.0) is None


def test_a_first_page_must_hold_the_posts_of_its_scope_that_sort_within_it() -> None:
    ledger = ledger_with_post()
    newer = [item(100 + i, "seeded", f"2026-11-21T09:{59 - i:02d}:00Z") for i in range(3)]
    # A full page whose last item is older than post 7: post 7 belongs on it.
    violations = ledger.judge_first_page("category", "books", newer, 3, 11.0)
    assert [v.name for v in violations] == [VISIBLE_MISSING]
    assert ledger.judge_first_page("category", "film", newer, 3, 11.0) == []  # another scope
    assert ledger.judge_first_page("tag", "python", [item(7, "v0", "2026-11-21T10:00:00.5Z")], 20, 11.0) == []
    # A full page of posts all newer than post 7: it sorts below the page, nothing is missing.
    later = [item(200 + i, "seeded", f"2026-11-21T11:0{i}:00Z") for i in range(3)]
    assert ledger.judge_first_page("all", None, later[::-1], 3, 11.0) == []


def test_feed_order_across_pages() -> None:
    page1 = [item(3, "c", "2026-11-21T10:00:00Z"), item(2, "b", "2026-11-21T10:00:00Z")]
    assert order_violation(None, page1) is None  # same time: the id breaks the tie
    last = (page1[-1]["published_at"], 2)
    from loadtests.consistency import feed_key

    last = feed_key(page1[-1])
    assert order_violation(last, [item(1, "a", "2026-11-21T09:00:00Z")]) is None
    repeated = order_violation(last, [item(2, "b", "2026-11-21T10:00:00Z")])
    assert repeated is not None and repeated.name == FEED_ORDER


def test_recent_lists_the_last_written_first() -> None:
    ledger = ledger_with_post()
    ledger.created(
        8, title="w", published_at="2026-11-21T10:00:01Z", category="b", tags=[], author="ed", sent_at=15, acked_at=16
    )
    assert ledger.recent(5) == [8, 7]
    ledger.begin(7, "edit", 20.0, title="v1")
    assert ledger.recent(1) == [7]
