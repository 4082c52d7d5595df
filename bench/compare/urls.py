"""Distinct feed URLs for a cache-miss load: every request of a run a URL no earlier request used.

    python -m bench.compare.urls http://127.0.0.1:8000 --out bench/results/miss
    wrk -t2 -c32 -d10s -s bench/results/miss.lua http://127.0.0.1:8000 -- 2

Real cursors are collected by walking `next` links over the feeds (global, the busiest
categories, tags and authors) at `--walk-limit` items per page; each page start (the first page
and every cursor) is combined with each of `--limits` into a URL. The list is deduplicated,
shuffled (seeded, so feeds and depths interleave) and written one path per line to OUT.txt;
OUT.lua is urls.lua filled in with that file: wrk's threads take disjoint slices of it and a
thread that runs out stops instead of repeating a URL (done() then says so).

Walking makes the server compute the walked pages, so they are cached afterwards: the default
limits leave out the walk limit, and a run that must miss every time empties the cache (or bumps
generations) before it starts. Any base URL works: the app, Nginx, or a peer with the same
routes and envelope (`meta.next_cursor`).
"""

from __future__ import annotations

import argparse
import json
import random
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

API = "/api/v1"
TEMPLATE = Path(__file__).with_name("urls.lua")


def get_json(base: str, path: str, timeout: float = 30.0) -> Any:
    with urllib.request.urlopen(base + path, timeout=timeout) as response:
        return json.load(response)


def feeds(base: str, scopes: int) -> list[str]:
    """The global feed plus the `scopes` busiest categories, tags and authors (authors ranked by
    how often they appear on the first pages of the global feed)."""
    paths = [f"{API}/feed"]
    categories = sorted(get_json(base, f"{API}/categories")["data"], key=lambda c: -c["post_count"])
    paths += [f"{API}/categories/{c['slug']}/feed" for c in categories[:scopes]]
    paths += [f"{API}/tags/{t['slug']}/feed" for t in get_json(base, f"{API}/tags?limit={scopes}")["data"]]
    seen = Counter(item["author"]["username"] for item in get_json(base, f"{API}/feed?limit=100")["data"])
    paths += [f"{API}/authors/{name}/feed" for name, _ in seen.most_common(scopes)]
    return paths


def walk(base: str, feed: str, walk_limit: int, max_pages: int) -> list[str | None]:
    """Page starts of one feed: None (the first page) and each `next` cursor, up to max_pages."""
    starts: list[str | None] = [None]
    cursor: str | None = None
    for _ in range(max_pages - 1):
        query = {"limit": walk_limit, **({"cursor": cursor} if cursor else {})}
        cursor = get_json(base, f"{feed}?{urllib.parse.urlencode(query)}")["meta"]["next_cursor"]
        if cursor is None:
            break
        starts.append(cursor)
    return starts


def combine(starts: dict[str, list[str | None]], limits: Sequence[int], seed: int) -> list[str]:
    """Every (feed, page start, limit) as one path, each exactly once, in a seeded random order."""
    urls = {
        f"{feed}?{urllib.parse.urlencode({'limit': limit, **({'cursor': c} if c else {})})}"
        for feed, cursors in starts.items()
        for c in cursors
        for limit in limits
    }
    ordered = sorted(urls)
    random.Random(seed).shuffle(ordered)
    return ordered


def collect(base: str, scopes: int, walk_limit: int, max_pages: int, limits: Sequence[int], seed: int) -> list[str]:
    paths = feeds(base, scopes)
    with ThreadPoolExecutor(max_workers=4) as pool:
        walked = dict(zip(paths, pool.map(lambda f: walk(base, f, walk_limit, max_pages), paths), strict=True))
    return combine(walked, limits, seed)


def write(urls: Iterable[str], out: Path) -> tuple[Path, Path]:
    """OUT.txt (one path per line) and OUT.lua (the wrk script reading it)."""
    listing, script = out.with_suffix(".txt"), out.with_suffix(".lua")
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text("".join(f"{url}\n" for url in urls))
    script.write_text(TEMPLATE.read_text().replace("{{URLS_FILE}}", str(listing.resolve())))
    return listing, script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare.urls", description=__doc__.splitlines()[0])
    parser.add_argument("base", help="e.g. http://127.0.0.1:8000")
    parser.add_argument("--out", type=Path, default=Path("bench/results/miss"), help="writes OUT.txt and OUT.lua")
    parser.add_argument("--scopes", type=int, default=4, help="categories, tags and authors walked (each)")
    parser.add_argument("--walk-limit", type=int, default=100)
    parser.add_argument("--max-pages", type=int, default=300, help="per feed")
    parser.add_argument("--limits", default="18,19,20,21,22", help="page sizes (comma-separated) for each start")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    limits = [int(n) for n in args.limits.split(",")]
    urls = collect(args.base.rstrip("/"), args.scopes, args.walk_limit, args.max_pages, limits, args.seed)
    listing, script = write(urls, args.out)
    print(f"{len(urls)} distinct URLs in {listing}; wrk script {script}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
