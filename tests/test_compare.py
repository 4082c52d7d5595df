"""bench/compare (`make compare`): its pieces work. No timing is asserted here.

- the miss URL lists never repeat a URL, and the wrk script never requests one twice, across
  its threads and when it runs out;
- the FastAPI peer, and the Flask floor (the peer's work under gunicorn.conf.py), answer the
  same page content as Readwire for the same feed walk (same items, same fields, same order),
  so the side-by-side compares like with like.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from bench.compare.run import UrlFeed, first_page_urls, with_query
from devstack.servers import HOST, Redis, free_port
from devstack.stack import end_session, wait_until

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def test_first_page_urls_are_distinct_and_cover_every_scope_and_limit() -> None:
    paths = ["/api/v1/feed", "/api/v1/tags/python/feed", "/api/v1/authors/ann/feed"]
    urls = first_page_urls(paths + paths[:1], range(10, 31), seed=3)  # a path given twice counts once
    assert len(urls) == len(set(urls)) == 3 * 21
    assert with_query("/api/v1/feed", 10, None) in urls
    assert urls != sorted(urls)  # shuffled, so feeds and limits interleave in a run


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.send_header("X-App-Cache", "miss")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


class _QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # wrk drops its connections when it stops


@pytest.fixture
def recorder() -> Iterator[tuple[int, list[str]]]:
    server = _QuietServer((HOST, 0), _Recorder)
    _Recorder.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], _Recorder.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.skipif(not shutil.which("wrk"), reason="needs wrk (scripts/ensure-servers.sh --bench)")
def test_wrk_script_never_repeats_a_url(tmp_path: Path, recorder: tuple[int, list[str]]) -> None:
    port, seen = recorder
    listed = [f"/api/v1/feed?limit=20&n={i}" for i in range(1, 301)]
    feed = UrlFeed(tmp_path / "urls.txt", listed)
    # Two threads over lines 101.. of the file, for longer than 200 URLs last: the threads split
    # the slice and stop when it runs out instead of starting over.
    argv = ["wrk", "-t2", "-c4", "-d20s", "-s", str(feed.script), f"http://{HOST}:{port}", "--", "2", "101"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    requested = [path for path in seen if path != "/urls-exhausted"]
    assert Counter(requested).most_common(1)[0][1] == 1, "a URL was requested twice"
    # The slice and nothing else; wrk calls request() once on its first thread to check the script,
    # which takes one URL that is then never sent.
    assert set(requested) <= set(listed[100:])
    assert len(requested) >= len(listed[100:]) - 1
    assert "EXHAUSTED" in out
    assert "answers 200 miss" in out


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: dict[str, object] = json.load(response)
        return body


@pytest.fixture(params=["fastapi", "floor"])
def peer(request: pytest.FixtureRequest, app: Flask, redis_server: Redis) -> Iterator[str]:
    """The FastAPI peer (uvicorn, as `make compare` runs it) on the test database; and the Flask
    floor (bench/compare/floor.py, gunicorn with gunicorn.conf.py), which must answer the same."""
    url = app.config["SQLALCHEMY_DATABASE_URI"].replace("postgresql+psycopg://", "postgresql://")
    port = free_port()
    env = {
        **os.environ,
        "PEER_DATABASE_URL": url,
        "PEER_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/1",
        "PEER_POOL_SIZE": "4",
        "PUBLIC_SITE_URL": app.config["PUBLIC_SITE_URL"],
        "PUBLIC_BASE_URL": "http://localhost",  # the test client's root: the same absolute urls
    }
    if request.param == "floor":
        env.update(GUNICORN_BIND=f"{HOST}:{port}", WEB_CONCURRENCY="1")
        argv = [str(Path(sys.executable).parent / "gunicorn"), "-c", "gunicorn.conf.py", "bench.compare.floor:app"]
    else:
        argv = [str(Path(sys.executable).parent / "uvicorn"), "bench.compare.peer:app", "--host", HOST]
        argv += ["--port", str(port), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, start_new_session=True)
    try:

        def up() -> bool:
            try:
                return bool(_get(f"http://{HOST}:{port}/healthz"))
            except OSError:
                return False

        assert wait_until(lambda: proc.poll() is not None or up(), 60) and proc.poll() is None, "peer did not start"
        yield f"http://{HOST}:{port}"
    finally:
        end_session(proc)  # type: ignore[arg-type]


def test_peer_serves_the_same_pages_as_readwire(client: FlaskClient, peer: str) -> None:
    tags = client.get("/api/v1/tags?limit=1").get_json()["data"]
    categories = client.get("/api/v1/categories").get_json()["data"]
    first = client.get("/api/v1/feed?limit=1").get_json()["data"][0]
    feeds = [
        "/api/v1/feed",
        f"/api/v1/categories/{max(categories, key=lambda c: c['post_count'])['slug']}/feed",
        f"/api/v1/tags/{tags[0]['slug']}/feed",
        f"/api/v1/authors/{first['author']['username']}/feed",
    ]
    for feed in feeds:
        ours_cursor: str | None = None
        peer_cursor: str | None = None
        for page in range(3):  # each walks its own cursors
            ours = client.get(with_query(feed, 7, ours_cursor)).get_json()
            theirs = _get(peer + with_query(feed, 7, peer_cursor))
            assert ours["data"], f"{feed} page {page} is empty: the walk proves nothing"
            assert theirs["data"] == ours["data"], f"{feed} page {page}"
            assert theirs["meta"]["limit"] == ours["meta"]["limit"] == 7  # type: ignore[index]
            ours_cursor = ours["meta"]["next_cursor"]
            peer_cursor = theirs["meta"]["next_cursor"]  # type: ignore[index]
            assert (ours_cursor is None) == (peer_cursor is None)
            if ours_cursor is None:
                break
    # A repeated URL is a cache hit on the peer: the same bytes again.
    again = _get(peer + with_query(feeds[0], 7, None))
    assert again["data"] == client.get(with_query(feeds[0], 7, None)).get_json()["data"]
