"""Every revision downgrades: the push tables come and go with their revisions, and the chain
upgrades again after a downgrade (on the real PostgreSQL)."""

from __future__ import annotations

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app.extensions import db
from tests.conftest import REPO, build_app

MIGRATIONS = str(REPO / "migrations")


def test_push_revisions_downgrade_and_upgrade_again(make_database) -> None:  # type: ignore[no-untyped-def]
    app = build_app(make_database("readwire_migrations"))
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        assert {"post_events", "websub_outbox"} <= set(inspect(db.engine).get_table_names())
        downgrade(directory=MIGRATIONS, revision="0003")
        tables = set(inspect(db.engine).get_table_names())
        assert not {"post_events", "websub_outbox"} & tables and "cache_outbox" in tables
        upgrade(directory=MIGRATIONS)
        assert {"post_events", "websub_outbox"} <= set(inspect(db.engine).get_table_names())
        downgrade(directory=MIGRATIONS, revision="base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        db.engine.dispose()
