"""The edge (nginx.conf as rendered for the stack, on its own Nginx) in front of a small origin this
test controls: an expired entry is revalidated with its ETag (a 304 hop, no body), a changed page
replaces it, and HIT, REVALIDATED and STALE answers carry Age."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devstack.servers import free_port, traversable_tmpdir
from devstack.stack import nginx_values, read_env_file, render_nginx
from tests.stack.conftest import at_second_start, request, wait_for
from tests.stack.test_config import NGINX

pytestmark = pytest.mark.slow  # stands up the serving stack (make test runs it; test-fast skips it)

PATH = "/api/v1/feed"


@dataclass
class Origin:
    """What the origin serves and what it was asked."""

    body: bytes = b'{"data":["first"]}'
    failing: bool = False
    seen: list[tuple[str | None, int]] = field(default_factory=list)  # (If-None-Match, status answered)

    @property
    def etag(self) -> str:
        return f'W/"{abs(hash(self.body)):x}"'


def _handler(origin: Origin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            tag = self.headers.get("If-None-Match")
            if origin.failing:
                status, body = 503, b'{"code":"unavailable"}'
            elif tag == origin.etag:
                status, body = 304, b""
            else:
                status, body = 200, origin.body
            origin.seen.append((tag, status))
            self.send_response(status)
            if status != 503:
                self.send_header("ETag", origin.etag)
                self.send_header("Cache-Control", "public, max-age=1, s-maxage=1")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def edge() -> Iterator[tuple[int, Origin]]:
    origin = Origin()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(origin))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with traversable_tmpdir("readwire-reval-") as tmp:
            port = free_port()
            for d in ("state", "static", "logs"):
                (tmp / d).mkdir()
            settings = {
                **read_env_file(),
                "NGINX_PORT": str(port),
                "NGINX_UPSTREAM": f"127.0.0.1:{server.server_address[1]}",
                "NGINX_WORKER_PROCESSES": "1",
            }
            conf = tmp / "nginx.conf"
            conf.write_text(render_nginx(nginx_values(settings, tmp / "state", tmp / "static", tmp / "logs")))
            base = [NGINX, "-p", str(tmp / "state"), "-c", str(conf)]
            check = subprocess.run([*base, "-t"], capture_output=True, text=True)
            assert check.returncode == 0, check.stderr
            proc = subprocess.Popen([*base, "-g", "daemon off;"], stderr=subprocess.PIPE, start_new_session=True)
            try:
                assert wait_for(lambda: _answers(port), 10)
                yield port, origin
            finally:
                proc.send_signal(signal.SIGQUIT)
                proc.wait(timeout=10)
    finally:
        server.shutdown()
        server.server_close()


def _answers(port: int) -> bool:
    try:
        request(port, "/_static/none", timeout=1)
        return True
    except OSError:
        return False


def test_expired_entries_are_revalidated_and_cached_answers_carry_age(edge: tuple[int, Origin]) -> None:
    port, origin = edge
    at_second_start()
    first = request(port, PATH)
    assert (first.status, first.headers["X-Cache-Status"], first.body) == (200, "MISS", origin.body)
    hit = request(port, PATH)
    assert (hit.headers["X-Cache-Status"], hit.headers["Age"], hit.body) == ("HIT", "0", origin.body)
    assert origin.seen == [(None, 200)]
    assert "X-Edge-Stored" not in hit.headers  # the origin adapter's stamp stays inside

    at_second_start()  # the entry expired with its second: the edge asks with its ETag
    revalidated = request(port, PATH)
    assert revalidated.headers["X-Cache-Status"] == "REVALIDATED", revalidated.headers
    assert (revalidated.status, revalidated.body, revalidated.headers["Age"]) == (200, origin.body, "0")
    assert origin.seen[1:] == [(origin.etag, 304)]  # a 304 hop, no body
    assert request(port, PATH).headers["X-Cache-Status"] == "HIT"  # fresh again until this second ends
    # A client's own validator is answered by the edge (304), whatever the origin did.
    conditional = request(port, PATH, headers={"If-None-Match": origin.etag})
    assert conditional.status == 304 and conditional.headers["X-Cache-Status"] == "HIT"

    origin.body = b'{"data":["changed"]}'
    at_second_start()
    changed = request(port, PATH)
    assert (changed.headers["X-Cache-Status"], changed.body) == ("EXPIRED", origin.body)
    assert origin.seen[-1][1] == 200

    origin.failing = True
    fetched = time.time()
    time.sleep(2.2)
    stale = request(port, PATH)
    assert stale.headers["X-Cache-Status"] == "STALE", stale.headers
    assert stale.status == 200 and stale.body == origin.body
    assert int(stale.headers["Age"]) >= int(time.time() - fetched) - 1 >= 1, stale.headers["Age"]
