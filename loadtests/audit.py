"""After a run with writers: did the database keep every acknowledged write, once, and nothing else?

    python -m loadtests.audit RUN_DIR --database-url postgresql://...

Readers judge what they are *served* during the run (loadtests/consistency.py); this judges what the primary
*holds* afterwards, which is what a fault can break without any reader noticing (a write acknowledged by a
process that then died, a retried request applied twice):

- lost: a post whose last acknowledged state (title, visibility, deletion) is not the one stored, or an
  acknowledged create with no row. Posts whose later write got no clear answer are `uncertain`: either state
  is allowed, they are counted, not judged;
- duplicated: two rows from one create request (the writers put a unique line in every create's body) or one
  comment request (unique body per post).

Each Locust process that ran writers leaves RUN_DIR/parts/settled-<pid>.json (ConsistencyLedger.settled).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SETTLED_PREFIX = "settled-"
LOAD_TEST_BODY = "Load test post %"  # WriterUser.create's body: unique per create request
LOAD_TEST_COMMENT = "Load test comment at %"


@dataclass(frozen=True)
class Stored:
    title: str
    visible: bool
    deleted: bool


@dataclass
class Audit:
    checked: int = 0
    uncertain: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "acknowledged_posts_checked": self.checked,
            "uncertain": self.uncertain,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "lost_detail": self.lost[:50],
            "duplicated_detail": self.duplicated[:50],
        }


def load_settled(run_dir: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in sorted((run_dir / "parts").glob(f"{SETTLED_PREFIX}*.json")):
        records += json.loads(path.read_text())
    return records


def judge(settled: Iterable[Mapping[str, Any]], stored: Mapping[int, Stored]) -> Audit:
    """Compare the last acknowledged state of each post with the row the database holds (absent: no key)."""
    audit = Audit()
    for record in settled:
        if record["uncertain"]:
            audit.uncertain += 1
            continue
        audit.checked += 1
        post_id = int(record["post_id"])
        row = stored.get(post_id)
        if record["deleted"]:
            if row is not None and not row.deleted:
                audit.lost.append(f"post {post_id}: delete acknowledged, the row is still there")
            continue
        if row is None or row.deleted:
            audit.lost.append(f"post {post_id}: acknowledged as {record['title']!r}, no row")
        elif row.title != record["title"]:
            audit.lost.append(f"post {post_id}: acknowledged {record['title']!r}, stored {row.title!r}")
        elif row.visible != record["visible"]:
            state = "published" if record["visible"] else "unpublished"
            audit.lost.append(f"post {post_id}: acknowledged as {state}, stored otherwise")
    return audit


def fetch(database_url: str, post_ids: Sequence[int], since: datetime) -> tuple[dict[int, Stored], list[str]]:
    """(the rows of `post_ids`, the duplicated create/comment requests written since `since`)."""
    import psycopg  # the app's driver; imported here so the pure judgement needs no database library

    with psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, title, status = 'published' AND deleted_at IS NULL, deleted_at IS NOT NULL"
            " FROM posts WHERE id = ANY(%s)",
            (list(post_ids),),
        ).fetchall()
        stored = {int(r[0]): Stored(r[1], bool(r[2]), bool(r[3])) for r in rows}
        dups = [
            f"{n} posts from one create request: {body[:60]!r}"
            for body, n in conn.execute(
                "SELECT body, count(*) FROM posts WHERE created_at >= %s AND body LIKE %s"
                " GROUP BY body HAVING count(*) > 1",
                (since, LOAD_TEST_BODY),
            )
        ]
        dups += [
            f"{n} comments from one request on post {post_id}: {body[:60]!r}"
            for post_id, body, n in conn.execute(
                "SELECT post_id, body, count(*) FROM comments WHERE created_at >= %s AND body LIKE %s"
                " GROUP BY post_id, body HAVING count(*) > 1",
                (since, LOAD_TEST_COMMENT),
            )
        ]
    return stored, dups


def audit_run(run_dir: Path, database_url: str, since: datetime) -> Audit:
    settled = load_settled(run_dir)
    stored, dups = fetch(database_url, [int(r["post_id"]) for r in settled], since)
    audit = judge(settled, stored)
    audit.duplicated = dups
    return audit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.audit", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--database-url", required=True, help="the primary the run wrote to")
    parser.add_argument(
        "--since", type=datetime.fromisoformat, help="ISO time the run started (default: the run dir's creation)"
    )
    args = parser.parse_args(argv)
    since = args.since or datetime.fromtimestamp(args.run_dir.stat().st_ctime - 60, UTC)
    result = audit_run(args.run_dir, args.database_url, since)
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if not result.lost and not result.duplicated else 1


if __name__ == "__main__":
    sys.exit(main())
