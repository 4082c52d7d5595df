"""The request flows one way (house style): the cache knows nothing of HTTP requests or
responses nor of the views; services raise domain exceptions, never HTTP errors; extensions are
reached through their objects, never by name."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy.dialects import postgresql

from app.models.post import VISIBLE_SQL, Post

APP = Path(__file__).resolve().parent.parent / "app"


def imports(path: Path) -> set[str]:
    """Every `module` and `module.name` a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_cache_imports_no_request_response_machinery_and_no_views() -> None:
    forbidden = {"flask.request", "flask.Response", "flask.make_response", "werkzeug.wrappers", "werkzeug"}
    for path in (APP / "cache").glob("*.py"):
        names = imports(path)
        assert not names & forbidden, (path.name, names & forbidden)
        assert not any(name.startswith(("app.api", "app.http", "app.errors")) for name in names), path.name


def test_services_raise_no_http_errors_and_import_no_schemas() -> None:
    for path in (APP / "services").glob("*.py"):
        names = imports(path)
        assert not any(name.startswith(("app.errors", "app.schemas", "app.http", "app.api")) for name in names), (
            path.name,
            sorted(names),
        )
        assert "ApiError" not in path.read_text(), path.name


def test_no_extension_is_looked_up_by_a_string_outside_its_own_class() -> None:
    for path in APP.rglob("*.py"):
        assert 'extensions["readwire' not in path.read_text(), path


def test_the_visible_predicate_is_the_partial_indexes_predicate() -> None:
    compiled = str(Post.visible.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    assert compiled == " AND ".join(f"posts.{part}" for part in VISIBLE_SQL.split(" AND "))
    assert Post(status="published", deleted_at=None).visible
    assert not Post(status="draft", deleted_at=None).visible
