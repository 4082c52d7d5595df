"""Locust users for Readwire (FastHttpUser). Scenario locustfiles in loadtests/scenarios/ subclass these.

Every task iteration sends exactly one request, and every user paces its iterations on its own open-model
schedule (loadtests/pacing.py), so a scenario's target rate is (users x rate per user) and the run can
compare what it achieved with what it asked for.

- ReaderUser: Zipf-weighted first pages of every feed kind, the odd next page, post detail, comments,
  bulk gets, directory lookups;
- WalkerUser: deep walks following next cursors (archivers, infinite scroll) to depths of tens to hundreds;
- PollerUser: re-polls a few subscribed feeds with If-None-Match (304 counts as success);
- WriterUser: an editor creating, editing, unpublishing, republishing and deleting its own posts, commenting;
- CheckerUser: re-reads what writers just changed (detail, first pages, bulk gets);
- ColdReaderUser: a wide, uniform spread of keys (scopes x limits x cursors, random post ids) so reads miss.

Every body a reader parses is judged against the shared ConsistencyLedger (loadtests/consistency.py): a
violation is fired as a failed Locust request of type CHECK named after it ("consistency: stale title") and
logged to RUN_DIR/violations.jsonl.

Every process that runs users (the local runner, or each worker of a distributed run: `--processes N`) logs
every request's exact timing and cache headers to RUN_DIR/requests/<pid>.csv (loadtests/timings.py) and
writes its pacing ledger to RUN_DIR/parts/pacing-<pid>.json; the runner merges them. The ledgers live in one
process: in a distributed run, a read is judged only against the writes of writers in its own process.
`--offered-rate R` scales the per-user rates of the weighted classes so that --users users offer R req/s in
all (pacing.rate_scale): the capacity search sets it per step.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import gevent
import orjson
from locust import FastHttpUser, events, tag, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSV

from loadtests.audit import SETTLED_PREFIX
from loadtests.catalog import EDITOR_PASSWORD_ENV, EDITOR_USERNAME_ENV
from loadtests.consistency import ConsistencyLedger, FeedKey, Violation, feed_key, order_violation
from loadtests.pacing import Pacer, PacingLedger, part_path, rate_scale
from loadtests.slo import FINAL_PREFIX
from loadtests.timings import LOG_DIR, RequestLog
from loadtests.zipf import ZipfPicker

log = logging.getLogger("readwire.loadtests")

API = "/api/v1"
DEFAULT_LIMIT = 20
EVIDENCE_HEADERS = ("Age", "Date", "Last-Modified", "ETag", "X-Cache-Status", "X-Cache", "X-Request-Id")
COLD_LIMITS = (5, 10, 15, 20, 25, 30, 40, 50, 75, 100)  # x scopes x cursors: the cold key space
# Answers to a keyed POST that leave its outcome open: no response, 409 (the key's first request still in flight),
# 502 outcome_unknown, 503 (Retry-After), 504. Retried under the same key, at most this long apart.
KEYED_RETRY_STATUSES = frozenset({0, 409, 502, 503, 504})
KEYED_MAX_BACKOFF_S = 2.0
SCOPE_WEIGHTS = {"all": 30, "category": 30, "tag": 20, "author": 10, "popular": 10}
_VIOLATION_TEXT = {  # one message per kind, so Locust's failure table groups them; details go to violations.jsonl
    "consistency: stale title": "an older title than the last edit acknowledged before the read (+bound)",
    "consistency: deleted post visible": "a post served after its delete was acknowledged (+bound)",
    "consistency: unpublished post visible": "a post served after its unpublish was acknowledged (+bound)",
    "consistency: visible post missing": "a post left out after its create/republish was acknowledged (+bound)",
    "consistency: feed order": "a feed walk went back in (published_at, id) order or repeated an item",
}


# --- options ---------------------------------------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _add_options(parser: Any) -> None:
    add = parser.add_argument
    add("--reader-rate", type=float, default=1.0, help="Requests/s per ReaderUser.")
    add("--walker-rate", type=float, default=2.0, help="Requests/s per WalkerUser.")
    add("--poller-rate", type=float, default=0.5, help="Polls/s per PollerUser.")
    add("--writer-rate", type=float, default=0.5, help="Writes/s per WriterUser.")
    add("--checker-rate", type=float, default=2.0, help="Requests/s per CheckerUser.")
    add("--cold-rate", type=float, default=1.0, help="Requests/s per ColdReaderUser.")
    add("--consistency-bound", type=float, default=0.0, help="Seconds a read may lag an acknowledged write.")
    add("--run-dir", default="", help="Where pacing.json and violations.jsonl go (the runner's report folder).")
    add("--discover-pages", type=int, default=10, help="Global feed pages of 100 read at start to find authors.")
    add("--spike-baseline", type=int, default=20, help="SpikeShape: users before and after the spike.")
    add("--spike-peak", type=int, default=160, help="SpikeShape: users during the spike.")
    add(
        "--offered-rate",
        type=float,
        default=0.0,
        help="Total requests/s for --users users: scales the weighted classes' per-user rates (0: as given).",
    )


def option(env: Environment, name: str, default: Any) -> Any:
    return getattr(env.parsed_options, name, default) if env.parsed_options is not None else default


def tag_enabled(env: Environment, name: str) -> bool:
    """Whether tasks tagged `name` run under the --tags / --exclude-tags of this run."""
    include = option(env, "tags", None)
    exclude = option(env, "exclude_tags", None)
    return (not include or name in include) and not (exclude and name in exclude)


# --- shared state ----------------------------------------------------------------------------------------------


@dataclass
class Catalog:
    """What the run reads from the target at start: scopes ranked most popular first, and some posts."""

    categories: list[str]
    tags: list[str]
    authors: list[str]  # by how often they appear in the newest posts
    posts: list[int]  # by comment count
    max_post_id: int

    def __post_init__(self) -> None:
        for name in ("categories", "tags", "authors", "posts"):
            if not getattr(self, name):
                raise RuntimeError(f"discovery found no {name} on the target: is the database seeded?")
        self.category_picker = ZipfPicker(self.categories)
        self.tag_picker = ZipfPicker(self.tags)
        self.author_picker = ZipfPicker(self.authors)
        self.post_picker = ZipfPicker(self.posts)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=15) as response:  # gevent-patched: cooperative
        return json.loads(response.read())


def discover(host: str, pages: int) -> Catalog:
    """Categories and tags by post_count, authors and posts from the newest `pages` x 100 posts."""
    base = host.rstrip("/") + API
    categories = sorted(_get_json(f"{base}/categories")["data"], key=lambda c: -c["post_count"])
    tags = sorted(_get_json(f"{base}/tags?limit=500")["data"], key=lambda t: -t["post_count"])
    authors: Counter[str] = Counter()
    comments: dict[int, int] = {}
    url: str | None = f"{base}/feed?limit=100"
    for _ in range(pages):
        if url is None:
            break
        body = _get_json(url)
        for item in body["data"]:
            authors[item["author"]["username"]] += 1
            comments[item["id"]] = item["comment_count"]
        cursor = body["meta"]["next_cursor"]
        url = f"{base}/feed?limit=100&cursor={cursor}" if cursor else None
    return Catalog(
        categories=[c["slug"] for c in categories if c["post_count"]],
        tags=[t["slug"] for t in tags if t["post_count"]],
        authors=[name for name, _ in authors.most_common()],
        posts=sorted(comments, key=lambda pid: -comments[pid]),
        max_post_id=max(comments, default=0),
    )


class Shared:
    """Process-wide state: the catalog, the consistency and pacing ledgers, the report folder, the request log."""

    catalog: Catalog | None = None
    ledger = ConsistencyLedger()
    pacing = PacingLedger()
    run_dir: Path | None = None
    violations = 0
    request_log: RequestLog | None = None
    rate_scale = 1.0  # on the weighted classes' per-user rates (--offered-rate)


def is_master(environment: Environment) -> bool:
    """The master of a distributed run: it runs no users (its workers do, and report to it)."""
    return isinstance(environment.runner, MasterRunner)


def offered_scale(environment: Environment) -> float:
    offered = float(option(environment, "offered_rate", 0.0) or 0.0)
    if offered <= 0:
        return 1.0
    classes = [
        (int(cls.weight), int(cls.fixed_count), float(option(environment, cls.rate_option, cls.rate_default)))
        for cls in environment.user_classes
        if issubclass(cls, ApiUser)
    ]
    return rate_scale(offered, int(option(environment, "num_users", 1) or 1), classes)


@events.test_start.add_listener
def _on_test_start(environment: Environment, **_: Any) -> None:
    Shared.ledger = ConsistencyLedger(float(option(environment, "consistency_bound", 0.0)))
    run_dir = option(environment, "run_dir", "")
    Shared.run_dir = Path(run_dir) if run_dir else None
    if is_master(environment):
        return
    Shared.rate_scale = offered_scale(environment)
    if Shared.run_dir is not None and Shared.request_log is None:
        Shared.request_log = RequestLog(Shared.run_dir / LOG_DIR / f"{os.getpid()}.csv")
    if Shared.catalog is None:
        if not environment.host:
            raise RuntimeError("no target: pass --host")
        Shared.catalog = discover(environment.host, int(option(environment, "discover_pages", 10)))
        c = Shared.catalog
        log.warning(
            "discovered %d categories, %d tags, %d authors, %d posts (max id %d); consistency bound %.2f s",
            len(c.categories), len(c.tags), len(c.authors), len(c.posts), c.max_post_id, Shared.ledger.bound,
        )  # fmt: skip


@events.request.add_listener
def _log_request(
    request_type: str,
    name: str,
    response_time: float,
    response: Any = None,
    exception: Any = None,
    start_time: float | None = None,
    **_: Any,
) -> None:
    """Every request's exact timing and cache headers (Locust's own statistics round them)."""
    log = Shared.request_log
    if log is None:
        return
    headers = getattr(response, "headers", None) if response is not None else None
    status = int(getattr(response, "status_code", 0) or 0) if response is not None else 0
    edge = (headers.get("X-Cache-Status") or "") if headers else ""
    app = (headers.get("X-App-Cache") or "") if headers else ""
    started = start_time if start_time is not None else time.time() - response_time / 1000
    log.record(started, request_type, name, status, exception is None, response_time or 0.0, edge, app)


def _write_pacing(environment: Environment, **_: Any) -> None:
    """This process's ledger and request log, once its users have stopped (not the master's: it has none)."""
    if Shared.run_dir is None or is_master(environment):
        return
    Shared.pacing.write(part_path(Shared.run_dir, os.getpid()))
    if Shared.ledger.posts:  # writers ran here: what the database must hold at the end (loadtests/audit.py)
        settled = part_path(Shared.run_dir, os.getpid()).with_name(f"{SETTLED_PREFIX}{os.getpid()}.json")
        settled.write_bytes(orjson.dumps(Shared.ledger.settled()))
    if Shared.request_log is not None:
        Shared.request_log.flush()


def _close_request_log(**_: Any) -> None:
    if Shared.request_log is not None:
        Shared.request_log.close()


def _write_final_stats(environment: Environment, **_: Any) -> None:
    """Locust rewrites its CSVs once a second and not at exit, so they miss the last second: these are the same
    tables (stats, failures, exceptions) written once every user has stopped; the SLO check reads them. Only
    where the whole run's statistics are: the local runner, or the master of a distributed run."""
    if Shared.run_dir is None or isinstance(environment.runner, WorkerRunner):
        return
    table = StatsCSV(environment, PERCENTILES_TO_REPORT)
    for name, write in (
        ("stats", table.requests_csv),
        ("failures", table.failures_csv),
        ("exceptions", table.exceptions_csv),
    ):
        with (Shared.run_dir / f"{FINAL_PREFIX}_{name}.csv").open("w", newline="") as f:
            write(csv.writer(f))


events.test_stop.add_listener(_write_pacing)
events.quitting.add_listener(_write_pacing)
events.quitting.add_listener(_write_final_stats)
events.quitting.add_listener(_close_request_log)


class ConsistencyViolation(Exception):
    pass


def evidence(headers: Any) -> dict[str, str]:
    """The response headers that say how fresh an answer was (for violations.jsonl)."""
    return {name: headers[name] for name in EVIDENCE_HEADERS if headers and headers.get(name) is not None}


def report_violations(
    env: Environment, violations: Sequence[Violation], source: str, headers: dict[str, str] | None = None
) -> None:
    """Each violation as a failed CHECK request named after it, and a line in RUN_DIR/violations.jsonl with the
    request that showed it (`source`) and that response's freshness headers."""
    for violation in violations:
        Shared.violations += 1
        message = _VIOLATION_TEXT.get(violation.name, violation.name)
        env.events.request.fire(
            request_type="CHECK",
            name=violation.name,
            response_time=0,
            response_length=0,
            exception=ConsistencyViolation(message),
            context={},
        )
        log.error("%s: %s (%.3f s past the bound; %s)", violation.name, violation.detail, violation.late_by, source)
        if Shared.run_dir is not None:
            record = {"at": time.time(), **violation.as_record(), "bound_s": Shared.ledger.bound, "source": source}
            record["headers"] = headers or {}
            with (Shared.run_dir / "violations.jsonl").open("a") as f:
                f.write(json.dumps(record) + "\n")


# --- scopes and pages ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    kind: str  # all, category, tag, author, popular
    key: str | None = None

    @property
    def path(self) -> str:
        if self.kind == "all":
            return f"{API}/feed"
        if self.kind == "popular":
            return f"{API}/popular"
        plural = {"category": "categories", "tag": "tags", "author": "authors"}[self.kind]
        return f"{API}/{plural}/{quote(self.key or '', safe='')}/feed"

    @property
    def label(self) -> str:
        """The request name in Locust's statistics (one row per kind, not per slug)."""
        return {
            "all": "/feed",
            "popular": "/popular",
            "category": "/categories/[slug]/feed",
            "tag": "/tags/[slug]/feed",
            "author": "/authors/[username]/feed",
        }[self.kind]

    @property
    def time_ordered(self) -> bool:
        return self.kind != "popular"  # popular is ranked by hotness, not (published_at, id)


@dataclass(frozen=True)
class Fetched:
    status: int  # 0: no response
    body: Any  # the parsed JSON of a 200, else None
    started: float  # monotonic, before sending
    etag: str | None
    headers: dict[str, str]  # the freshness evidence (see EVIDENCE_HEADERS)


@dataclass(frozen=True)
class Page:
    scope: Scope
    limit: int
    items: list[dict[str, Any]]
    next_cursor: str | None
    depth: int  # 0 for a first page
    last_key: FeedKey | None


def depth_suffix(depth: int) -> str:
    return "" if depth == 0 else " [next]" if depth <= 10 else " [deep]"


# --- users -----------------------------------------------------------------------------------------------------


class ApiUser(FastHttpUser):
    """Paced, one request per iteration; shared helpers for fetching and judging."""

    abstract = True
    network_timeout = 10.0
    connection_timeout = 5.0
    rate_option = "reader_rate"
    rate_default = 1.0

    def on_start(self) -> None:
        self.rng = random.Random()
        rate = float(option(self.environment, self.rate_option, self.rate_default))
        if not self.fixed_count:
            rate *= Shared.rate_scale
        self.pacer = Shared.pacing.add(type(self).__name__, Pacer(rate, self.rng))
        self.scope_kinds = [k for k in SCOPE_WEIGHTS if k != "popular" or tag_enabled(self.environment, "popular")]
        gevent.sleep(self.pacer.begin())

    def on_stop(self) -> None:
        if hasattr(self, "pacer"):
            self.pacer.stop()

    def wait_time(self) -> float:
        return self.pacer.wait()

    @property
    def catalog(self) -> Catalog:
        if Shared.catalog is None:
            raise RuntimeError("the catalog was not discovered (test_start did not run?)")
        return Shared.catalog

    def fetch(
        self, path: str, name: str, *, ok: Sequence[int] = (200,), headers: dict[str, str] | None = None
    ) -> Fetched:
        """GET `path`, parsing a 200's JSON body. A status outside `ok` (or an unparsable 200) is a failure
        named after the status; `started` is the monotonic time before sending, for the ledger's judgements."""
        started = time.monotonic()
        with self.client.get(path, name=name, headers=headers, catch_response=True) as resp:
            status = resp.status_code
            if status not in ok:
                resp.failure(f"HTTP {status}" if status else f"no response: {resp.error!r}")
                return Fetched(status, None, started, None, {})
            body = None
            if status == 200:
                try:
                    body = orjson.loads(resp.content)  # ~4x json's speed: generator CPU is the budget here
                except (ValueError, TypeError):
                    resp.failure("200 with a body that is not JSON")
                    return Fetched(status, None, started, None, {})
            resp.success()
            return Fetched(status, body, started, resp.headers.get("ETag"), evidence(resp.headers))

    def judge(self, violations: Sequence[Violation], source: str, headers: dict[str, str] | None = None) -> None:
        if violations:
            report_violations(self.environment, violations, source, headers)

    def pick_scope(self, kinds: Sequence[str] | None = None) -> Scope:
        """A feed scope: kind by SCOPE_WEIGHTS, then the category/tag/author Zipf-weighted by popularity."""
        kinds = kinds or self.scope_kinds
        kind = self.rng.choices(kinds, weights=[SCOPE_WEIGHTS[k] for k in kinds])[0]
        return self.scope_of(kind)

    def scope_of(self, kind: str) -> Scope:
        c, rng = self.catalog, self.rng
        pickers = {"category": c.category_picker, "tag": c.tag_picker, "author": c.author_picker}
        return Scope(kind, pickers[kind].pick(rng)) if kind in pickers else Scope(kind)

    def read_feed(
        self,
        scope: Scope,
        *,
        limit: int = DEFAULT_LIMIT,
        cursor: str | None = None,
        depth: int = 0,
        previous: FeedKey | None = None,
        prefix: str = "",
    ) -> Page | None:
        """One feed page, judged: items against the ledger, first pages for missing posts, walks for order."""
        query: dict[str, Any] = {} if limit == DEFAULT_LIMIT else {"limit": limit}
        if cursor:
            query["cursor"] = cursor
        path = scope.path + (f"?{urlencode(query)}" if query else "")
        got = self.fetch(path, prefix + scope.label + depth_suffix(depth))
        body, started = got.body, got.started
        if body is None:
            return None
        items: list[dict[str, Any]] = body["data"]
        violations = []
        if scope.time_ordered and (bad_order := order_violation(previous, items)) is not None:
            violations.append(bad_order)
        if depth == 0 and scope.time_ordered:
            violations += Shared.ledger.judge_first_page(scope.kind, scope.key, items, limit, started)
        else:
            violations += Shared.ledger.judge_items(items, started)
        self.judge(violations, path, got.headers)
        last_key = feed_key(items[-1]) if items and scope.time_ordered else previous
        return Page(scope, limit, items, body["meta"].get("next_cursor"), depth, last_key)

    def read_post(self, post_id: int, name: str = "/posts/[id]", *, missing_ok: bool = False) -> dict[str, Any] | None:
        """GET /posts/{id}, judged. A 404 passes when the ledger allows it (or `missing_ok`), else it fails."""
        started, path = time.monotonic(), f"{API}/posts/{post_id}"
        with self.client.get(path, name=name, catch_response=True) as resp:
            if resp.status_code == 200:
                body: dict[str, Any] = orjson.loads(resp.content)
                resp.success()
                if (violation := Shared.ledger.judge_seen(post_id, body["title"], started)) is not None:
                    self.judge([violation], path, evidence(resp.headers))
                return body
            if resp.status_code == 404 and (missing_ok or post_id in Shared.ledger.posts):
                resp.success()
                if (violation := Shared.ledger.judge_absent(post_id, started)) is not None:
                    self.judge([violation], path, evidence(resp.headers))
                return None
            resp.failure(f"HTTP {resp.status_code}" if resp.status_code else f"no response: {resp.error!r}")
            return None

    def read_bulk(self, ids: Sequence[int], name: str = "/posts?ids=") -> None:
        path = f"{API}/posts?ids={','.join(map(str, ids))}"
        got = self.fetch(path, name)
        if got.body is None:
            return
        items, started = got.body["data"], got.started
        violations = Shared.ledger.judge_items(items, started)
        present = {item["id"] for item in items}
        for post_id in ids:
            if post_id not in present and (missing := Shared.ledger.judge_absent(post_id, started)) is not None:
                violations.append(missing)
        self.judge(violations, path, got.headers)


class ReaderUser(ApiUser):
    """Browses: mostly first pages (Zipf over scopes), now and then the next page, then a post and its comments."""

    abstract = True
    rate_option, rate_default = "reader_rate", 1.0
    max_scroll = 4  # next pages a browsing reader follows at most

    def on_start(self) -> None:
        super().on_start()
        self.page: Page | None = None

    def _first_page(self, kind: str) -> None:
        self.page = self.read_feed(self.scope_of(kind)) or self.page

    @tag("feed", "global")
    @task(10)
    def global_feed(self) -> None:
        self._first_page("all")

    @tag("feed", "category")
    @task(10)
    def category_feed(self) -> None:
        self._first_page("category")

    @tag("feed", "tag")
    @task(8)
    def tag_feed(self) -> None:
        self._first_page("tag")

    @tag("feed", "author")
    @task(5)
    def author_feed(self) -> None:
        self._first_page("author")

    @tag("feed", "popular")
    @task(5)
    def popular(self) -> None:
        self._first_page("popular")

    @tag("walk")
    @task(6)
    def next_page(self) -> None:
        page = self.page
        if page is None or not page.next_cursor or page.depth >= self.max_scroll:
            self._first_page("all")
            return
        self.page = self.read_feed(
            page.scope, limit=page.limit, cursor=page.next_cursor, depth=page.depth + 1, previous=page.last_key
        )

    def _post_from_page(self, with_comments: bool = False) -> int:
        """A post the reader just saw (the top of the page more likely), else a popular one."""
        items = [i for i in (self.page.items if self.page else []) if not with_comments or i["comment_count"]]
        if items:
            return int(ZipfPicker(items).pick(self.rng)["id"])
        return self.catalog.post_picker.pick(self.rng)

    @tag("detail")
    @task(12)
    def post_detail(self) -> None:
        self.read_post(self._post_from_page())

    @tag("comments")
    @task(5)
    def comments(self) -> None:
        post_id = self._post_from_page(with_comments=True)
        self.fetch(f"{API}/posts/{post_id}/comments", "/posts/[id]/comments", ok=(200, 404))

    @tag("bulk")
    @task(2)
    def bulk(self) -> None:
        self.read_bulk(self.catalog.post_picker.sample(self.rng, self.rng.randint(2, 20)))

    @tag("directory")
    @task(2)
    def directory(self) -> None:
        roll = self.rng.random()
        if roll < 0.4:
            self.fetch(f"{API}/categories", "/categories")
        elif roll < 0.7:
            self.fetch(f"{API}/tags", "/tags")
        else:
            username = self.catalog.author_picker.pick(self.rng)
            self.fetch(f"{API}/authors/{quote(username, safe='')}", "/authors/[username]")


class WalkerUser(ApiUser):
    """Walks one feed deep, page after page on its next cursor, then starts another walk."""

    abstract = True
    rate_option, rate_default = "walker_rate", 2.0

    def on_start(self) -> None:
        super().on_start()
        self.page: Page | None = None
        self.max_depth = 0

    @tag("walk", "deep")
    @task
    def walk(self) -> None:
        page = self.page
        if page is None or not page.next_cursor or page.depth >= self.max_depth:
            self.max_depth = min(300, 5 + int(self.rng.expovariate(1 / 40)))  # mean ~45 pages, some 100+
            limit = self.rng.choice((20, 20, 50, 100))
            self.page = self.read_feed(self.pick_scope(), limit=limit)
            return
        self.page = self.read_feed(
            page.scope, limit=page.limit, cursor=page.next_cursor, depth=page.depth + 1, previous=page.last_key
        )


class PollerUser(ApiUser):
    """Re-polls 1-3 subscribed first pages with If-None-Match; a 304 is the expected, successful answer."""

    abstract = True
    rate_option, rate_default = "poller_rate", 0.5

    def on_start(self) -> None:
        super().on_start()
        self.subscriptions = [self.pick_scope() for _ in range(self.rng.randint(1, 3))]
        self.etags: dict[Scope, str] = {}
        self.turn = 0

    @tag("poll")
    @task
    def poll(self) -> None:
        scope = self.subscriptions[self.turn % len(self.subscriptions)]
        self.turn += 1
        etag = self.etags.get(scope)
        headers = {"If-None-Match": etag} if etag else None
        got = self.fetch(scope.path, f"poll {scope.label}", ok=(200, 304), headers=headers)
        if got.status == 304:
            Shared.pacing.count("poll_304")
            return
        if got.body is None:
            return
        Shared.pacing.count("poll_200")
        if got.etag:
            self.etags[scope] = got.etag
        if scope.time_ordered:
            items = got.body["data"]
            violations = Shared.ledger.judge_first_page(scope.kind, scope.key, items, DEFAULT_LIMIT, got.started)
            self.judge(violations, f"{scope.path} (poll)", got.headers)


class WriterUser(ApiUser):
    """An editor: creates posts, edits their titles, unpublishes/republishes and deletes them, comments.

    Each post is written by one writer, one request at a time, and every write is logged in the shared
    ledger (sent, acknowledged) for readers to judge. Credentials: LOADTEST_EDITOR_USERNAME/_PASSWORD.
    """

    abstract = True
    rate_option, rate_default = "writer_rate", 0.5
    max_live_posts = 8
    idempotency_keys = False  # creates and comments carry an Idempotency-Key and are retried under it
    keyed_attempts = 10
    keyed_budget_s = 30.0

    def on_start(self) -> None:
        super().on_start()
        self.username = os.environ.get(EDITOR_USERNAME_ENV, "")
        self.password = os.environ.get(EDITOR_PASSWORD_ENV, "")
        self.token = ""
        self.serial = 0
        self.run_tag = f"{int(time.time()) % 100000:05d}{self.rng.randrange(1000):03d}"
        self.live: dict[int, dict[str, Any]] = {}  # own posts not deleted: id -> {"title", "visible", "rev"}
        self.sign_in()

    def sign_in(self) -> None:
        if not self.username or not self.password:
            self.environment.events.request.fire(
                request_type="SETUP",
                name="writer: editor credentials",
                response_time=0,
                response_length=0,
                exception=RuntimeError(f"set {EDITOR_USERNAME_ENV} and {EDITOR_PASSWORD_ENV}"),
                context={},
            )
            raise StopUser()
        creds = {"username": self.username, "password": self.password}
        with self.client.post(f"{API}/auth/token", json=creds, name="/auth/token", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                raise StopUser()
            self.token = resp.json()["access_token"]

    def _send(
        self, method: str, path: str, name: str, expect: int, body: Any = None, *, keyed: bool = False
    ) -> tuple[bool, Any, float]:
        """(acknowledged, parsed body, monotonic time of the acknowledgement). `keyed` (creates and comments):
        with `idempotency_keys` on, sent with an Idempotency-Key and retried under it (_send_keyed)."""
        if keyed and self.idempotency_keys:
            return self._send_keyed(path, name, expect, body)
        headers = {"Authorization": f"Bearer {self.token}"}
        with self.client.request(method, path, name=name, json=body, headers=headers, catch_response=True) as resp:
            acked_at = time.monotonic()
            if resp.status_code == 401:  # the 15-minute access token expired: sign in again next time
                self.token = ""
            if resp.status_code != expect:
                resp.failure(f"HTTP {resp.status_code}" if resp.status_code else f"no response: {resp.error!r}")
                return False, None, acked_at
            resp.success()
            return True, (resp.json() if resp.content else None), acked_at

    def _send_keyed(self, path: str, name: str, expect: int, body: Any) -> tuple[bool, Any, float]:
        """POST with an Idempotency-Key (README: "Idempotency keys"); an answer that does not say whether the write
        happened (no response, 502/503/504, 409 key in use: the first attempt still in flight) is retried with the
        same key and body, up to `keyed_attempts` times within `keyed_budget_s`: the server writes it at most once
        and replays the first outcome. A 401 (expired token) signs in again and retries under the same key (keys
        are per author). Each unclear answer stays a failure in the statistics; retries are named "<name> (retry)"."""
        key = f'"{uuid.uuid4()}"'
        deadline = time.monotonic() + self.keyed_budget_s
        for attempt in range(self.keyed_attempts):
            self._ensure_token()
            headers = {"Authorization": f"Bearer {self.token}", "Idempotency-Key": key}
            label = name if attempt == 0 else f"{name} (retry)"
            with self.client.request("POST", path, name=label, json=body, headers=headers, catch_response=True) as resp:
                acked_at = time.monotonic()
                status = resp.status_code
                if status == expect:
                    resp.success()
                    if resp.headers.get("Idempotent-Replayed") == "true":
                        Shared.pacing.count("idempotent_replayed")
                    return True, (resp.json() if resp.content else None), acked_at
                resp.failure(f"HTTP {status}" if status else f"no response: {resp.error!r}")
                if status == 401:
                    self.token = ""
                elif status not in KEYED_RETRY_STATUSES:
                    return False, None, acked_at  # a clear refusal: nothing was written
                retry_after = resp.headers.get("Retry-After") if status else None
            if time.monotonic() >= deadline:
                break
            Shared.pacing.count("idempotent_retry")
            wait = float(retry_after) if retry_after and retry_after.isdigit() else 0.5
            gevent.sleep(min(wait, KEYED_MAX_BACKOFF_S) * (0.5 + self.rng.random()))
        Shared.pacing.count("idempotent_gave_up")
        return False, None, time.monotonic()

    def _title(self, serial: int, rev: int) -> str:
        return f"Load test {self.run_tag} post {serial} rev {rev}"

    def _ensure_token(self) -> None:
        if not self.token:
            self.sign_in()

    def _pick_own(self, visible: bool | None = None) -> int | None:
        ids = [pid for pid, p in self.live.items() if visible is None or p["visible"] == visible]
        return self.rng.choice(ids) if ids else None

    @tag("write", "create")
    @task(3)
    def create(self) -> None:
        self._ensure_token()
        if len(self.live) >= self.max_live_posts:
            self.delete()
            return
        self.serial += 1
        title = self._title(self.serial, 0)
        c = self.catalog
        body = {
            "title": title,
            "summary": "Written by the Readwire load test.",
            "body": f"Load test post {self.serial}, written at {time.time():.3f}.",
            "category": c.category_picker.pick(self.rng),
            "tags": c.tag_picker.sample(self.rng, self.rng.randint(0, 3)),
        }
        sent_at = time.monotonic()
        ok, post, acked_at = self._send("POST", f"{API}/posts", "/posts", 201, body, keyed=True)
        if not ok:
            return
        Shared.ledger.created(
            post["id"],
            title=post["title"],
            published_at=post["published_at"],
            category=post["category"]["slug"],
            tags=[t["slug"] for t in post["tags"]],
            author=post["author"]["username"],
            sent_at=sent_at,
            acked_at=acked_at,
        )
        self.live[post["id"]] = {"title": title, "visible": True, "rev": 0, "serial": self.serial}

    def _patch(self, post_id: int, reason: str, changes: dict[str, Any], visible: bool | None = None) -> None:
        name = "/posts/[id] (title)" if "title" in changes else "/posts/[id] (status)"
        version = Shared.ledger.begin(post_id, reason, time.monotonic(), title=changes.get("title"), visible=visible)
        ok, post, acked_at = self._send("PATCH", f"{API}/posts/{post_id}", name, 200, changes)
        if not ok:
            Shared.ledger.abandon(post_id)
            self.live.pop(post_id, None)
            return
        Shared.ledger.ack(version, acked_at)
        own = self.live[post_id]
        own["title"] = post["title"]
        if visible is not None:
            own["visible"] = visible

    @tag("write", "edit")
    @task(6)
    def edit_title(self) -> None:
        post_id = self._pick_own()
        if post_id is None:
            self.create()
            return
        self._ensure_token()
        own = self.live[post_id]
        own["rev"] += 1
        self._patch(post_id, "edit", {"title": self._title(own["serial"], own["rev"])})

    @tag("write", "unpublish")
    @task(1)
    def toggle_published(self) -> None:
        post_id = self._pick_own()
        if post_id is None:
            self.create()
            return
        self._ensure_token()
        if self.live[post_id]["visible"]:
            self._patch(post_id, "unpublish", {"status": "draft"}, visible=False)
        else:
            self._patch(post_id, "republish", {"status": "published"}, visible=True)

    @tag("write", "delete")
    @task(1)
    def delete(self) -> None:
        post_id = self._pick_own()
        if post_id is None:
            self.create()
            return
        self._ensure_token()
        version = Shared.ledger.begin(post_id, "delete", time.monotonic(), visible=False)
        ok, _, acked_at = self._send("DELETE", f"{API}/posts/{post_id}", "/posts/[id]", 204)
        self.live.pop(post_id, None)
        if not ok:
            Shared.ledger.abandon(post_id)
            return
        Shared.ledger.ack(version, acked_at)

    @tag("write", "comment")
    @task(3)
    def comment(self) -> None:
        self._ensure_token()
        post_id = self._pick_own(visible=True) or self.catalog.post_picker.pick(self.rng)
        body = {"body": f"Load test comment at {time.time():.3f}."}
        self._send("POST", f"{API}/posts/{post_id}/comments", "/posts/[id]/comments", 201, body, keyed=True)


class CheckerUser(ApiUser):
    """Reads back what writers just changed: the post itself, the first pages it belongs on, bulk gets."""

    abstract = True
    rate_option, rate_default = "checker_rate", 2.0

    def _recent(self) -> list[int]:
        return Shared.ledger.recent(20)

    @tag("consistency")
    @task(4)
    def written_post(self) -> None:
        recent = self._recent()
        if not recent:
            self.read_feed(Scope("all"), prefix="check ")
            return
        self.read_post(ZipfPicker(recent).pick(self.rng), "check /posts/[id]")

    @tag("consistency")
    @task(2)
    def global_first_page(self) -> None:
        self.read_feed(Scope("all"), prefix="check ")

    @tag("consistency")
    @task(2)
    def written_category(self) -> None:
        recent = self._recent()
        if not recent:
            self.read_feed(Scope("all"), prefix="check ")
            return
        post = Shared.ledger.posts[self.rng.choice(recent)]
        self.read_feed(Scope("category", post.category), prefix="check ")

    @tag("consistency")
    @task(1)
    def written_bulk(self) -> None:
        recent = self._recent()
        if not recent:
            self.read_feed(Scope("all"), prefix="check ")
            return
        self.read_bulk(recent, "check /posts?ids=")


class ColdReaderUser(ApiUser):
    """Spreads reads uniformly over a large key space (scopes x limits x cursors, random post ids) so most miss."""

    abstract = True
    rate_option, rate_default = "cold_rate", 1.0

    def on_start(self) -> None:
        super().on_start()
        self.page: Page | None = None

    def _uniform_scope(self) -> Scope:
        c, rng = self.catalog, self.rng
        kind = rng.choice(("category", "tag", "author", "author"))
        key = rng.choice({"category": c.categories, "tag": c.tags, "author": c.authors}[kind])
        return Scope(kind, key)

    @tag("cold", "feed")
    @task(3)
    def first_page(self) -> None:
        self.page = self.read_feed(self._uniform_scope(), limit=self.rng.choice(COLD_LIMITS), prefix="cold ")

    @tag("cold", "walk")
    @task(3)
    def next_page(self) -> None:
        page = self.page
        if page is None or not page.next_cursor or page.depth >= 20:
            self.first_page()
            return
        self.page = self.read_feed(
            page.scope,
            limit=page.limit,
            cursor=page.next_cursor,
            depth=page.depth + 1,
            previous=page.last_key,
            prefix="cold ",
        )

    def _random_id(self) -> int:
        return self.rng.randint(1, self.catalog.max_post_id)

    @tag("cold", "detail")
    @task(3)
    def random_post(self) -> None:
        self.read_post(self._random_id(), "cold /posts/[id]", missing_ok=True)  # drafts and deleted: 404

    @tag("cold", "comments")
    @task(1)
    def random_comments(self) -> None:
        self.fetch(f"{API}/posts/{self._random_id()}/comments", "cold /posts/[id]/comments", ok=(200, 404))

    @tag("cold", "bulk")
    @task(1)
    def random_bulk(self) -> None:
        self.read_bulk([self._random_id() for _ in range(self.rng.randint(5, 30))], "cold /posts?ids=")
