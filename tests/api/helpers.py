"""Helpers for walking paginated endpoints the way a client does: by following Link."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from flask.testing import FlaskClient

_LINK = re.compile(r'<([^>]+)>; rel="(\w+)"')


def links(response: Any) -> dict[str, str]:
    """rel -> path?query of the Link header (absolute URLs checked, then made relative)."""
    found = {}
    for url, rel in _LINK.findall(response.headers.get("Link", "")):
        parts = urlsplit(url)
        assert parts.scheme in {"http", "https"} and parts.netloc, f"Link URL not absolute: {url}"
        found[rel] = f"{parts.path}?{parts.query}"
    return found


def get_ok(client: FlaskClient, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code, response.data[:300])
    assert response.mimetype == "application/json"
    return response


def walk(client: FlaskClient, url: str, rel: str = "next", between_pages: Any = None) -> list[int]:
    """Follow `rel` links from `url` to the end; returns every item id seen, in order."""
    seen: list[int] = []
    while url:
        response = get_ok(client, url)
        body = response.get_json()
        seen += [item["id"] for item in body["data"]]
        url = links(response).get(rel)
        meta_cursor = body["meta"][f"{rel}_cursor"]
        assert (url is None) == (meta_cursor is None)
        if between_pages:
            between_pages()
    return seen


def assert_problem(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def,type-arg]
    assert response.status_code == status, response.data[:300]
    assert response.mimetype == "application/problem+json"
    body = response.get_json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["status"] == status and body["code"] == code
    assert "Traceback" not in response.get_data(as_text=True)
    return body
