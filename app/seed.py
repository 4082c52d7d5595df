"""`flask seed`: deterministic, Zipf-skewed demo and benchmark data (COPY on PostgreSQL).

Same flags, same rows: every value comes from a seeded `random.Random` and a fixed EPOCH.
Whatever the flags, the most used tag is `python` and the most prolific author is
`ada_lovelace` (README.md's examples name them). `--demo-editor` (the embedded default only,
what `make run` passes) also creates the sign-in account DEMO_EDITOR.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click
from flask import current_app
from flask.cli import with_appcontext
from sqlalchemy import Connection, insert, select, text
from tqdm import tqdm

from app.cache.keys import EPOCH_KEY
from app.extensions import db, page_cache

T = TypeVar("T")
Row = tuple[Any, ...]
Writer = Callable[[str, list[Row]], None]

EPOCH = datetime(2026, 11, 1, tzinfo=UTC)  # the data's "now"; never the wall clock
SPAN = 3 * 365 * 86_400  # seconds: posts are spread over the three years before EPOCH
START = EPOCH - timedelta(seconds=SPAN)
ZIPF_EXPONENT = 1.1
CHUNK = 5_000  # posts per batch
DRAFT_RATE, DELETED_RATE, SAME_TIME_RATE = 0.03, 0.02, 0.02
TAGS_PER_POST_WEIGHTS = (8, 20, 27, 22, 14, 9)  # relative odds of 0..5 tags (mean ~2.4)
VISIBLE, DRAFT, DELETED = 0, 1, 2

# Written in this order (parents first); the rows below are built in these column orders.
COLUMNS = {
    "authors": ("id", "username", "display_name", "avatar_url", "bio", "created_at", "post_count", "role"),
    "categories": ("id", "slug", "name", "post_count"),
    "tags": ("id", "slug", "name", "post_count"),
    "posts": (
        "id", "slug", "title", "summary", "body", "author_id", "category_id", "status",
        "published_at", "created_at", "updated_at", "deleted_at", "comment_count",
    ),
    "post_tags": ("post_id", "tag_id", "published_at"),
    "comments": ("id", "post_id", "author_id", "body", "created_at"),
}  # fmt: skip

# fmt: off
WORDS = {
    "noun": [
        "cache", "database", "query", "release", "pipeline", "service", "budget", "roadmap", "deadline", "feature",
        "schema", "dashboard", "metric", "workflow", "protocol", "compiler", "kernel", "browser", "network",
        "cluster", "container", "model", "dataset", "benchmark", "framework", "library", "platform", "startup",
        "market", "policy", "city", "community", "reader", "newsletter", "podcast", "strategy", "product", "design",
        "prototype", "workshop", "conference", "garden", "recipe", "kitchen", "bicycle", "journey", "museum",
        "notebook", "team", "backlog", "server", "phone", "camera", "studio", "newsroom",
    ],
    "adj": [
        "quiet", "bold", "hidden", "simple", "modern", "legacy", "fragile", "resilient", "practical", "distributed",
        "local", "remote", "messy", "costly", "curious", "slow", "fast", "stubborn", "careful", "noisy", "brittle",
        "familiar", "strange", "small", "large", "shared", "private", "patient", "nervous", "tidy", "generous",
    ],
    "verb": [
        "change", "shape", "break", "build", "explain", "reveal", "outgrow", "replace", "improve", "challenge",
        "test", "protect", "measure", "survive", "rethink", "sustain", "transform", "question", "expose", "defend",
        "power", "drive", "support", "connect", "limit", "follow", "shift", "frame", "unlock",
    ],
    "num": ["Three", "Four", "Five", "Seven", "Ten", "Twelve"],
}
TITLES = [
    "How the {adj} {noun} {verb}s the {noun}", "Why the {noun} {verb}s the {adj} {noun}",
    "The {adj} {noun} nobody talks about", "{num} lessons from a {adj} {noun}",
    "What a {adj} {noun} means for the {noun}", "Inside the {adj} {noun}", "How to {verb} a {adj} {noun}",
    "A {adj} look at the {noun} and the {noun}", "The case against the {adj} {noun}",
    "When the {noun} {verb}s the {noun}", "Notes on {adj} {noun} design", "Can a {adj} {noun} {verb} the {noun}?",
]
SENTENCES = [
    "The {adj} {noun} {verb}s the {noun} in ways nobody planned for.",
    "Most teams {verb} their {noun} long before the {noun} is ready.",
    "A {adj} {noun} rarely {verb}s a {adj} {noun} on its own.",
    "We spent a month trying to {verb} the {noun}, and the {noun} pushed back.",
    "Nobody expected the {noun} to {verb} the {adj} {noun} so quickly.",
    "Every {noun} eventually {verb}s its {noun}, whether we like it or not.",
    "It turns out the {adj} part was never the {noun} but the {noun}.",
    "If your {noun} is {adj}, the {noun} will tell you first.",
    "The numbers suggest a {adj} {noun} can {verb} the {noun} within weeks.",
    "Critics argue that the {noun} does little to {verb} the {adj} {noun}.",
    "In practice, the {noun} and the {noun} tend to {verb} each other.",
    "What looked like a {adj} {noun} was really a {adj} {noun}.",
    "Our {noun} grew {adj} after we tried to {verb} the {noun}.",
    "Still, the {adj} {noun} remains the best way to {verb} a {noun}.",
    "The {noun} team wanted to {verb} the {noun} before the {adj} release.",
    "Readers keep asking how the {noun} will {verb} the {noun}.",
]
REMARKS = [
    "Great write-up on the {noun}.", "I disagree about the {adj} {noun}.",
    "This matches what we saw with our {noun}.", "Thanks, the part about the {noun} was useful.",
    "Has anyone tried this with a {adj} {noun}?", "We had the same problem with the {noun} last year.",
    "Would love a follow-up on how to {verb} the {noun}.", "Bookmarked. The {adj} {noun} section alone is worth it.",
]
FIRST_NAMES = [
    "Ada", "Alan", "Amara", "Ben", "Carmen", "Chen", "Dana", "Diego", "Elena", "Emil", "Farah", "Felix", "Grace",
    "Hana", "Hugo", "Ines", "Ivan", "Jonas", "Julia", "Kai", "Kenji", "Lena", "Leo", "Lina", "Luca", "Maya", "Mei",
    "Mina", "Noah", "Nora", "Omar", "Oskar", "Priya", "Quinn", "Rafael", "Rosa", "Sami", "Sara", "Tariq", "Tomas",
    "Uma", "Vera", "Wei", "Yara", "Yusuf", "Zoe",
]
LAST_NAMES = [
    "Abara", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ito", "Jensen", "Kowalski",
    "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi", "Santos", "Tanaka", "Usman", "Varga",
    "Weber", "Xu", "Yilmaz", "Zhang", "Novak", "Silva", "Khan", "Murphy", "Lindqvist", "Mendes", "Park", "Reyes",
    "Schmidt", "Torres", "Walsh", "Young",
]
CATEGORY_NAMES = [
    "Technology", "Science", "Business", "Culture", "Politics", "Health", "Climate", "Design", "Engineering",
    "Data", "Security", "Startups", "Education", "Travel", "Food", "Sports", "Music", "Film", "Books", "Gaming",
    "Finance", "Space", "Cities", "Energy", "Work", "Open-Source", "Research", "Opinion", "Interviews", "Podcasts",
]
# fmt: on
# Names the README's examples rely on: the tag on the most visible posts and the author of the
# most visible posts get these (ties: the lower id), so both exist and have posts at any size.
KNOWN_TAG = "python"
KNOWN_AUTHOR = ("ada_lovelace", "Ada Lovelace")
# A sign-in account for trying the write API on `make run` only. Its password is public (in the
# README): `seed --demo-editor` refuses to create it anywhere but the embedded SQLite default.
DEMO_EDITOR = "demo_editor"
DEMO_EDITOR_PASSWORD = "demo-password-local-only"
_FIELD = re.compile(r"\{(\w+)\}")
_NON_SLUG = re.compile(r"[^a-z0-9]+")


def seed(
    posts: int,
    *,
    seed: int = 42,
    authors: int | None = None,
    categories: int | None = None,
    tags: int | None = None,
    comments_per_post: float = 3.0,
    if_empty: bool = False,
    reset: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Fill an empty database (with reset, any database: its data is deleted) and return the row counts.

    Taxonomy sizes default to values that scale with posts; a database counts as non-empty when any seeded table
    has rows.
    """
    started = time.perf_counter()
    defaults = (min(max(10, posts // 50), 20_000), min(max(12, posts // 5_000), 30), min(max(50, posts // 200), 5_000))
    sizes = tuple(given or default for given, default in zip((authors, categories, tags), defaults, strict=True))
    counts = dict.fromkeys(COLUMNS, 0)
    with db.engine.begin() as conn:
        if any(conn.execute(select(text("1")).select_from(db.metadata.tables[t]).limit(1)).first() for t in COLUMNS):
            if if_empty:
                click.echo("seed: the database already has data; nothing to do (--if-empty)")
                return {"skipped": True}
            if not reset:
                raise click.ClickException("the database is not empty; pass --reset to replace its data")
        writer = _pg_writer if db.engine.dialect.name == "postgresql" else _sqlite_writer
        with writer(conn) as write, tqdm(total=posts, unit="post", disable=None if progress else True) as bar:
            for batch in _read_ahead(_batches(posts, seed, sizes, comments_per_post)):
                for table, rows in batch.items():
                    write(table, rows)
                    counts[table] += len(rows)
                bar.update(len(batch.get("posts", ())))
    result: dict[str, Any] = {**counts, "seconds": round(time.perf_counter() - started, 1)}
    # The bulk load bypasses the session (so the invalidation hooks): retire the cache epoch,
    # which orphans every cached page in one O(1) step (a CLI step, never a request path).
    page_cache.store.delete(EPOCH_KEY)
    click.echo(
        "seed: {posts:,} posts, {post_tags:,} post tags, {comments:,} comments, {authors:,} authors, "
        "{categories:,} categories, {tags:,} tags in {seconds}s".format(**result)
    )
    return result


@contextmanager
def _pg_writer(conn: Connection) -> Iterator[Writer]:
    """COPY FREEZE into tables emptied in this transaction (rows land all-visible, ready for index-only scans).

    Foreign keys are dropped meanwhile and re-added (one validating join each instead of a check per row).
    """
    conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
    conn.exec_driver_sql(f"TRUNCATE {', '.join(COLUMNS)} RESTART IDENTITY CASCADE")
    foreign_keys = conn.execute(
        text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE contype = 'f' AND conrelid = ANY(CAST(:tables AS regclass[]))"
        ),
        {"tables": list(COLUMNS)},
    ).all()
    for table, name, _ in foreign_keys:
        conn.exec_driver_sql(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]

    def write(table: str, rows: list[Row]) -> None:
        with cursor.copy(f"COPY {table} ({', '.join(COLUMNS[table])}) FROM STDIN (FREEZE)") as copy:
            for row in rows:
                copy.write_row(row)

    yield write
    for table, name, definition in foreign_keys:
        conn.exec_driver_sql(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
    for table in ("authors", "categories", "tags", "posts", "comments"):
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) FROM {table}"
        )
    conn.exec_driver_sql(f"ANALYZE {', '.join(COLUMNS)}")


@contextmanager
def _sqlite_writer(conn: Connection) -> Iterator[Writer]:
    """Empty the tables (children first), then insert with executemany."""
    for table in reversed(COLUMNS):
        conn.execute(db.metadata.tables[table].delete())

    def write(table: str, rows: list[Row]) -> None:
        if rows:
            conn.execute(insert(db.metadata.tables[table]), [dict(zip(COLUMNS[table], r, strict=True)) for r in rows])

    yield write


def _read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield items while a worker thread builds the next one (the GIL is free while COPY waits on the server)."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, items, None)
        while (item := pending.result()) is not None:
            pending = pool.submit(next, items, None)
            yield item


def _batches(posts: int, seed: int, sizes: tuple[int, ...], comments_per_post: float) -> Iterator[dict[str, list[Row]]]:
    """The authors, categories and tags, then batches of CHUNK posts with their post_tags and comments."""
    post_counts = [[0] * (n + 1) for n in sizes]  # visible posts per author / category / tag id
    for author_id, category_id, state, tag_ids in _plans(seed, posts, sizes):
        if state == VISIBLE:
            post_counts[0][author_id] += 1
            post_counts[1][category_id] += 1
            for tag_id in tag_ids:
                post_counts[2][tag_id] += 1
    rng = random.Random(seed)
    authors = _authors(rng, sizes[0], post_counts[0])
    categories = [
        (i, _slug(name), name.replace("-", " ").title(), post_counts[1][i])
        for i, name in _labels(rng, sizes[1], CATEGORY_NAMES)
    ]
    tags = [(i, name, name, post_counts[2][i]) for i, name in _labels(rng, sizes[2], WORDS["noun"] + WORDS["adj"])]
    top_tag, top_author = _busiest(post_counts[2]), _busiest(post_counts[0])
    tags[top_tag - 1] = (top_tag, KNOWN_TAG, KNOWN_TAG, post_counts[2][top_tag])
    username, display_name = KNOWN_AUTHOR
    row = authors[top_author - 1]
    authors[top_author - 1] = (row[0], username, display_name, _avatar(username), *row[4:])
    yield {"authors": authors, "categories": categories, "tags": tags}

    sentences = [_fill(rng, rng.choice(SENTENCES)) for _ in range(4096)]
    remarks = [_fill(rng, rng.choice(REMARKS)) for _ in range(1024)]
    comment_author = _zipf(rng, sizes[0])
    comment_mean = comments_per_post / (1 - DRAFT_RATE)  # drafts get none; keeps the overall mean
    choices, rand = rng.choices, rng.random
    plans = _plans(seed, posts, sizes)
    comment_id = 0
    last_published: int | None = None
    for chunk_start in range(0, posts, CHUNK):
        batch: dict[str, list[Row]] = {"posts": [], "post_tags": [], "comments": []}
        for post_id in range(chunk_start + 1, min(chunk_start + CHUNK, posts) + 1):
            author_id, category_id, state, tag_ids = next(plans)
            # Times are whole seconds after START; ids rise with creation time, as in a live system.
            created = int(SPAN * (post_id - rand()) / posts)
            published: int | None = None
            deleted: int | None = None
            n_comments = 0
            if state == DRAFT:
                updated = created + int((SPAN - created) * rand() ** 3)
            else:
                if last_published is not None and rand() < SAME_TIME_RATE:
                    published = last_published  # a batch release: exercises the feeds' id tie-breaker
                else:
                    published = min(created + int(rng.expovariate(1 / 21_600)), SPAN)
                created, last_published = min(created, published), published
                updated = published + int((SPAN - published) * rand() ** 8)
                if state == DELETED:
                    deleted = published + int((SPAN - published) * rand())
                # Geometric count around a lognormal per-post mean (itself averaging comment_mean): a long tail.
                mean = comment_mean * rng.lognormvariate(-0.5, 1.0)
                if mean > 0:
                    n_comments = int(math.log(1.0 - rand()) / math.log(mean / (mean + 1)))
                end = SPAN if deleted is None else deleted
                for when in sorted(published + int((end - published) * rand() ** 4) for _ in range(n_comments)):
                    comment_id += 1
                    body = " ".join(choices(remarks if rand() < 0.6 else sentences, k=1 + int(rand() * 2)))
                    batch["comments"].append((comment_id, post_id, comment_author(), body, _at(when)))
            title = _fill(rng, rng.choice(TITLES))
            summary = " ".join(choices(sentences, k=1 + int(rand() * 2)))
            body = "\n\n".join(" ".join(choices(sentences, k=2 + int(rand() * 2))) for _ in range(2 + int(rand() * 2)))
            published_at = _at(published)
            batch["posts"].append((
                post_id, f"{_slug(title)}-{post_id}", title, summary, body, author_id, category_id,
                "draft" if state == DRAFT else "published", published_at, _at(created), _at(updated), _at(deleted),
                n_comments,
            ))  # fmt: skip
            feed_at = published_at if state == VISIBLE else None
            batch["post_tags"].extend((post_id, tag_id, feed_at) for tag_id in tag_ids)
        yield batch


def _plans(seed: int, posts: int, sizes: tuple[int, ...]) -> Iterator[tuple[int, int, int, list[int]]]:
    """Per post: (author_id, category_id, state, tag_ids), from its own RNG stream so it can be replayed."""
    rng = random.Random(f"{seed}:plan")
    author, category, tag = (_zipf(rng, n) for n in sizes)
    tags_per_post = list(itertools.accumulate(TAGS_PER_POST_WEIGHTS))
    for _ in range(posts):
        roll = rng.random()
        state = DRAFT if roll < DRAFT_RATE else DELETED if roll < DRAFT_RATE + DELETED_RATE else VISIBLE
        wanted = min(bisect.bisect(tags_per_post, rng.random() * tags_per_post[-1]), sizes[2])
        tag_ids: set[int] = set()
        while len(tag_ids) < wanted:
            tag_ids.add(tag())
        yield author(), category(), state, sorted(tag_ids)


def _busiest(counts: list[int]) -> int:
    """The id (1-based; index 0 is unused) with the highest count, the lowest such id on ties."""
    return max(range(1, len(counts)), key=lambda i: (counts[i], -i))


def _zipf(rng: random.Random, n: int) -> Callable[[], int]:
    """A draw of ids 1..n with Zipf popularity; which id ranks first is itself shuffled."""
    ids = list(range(1, n + 1))
    rng.shuffle(ids)
    cumulative = list(itertools.accumulate(rank**-ZIPF_EXPONENT for rank in range(1, n + 1)))
    total, rand = cumulative[-1], rng.random
    return lambda: ids[bisect.bisect(cumulative, rand() * total, 0, n - 1)]


def _authors(rng: random.Random, n: int, post_counts: list[int]) -> list[Row]:
    """Author rows with unique usernames; accounts predate the first post."""
    rows, taken = [], set()
    for author_id in range(1, n + 1):
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        username = f"{first}_{last}".lower()
        username = f"{username}{author_id}" if username in taken else username
        taken.add(username)
        bio = _fill(rng, "Writes about the {adj} {noun} and the {noun}.")
        created = START - timedelta(seconds=int(rng.random() * 365 * 86_400))
        role = "editor" if rng.random() < 0.02 else "author"
        rows.append(
            (author_id, username, f"{first} {last}", _avatar(username), bio, created, post_counts[author_id], role)
        )
    return rows


def _avatar(username: str) -> str:
    return f"https://avatars.readwire.example/{username}.png"


def _labels(rng: random.Random, n: int, words: Sequence[str]) -> list[tuple[int, str]]:
    """n distinct (id, label) pairs: the words first, then random compounds (numbered when taken)."""
    labels = list(words[:n])
    taken = set(labels)
    while len(labels) < n:
        label = f"{rng.choice(words)}-{rng.choice(words)}".lower()
        label = f"{label}-{len(labels) + 1}" if label in taken else label
        taken.add(label)
        labels.append(label)
    return list(enumerate(labels, 1))


def _fill(rng: random.Random, template: str) -> str:
    """The template with each {kind} replaced by a random word of that kind, capitalized."""
    filled = _FIELD.sub(lambda m: rng.choice(WORDS[m[1]]), template)
    return filled[0].upper() + filled[1:]


def _slug(value: str) -> str:
    return _NON_SLUG.sub("-", value.lower()).strip("-")


def _at(seconds: int | None) -> datetime | None:
    return None if seconds is None else START + timedelta(seconds=seconds)


@click.command("seed")
@click.option("--posts", default=1000, show_default=True, type=click.IntRange(min=0), help="Posts to generate.")
@click.option("--seed", "seed_value", default=42, show_default=True, help="Random seed: same flags, same data.")
@click.option("--authors", type=click.IntRange(min=1), help="Authors [default: scales with --posts].")
@click.option("--categories", type=click.IntRange(min=1), help="Categories [default: scales with --posts].")
@click.option("--tags", type=click.IntRange(min=1), help="Tags [default: scales with --posts].")
@click.option("--comments-per-post", default=3.0, show_default=True, type=click.FloatRange(min=0), help="Mean.")
@click.option("--if-empty", is_flag=True, help="Do nothing when the database already has data.")
@click.option("--reset", is_flag=True, help="Delete all existing data first.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@click.option(
    "--demo-editor",
    is_flag=True,
    help=f"Also create the editor '{DEMO_EDITOR}' (public password; embedded SQLite default only).",
)
@with_appcontext
def seed_command(
    posts: int,
    seed_value: int,
    authors: int | None,
    categories: int | None,
    tags: int | None,
    comments_per_post: float,
    if_empty: bool,
    reset: bool,
    no_progress: bool,
    demo_editor: bool,
) -> None:
    """Fill the database with deterministic, Zipf-skewed authors, categories, tags, posts and comments."""
    if demo_editor and not current_app.config["EMBEDDED"]:
        raise click.ClickException("--demo-editor is for the embedded default (make run) only: its password is public")
    seed(
        posts, seed=seed_value, authors=authors, categories=categories, tags=tags,
        comments_per_post=comments_per_post, if_empty=if_empty, reset=reset, progress=not no_progress,
    )  # fmt: skip
    if demo_editor:
        ensure_demo_editor()


def ensure_demo_editor() -> None:
    """Create DEMO_EDITOR with its documented password unless the account exists (then untouched)."""
    from app.services.auth import create_author, find_author

    if find_author(DEMO_EDITOR) is not None:
        return
    author = create_author(DEMO_EDITOR, "Demo Editor", DEMO_EDITOR_PASSWORD, role="editor")
    click.echo(
        f"seed: demo editor '{DEMO_EDITOR}' (id {author.id}), password '{DEMO_EDITOR_PASSWORD}' (local demo only)"
    )
