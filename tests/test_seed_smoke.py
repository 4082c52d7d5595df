"""The seed on in-memory SQLite (no server): same seed, same rows; correct counters; --if-empty, --reset."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import text

from app import create_app
from app.extensions import db
from app.models.post import VISIBLE_SQL
from app.seed import COLUMNS, seed

POSTS = 200
# Each query counts rows that break an invariant the seed promises.
BROKEN = {
    "posts.comment_count": "SELECT count(*) FROM posts p WHERE comment_count != "
    "(SELECT count(*) FROM comments c WHERE c.post_id = p.id)",
    "authors.post_count": "SELECT count(*) FROM authors a WHERE post_count != "
    f"(SELECT count(*) FROM posts WHERE author_id = a.id AND {VISIBLE_SQL})",
    "categories.post_count": "SELECT count(*) FROM categories c WHERE post_count != "
    f"(SELECT count(*) FROM posts WHERE category_id = c.id AND {VISIBLE_SQL})",
    "tags.post_count": "SELECT count(*) FROM tags t WHERE post_count != (SELECT count(*) FROM post_tags pt "
    f"JOIN posts ON posts.id = pt.post_id WHERE pt.tag_id = t.id AND {VISIBLE_SQL})",
    "post_tags.published_at": "SELECT count(*) FROM post_tags pt JOIN posts p ON p.id = pt.post_id WHERE pt.published_at "
    "IS NOT (CASE WHEN p.status = 'published' AND p.deleted_at IS NULL THEN p.published_at END)",
    "comment before its post": "SELECT count(*) FROM comments c JOIN posts p ON p.id = c.post_id "
    "WHERE c.created_at < p.published_at OR p.published_at IS NULL",
}


def make_app() -> Flask:
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x", "TESTING": True})
    with app.app_context():
        db.create_all()
    return app


def scalar(sql: str) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def dump() -> dict[str, list[tuple[Any, ...]]]:
    with db.engine.connect() as conn:
        return {t: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2"))] for t in COLUMNS}


def seeded(seed_value: int) -> tuple[dict[str, Any], dict[str, list[tuple[Any, ...]]]]:
    with make_app().app_context():
        counts = seed(POSTS, seed=seed_value, progress=False)
        return counts, dump()


def test_same_seed_gives_the_same_rows() -> None:
    counts, rows = seeded(3)
    again_counts, again = seeded(3)
    _, other = seeded(4)
    assert rows == again and rows != other
    assert (
        {t: counts[t] for t in COLUMNS} == {t: len(r) for t, r in rows.items()} == {t: again_counts[t] for t in COLUMNS}
    )
    assert counts["posts"] == POSTS and counts["post_tags"] > POSTS and counts["comments"] > POSTS


def test_counters_and_shape() -> None:
    with make_app().app_context():
        seed(POSTS, seed=3, progress=False)
        assert {name: scalar(sql) for name, sql in BROKEN.items()} == dict.fromkeys(BROKEN, 0)
        assert scalar("SELECT count(*) FROM posts WHERE status = 'draft' AND published_at IS NULL") > 0
        assert scalar("SELECT count(*) FROM posts WHERE deleted_at IS NOT NULL") > 0
        assert scalar(f"SELECT count(*) FROM posts WHERE {VISIBLE_SQL}") > 0.9 * POSTS
        # Some visible posts share published_at on purpose (the feeds break ties by id).
        assert scalar(f"SELECT count(*) - count(DISTINCT published_at) FROM posts WHERE {VISIBLE_SQL}") > 0
        assert scalar("SELECT max(post_count) FROM tags") > 3 * scalar("SELECT avg(post_count) FROM tags")  # Zipf
        assert scalar("SELECT avatar_url FROM authors WHERE id = 1") == (
            f"https://avatars.readwire.example/{scalar('SELECT username FROM authors WHERE id = 1')}.png"
        )


def test_if_empty_refuse_and_reset_through_the_cli() -> None:
    app = make_app()
    runner = app.test_cli_runner()
    posts = "SELECT count(*) FROM posts"

    result = runner.invoke(args=["seed", "--posts", "50", "--if-empty", "--no-progress"])
    assert result.exit_code == 0 and "seed: 50 posts" in result.output
    with app.app_context():
        before = dump()

    result = runner.invoke(args=["seed", "--posts", "80", "--if-empty", "--no-progress"])
    assert result.exit_code == 0 and "nothing to do" in result.output
    result = runner.invoke(args=["seed", "--posts", "80", "--no-progress"])
    assert result.exit_code == 1 and "--reset" in result.output
    with app.app_context():
        assert dump() == before

    result = runner.invoke(args=["seed", "--posts", "30", "--reset", "--no-progress"])
    assert result.exit_code == 0
    with app.app_context():
        assert scalar(posts) == 30
        assert scalar("SELECT max(id) FROM posts") == 30


def test_known_names_at_every_size() -> None:
    """README.md's examples rely on the tag `python` and the author `ada_lovelace`: they exist
    whatever the flags, on the busiest tag and author (so their feeds are never empty)."""
    for posts, seed_value in ((30, 1), (POSTS, 3), (POSTS, 4)):
        with make_app().app_context():
            seed(posts, seed=seed_value, progress=False)
            assert scalar("SELECT slug FROM tags ORDER BY post_count DESC, id LIMIT 1") == "python"
            assert scalar("SELECT username FROM authors ORDER BY post_count DESC, id LIMIT 1") == "ada_lovelace"
            assert scalar("SELECT post_count FROM tags WHERE slug = 'python'") > 0
            assert scalar("SELECT avatar_url FROM authors WHERE username = 'ada_lovelace'").endswith(
                "/ada_lovelace.png"
            )


def test_demo_editor_on_the_embedded_default_only() -> None:
    from app.seed import DEMO_EDITOR, DEMO_EDITOR_PASSWORD

    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "s" * 40, "TESTING": True})
    with app.app_context():
        db.create_all()
    runner = app.test_cli_runner()
    for _ in range(2):  # idempotent; created even when the data was already there (--if-empty)
        result = runner.invoke(args=["seed", "--posts", "20", "--if-empty", "--no-progress", "--demo-editor"])
        assert result.exit_code == 0, result.output
    with app.app_context():
        assert scalar(f"SELECT count(*) FROM authors WHERE username = '{DEMO_EDITOR}' AND role = 'editor'") == 1
    token = app.test_client().post(
        "/api/v1/auth/token", json={"username": DEMO_EDITOR, "password": DEMO_EDITOR_PASSWORD}
    )
    assert token.status_code == 200, token.data

    # A real database (the stack, production): refused before anything is touched (no server needed).
    served = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql://nobody@127.0.0.1:9/none", "SECRET_KEY": "x" * 40})
    result = served.test_cli_runner().invoke(args=["seed", "--posts", "20", "--demo-editor"])
    assert result.exit_code == 1 and "embedded default" in result.output
