"""Every revision downgrades: walk the chain down to the base and back up on a fresh database."""

from __future__ import annotations

from flask_migrate import downgrade, upgrade
from sqlalchemy import inspect

from app.extensions import db
from tests.conftest import REPO, build_app

MIGRATIONS = str(REPO / "migrations")


def _tables() -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_each_revision_downgrades_and_upgrades_again(make_database) -> None:  # type: ignore[no-untyped-def]
    app = build_app(make_database("readwire_migrations"))
    with app.app_context():
        upgrade(directory=MIGRATIONS)
        head = _tables()
        assert "idempotency_keys" in head
        downgrade(directory=MIGRATIONS, revision="0003")
        assert _tables() == head - {"idempotency_keys"}
        downgrade(directory=MIGRATIONS, revision="base")
        assert _tables() == set()
        upgrade(directory=MIGRATIONS)
        assert _tables() == head
        db.engine.dispose()
