"""The API reference (/api/v1/docs) in headless Chromium (Debian's package; Playwright drives it
and downloads no browser): the operations render in the document's tag order, a try-it call
succeeds against the serving host, and nothing is fetched from anywhere else."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from urllib.parse import urlsplit

import pytest

from tests.live.conftest import LiveServer

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
TIMEOUT_MS = 60_000  # generous: a shared 2-core machine may be busy compiling or testing


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    if not os.path.exists(CHROMIUM):
        if os.environ.get("READWIRE_REQUIRE_BROWSER"):  # make test installs it: missing there is a failure
            pytest.fail(f"{CHROMIUM} is missing: bash scripts/ensure-servers.sh --browser")
        pytest.skip("chromium is not installed (bash scripts/ensure-servers.sh --browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def test_reference_renders_and_try_it_calls_this_host(browser, make_run: LiveServer) -> None:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(make_run.url + "/api/v1/openapi.json", timeout=10) as response:
        document = json.load(response)
    operations = [
        op["operationId"] for item in document["paths"].values() for op in item.values() if "operationId" in op
    ]

    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(make_run.url + "/api/v1/docs", timeout=TIMEOUT_MS)
    page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)

    tags = [name.strip() for name in page.locator(".opblock-tag-section h3 .nostyle span").all_inner_texts()]
    assert tags == [tag["name"] for tag in document["tags"]], tags  # Feeds first, Auth later
    rendered = page.locator(".opblock").count()
    assert rendered == len(operations), (rendered, len(operations))  # one each; no OPTIONS entries
    assert page.locator(".opblock-options").count() == 0

    # Try it: GET /api/v1/feed with the recorded example (limit=2), against the page's own host.
    operation = page.locator("#operations-Feeds-feeds_global_feed")
    operation.locator(".opblock-summary").click()
    operation.locator("button.execute").click(timeout=TIMEOUT_MS)
    status = operation.locator(".live-responses-table .response .response-col_status")
    status.first.wait_for(timeout=TIMEOUT_MS)
    assert status.first.inner_text().strip() == "200"
    request_url = operation.locator(".request-url pre").inner_text().strip()
    assert request_url == f"{make_run.url}/api/v1/feed?limit=2"
    body = json.loads(
        operation.locator(".live-responses-table .response-col_description pre.microlight").first.inner_text()
    )
    assert len(body["data"]) == 2 and body["meta"]["next_cursor"]
    assert "curl -X 'GET'" in operation.locator(".curl-command").inner_text()  # the snippet to copy

    origins = {f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" for url in requested if not url.startswith("data:")}
    assert origins == {make_run.url}, origins  # no CDN, no validator, no fonts: offline
    page.close()
