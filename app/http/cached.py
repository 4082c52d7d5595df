"""Cached pages: the one path every public GET takes (see app/http/__init__.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from flask import Response, current_app, request

from app.cache.entries import Rendered
from app.cache.keys import address
from app.errors import ApiError, problem_for
from app.exceptions import NotFound
from app.extensions import page_cache
from app.http.fast import FAST_HITS, Route
from app.http.render import rendered_absence, rendered_json, rendered_page
from app.http.respond import CACHE_OUTCOME, client_has, entry_response, not_modified, root_url
from app.pagination import Cursor, Direction, Page
from app.replicas import read_only


def cached(
    endpoint: str,
    namespaces: Sequence[str],
    params: dict[str, Any],
    family: str,
    compute: Callable[[], Rendered],
    on_primary: bool = False,
    by_url: bool = True,
) -> Response:
    """Answer a public GET from the page cache (app/cache/pages.py), computing the page only
    when it must. `family` picks the TTL (feed, post, directory, popular); `on_primary`: the
    page is never computed on a read replica (it writes what it reads). `by_url`: the page
    follows from the URL alone, so its next near hits may be answered before Flask
    (app/http/fast.py); False when it depends on more (/popular: the clock picks its snapshot)."""
    served = page_cache.serve(endpoint, namespaces, params, family, lambda: _render(compute, on_primary), on_primary)
    entry = served.entry
    environ = request.environ
    fast = current_app.extensions.get(FAST_HITS) if by_url else None
    if fast is not None:
        root_url()  # the fast path answers only hosts whose root URL the view made (memoized)
    if fast is not None and not fast.knows(environ):
        rule = request.url_rule
        fast.learn(
            environ,
            Route(rule.endpoint if rule else "none", request.path, tuple(namespaces), address(endpoint, params)),
        )
    cache_control = current_app.config["HTTP_CACHE_CONTROL"]
    if client_has(environ, entry.rendered.etag, entry.modified_at):
        environ[CACHE_OUTCOME] = "not_modified"
        return not_modified(entry, cache_control)
    environ[CACHE_OUTCOME] = served.outcome
    return entry_response(entry, cache_control, served.outcome, served.age)


def _render(compute: Callable[[], Rendered], writes: bool) -> Rendered:
    """Run the page computation, without a transaction unless it `writes` (app/replicas.py:
    read_only); an absence becomes a (briefly) cacheable 404."""
    try:
        with read_only(not writes):
            return compute()
    except NotFound as exc:
        err: ApiError = problem_for(exc)
        return rendered_absence(err)


def cached_json(
    endpoint: str, namespaces: Sequence[str], params: dict[str, Any], family: str, compute: Callable[[], Any]
) -> Response:
    """A cached JSON document: `compute` returns the payload (dicts and lists)."""
    return cached(endpoint, namespaces, params, family, lambda: rendered_json(compute()))


def cached_page(
    endpoint: str,
    namespaces: Sequence[str],
    params: dict[str, Any],
    family: str,
    compute: Callable[[], Page],
    *,
    scope: str,
    after: Cursor | None,
    growing: Direction | None,
    key_params: dict[str, Any] | None = None,
    on_primary: bool = False,
    by_url: bool = True,
) -> Response:
    """A cached keyset page in the contract's envelope, with its Link header. `key_params`: the
    parameters that name the page in the cache when they are more than the query's."""
    path = request.path
    return cached(
        endpoint,
        namespaces,
        params if key_params is None else key_params,
        family,
        lambda: rendered_page(compute(), scope, after, params, growing, path),
        on_primary,
        by_url,
    )
