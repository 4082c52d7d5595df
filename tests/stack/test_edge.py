"""Nginx in front of gunicorn, over real HTTP: microcache, bypass, gzip, request ids, rate limit."""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid

import pytest

from tests.stack.conftest import StackInfo, at_second_start, request, wait_for

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)


def test_up_printed_exactly_one_line_per_service(stack: StackInfo) -> None:
    lines = stack.up_stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["postgres", "redis", "app", "nginx"]
    urls = dict(line.split() for line in lines)
    assert urls["postgres"] == stack.state["database_url"] and urls["postgres"].startswith("postgresql://")
    assert urls["redis"] == stack.state["redis_url"] == f"redis://127.0.0.1:{stack.port('redis')}/0"
    assert urls["app"] == f"http://127.0.0.1:{stack.port('app')}"
    assert urls["nginx"] == f"http://127.0.0.1:{stack.port('nginx')}"
    assert (stack.root / "state.json").stat().st_mode & 0o077 == 0  # it carries SECRET_KEY


def test_second_get_is_a_cache_hit_and_head_is_served_from_it(stack: StackInfo, post_ids: list[int]) -> None:
    port = stack.port("nginx")
    path = f"/api/v1/posts/{post_ids[3]}"
    at_second_start()  # both requests inside one cache second
    first = request(port, path)
    second = request(port, path)
    head = request(port, path, method="HEAD")
    assert (first.status, second.status, head.status) == (200, 200, 200)
    assert first.headers["X-Cache-Status"] == "MISS"
    assert second.headers["X-Cache-Status"] == "HIT"
    assert head.headers["X-Cache-Status"] == "HIT" and head.body == b""
    assert second.body == first.body
    assert second.headers["Cache-Control"] == first.headers["Cache-Control"]


def test_signed_in_and_non_get_requests_bypass_the_cache(stack: StackInfo, post_ids: list[int]) -> None:
    port = stack.port("nginx")
    path = f"/api/v1/posts/{post_ids[4]}"
    at_second_start()
    signed = [request(port, path, headers={"Authorization": "Bearer not-a-token"}) for _ in range(2)]
    assert [r.headers["X-Cache-Status"] for r in signed] == ["BYPASS", "BYPASS"]
    # ...and a signed-in answer is not stored: the next anonymous GET still misses.
    assert request(port, path).headers["X-Cache-Status"] == "MISS"
    posted = request(port, "/api/v1/auth/token", method="POST", body={"username": "nobody", "password": "x"})
    assert posted.status == 401
    assert posted.headers.get("X-Cache-Status") in (None, "BYPASS")


def test_gzip_is_negotiated_with_a_single_vary(stack: StackInfo) -> None:
    port = stack.port("nginx")
    path = "/api/v1/feed?limit=50"
    plain = request(port, path)
    zipped = request(port, path, headers={"Accept-Encoding": "gzip"})
    assert plain.status == zipped.status == 200
    assert plain.headers.get("Content-Encoding") is None
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(zipped.body) < len(plain.body) / 2
    assert json.loads(gzip.decompress(zipped.body))["data"] == json.loads(plain.body)["data"]
    for response in (plain, zipped):
        assert response.headers.get_all("Vary") == ["Accept-Encoding"]


def test_request_id_is_accepted_or_made_passed_upstream_and_echoed(stack: StackInfo) -> None:
    port = stack.port("nginx")
    mine = f"test-{uuid.uuid4()}"
    echoed = request(port, "/healthz", headers={"X-Request-ID": mine})
    assert echoed.headers["X-Request-ID"] == mine
    made = request(port, "/healthz").headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    refused = request(port, "/healthz", headers={"X-Request-ID": "x" * 200}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", refused)  # too long: replaced, not trusted
    assert request(port, "/api/v1/nope", headers={"X-Request-ID": mine}).headers["X-Request-ID"] == mine

    def logged(request_id: str) -> list[dict[str, object]]:
        records = []
        for line in (stack.logs / "gunicorn.log").read_text().splitlines():
            if line.startswith('{"logger":"gunicorn.access"') and request_id in line:
                records.append(json.loads(line))
        return records

    # gunicorn's JSON access log (ACCESS_LOG=json in this stack) saw the same ids.
    assert wait_for(lambda: logged(mine) and logged(made), 5)
    record = logged(mine)[0]
    assert record["request_id"] == mine and record["path"] == "/healthz" and record["status"] == 200


def test_burst_gets_429_problem_json_with_retry_after_then_recovers(stack: StackInfo, post_ids: list[int]) -> None:
    port = stack.port("nginx")
    source = "127.0.0.2"  # not the exempt load-generator address
    statuses = []
    limited = None
    for _ in range(400):
        response = request(port, f"/api/v1/posts/{post_ids[0]}", source=source)
        statuses.append(response.status)
        if response.status == 429 and limited is None:
            limited = response
    assert limited is not None, f"no 429 in a burst of {len(statuses)}"
    assert statuses.count(200) >= 100  # the burst allowance was honoured first
    assert set(statuses) <= {200, 429}
    assert limited.headers["Content-Type"].startswith("application/problem+json")
    problem = limited.json()
    assert problem["code"] == "rate_limited" and problem["status"] == 429
    assert set(problem) >= {"type", "title", "status", "detail", "code"}
    retry_after = int(limited.headers["Retry-After"])
    assert retry_after >= 1
    assert limited.headers["X-Request-ID"]
    time.sleep(retry_after)
    assert request(port, f"/api/v1/posts/{post_ids[0]}", source=source).status == 200
    # the exempt address is not limited meanwhile
    assert all(request(port, "/api/v1/feed?limit=1").status == 200 for _ in range(150))


def test_metrics_are_served_to_this_host_only(stack: StackInfo) -> None:
    port = stack.port("nginx")
    local = request(port, "/metrics")
    assert local.status == 200 and b"readwire_http_request_duration_seconds" in local.body
    remote = request(port, "/metrics", source="127.0.0.2")
    assert remote.status == 404 and remote.json()["code"] == "not_found"
    assert remote.headers["Content-Type"].startswith("application/problem+json")


def test_the_apps_own_429_passes_through_per_client(stack: StackInfo) -> None:
    """Sign-in has an app-level quota (10/min per client). Behind Nginx the app must see each
    client (X-Forwarded-For, TRUSTED_PROXY_HOPS=1), and its 429 must reach the client as it is."""
    port = stack.port("nginx")
    attempt = {"username": "nobody", "password": "wrong"}
    for source in ("127.0.0.3", "127.0.0.5"):  # the second only if a fixed window ended mid-burst
        answers = [request(port, "/api/v1/auth/token", "POST", body=attempt, source=source) for _ in range(11)]
        if answers[10].status == 429:
            break
    assert [a.status for a in answers[:10]] == [401] * 10
    limited = answers[10]
    assert limited.status == 429 and limited.json()["code"] == "rate_limited"
    assert "RateLimit-Policy" in limited.headers  # the app's answer, not the edge's
    assert int(limited.headers["Retry-After"]) >= 1
    # another client is not affected
    assert request(port, "/api/v1/auth/token", "POST", body=attempt, source="127.0.0.4").status == 401


def test_cosmetic_cursor_edits_are_400_at_the_edge_not_cache_misses(stack: StackInfo) -> None:
    """Each edit of a cursor used to be a new Nginx key, a new Redis key and a database query."""
    port = stack.port("nginx")
    cursor = request(port, "/api/v1/feed?limit=3").json()["meta"]["next_cursor"]
    assert request(port, f"/api/v1/feed?limit=3&cursor={cursor}").status == 200
    edits = [cursor + ".", cursor + "~", cursor + "*", cursor + "%3D", cursor + "%20", "%00" + cursor]
    if set(cursor) & {"-", "_"}:
        edits.append(cursor.replace("-", "%2B").replace("_", "%2F"))
    for edit in edits:
        response = request(port, f"/api/v1/feed?limit=3&cursor={edit}")
        assert response.status == 400, (edit, response.status)
        assert response.headers["Content-Type"] == "application/problem+json"
        assert response.json()["code"] == "invalid_cursor"
        assert response.headers["X-Cache-Status"] in {"MISS", "EXPIRED"}  # asked once, never stored as a page


def test_forwarded_for_from_a_peer_that_is_not_a_trusted_proxy_is_ignored(stack: StackInfo) -> None:
    """On gunicorn's port, a client that is not Nginx cannot pick its address with X-Forwarded-For:
    its sign-in tries all count against its own address (10 a minute) whatever header it sends."""
    port = stack.port("app")
    attempt = {"username": "nobody", "password": "wrong"}
    for source in ("127.0.0.6", "127.0.0.7"):  # the second only if a fixed window ended mid-burst
        answers = [
            request(port, "/api/v1/auth/token", "POST", body=attempt, source=source,
                    headers={"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.{i}"})
            for i in range(11)
        ]  # fmt: skip
        if answers[10].status == 429:
            break
    assert [a.status for a in answers[:10]] == [401] * 10
    assert answers[10].status == 429 and answers[10].json()["code"] == "rate_limited"
