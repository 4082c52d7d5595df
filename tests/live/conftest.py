"""`make run` for real: the Makefile's target on a free port with a scratch instance folder
(READWIRE_INSTANCE_DIR), started once per session for the tests that need a live server (the
README's shell blocks, the API reference in Chromium), and stopped with its process group."""

from __future__ import annotations

import os
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack.servers import free_port
from devstack.stack import end_session, wait_until

REPO = Path(__file__).resolve().parents[2]
# Variables of an enclosing `make test` (jobserver descriptors, level) that must not reach the
# inner make, and the settings that would point the app at another database or cache.
_DROP = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "DATABASE_URL", "REDIS_URL", "SECRET_KEY"}


@dataclass(frozen=True)
class LiveServer:
    port: int
    instance: Path
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def make_run() -> Iterator[LiveServer]:
    """`make run PORT=<free>` on an empty instance folder: migrate, seed the demo data and the
    demo editor, serve with gunicorn (one gevent worker), as a newcomer's first command does."""
    with tempfile.TemporaryDirectory(prefix="readwire-make-run-") as scratch:
        instance = Path(scratch) / "instance"
        env = {k: v for k, v in os.environ.items() if k not in _DROP}
        env["READWIRE_INSTANCE_DIR"] = str(instance)
        port = free_port()
        log = Path(scratch) / "make-run.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["make", "--no-print-directory", "run", f"PORT={port}"],
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = LiveServer(port, instance, env, log)
        try:
            started = wait_until(lambda: proc.poll() is not None or _up(server.url), 180, interval=0.2)
            assert started and proc.poll() is None, f"make run did not serve:\n{log.read_text()[-3000:]}"
            yield server
        finally:
            end_session(proc)
