"""The page `mote serve` shows at `/`, driven in a real headless Chromium (Playwright's Python
driver with the system's Chromium): typing a query fills the grid with the server's ranking,
each card showing the matched frame, its score, label and moment; a click plays the video
file from that moment; nothing is fetched from anywhere but the server.

CI installs Debian's chromium (.ci/run) and sets MOTE_BROWSER_TESTS=required, so there the
test fails when no browser is found; elsewhere, without one, it is skipped naming the install.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Chromium on a closed network: no background lookups, no sandbox as root, no GPU.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]  # fmt: skip


def browser_path() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    message = "no Chromium found: apt-get install chromium (or pip install playwright && " \
        "playwright install chromium)"  # fmt: skip
    if os.environ.get("MOTE_BROWSER_TESTS") == "required":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def page(served, tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api")
    path = browser_path()
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        tab = context.new_page()
        requests: list[str] = []
        tab.on("request", lambda request: requests.append(request.url))
        tab.requests = requests
        yield tab
        context.close()
        browser.close()


def api_hits(server, query: str, k: int) -> list[dict]:
    body = json.dumps({"query": query, "k": k}).encode()
    request = urllib.request.Request(server.url + "api/search", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())["hits"]


def test_typing_a_query_shows_the_servers_ranking_and_a_click_plays_the_moment(
    page,
    served,
    tmp_path,
):
    server = served
    page.goto(server.url)
    page.wait_for_function("document.getElementById('facts').textContent.includes('12 videos')")
    page.fill("#q", "a circle moving left")
    page.fill("#k", "6")
    page.press("#q", "Enter")
    page.wait_for_selector("#grid .hit")
    cards = page.eval_on_selector_all(
        "#grid .hit",
        "els => els.map(e => ({id: e.dataset.videoId, rank: +e.dataset.rank, "
        "moment: (e.querySelector('.moment') || {}).textContent, img: e.querySelector('img').src, "
        "loaded: e.querySelector('img').complete && e.querySelector('img').naturalWidth > 0}))",
    )
    expected = api_hits(server, "a circle moving left", 6)
    assert [c["id"] for c in cards] == [h["video_id"] for h in expected]  # the best video first
    assert [c["rank"] for c in cards] == [1, 2, 3, 4, 5, 6]
    first = expected[0]
    assert cards[0]["moment"] == f"best match at {first['time_s']:.2f} s"
    assert cards[0]["img"].endswith(f"/frames/{first['frame']}.jpg")
    page.wait_for_function(
        "[...document.querySelectorAll('#grid .hit img')].every(i => i.complete && i.naturalWidth)"
    )
    assert "6 videos for" in page.text_content("#status")
    page.screenshot(path=str(tmp_path / "grid.png"))

    page.click("#grid .hit >> nth=0")
    page.wait_for_selector("#player.open")
    source = page.eval_on_selector("#video", "v => v.src")
    assert source.endswith("/file") and first["video_id"].split("/")[-1] in source
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=20_000)
    at = page.eval_on_selector("#video", "v => v.currentTime")
    assert at == pytest.approx(first["time_s"], abs=0.05)

    page.mouse.click(5, 5)  # the backdrop closes the player
    page.wait_for_selector("#player.open", state="hidden")
    page.fill("#q", "a circle " * 200)  # past the server's 1000 characters: its error shown
    page.press("#q", "Enter")
    page.wait_for_selector("#status.error")
    assert "query longer than 1000 characters" in page.text_content("#status")
    assert page.eval_on_selector_all("#grid .hit", "els => els.length") == 0
    served = server.url.rstrip("/")
    assert all(url.startswith(served) for url in page.requests), page.requests  # no CDN
