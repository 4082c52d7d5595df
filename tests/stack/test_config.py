"""One configuration for both stacks: stack.env, the nginx.conf template and docker-compose.yml
agree; the template renders to a configuration `nginx -t` accepts; an upstream that is down
answers problem+json."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.servers import free_port, traversable_tmpdir
from devstack.stack import ENV_FILE, nginx_placeholders, nginx_values, read_env_file, render_nginx
from tests.stack.conftest import REPO, request, wait_for

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def test_stack_env_parses_and_the_environment_overrides_it() -> None:
    from devstack.stack import stack_settings

    settings = read_env_file()
    assert {"STACK_POSTS", "APP_PORT", "NGINX_PORT", "WEB_CONCURRENCY", "NGINX_RATE"} <= set(settings)
    assert not {"SECRET_KEY", "POSTGRES_PASSWORD"} & set(settings)  # secrets never live in the file
    merged = stack_settings({"APP_PORT": "9999", "UNRELATED": "1"})
    assert merged["APP_PORT"] == "9999" and "UNRELATED" not in merged


def test_render_fills_every_placeholder_and_refuses_missing_ones(tmp_path: Path) -> None:
    values = nginx_values({**read_env_file(), "NGINX_PORT": "1"}, tmp_path, tmp_path, tmp_path)
    assert set(values) == nginx_placeholders()
    rendered = render_nginx(values)
    assert "${NGINX_" not in rendered and "$request_id" in rendered  # Nginx's own variables kept
    with pytest.raises(KeyError, match="NGINX_RATE"):
        render_nginx({k: v for k, v in values.items() if k != "NGINX_RATE"})


def _opens_quote(line: str) -> bool:
    """Whether a single-quoted argument starts on `line` and goes on past it (comments aside)."""
    inside = False
    for char in line:
        if char == "'":
            inside = not inside
        elif char == "#" and not inside:
            break
    return inside


def _directives(conf: str) -> list[tuple[tuple[str, ...], str, str]]:
    """Every simple directive of a rendered nginx.conf as (enclosing blocks, name, arguments)."""
    found: list[tuple[tuple[str, ...], str, str]] = []
    blocks: list[str] = []
    quoted = ""  # a directive whose quoted argument spans lines (perl_set's 'sub { ... }')
    for raw in conf.splitlines():
        line = raw.strip()
        if quoted:
            quoted += " " + line
            if not _opens_quote("'" + line):  # the quote closes on this line
                line, quoted = quoted, ""
            else:
                continue
        elif not line or line.startswith("#"):
            continue
        elif _opens_quote(line):
            quoted = line
            continue
        if line.endswith("{"):
            blocks.append(" ".join(line[:-1].split()))
        elif line == "}":
            blocks.pop()
        elif match := re.fullmatch(r"([a-z_]+)\s+(.*?);(\s*#.*)?", line):
            found.append((tuple(blocks), match.group(1), match.group(2).strip()))
    return found


def _seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def test_every_proxy_hop_closes_idle_connections_before_the_server_behind_it() -> None:
    """Nginx reuses an idle upstream connection only while it is younger than the upstream's
    keepalive_timeout; the server behind must keep it longer, or a request sent on it races that
    server's close and fails without a retry (the edge's hop to the origin adapter retries
    nothing: a 503, or a 502 outcome_unknown for a POST). Both hops: edge -> origin adapter (the
    same Nginx, whose client keep-alive was cut to 20 s for slow clients) and origin -> gunicorn."""
    settings = read_env_file()
    conf = render_nginx(nginx_values({**settings, "NGINX_PORT": "1"}, Path("/s"), Path("/t"), Path("/l")))
    directives = _directives(conf)

    def value(blocks: tuple[str, ...], name: str) -> str | None:
        return next((args for where, key, args in directives if where == blocks and key == name), None)

    http_timeout = value(("http",), "keepalive_timeout")
    origin_server = next(
        where for where, key, args in directives if key == "listen" and args.endswith("origin.sock") and len(where) == 2
    )
    served_for = _seconds(value(origin_server, "keepalive_timeout") or http_timeout or "75s")
    reused_for = _seconds(value(("http", "upstream origin"), "keepalive_timeout") or "60s")
    assert reused_for < served_for, (reused_for, served_for)
    gunicorn_keepalive = float(settings.get("GUNICORN_KEEPALIVE", "2"))
    reused_for = _seconds(value(("http", "upstream gunicorn"), "keepalive_timeout") or "60s")
    assert reused_for < gunicorn_keepalive, (reused_for, gunicorn_keepalive)


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_docker_compose_config_is_valid_and_matches_the_template() -> None:
    compose = _compose_command()
    if compose is None:
        pytest.skip("no docker compose client on this machine")
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "SECRET_KEY": "s" * 40, "POSTGRES_PASSWORD": "pw"}
    res = subprocess.run(
        [*compose, "--env-file", str(ENV_FILE), "config"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load(res.stdout)
    # Without --profile: the single-node stack (compose v1 lists profiled services too, marked).
    services = {name: service for name, service in config["services"].items() if not service.get("profiles")}
    assert set(services) == {"postgres", "redis", "migrate", "app", "nginx"}
    for name in ("postgres", "redis", "app", "nginx"):
        assert services[name]["healthcheck"]["test"], name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["app"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["app"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["app"]["condition"] == "service_healthy"
    assert services["app"]["command"][:3] == ["gunicorn", "-c", "gunicorn.conf.py"]
    # An acknowledged write is on disk: PostgreSQL's durability defaults are kept.
    postgres_command = " ".join(map(str, services["postgres"]["command"]))
    assert "synchronous_commit" not in postgres_command and "fsync" not in postgres_command
    assert "db upgrade" in " ".join(services["migrate"]["command"])
    assert "--if-empty" in " ".join(services["migrate"]["command"])
    # The containers get stack.env (one source of configuration)...
    file_settings = read_env_file()
    for name in ("app", "migrate"):
        environment = services[name]["environment"]
        kept = {key: value for key, value in file_settings.items() if name != "app" or key != "TRUSTED_PROXIES"}
        assert all(str(environment[key]) == value for key, value in kept.items()), name
    # ...except the trusted proxy: in containers, the Nginx service's fixed address.
    edge = services["nginx"]["networks"]["default"]["ipv4_address"]
    assert services["app"]["environment"]["TRUSTED_PROXIES"] == edge
    assert "FORWARDED_ALLOW_IPS" not in services["app"]["environment"]  # it follows TRUSTED_PROXIES
    # ...and Nginx renders the same template with a value for every placeholder.
    nginx = services["nginx"]
    assert any(
        v.endswith("/etc/nginx/templates/nginx.conf.template:ro") or "nginx.conf.template" in str(v)
        for v in map(str, nginx["volumes"])
    )
    assert nginx_placeholders() <= set(nginx["environment"])
    assert nginx["environment"]["NGINX_ENVSUBST_OUTPUT_DIR"] == "/etc/nginx"


def test_edge_with_its_upstream_down_answers_problem_json() -> None:
    """The rendered template, on its own Nginx, in front of a port nobody listens on."""
    with traversable_tmpdir("readwire-edge-") as tmp_path:
        _edge_with_upstream_down(tmp_path)


def _edge_with_upstream_down(tmp_path: Path) -> None:
    port = free_port()
    for d in ("state", "static", "logs"):
        (tmp_path / d).mkdir()
    settings = {**read_env_file(), "NGINX_PORT": str(port), "APP_PORT": str(free_port()), "NGINX_WORKER_PROCESSES": "1"}
    values = nginx_values(settings, tmp_path / "state", tmp_path / "static", tmp_path / "logs")
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_nginx(values))
    base = [NGINX, "-p", str(tmp_path / "state"), "-c", str(conf)]
    check = subprocess.run([*base, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen([*base, "-g", "daemon off;"], stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert wait_for(lambda: _answers(port), 10)
        for path in ("/healthz", "/api/v1/feed"):
            response = request(port, path)
            assert response.status == 503, (path, response.status)
            assert response.headers["Content-Type"].startswith("application/problem+json")
            assert response.json()["code"] == "unavailable"
            assert response.headers["Retry-After"] == "5"
        # A write that may have been applied is never answered with advice to retry it blindly.
        body = {"title": "t"}
        for method, path, key, status in [
            ("POST", "/api/v1/posts", None, 502),
            ("PATCH", "/api/v1/posts/1", None, 502),
            ("POST", "/api/v1/posts/1/comments", None, 502),
            ("POST", "/api/v1/posts", '"k1"', 503),  # keyed: a retry gets the first outcome
            ("POST", "/api/v1/posts/1/comments", "k2", 503),
            ("DELETE", "/api/v1/posts/1", None, 503),  # idempotent
            ("POST", "/api/v1/auth/token", None, 503),  # writes nothing
        ]:
            headers = {"Idempotency-Key": key} if key else {}
            response = request(port, path, method=method, body=body, headers=headers)
            assert response.status == status, (method, path, key, response.status)
            assert response.headers["Content-Type"] == "application/problem+json"
            if status == 502:
                assert response.json()["code"] == "outcome_unknown"
                assert "Retry-After" not in response.headers
            else:
                assert response.json()["code"] == "unavailable" and response.headers["Retry-After"] == "5"
        (tmp_path / "static" / "page.json").write_bytes(b'{"data":[]}')
        static = request(port, "/_static/page.json")
        assert static.status == 200 and static.body == b'{"data":[]}'
        assert static.headers["Content-Type"].startswith("application/json")
    finally:
        proc.send_signal(signal.SIGQUIT)
        proc.wait(timeout=10)


def _answers(port: int) -> bool:
    try:
        request(port, "/_static/none", timeout=1)
        return True
    except OSError:
        return False


def test_envsubst_as_the_nginx_image_runs_it_renders_what_the_local_stack_renders(tmp_path: Path) -> None:
    """The compose path (the image's envsubst, limited to NGINX_* names) and devstack's renderer
    produce the same file from the same values."""
    envsubst = shutil.which("envsubst")
    if envsubst is None:
        pytest.skip("envsubst (gettext-base) not installed")
    values = nginx_values({**read_env_file(), "NGINX_PORT": "8080"}, tmp_path, tmp_path, tmp_path)
    env = {"PATH": "/usr/bin:/bin", **values, "NGINX_VERSION": "1.27", "HOME": "/root"}
    shell_format = " ".join(f"${{{name}}}" for name in env if name.startswith("NGINX_"))
    template = (REPO / "nginx.conf").read_text()
    res = subprocess.run([envsubst, shell_format], input=template, env=env, capture_output=True, text=True, check=True)
    assert res.stdout == render_nginx(values)


def test_serve_bench_parses_wrk_latency_units_and_errors() -> None:
    from devstack.serve_bench import parse_wrk

    output = (
        "  Latency Distribution\n     50%  502.00us\n     75%    1.00ms\n     90%    2.00ms\n     99%    1.20s\n"
        "  12345 requests in 2.00s, 1.2GB read\n  Socket errors: connect 0, read 3, write 0, timeout 1\n"
        "  Non-2xx or 3xx responses: 7\nRequests/sec:   6172.50\n"
    )
    assert parse_wrk(output) == {
        "requests_per_s": 6172.5,
        "p50_ms": 0.502,
        "p99_ms": 1200.0,
        "requests": 12345,
        "non_2xx": 7,
        "socket_errors": "connect 0, read 3, write 0, timeout 1",
    }
