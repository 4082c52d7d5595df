"""The OpenAPI document: valid OpenAPI 3.1, describes every route (and only routes that exist),
served once-built with an ETag; and the API does what it says, checked by schemathesis."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from sqlalchemy import select
from werkzeug.routing import Rule

from app.errors import PROBLEM_CODES
from app.extensions import db, limiter
from app.openapi import schemas as doc
from app.schemas.resources import COMMENT_FIELDS, POST_DETAIL_FIELDS, POST_FIELDS
from tests.api.helpers import get_ok

DOCUMENT = "/api/v1/openapi.json"
APP_DIR = Path(__file__).resolve().parents[2] / "app"


def openapi_path(rule: Rule) -> str:
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get(DOCUMENT)
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()  # type: ignore[no-any-return]


def test_document_is_valid_openapi_3_1(app: Flask, client: FlaskClient) -> None:
    schema = schemathesis.openapi.from_wsgi(DOCUMENT, app)
    assert schema.raw_schema["openapi"] == "3.1.0"
    schema.validate()  # against the OpenAPI 3.1 meta-schema; raises on any violation


def undocumented(url_map: Any, document: dict[str, Any]) -> list[str]:
    """Every (method, route) of the URL map the document has no operation for; HEAD is GET's,
    and CORS preflights (OPTIONS) are described once, in the document's description."""
    missing = []
    for rule in url_map.iter_rules():
        documented = document["paths"].get(openapi_path(rule), {})
        expected = set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        missing += [f"{method} {rule.rule}" for method in sorted(expected) if method.lower() not in documented]
    return missing


def test_every_route_is_documented(app: Flask, document: dict[str, Any]) -> None:
    assert not undocumented(app.url_map, document), "routes the OpenAPI document does not describe"


def test_a_route_added_without_a_description_is_caught(app: Flask) -> None:
    from app.openapi import build_document

    probe = Flask("probe")
    probe.url_map = app.url_map.__class__(converters=app.url_map.converters)
    for rule in app.url_map.iter_rules():
        probe.url_map.add(rule.empty())
    probe.url_map.add(Rule("/api/v1/undocumented", endpoint="nowhere.undocumented", methods=["GET"]))
    probe.url_map.add(Rule("/api/v1/feed", endpoint="nowhere.feed_put", methods=["PUT"]))
    missing = undocumented(probe.url_map, build_document(probe))
    assert missing == ["GET /api/v1/undocumented", "PUT /api/v1/feed"]


def test_every_documented_operation_exists(app: Flask, document: dict[str, Any]) -> None:
    adapter = app.url_map.bind("localhost")
    samples = {"post_id": "1", "slug": "some-slug", "username": "some_user"}
    for path, item in document["paths"].items():
        concrete = re.sub(r"{(\w+)}", lambda m: samples[m.group(1)], path)
        for method in item:
            if method in {"parameters", "summary", "description"}:
                continue
            adapter.match(concrete, method=method.upper())  # raises NotFound / MethodNotAllowed


def test_document_covers_headers_errors_and_codes(document: dict[str, Any]) -> None:
    components = document["components"]
    for header in ("ETag", "Last-Modified", "Cache-Control", "Link", "X-Request-ID", "RateLimit", "RateLimit-Policy",
                   "Retry-After", "Access-Control-Allow-Origin", "Age"):  # fmt: skip
        assert header in components["headers"] or f"{header}.required" in components["headers"], header
    assert set(components["schemas"]["Problem"]["properties"]["code"]["enum"]) == set(PROBLEM_CODES)
    feed = document["paths"]["/api/v1/feed"]["get"]
    assert {"200", "304", "400", "503"} <= set(feed["responses"])
    assert set(feed["responses"]["200"]["headers"]) >= {"ETag", "Link", "Cache-Control", "X-Request-ID"}
    names = {p.get("name") or p.get("$ref", "").rsplit("/", 1)[-1] for p in feed["parameters"]}
    assert {"limit", "cursor", "fields", "If-None-Match", "If-Modified-Since", "X-Request-ID"} <= names
    create = document["paths"]["/api/v1/posts"]["post"]
    assert {"201", "401", "403", "422", "429"} <= set(create["responses"])
    assert (
        "RateLimit" in create["responses"]["429"]["headers"] and "Retry-After" in create["responses"]["429"]["headers"]
    )
    assert create["security"] == [{"bearer": []}]
    assert feed["security"] == []  # anonymous, said explicitly (Redocly's security-defined)
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/PostCreate")
    assert components["schemas"]["PostCreate"]["additionalProperties"] is False


def test_document_reads_well(document: dict[str, Any]) -> None:
    """What the reference page shows: tags in reading order, one servers entry (try-it goes to
    the serving host), no per-path preflights, comma-separated lists as arrays (not a regex)."""
    assert [tag["name"] for tag in document["tags"]][:3] == ["Feeds", "Posts", "Directory"]
    names = [tag["name"] for tag in document["tags"]]
    assert names.index("Auth") > names.index("Syndication") and all(tag["description"] for tag in document["tags"])
    assert document["servers"] == [{"url": "/", "description": "The host serving this document"}]
    assert not [path for path, item in document["paths"].items() if "options" in item]
    assert "preflight" in document["info"]["description"]
    fields = next(p for p in document["paths"]["/api/v1/feed"]["get"]["parameters"] if p.get("name") == "fields")
    assert (fields["style"], fields["explode"], fields["schema"]["type"]) == ("form", False, "array")
    assert "title" in fields["schema"]["items"]["enum"] and "pattern" not in fields["schema"]
    ids = next(p for p in document["paths"]["/api/v1/posts"]["get"]["parameters"] if p.get("name") == "ids")
    assert (ids["style"], ids["explode"], ids["schema"]["maxItems"]) == ("form", False, 100)


def test_every_operation_shows_a_recorded_answer(document: dict[str, Any]) -> None:
    """Each operation's success answer carries an example recorded from the seeded app
    (scripts/openapi.py examples; Redocly checks each against its schema in make lint), and so
    does every error a client can provoke with the request alone (400, 401, 403, 404, 422)."""
    missing = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or operation["operationId"] in {"docs_openapi", "docs_reference"}:
                continue  # the document itself, and the page rendering it
            for status, response in operation["responses"].items():
                provokable = status.startswith("2") or status in {"400", "401", "403", "404", "422"}
                if not provokable or (operation["operationId"] == "metrics" and status == "404"):
                    continue  # 304 has no body; 429/503 and the edge's 404 need the server's state
                for media_type, content in response.get("content", {}).items():
                    if "example" not in content:
                        missing.append(f"{method.upper()} {path} {status} {media_type}")
            if "requestBody" in operation and "example" not in operation["requestBody"]["content"]["application/json"]:
                missing.append(f"{method.upper()} {path} request body")
    assert not missing, "answers without a recorded example (run: python scripts/openapi.py examples):\n" + "\n".join(
        missing
    )


def test_every_problem_code_in_the_code_is_in_the_enum() -> None:
    used = set()
    for path in APP_DIR.rglob("*.py"):
        used |= set(re.findall(r'ApiError\(\s*\d{3},\s*"(\w+)"', path.read_text()))
        used |= set(re.findall(r'^\s+\d{3}: "(\w+)",$', path.read_text(), re.MULTILINE))
    assert used, "the scan found nothing: the patterns no longer match the code"
    # Nginx's and gunicorn's own problem+json answers (nginx.conf, gunicorn.conf.py) too.
    served = set(re.findall(r'"code":"(\w+)"', (APP_DIR.parent / "nginx.conf").read_text()))
    gunicorn_conf = (APP_DIR.parent / "gunicorn.conf.py").read_text()
    served |= set(re.findall(r'^\s+\d{3}: \("(\w+)"', gunicorn_conf, re.MULTILINE))
    assert {"header_too_large", "uri_too_long", "not_implemented"} <= served, served
    used |= served
    assert used <= set(PROBLEM_CODES), used - set(PROBLEM_CODES)


def test_resource_fields_match_what_the_services_return(client: FlaskClient) -> None:
    item = get_ok(client, "/api/v1/feed?limit=1").get_json()["data"][0]
    assert tuple(item) == POST_FIELDS
    assert tuple(get_ok(client, f"/api/v1/posts/{item['id']}").get_json()) == POST_DETAIL_FIELDS
    commented = next(p for p in get_ok(client, "/api/v1/feed?limit=50").get_json()["data"] if p["comment_count"])
    comment = get_ok(client, f"/api/v1/posts/{commented['id']}/comments?limit=1").get_json()["data"][0]
    assert tuple(comment) == COMMENT_FIELDS
    assert tuple(doc.Post._declared_fields) == POST_FIELDS
    assert tuple(doc.PostDetail._declared_fields) == (*POST_FIELDS, "body")
    assert tuple(doc.Comment._declared_fields) == COMMENT_FIELDS


def test_document_is_built_once_and_revalidates(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.openapi as openapi

    builds = []
    real = openapi.build_document
    monkeypatch.setattr(openapi, "build_document", lambda a: builds.append(1) or real(a))
    from app.api import docs

    docs._BUILT.pop(app, None)  # the document is built once per app: forget this app's
    first = client.get(DOCUMENT)
    second = client.get(DOCUMENT)
    assert first.data == second.data and len(builds) == 1
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    revalidated = client.get(DOCUMENT, headers={"If-None-Match": first.headers["ETag"]})
    assert revalidated.status_code == 304 and not revalidated.data


def test_reference_page_is_self_contained(client: FlaskClient) -> None:
    """Swagger UI inlined from the pinned swagger-ui-py package: no element loads anything, and
    the only URL the page's own script names is the document next to it.
    (tests/live/test_docs_browser.py renders it in Chromium.)"""
    response = client.get("/api/v1/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    loads: list[tuple[str, str]] = []

    class Loads(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            loads.extend((tag, value or "") for name, value in attrs if name in {"src", "href"})

    Loads().feed(page)
    assert loads == [], "the page must not load anything (no CDN, no external file)"
    assert 'url: "openapi.json"' in page and "SwaggerUIBundle" in page and "validatorUrl: null" in page
    assert "sourceMappingURL" not in page
    assert client.get("/api/v1/docs", headers={"If-None-Match": response.headers["ETag"]}).status_code == 304


# --- schemathesis ---------------------------------------------------------------------------
# Reads (GET) are fuzzed, with valid and invalid inputs: every
# answer must be a documented status with a documented content type, headers and body, never a
# 5xx. Writes are left out: whether a schema-valid body is accepted depends on database state
# (the category and tags must exist, the post must be the caller's), so random bodies are 422
# by design; tests/api/test_writes.py covers them, and test_write_answers_match_the_document
# below checks their answers against the document.
FUZZ = schemathesis.Config.from_dict({"generation": {"allow-x00": True, "codec": "ascii"}})
# Examples per operation and mode (~5 s in all). CORS preflights are not in the document (it
# describes them once); tests/api/test_cors.py covers them.
EXAMPLES = {"GET": 8}


def without_cursor(case: Any) -> Any:
    """A cursor is valid only if the server signed it, which no schema can say: positive cases
    never send one (tests/api/test_errors.py covers forged and tampered cursors)."""
    if case.query:
        case.query.pop("cursor", None)
    return case


def fuzz(operation: Any, mode: GenerationMode) -> None:
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        strategy = strategy.map(without_cursor)

    @given(case=strategy)
    @settings(
        max_examples=EXAMPLES[operation.method.upper()],
        deadline=None,
        database=None,
        derandomize=True,  # the same examples every run: a failure reproduces
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        case.call_and_validate()

    check()


@pytest.mark.slow  # ~8 s: schemathesis fuzzes every read
def test_reads_conform_to_the_document(app: Flask, client: FlaskClient) -> None:
    schema = (
        schemathesis.openapi.from_wsgi(DOCUMENT, app, config=FUZZ)
        .include(method=["GET", "OPTIONS"])
        # An event stream's 200 never ends, and the test client reads it whole; tests/push/ covers them.
        .exclude(method="GET", path_regex="/stream$")
    )
    failures: dict[str, str] = {}
    fuzzed = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        # Negative cases need a constrained query or path parameter to break (headers are free text).
        negatable = len(operation.query) + len(operation.path_parameters) > 0
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if negatable else (GenerationMode.POSITIVE,):
            try:
                fuzz(operation, mode)
            except (Exception, BaseExceptionGroup) as exc:  # every failing operation is reported
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:3000]
            fuzzed += 1
    reads = sum("get" in item for item in schema.raw_schema["paths"].values())
    assert fuzzed > reads >= 25, (fuzzed, reads)  # every read positive, those with parameters negative too
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


def test_write_answers_match_the_document(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch, cheap_hashes: None
) -> None:
    """Each write answer kind (created, edited, deleted, 4xx, 429) checked against the document
    by schemathesis' response checks (status, content type, headers, body schema)."""
    from app.models import Category, Tag
    from app.ratelimit import Quota
    from app.services import auth as auth_service

    auth_service.create_author("doc_editor", "Doc Editor", "correct horse battery", role="editor")
    category = db.session.execute(select(Category.slug).limit(1)).scalar_one()
    tag = db.session.execute(select(Tag.slug).limit(1)).scalar_one()
    schema = schemathesis.openapi.from_wsgi(DOCUMENT, app)
    seen: list[int] = []

    def call(method: str, path: str, status: int, **kwargs: Any) -> Any:
        case = schema[path][method].Case(**kwargs)
        response = case.call()
        assert response.status_code == status, (method, path, response.status_code, response.text[:300])
        case.validate_response(response)
        seen.append(status)
        return response

    credentials = {"username": "doc_editor", "password": "correct horse battery"}
    tokens = call("POST", "/api/v1/auth/token", 200, body=credentials).json()
    call("POST", "/api/v1/auth/token", 401, body={**credentials, "password": "wrong"})
    call("POST", "/api/v1/auth/token", 422, body={"username": "doc_editor"})
    refresh = {"Authorization": f"Bearer {tokens['refresh_token']}"}
    call("POST", "/api/v1/auth/refresh", 200, headers=refresh)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    post = {"title": "Documented", "body": "Text.", "category": category, "tags": [tag]}
    created_response = call("POST", "/api/v1/posts", 201, body=post, headers=auth)
    created = created_response.json()
    ids = {"post_id": created["id"]}
    comment_case = schema["/api/v1/posts/{post_id}/comments"]["POST"].Case(path_parameters=ids, body={"body": "x"})
    with pytest.raises(BaseExceptionGroup):  # the checks do bite: a post is not a comment
        comment_case.validate_response(created_response)
    call("PATCH", "/api/v1/posts/{post_id}", 200, path_parameters=ids, body={"status": "draft"}, headers=auth)
    call("PATCH", "/api/v1/posts/{post_id}", 422, path_parameters=ids, body={}, headers=auth)
    call("POST", "/api/v1/posts/{post_id}/comments", 404, path_parameters=ids, body={"body": "Hi"}, headers=auth)
    call("PATCH", "/api/v1/posts/{post_id}", 200, path_parameters=ids, body={"status": "published"}, headers=auth)
    call("POST", "/api/v1/posts/{post_id}/comments", 201, path_parameters=ids, body={"body": "Hi"}, headers=auth)
    call("POST", "/api/v1/posts", 401, body=post)
    call("DELETE", "/api/v1/posts/{post_id}", 204, path_parameters=ids, headers=auth)
    monkeypatch.setitem(limiter.limits(app).quotas, "write", Quota("write", 1, 60))
    call("DELETE", "/api/v1/posts/{post_id}", 429, path_parameters=ids, headers=auth)
    assert sorted(set(seen)) == [200, 201, 204, 401, 404, 422, 429]
