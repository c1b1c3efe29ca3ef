"""The demo page in a real browser: Playwright drives Debian's headless chromium against a live server.

Skips (with the reason) when the `playwright` package or a chromium binary is missing. Set
GEOREASON_CHROMIUM to use another binary, GEOREASON_SCREENSHOT=path to keep the screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from georeason.serve import ServeSettings, create_app
from tests._serve_helpers import HeldReasoner
from tests._serve_helpers import live_server as serve_in_thread  # the fixture below is live_server

CHROMIUM = os.environ.get("GEOREASON_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]


@pytest.fixture()
def live_server(tiny_model_dir):
    """The app on a free loopback port (uvicorn in a background thread), and its held reasoner."""
    from georeason.reasoner import GeoReasoner

    held = HeldReasoner(GeoReasoner.from_pretrained(tiny_model_dir))
    held.release.set()
    with serve_in_thread(create_app(held, ServeSettings())) as url:
        yield url, held


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@pytest.fixture()
def browser_page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no chromium browser at {CHROMIUM} (apt-get install chromium, or set GEOREASON_CHROMIUM)")
    with sync_api.sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=ARGS,
                viewport={"width": 1366, "height": 768}, timeout=90_000)
        except Exception as error:  # noqa: BLE001 - an unusable browser is a missing browser
            pytest.skip(f"chromium at {CHROMIUM} does not start: {str(error).splitlines()[0]}")
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page, errors
        context.close()


def test_page_segments_a_sample_and_shows_overlay_answer_and_downloads(browser_page, live_server, tmp_path):
    url, held = live_server
    page, errors = browser_page
    page.goto(url + "/")
    expect(page.locator("#model-info")).to_contain_text("Model: tiny")
    page.locator("button.sample", has_text="Lakes").click()
    expect(page.locator("#question")).to_have_value(re.compile(r"\?$"))
    assert "Sample: Lakes" in page.text_content("#file-label")

    held.release.clear()  # hold the model so the progress indication can be seen
    page.click("#run")
    expect(page.locator("#progress-text")).to_contain_text("Running the model")
    assert page.is_disabled("#run")
    held.release.set()

    page.wait_for_selector("#result[data-ready='1']", timeout=60_000)
    assert page.is_hidden("#progress") and page.is_hidden("#error")
    drawn = page.evaluate("""() => {
        const base = document.getElementById('base'), canvas = document.getElementById('overlay');
        const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let opaque = 0;
        for (let i = 3; i < data.length; i += 4) opaque += data[i] > 0;
        const a = base.getBoundingClientRect(), b = canvas.getBoundingClientRect();
        return {natural: [base.naturalWidth, base.naturalHeight], canvas: [canvas.width, canvas.height], opaque,
                same_box: Math.abs(a.width - b.width) < 1 && Math.abs(a.height - b.height) < 1, shown: a.width};
    }""")
    assert drawn["natural"] == [320, 256] and drawn["canvas"] == [320, 256] and drawn["same_box"]
    assert drawn["shown"] >= 480  # small images are enlarged to the panel
    target = page.text_content("#target-text")
    assert ("mask is empty" in target) == (drawn["opaque"] == 0)
    assert page.text_content("#answer-text").strip() != ""
    assert "320 x 256 px, not georeferenced" in page.text_content("#size-text")
    assert re.fullmatch(r"[\d.]+ s in all\nmodel [\d.]+ s\nfiles [\d.]+ s, queue [\d.]+ s",
                        page.text_content("#time-text"))
    links = page.eval_on_selector_all("#downloads a", "links => links.map(a => a.textContent)")
    # A plain PNG gets no mask GeoTIFF: the service writes through predict's writer (GeoTIFF for rasters only).
    assert links == ["Mask PNG", "Overlay PNG", "GeoPackage"]

    page.fill("#opacity", "25")
    page.dispatch_event("#opacity", "input")
    assert page.eval_on_selector("#overlay", "c => c.style.opacity") == "0.25"
    page.fill("#opacity", "60")
    page.dispatch_event("#opacity", "input")
    screenshot = tmp_path / "serve_screenshot.png"
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 20_000
    if os.environ.get("GEOREASON_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["GEOREASON_SCREENSHOT"])
    assert errors == []


def test_page_geotiff_sample_and_readable_errors(browser_page, live_server):
    url, _ = live_server
    page, errors = browser_page
    page.goto(url + "/")
    page.locator("button.sample", has_text="GeoTIFF").click()
    expect(page.locator("#question")).to_have_value(re.compile(r"\?$"))
    page.click("#run")
    page.wait_for_selector("#result[data-ready='1']", timeout=60_000)
    assert "georeferenced (EPSG:4326)" in page.text_content("#size-text")
    assert "GeoJSON" in page.eval_on_selector_all("#downloads a", "links => links.map(a => a.textContent)")

    page.set_input_files("#file", {"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text"})
    page.click("#run")
    page.wait_for_selector("#error:not([hidden])")
    message = page.text_content("#error")
    assert message.startswith("The request was refused (415)") and "not a PNG, JPEG or TIFF" in message
    assert "Traceback" not in message

    page.fill("#question", "   ")
    page.click("#run")
    assert page.text_content("#error") == "Type a question about the image."
    assert errors == []
