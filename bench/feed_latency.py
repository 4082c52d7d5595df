"""First-page vs deep-page feed latency on the database path (no cache), per feed.

Usage: DATABASE_URL=... SECRET_KEY=... python -m bench.feed_latency [--runs 200] [--depth 0.9]
Times app.services.posts.feed_page (the page statement + the tags statement) for the global
feed and the busiest category, tag and author, at the first page and at `depth` of the walk.
"""

from __future__ import annotations

import argparse
import statistics
import time

from sqlalchemy import text

from app import create_app
from app.extensions import db
from app.pagination import Cursor
from app.services.posts import FeedScope, feed_page

SCOPES = {
    "feed": ("all", None, "TRUE"),
    "category": ("category", "SELECT id FROM categories ORDER BY post_count DESC LIMIT 1", "category_id = :sid"),
    "tag": ("tag", "SELECT id FROM tags ORDER BY post_count DESC LIMIT 1",
            "id IN (SELECT post_id FROM post_tags WHERE tag_id = :sid)"),
    "author": ("author", "SELECT id FROM authors ORDER BY post_count DESC LIMIT 1", "author_id = :sid"),
}  # fmt: skip


def timed(fn, runs: int) -> float:  # type: ignore[no-untyped-def]
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--depth", type=float, default=0.9)
    args = parser.parse_args()
    app = create_app()
    with app.app_context():
        print(f"{'feed':10} {'visible':>9} {'first ms':>9} {'deep ms':>9}  (median of {args.runs}, limit 20)")
        for name, (kind, id_sql, where) in SCOPES.items():
            sid = db.session.execute(text(id_sql)).scalar_one() if id_sql else 0
            visible = f"status = 'published' AND deleted_at IS NULL AND {where}"
            total = db.session.execute(text(f"SELECT count(*) FROM posts WHERE {visible}"), {"sid": sid}).scalar_one()
            pos = db.session.execute(
                text(f"SELECT published_at, id FROM posts WHERE {visible} "
                     "ORDER BY published_at DESC, id DESC OFFSET :n LIMIT 1"),
                {"sid": sid, "n": int(total * args.depth)},
            ).one()  # fmt: skip
            scope = FeedScope(kind, sid)  # type: ignore[arg-type]
            deep = Cursor("next", pos[0], pos[1])
            first_ms = timed(lambda: feed_page(scope, None, 20), args.runs)  # noqa: B023
            deep_ms = timed(lambda: feed_page(scope, deep, 20), args.runs)  # noqa: B023
            print(f"{name:10} {total:>9,} {first_ms:>9.3f} {deep_ms:>9.3f}")
            db.session.rollback()


if __name__ == "__main__":
    main()
