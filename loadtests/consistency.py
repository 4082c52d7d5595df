"""Read-after-write checking: writers log each write here (sent, acknowledged); readers judge what they are served.

The contract: once a write has returned 2xx, every read that reaches the application reflects it (bound 0 s);
behind the edge cache, within the edge TTL (bound 1 s). So a read that *started* more than `bound` seconds
after a write's acknowledgement must show that write or a later one; writes still in flight, or acknowledged
less than `bound` before the read, may or may not show. Anything else is a violation, reported by name:

- "consistency: stale title": a title older than the last edit acknowledged in time;
- "consistency: deleted post visible" / "consistency: unpublished post visible";
- "consistency: visible post missing": a 404 for, or a first feed page without, a post that must be visible;
- "consistency: feed order": a feed walk not strictly newest-first across its pages (keyset order broken).

One writer owns each post and writes it sequentially, so a post's versions are totally ordered. Everything runs
in one gevent process with no I/O in here, so there is no locking. Pure Python: tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

STALE_TITLE = "consistency: stale title"
DELETED_VISIBLE = "consistency: deleted post visible"
UNPUBLISHED_VISIBLE = "consistency: unpublished post visible"
VISIBLE_MISSING = "consistency: visible post missing"
FEED_ORDER = "consistency: feed order"

FeedKey = tuple[datetime, int]  # (published_at, id): the feeds' keyset order, newest first


def feed_key(item: Mapping[str, Any]) -> FeedKey:
    return datetime.fromisoformat(item["published_at"]), int(item["id"])


@dataclass
class Version:
    """One state of a post as a write left it."""

    title: str
    visible: bool
    reason: str  # create, edit, unpublish, republish, delete
    sent_at: float
    acked_at: float | None = None  # None while in flight


@dataclass
class TrackedPost:
    post_id: int
    category: str
    tags: frozenset[str]
    author: str
    position: FeedKey
    versions: list[Version] = field(default_factory=list)
    uncertain: bool = False  # a write failed without an answer: it may or may not have applied

    @property
    def latest(self) -> Version:
        return self.versions[-1]

    def in_scope(self, kind: str, key: str | None) -> bool:
        if kind == "all":
            return True
        if kind == "category":
            return self.category == key
        if kind == "tag":
            return key in self.tags
        if kind == "author":
            return self.author == key
        return False  # popular and unknown scopes: ranked by hotness, membership is not ours to predict


@dataclass(frozen=True)
class Violation:
    name: str
    post_id: int
    detail: str
    late_by: float  # seconds between the write's acknowledgement + bound and the start of the read

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "post_id": self.post_id, "detail": self.detail, "late_by_s": round(self.late_by, 3)}


class ConsistencyLedger:
    def __init__(self, bound: float = 0.0) -> None:
        if bound < 0:
            raise ValueError("the consistency bound must be >= 0 s")
        self.bound = bound
        self.posts: dict[int, TrackedPost] = {}

    # --- writers ---------------------------------------------------------------------------------------------

    def created(
        self,
        post_id: int,
        *,
        title: str,
        published_at: str,
        category: str,
        tags: Iterable[str],
        author: str,
        sent_at: float,
        acked_at: float,
    ) -> None:
        """A create returned 201 (a published post)."""
        position = (datetime.fromisoformat(published_at), post_id)
        post = TrackedPost(post_id, category, frozenset(tags), author, position)
        post.versions.append(Version(title, True, "create", sent_at, acked_at))
        self.posts[post_id] = post

    def begin(
        self, post_id: int, reason: str, sent_at: float, *, title: str | None = None, visible: bool | None = None
    ) -> Version | None:
        """A write is about to be sent; returns its version (to `ack`), or None for an untracked post."""
        post = self.posts.get(post_id)
        if post is None:
            return None
        latest = post.latest
        version = Version(
            latest.title if title is None else title, latest.visible if visible is None else visible, reason, sent_at
        )
        post.versions.append(version)
        return version

    def ack(self, version: Version | None, acked_at: float) -> None:
        if version is not None:
            version.acked_at = acked_at

    def abandon(self, post_id: int) -> None:
        """The write got no clear answer (timeout, 5xx): stop judging this post."""
        if post_id in self.posts:
            self.posts[post_id].uncertain = True

    # --- readers ---------------------------------------------------------------------------------------------

    def _window(self, post: TrackedPost, read_started: float) -> tuple[Version | None, list[Version]]:
        """(the last version acknowledged `bound` before the read, it and every later version): what the read
        may show. No such version means the post may not exist yet for this read (absence is fine)."""
        cutoff = read_started - self.bound
        base_index = None
        for index, version in enumerate(post.versions):
            if version.acked_at is not None and version.acked_at <= cutoff:
                base_index = index
        if base_index is None:
            return None, post.versions
        return post.versions[base_index], post.versions[base_index:]

    def _judged(self, post_id: int) -> TrackedPost | None:
        post = self.posts.get(post_id)
        return None if post is None or post.uncertain else post

    def judge_seen(self, post_id: int, title: str, read_started: float) -> Violation | None:
        """The read showed the post with `title`."""
        post = self._judged(post_id)
        if post is None:
            return None
        base, allowed = self._window(post, read_started)
        if any(v.visible and v.title == title for v in allowed):
            return None
        late_by = read_started - self.bound - (base.acked_at or 0.0) if base else 0.0
        if base is not None and not base.visible:
            name = DELETED_VISIBLE if base.reason == "delete" else UNPUBLISHED_VISIBLE
            detail = f"post {post_id} was served after its {base.reason} was acknowledged"
            return Violation(name, post_id, detail, late_by)
        expected = base.title if base else post.latest.title
        return Violation(STALE_TITLE, post_id, f"post {post_id}: served {title!r}, expected {expected!r}", late_by)

    def judge_absent(self, post_id: int, read_started: float) -> Violation | None:
        """The read did not show the post (404, left out of a bulk get, missing from a feed page it belongs on)."""
        post = self._judged(post_id)
        if post is None:
            return None
        base, allowed = self._window(post, read_started)
        if base is None or any(not v.visible for v in allowed):
            return None
        late_by = read_started - self.bound - (base.acked_at or 0.0)
        return Violation(VISIBLE_MISSING, post_id, f"post {post_id} was missing after its {base.reason}", late_by)

    def judge_items(self, items: Iterable[Mapping[str, Any]], read_started: float) -> list[Violation]:
        found = (self.judge_seen(int(item["id"]), item["title"], read_started) for item in items)
        return [v for v in found if v is not None]

    def judge_first_page(
        self, kind: str, key: str | None, items: Sequence[Mapping[str, Any]], limit: int, read_started: float
    ) -> list[Violation]:
        """A feed's first page: every item judged, and every tracked post of the scope that must be visible and
        sorts within the page (newer than its last item, or anywhere when the page is not full) is present."""
        violations = self.judge_items(items, read_started)
        floor = feed_key(items[-1]) if len(items) >= limit else None
        present = {int(item["id"]) for item in items}
        for post in self.posts.values():
            if post.post_id in present or not post.in_scope(kind, key):
                continue
            if floor is not None and post.position < floor:
                continue
            if (violation := self.judge_absent(post.post_id, read_started)) is not None:
                violations.append(violation)
        return violations

    def settled(self) -> list[dict[str, Any]]:
        """What the database must hold at the end for every tracked post: its last acknowledged state, or
        `uncertain` when a later write got no clear answer (or was still in flight when the run stopped), so
        either state is allowed (loadtests/audit.py checks these against the primary after a run)."""
        out = []
        for post in self.posts.values():
            acked = [v for v in post.versions if v.acked_at is not None]
            last = acked[-1]  # a tracked post starts with its acknowledged create
            uncertain = post.uncertain or post.versions[-1].acked_at is None
            out.append(
                {
                    "post_id": post.post_id,
                    "title": last.title,
                    "visible": last.visible,
                    "deleted": last.reason == "delete",
                    "uncertain": uncertain,
                }
            )
        return out

    def recent(self, limit: int) -> list[int]:
        """Ids of the tracked posts written most recently, newest first."""
        judged = [p for p in self.posts.values() if not p.uncertain]
        judged.sort(key=lambda p: p.latest.sent_at, reverse=True)
        return [p.post_id for p in judged[:limit]]


def order_violation(previous: FeedKey | None, items: Sequence[Mapping[str, Any]]) -> Violation | None:
    """A feed page must continue strictly below the walk's previous position, newest first, no repeats."""
    last = previous
    for item in items:
        key = feed_key(item)
        if last is not None and not key < last:
            return Violation(FEED_ORDER, key[1], f"post {key[1]} at {key[0].isoformat()} came after {last[1]}", 0.0)
        last = key
    return None
