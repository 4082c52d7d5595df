"""Migrations on PostgreSQL, through Flask-Migrate as `flask db` runs them: a fresh database goes
to head, back to base and to head again, ending in the same schema; and every revision's
downgrade() returns exactly the schema of the revision below it, with data in the tables.

The schema is read from PostgreSQL's catalogs (not from the models or Alembic), so anything a
downgrade leaves behind or an upgrade fails to rebuild shows: relations (tables, indexes,
sequences), columns with types, nullability and defaults, index definitions (partial predicates
included), constraint definitions, and user-defined types.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import pairwise

import psycopg
import pytest
from alembic.script import ScriptDirectory
from flask import Flask
from flask_migrate import downgrade, upgrade

from app.extensions import db
from app.seed import seed
from tests.conftest import REPO, build_app

MIGRATIONS = str(REPO / "migrations")
SCRIPTS = ScriptDirectory(MIGRATIONS)
# Oldest first; walk_revisions() goes from the head down.
REVISIONS: list[str] = [script.revision for script in reversed(list(SCRIPTS.walk_revisions()))]
# Alembic's own bookkeeping table: created by the first upgrade, kept (empty) at base.
VERSION_TABLE = "alembic_version"

CATALOG: dict[str, str] = {
    "relations": """
        SELECT c.relname, c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public'""",
    "columns": """
        SELECT table_name, column_name, data_type, character_maximum_length, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'""",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    "constraints": """
        SELECT conrelid::regclass::text, conname, contype::text, pg_get_constraintdef(c.oid)
        FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'""",
    "types": """
        SELECT t.typname, t.typtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd', 'r')""",
}

Schema = dict[str, frozenset[tuple[object, ...]]]


def schema(url: str) -> Schema:
    """What the catalogs say, Alembic's version table and its key left out (see `version`)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            kind: frozenset(
                row for row in conn.execute(sql).fetchall() if not any(VERSION_TABLE in str(v) for v in row)
            )
            for kind, sql in CATALOG.items()
        }


def version(url: str) -> str | None:
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
        if not exists or not exists[0]:
            return None
        row = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
        return row[0] if row else None


def differences(expected: Schema, actual: Schema) -> dict[str, dict[str, list[tuple[object, ...]]]]:
    """Per catalog, what is missing from `actual` and what it has in excess (empty when equal)."""
    return {
        kind: {
            "missing": sorted(expected[kind] - actual[kind], key=str),
            "extra": sorted(actual[kind] - expected[kind], key=str),
        }
        for kind in CATALOG
        if expected[kind] != actual[kind]
    }


@pytest.fixture
def empty_app(make_database) -> Iterator[tuple[Flask, str]]:  # type: ignore[no-untyped-def]
    """The app on a database of its own, created empty (no migration applied)."""
    url = make_database("readwire_migrations")
    app = build_app(url)
    try:
        yield app, url
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()  # the next test drops and re-creates this database


def test_one_head_and_a_linear_history() -> None:
    """What the step-by-step test below assumes: one line of revisions, oldest first."""
    assert len(SCRIPTS.get_heads()) == 1, SCRIPTS.get_heads()
    assert len(REVISIONS) >= 3 and REVISIONS[0] == "0001", REVISIONS
    for below, above in pairwise(REVISIONS):
        assert SCRIPTS.get_revision(above).down_revision == below


def test_head_to_base_to_head_ends_in_the_same_schema(empty_app: tuple[Flask, str]) -> None:
    app, url = empty_app
    empty = schema(url)
    assert not empty["relations"], empty["relations"]
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        assert version(url) == REVISIONS[-1]
        head = schema(url)
        assert {
            "posts",
            "post_tags",
            "comments",
            "cache_outbox",
            "popular_ranks",
            "post_events",
            "websub_outbox",
            "idempotency_keys",
        } <= {name for name, kind in head["relations"] if kind == "r"}
        downgrade(directory=MIGRATIONS, revision="base")
        assert version(url) is None  # the version table is kept, empty
        assert differences(empty, schema(url)) == {}, "downgrade to base left objects behind"
        upgrade(directory=MIGRATIONS)
        assert version(url) == REVISIONS[-1]
        assert differences(head, schema(url)) == {}, "head after a round trip differs from a straight upgrade"


def test_every_downgrade_returns_the_schema_below_it_with_data_in_the_tables(empty_app: tuple[Flask, str]) -> None:
    """Upgrade one revision at a time, recording each schema; seed at head; then downgrade one
    revision at a time, each step compared with what the upgrade recorded there."""
    app, url = empty_app
    recorded: dict[str | None, Schema] = {None: schema(url)}
    with app.app_context():
        for revision in REVISIONS:
            upgrade(directory=MIGRATIONS, revision=revision)
            assert version(url) == revision
            recorded[revision] = schema(url)
            below = REVISIONS.index(revision) - 1
            assert recorded[revision] != recorded[REVISIONS[below] if below >= 0 else None], (
                f"{revision} changed nothing"
            )
        seed(30, seed=3, progress=False)  # downgrades run on a database in use, not an empty one
        db.session.remove()  # no open transaction holding locks the DROPs need
        for index in range(len(REVISIONS) - 1, -1, -1):
            target = REVISIONS[index - 1] if index else None
            downgrade(directory=MIGRATIONS, revision=target or "base")
            assert version(url) == target
            diff = differences(recorded[target], schema(url))
            assert diff == {}, f"downgrade of {REVISIONS[index]} does not give back {target or 'base'}: {diff}"
