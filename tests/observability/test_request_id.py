"""X-Request-ID: the client's when valid (1-128 printable ASCII characters), else generated;
echoed on every answer, errors and 304s included."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.api.helpers import assert_problem

GENERATED = re.compile(r"^[0-9a-f]{32}$")


def test_a_valid_id_is_echoed_on_every_kind_of_answer(client: FlaskClient) -> None:
    rid = "req-42 from the edge"
    first = client.get("/api/v1/feed", headers={"X-Request-ID": rid})
    answers = [
        first,
        client.get("/api/v1/feed", headers={"X-Request-ID": rid, "If-None-Match": first.headers["ETag"]}),
        client.get("/api/v1/posts/999999999", headers={"X-Request-ID": rid}),
        client.get("/api/v1/feed?limit=0", headers={"X-Request-ID": rid}),
        client.put("/api/v1/feed", headers={"X-Request-ID": rid}),
        client.post("/api/v1/posts", json={}, headers={"X-Request-ID": rid}),
        client.options("/api/v1/feed", headers={"X-Request-ID": rid}),
        client.get("/healthz", headers={"X-Request-ID": rid}),
        client.get("/metrics", headers={"X-Request-ID": rid}),
    ]
    assert [a.status_code for a in answers] == [200, 304, 404, 400, 405, 401, 200, 200, 200]
    assert all(a.headers["X-Request-ID"] == rid for a in answers)


def test_an_id_is_generated_when_none_is_sent(client: FlaskClient) -> None:
    ids = {client.get("/healthz").headers["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5 and all(GENERATED.match(i) for i in ids)


@pytest.mark.parametrize("given", ["x" * 129, "tab\there", "caf\u00e9", "del\x7f"])
def test_an_invalid_id_is_replaced(client: FlaskClient, given: str) -> None:
    echoed = client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"]
    assert GENERATED.match(echoed)


def test_the_longest_valid_id_is_kept(client: FlaskClient) -> None:
    given = "~" + "a" * 126 + "!"
    assert client.get("/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given


def test_a_500_carries_the_id_and_no_internals(embedded: Flask) -> None:
    response = embedded.test_client().get("/api/v1/boom", headers={"X-Request-ID": "boom-1"})
    body = assert_problem(response, 500, "internal_error")
    assert response.headers["X-Request-ID"] == "boom-1"
    assert "secret internals" not in str(body)


def test_observability_off_removes_the_hooks(make_embedded) -> None:  # type: ignore[no-untyped-def]
    client = make_embedded(OBSERVABILITY=False).test_client()
    response = client.get("/healthz")
    assert response.status_code == 200 and "X-Request-ID" not in response.headers
    assert client.get("/metrics").status_code == 404
