"""The after-run audit: the last acknowledged state of each post against what the primary holds."""

from __future__ import annotations

from loadtests.audit import Stored, judge
from loadtests.consistency import ConsistencyLedger


def ledger() -> ConsistencyLedger:
    ledger = ConsistencyLedger()
    for post_id in (1, 2, 3):
        ledger.created(
            post_id,
            title=f"p{post_id} v0",
            published_at="2026-11-21T10:00:00Z",
            category="books",
            tags=[],
            author="ed",
            sent_at=1.0,
            acked_at=1.1,
        )
    ledger.ack(ledger.begin(1, "edit", 2.0, title="p1 v1"), 2.1)  # acknowledged edit
    ledger.begin(2, "edit", 3.0, title="p2 v1")  # still in flight at the end: either title is allowed
    ledger.ack(ledger.begin(3, "delete", 4.0, visible=False), 4.1)
    return ledger


def test_settled_is_the_last_acknowledged_state_and_in_flight_writes_are_uncertain() -> None:
    settled = {r["post_id"]: r for r in ledger().settled()}
    assert settled[1] == {"post_id": 1, "title": "p1 v1", "visible": True, "deleted": False, "uncertain": False}
    assert settled[2]["uncertain"] is True
    assert settled[3]["deleted"] is True


def test_the_database_holding_every_acknowledged_state_passes() -> None:
    stored = {1: Stored("p1 v1", True, False), 2: Stored("p2 v0", True, False), 3: Stored("p3 v0", False, True)}
    audit = judge(ledger().settled(), stored)
    assert (audit.checked, audit.uncertain, audit.lost) == (2, 1, [])


def test_a_lost_edit_a_lost_delete_and_a_lost_create_are_each_reported() -> None:
    stored = {1: Stored("p1 v0", True, False), 3: Stored("p3 v0", True, False)}
    lost = judge(ledger().settled(), stored).lost
    assert len(lost) == 2 and "post 1" in lost[0] and "post 3" in lost[1]
    assert judge(ledger().settled(), {3: Stored("p3 v0", False, True)}).lost == [
        "post 1: acknowledged as 'p1 v1', no row"
    ]


def test_an_acknowledged_unpublish_stored_as_published_is_lost() -> None:
    led = ledger()
    led.ack(led.begin(1, "unpublish", 5.0, visible=False), 5.1)
    stored = {1: Stored("p1 v1", True, False), 3: Stored("p3 v0", False, True)}
    assert judge(led.settled(), stored).lost == ["post 1: acknowledged as unpublished, stored otherwise"]
