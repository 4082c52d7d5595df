"""The embedded default (`make run`): SQLite file, in-process cache, no server to install.

Runs the same commands as the Makefile's run target in a scratch instance folder, serves with
gunicorn on a free port, and walks the feed over real HTTP.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from devstack.servers import free_port

pytestmark = pytest.mark.slow  # migrates, seeds and serves with gunicorn in a subprocess

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_make_run_path_serves_a_walkable_feed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    env["READWIRE_INSTANCE_DIR"] = str(tmp_path)
    flask = [str(BIN / "flask"), "--app", "app"]
    for cmd in (["db", "upgrade"], ["seed", "--posts", "60", "--if-empty"], ["seed", "--posts", "60", "--if-empty"]):
        subprocess.run(flask + cmd, cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    assert (tmp_path / "readwire.sqlite3").exists() and (tmp_path / "dev-secret").exists()

    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "gunicorn"), "--workers", "1", "--threads", "4", "--bind", f"127.0.0.1:{port}", "app:create_app()"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url: str | None = f"http://127.0.0.1:{port}/api/v1/feed?limit=7"
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "gunicorn did not come up"
                time.sleep(0.2)
        seen: list[int] = []
        while url:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
                seen += [item["id"] for item in body["data"]]
                match = re.search(r'<([^>]+)>; rel="next"', response.headers.get("Link", ""))
                url = match.group(1) if match else None
        assert len(seen) == len(set(seen)) > 40  # 60 seeded, a few drafts/deleted hidden; the 2nd seed was a no-op
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/popular?limit=100", timeout=5) as response:
            assert sorted(item["id"] for item in json.load(response)["data"]) == sorted(seen)  # SQLite path too
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            assert json.load(response)["checks"] == {"database": "ok", "cache": "ok"}
    finally:
        server.terminate()
        server.wait(timeout=10)
