"""The OpenAPI document as the app serves it, for the linters (`make lint-openapi`).

python scripts/openapi.py dump build/openapi.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def dump(target: Path) -> None:
    from app import create_app

    # The document depends on the routes and schemas only: an in-memory database, a throwaway secret.
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "openapi-dump", "TESTING": True})
    with app.test_client() as client:
        response = client.get("/api/v1/openapi.json")
    if response.status_code != 200:
        raise SystemExit(f"GET /api/v1/openapi.json answered {response.status_code}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(response.data)


EXAMPLES = Path(__file__).resolve().parent.parent / "app" / "openapi" / "examples.json"
DEMO_POSTS = 500  # the Makefile's DEMO_POSTS: the examples' ids and names exist on `make run`
CATEGORY, TAG, AUTHOR = "technology", "python", "ada_lovelace"
AUTHOR_ACCOUNT = "example_author"
BASE_URL = "http://127.0.0.1:8000"  # as if asked of `make run`: absolute URLs in feeds and Links show it
EXAMPLES_SECRET = "openapi-examples-only-never-a-real-deployment-secret"
METRICS_LINES = 12  # the exposition is long and per-process: the first metric family shows the format


class Recorder:
    """Sends requests through the app's test client and keeps one answer per operation and status."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.operations: dict[str, dict[str, Any]] = {}

    def call(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        status: int,
        body: Any = None,
        token: str | None = None,
        parameters: dict[str, Any] | None = None,
        raw: str | None = None,
    ) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if raw is not None:  # a body that is not JSON
            headers["Content-Type"] = "application/json"
        response = self.client.open(path, method=method, json=body, data=raw, headers=headers, base_url=BASE_URL)
        if response.status_code != status:
            raise SystemExit(f"{method} {path}: expected {status}, got {response.status_code}: {response.data[:300]!r}")
        entry = self.operations.setdefault(operation, {"parameters": {}, "responses": {}})
        entry["parameters"].update(parameters or {})
        if body is not None and 200 <= status < 300:
            entry["request_body"] = body
        if response.data:
            if response.is_json or response.mimetype.endswith("+json"):
                value: Any = json.loads(response.data)
            else:
                value = response.get_data(as_text=True)
                if response.mimetype == "text/plain":
                    value = "\n".join(value.splitlines()[:METRICS_LINES]) + "\n"
            entry["responses"][str(status)] = {response.mimetype: value}
        return json.loads(response.data) if response.is_json else None

    def stream(self, operation: str, path: str, parameters: dict[str, Any] | None = None) -> None:
        """An event stream never ends: its example is what it sends at once (retry, comment, id)."""
        response = self.client.get(path, base_url=BASE_URL, buffered=False)
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: expected 200, got {response.status_code}")
        try:
            opening = next(iter(response.response))
        finally:
            response.close()
        entry = self.operations.setdefault(operation, {"parameters": {}, "responses": {}})
        entry["parameters"].update(parameters or {})
        text = opening.decode() if isinstance(opening, bytes) else opening
        entry["responses"]["200"] = {response.mimetype: text}


def record(recorder: Recorder) -> None:
    from app.seed import DEMO_EDITOR, DEMO_EDITOR_PASSWORD

    call = recorder.call
    feed = call("feeds_global_feed", "GET", "/api/v1/feed?limit=2", status=200, parameters={"limit": 2})
    call("feeds_global_feed", "GET", "/api/v1/feed?limit=0", status=400)
    scoped = {
        "category": ("slug", CATEGORY, f"/api/v1/categories/{CATEGORY}/feed"),
        "tag": ("slug", TAG, f"/api/v1/tags/{TAG}/feed"),
        "author": ("username", AUTHOR, f"/api/v1/authors/{AUTHOR}/feed"),
    }
    for kind, (name, value, path) in scoped.items():
        call(f"feeds_{kind}_feed", "GET", f"{path}?limit=2", status=200, parameters={name: value, "limit": 2})
        missing = path.replace(value, "no_such_author" if kind == "author" else f"no-such-{kind}")
        call(f"feeds_{kind}_feed", "GET", missing, status=404)
        call(f"feeds_{kind}_feed", "GET", f"{path}?limit=0", status=400)
        for fmt in ("json", "atom"):
            operation = f"syndication_{kind}_{fmt}"
            call(operation, "GET", f"{path}.{fmt}?limit=2", status=200, parameters={name: value, "limit": 2})
            call(operation, "GET", f"{missing}.{fmt}", status=404)
            call(operation, "GET", f"{path}.{fmt}?fields=id", status=400)
    for fmt in ("json", "atom"):
        call(f"syndication_global_{fmt}", "GET", f"/api/v1/feed.{fmt}?limit=2", status=200, parameters={"limit": 2})
        call(f"syndication_global_{fmt}", "GET", f"/api/v1/feed.{fmt}?limit=101", status=400)
    call("feeds_popular", "GET", "/api/v1/popular?limit=2", status=200, parameters={"limit": 2})
    call("feeds_popular", "GET", "/api/v1/popular?cursor=not-a-cursor", status=400)

    first, second = (item["id"] for item in feed["data"])
    call("posts_post_detail", "GET", f"/api/v1/posts/{first}", status=200, parameters={"post_id": first})
    call("posts_post_detail", "GET", "/api/v1/posts/999999999", status=404)
    call("posts_post_detail", "GET", f"/api/v1/posts/{first}?fields=nope", status=400)
    ids = f"{second},{first}"
    call("posts_posts_by_ids", "GET", f"/api/v1/posts?ids={ids}", status=200, parameters={"ids": [second, first]})
    call("posts_posts_by_ids", "GET", "/api/v1/posts?ids=x", status=400)
    commented = next(item["id"] for item in recorder.client.get("/api/v1/feed?limit=50", base_url=BASE_URL).json["data"]
                     if item["comment_count"] >= 2)  # fmt: skip
    comments = f"/api/v1/posts/{commented}/comments"
    call("posts_post_comments", "GET", f"{comments}?limit=2", status=200, parameters={"post_id": commented, "limit": 2})
    call("posts_post_comments", "GET", "/api/v1/posts/999999999/comments", status=404)
    call("posts_post_comments", "GET", f"{comments}?limit=x", status=400)

    call("directory_categories", "GET", "/api/v1/categories", status=200)
    call("directory_categories", "GET", "/api/v1/categories?page=2", status=400)
    call("directory_tags", "GET", "/api/v1/tags?limit=3", status=200, parameters={"limit": 3})
    call("directory_tags", "GET", "/api/v1/tags?limit=501", status=400)
    call("directory_authors", "GET", "/api/v1/authors?limit=3", status=200, parameters={"limit": 3})
    call("directory_authors", "GET", "/api/v1/authors?limit=101", status=400)
    call("directory_author", "GET", f"/api/v1/authors/{AUTHOR}", status=200, parameters={"username": AUTHOR})
    call("directory_author", "GET", "/api/v1/authors/no_such_author", status=404)
    call("directory_author", "GET", f"/api/v1/authors/{AUTHOR}?fields=bio", status=400)

    credentials = {"username": DEMO_EDITOR, "password": DEMO_EDITOR_PASSWORD}
    tokens = call("auth_issue_token", "POST", "/api/v1/auth/token", status=200, body=credentials)
    call("auth_issue_token", "POST", "/api/v1/auth/token", status=401, body={**credentials, "password": "wrong-pass"})
    call("auth_issue_token", "POST", "/api/v1/auth/token", status=422, body={"username": DEMO_EDITOR})
    call("auth_issue_token", "POST", "/api/v1/auth/token", status=400, raw='{"username": ')
    call("auth_refresh_token", "POST", "/api/v1/auth/refresh", status=200, token=tokens["refresh_token"])
    call("auth_refresh_token", "POST", "/api/v1/auth/refresh", status=401)
    token = tokens["access_token"]

    post = {
        "title": "Hello from the API reference",
        "body": "A first paragraph.\n\nA second one, with <markup> shown as text.",
        "category": CATEGORY,
        "tags": [TAG],
    }
    created = call("writes_create_post", "POST", "/api/v1/posts", status=201, body=post, token=token)
    call("writes_create_post", "POST", "/api/v1/posts", status=401, body=post)
    call("writes_create_post", "POST", "/api/v1/posts", status=422, body={**post, "category": ""}, token=token)
    call("writes_create_post", "POST", "/api/v1/posts", status=400, raw="{", token=token)
    author_token = recorder.client.post(
        "/api/v1/auth/token", json={"username": AUTHOR_ACCOUNT, "password": DEMO_EDITOR_PASSWORD}
    ).json["access_token"]
    call("writes_create_post", "POST", "/api/v1/posts", status=403, body=post, token=author_token)
    mine = f"/api/v1/posts/{created['id']}"
    update = {"status": "draft"}
    ids_mine = {"post_id": created["id"]}
    call("writes_update_post", "PATCH", mine, status=200, body=update, token=token, parameters=ids_mine)
    call("writes_update_post", "PATCH", f"/api/v1/posts/{first}", status=403, body=update, token=token)
    call("writes_update_post", "PATCH", "/api/v1/posts/999999999", status=404, body=update, token=token)
    call("writes_update_post", "PATCH", mine, status=422, body={"status": "gone"}, token=token)
    call("writes_update_post", "PATCH", mine, status=400, raw="{", token=token)
    call("writes_update_post", "PATCH", mine, status=401, body=update)
    comment = {"body": "Thanks, the part about the cache was useful."}
    call("writes_create_comment", "POST", f"/api/v1/posts/{first}/comments", status=201, body=comment, token=token,
         parameters={"post_id": first})  # fmt: skip
    call("writes_create_comment", "POST", f"{mine}/comments", status=404, body=comment, token=token)
    call("writes_create_comment", "POST", f"/api/v1/posts/{first}/comments", status=422, body={}, token=token)
    call("writes_create_comment", "POST", f"/api/v1/posts/{first}/comments", status=400, raw="{", token=token)
    call("writes_create_comment", "POST", f"/api/v1/posts/{first}/comments", status=401, body=comment)
    call("writes_delete_post", "DELETE", f"/api/v1/posts/{first}", status=403, token=token)
    call("writes_delete_post", "DELETE", mine, status=204, token=token, parameters=ids_mine)
    call("writes_delete_post", "DELETE", mine, status=404, token=token)
    call("writes_delete_post", "DELETE", mine, status=401)

    recorder.stream("streams_global_stream", "/api/v1/stream")
    call("streams_global_stream", "GET", "/api/v1/stream?since=1", status=400)
    for kind, (name, value, path) in scoped.items():
        stream_path = path.rpartition("/")[0] + "/stream"
        recorder.stream(f"streams_{kind}_stream", stream_path, parameters={name: value})
        missing = stream_path.replace(value, "no_such_author" if kind == "author" else f"no-such-{kind}")
        call(f"streams_{kind}_stream", "GET", missing, status=404)
        call(f"streams_{kind}_stream", "GET", f"{stream_path}?since=1", status=400)

    call("health_healthz", "GET", "/healthz", status=200)
    call("health_readyz", "GET", "/readyz", status=200)
    call("metrics", "GET", "/metrics", status=200)


def examples(target: Path = EXAMPLES) -> None:
    with tempfile.TemporaryDirectory(prefix="readwire-examples-") as scratch:
        from flask_migrate import upgrade

        from app import create_app
        from app.seed import DEMO_EDITOR_PASSWORD, ensure_demo_editor, seed
        from app.services.auth import create_author

        database = f"sqlite:///{Path(scratch) / 'examples.sqlite3'}"
        # A fixed secret: the same cursors every run (tokens are signed with it too: useless elsewhere).
        app = create_app({"SQLALCHEMY_DATABASE_URI": database, "SECRET_KEY": EXAMPLES_SECRET})
        with app.app_context():
            upgrade(directory=str(Path(__file__).resolve().parent.parent / "migrations"))
            seed(DEMO_POSTS, progress=False)
            ensure_demo_editor()
            # An author who can sign in but not write posts: the 403 of POST /posts.
            create_author(AUTHOR_ACCOUNT, "Example Author", DEMO_EDITOR_PASSWORD)
        recorder = Recorder(app.test_client())
        record(recorder)
    document = {
        "about": "Real answers of the make-run data set, recorded by `python scripts/openapi.py examples`.",
        "operations": dict(sorted(recorder.operations.items())),
    }
    target.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    print(f"{target}: {sum(len(op['responses']) for op in recorder.operations.values())} answers")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dump", help="write the document to a file").add_argument("target", type=Path)
    sub.add_parser("examples", help=f"rewrite {EXAMPLES.relative_to(EXAMPLES.parents[2])}")
    args = parser.parse_args()
    if args.command == "dump":
        dump(args.target)
    else:
        examples()


if __name__ == "__main__":
    main()
