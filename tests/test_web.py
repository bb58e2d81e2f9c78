"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright): songs uploaded through
the page, followed to the end by a real worker, mixed, downloaded and deleted.

Screenshots of each state are taken every run; `UPDATE_SCREENSHOTS=1` writes them to docs/ for docs/api.md.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright
from test_chunks import song as rondo

from msaas.models import FOUR_STEMS
from msaas.naming import songhash_of
from rest import create_app
from support import ROOT, SHORT_SAMPLE, processes, serve, start_service, wait_for

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"  # Debian's; `make test` installs it. Playwright never downloads a browser here.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]
MARCH = ROOT / "data" / "short-march.mp3"
HUM_HASH = songhash_of(SHORT_SAMPLE.read_bytes())
MARCH_HASH = songhash_of(MARCH.read_bytes())
SECONDS = 1000  # Playwright counts milliseconds
SEPARATING = re.compile(r"Separating: \d+%")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium (as root or with sudo)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 760}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(30 * SECONDS)
    yield page
    context.close()


@pytest.fixture
def screenshot(page, tmp_path):
    """Save the page as docs/<name>.png when UPDATE_SCREENSHOTS=1, else under the test's temporary folder."""
    folder = ROOT / "docs" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path

    def take(name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


def song(page: Page, name: str):
    return page.locator(".song", has=page.get_by_role("heading", name=name))


def test_page_follows_songs_to_the_mixer_and_downloads_and_deletes(settings, rest, store, tmp_path, page, screenshot):
    response = page.goto(f"http://{rest}/")
    assert response.status == 200
    expect(page.get_by_role("heading", name="Music Separation as a Service")).to_be_visible()
    expect(page.get_by_text("Nothing yet")).to_be_visible()
    screenshot("web-1-start")

    # Two songs, no worker yet: both wait in the queue, in order.
    page.get_by_label("Model").select_option("demucs_unittest")
    page.locator("#files").set_input_files([SHORT_SAMPLE, MARCH])
    page.get_by_role("button", name="Separate", exact=True).click()
    hum, march = song(page, "short-hum.mp3"), song(page, "short-march.mp3")
    expect(hum.locator(".state")).to_have_text("Queued: position 1 in the queue")
    expect(march.locator(".state")).to_have_text("Queued: position 2 in the queue")
    screenshot("web-2-queued")

    # The march's input is lost before any worker sees it, so it fails; the hum goes through.
    store.remove_input(MARCH_HASH)
    worker = start_service("worker", settings, tmp_path / "worker.log", MAX_ATTEMPTS="1", WORKER_METRICS_PORT="0")
    try:
        expect(hum.locator(".state")).to_have_text(SEPARATING, timeout=60 * SECONDS)
        screenshot("web-3-processing")
        expect(hum).to_have_attribute("data-state", "done", timeout=120 * SECONDS)
        expect(march).to_have_attribute("data-state", "failed", timeout=60 * SECONDS)
    finally:
        worker.stop()
    expect(march.locator(".state")).to_contain_text("Failed: the input queue/")

    # Every stem is loaded into its own <audio> element.
    mixer = hum.get_by_role("region", name="Mixer for short-hum.mp3")
    expect(mixer.get_by_text("4 stems ready")).to_be_visible()
    audio = mixer.locator("audio")
    assert sorted(audio.evaluate_all("elements => elements.map(e => e.dataset.track)")) == sorted(FOUR_STEMS)
    durations = audio.evaluate_all("elements => elements.map(e => [e.readyState, e.duration])")
    assert all(state >= 1 and abs(duration - 8.0) < 0.3 for state, duration in durations), durations

    # Keyboard only: mute the vocals, then play; the meters show the other stems sounding and the vocals silent.
    mute = mixer.get_by_role("button", name="Mute vocals")
    mute.focus()
    page.keyboard.press("Space")
    expect(mute).to_have_attribute("aria-pressed", "true")
    expect(mixer.locator('.stem[data-track="vocals"]')).to_have_attribute("data-gain", "0")
    mixer.get_by_role("button", name="Play").focus()
    page.keyboard.press("Enter")
    page.wait_for_function(
        "mixer => [...mixer.querySelectorAll('.stem:not([data-track=vocals])')].some(s => +s.dataset.level > 0.1)",
        arg=mixer.element_handle(),
    )
    assert float(mixer.locator('.stem[data-track="vocals"]').get_attribute("data-level")) == 0
    expect(mixer.get_by_role("slider", name="Position in short-hum.mp3")).not_to_have_value("0")
    screenshot("web-4-mixer")
    mixer.get_by_role("button", name="Pause").click()

    # A stem downloads under a useful name, byte for byte what the API serves.
    with page.expect_download() as download:
        mixer.get_by_role("link", name="Download drums").click()
    assert download.value.suggested_filename == "short-hum-drums.mp3"
    served = requests.get(f"http://{rest}/apiv1/track/{HUM_HASH}/drums.mp3?model=demucs_unittest").content
    assert Path(download.value.path()).read_bytes() == served

    # Deleting a song removes it from the page and from the server.
    page.get_by_role("button", name="Delete short-march.mp3").click()
    expect(march).to_have_count(0)
    assert requests.get(f"http://{rest}/apiv1/status/{MARCH_HASH}?model=demucs_unittest").status_code == 404

    # A reload keeps following the songs this browser submitted.
    page.reload()
    expect(song(page, "short-hum.mp3")).to_have_attribute("data-state", "done")
    expect(song(page, "short-march.mp3")).to_have_count(0)


def test_page_asks_for_the_api_key_and_sends_it(settings, page):
    address, server = serve(create_app(replace(settings, api_keys="page-key")))
    try:
        page.goto(f"http://{address}/")
        key = page.get_by_label("Key, sent as a Bearer token")
        expect(key).to_be_visible()  # the server requires keys: the field is shown open
        page.locator("#files").set_input_files(SHORT_SAMPLE)
        page.get_by_role("button", name="Separate", exact=True).click()
        expect(page.locator(".song .state")).to_contain_text("The upload was refused: a valid API key is required")
        expect(page.locator("#form-message")).to_contain_text("needs an API key")

        key.fill("page-key")
        page.locator("#files").set_input_files(SHORT_SAMPLE)
        page.get_by_role("button", name="Separate", exact=True).click()
        expect(page.locator(".song").first.locator(".state")).to_have_text("Queued: position 1 in the queue")
    finally:
        server.shutdown()


def test_every_control_has_a_name(settings, rest, page):
    page.goto(f"http://{rest}/")
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, a')]
              .filter(control => !control.labels?.length && !control.getAttribute('aria-label')
                                 && !control.textContent.trim())
              .map(control => control.outerHTML)"""
    )
    assert unnamed == []


def signal_demucs(folder: Path, signum: int) -> list[int]:
    """Signal the process group of each Demucs a test's worker runs (its scratch folder is under `folder`)."""
    groups = {os.getpgid(pid) for pid, (_, command) in processes().items()
              if "demucs.separate" in command and str(folder) in command}
    for group in groups:
        os.killpg(group, signum)
    return sorted(groups)


def test_page_plays_the_first_part_while_the_rest_is_separated(settings, rest, tmp_path, page, screenshot):
    mp3 = rondo(24, tmp_path / "long-song.mp3")
    options = {"model": "demucs_unittest", "shifts": 4}  # four passes: the rest takes a while
    worker = start_service("worker", settings, tmp_path / "worker.log", FIRST_PART_SECONDS="3", DEMUCS_SEGMENT="2",
                           WORKER_METRICS_PORT="0")
    held = []
    try:
        page.goto(f"http://{rest}/")
        page.get_by_label("Model").select_option("demucs_unittest")
        page.get_by_label("Shifts").fill("4")
        page.locator("#files").set_input_files(mp3)
        page.get_by_role("button", name="Separate", exact=True).click()
        card = song(page, "long-song.mp3")
        expect(card.locator(".eta")).to_contain_text(re.compile(r"About \d+ (s|min)"), timeout=60 * SECONDS)
        # Once the first part is ready, the rest is held (its Demucs stopped), so it is surely still separating
        # while the page plays.
        status_url = f"http://{rest}/apiv1/status/{songhash_of(mp3.read_bytes())}"
        wait_for(lambda: requests.get(status_url, params=options).json().get("ready_seconds", 0) > 0, 120,
                 "the first part")
        held = signal_demucs(tmp_path, signal.SIGSTOP)
        assert held, "no Demucs found to hold"
        mixer = card.get_by_role("region", name="Mixer for long-song.mp3")
        expect(mixer.get_by_text(re.compile(r"First 0:0\d of 4 stems ready"))).to_be_visible(timeout=60 * SECONDS)
        mixer.get_by_role("button", name="Play").click()
        page.wait_for_function(
            "mixer => [...mixer.querySelectorAll('.stem')].some(s => +s.dataset.level > 0.1)",
            arg=mixer.element_handle(),
        )
        expect(mixer.get_by_role("slider", name="Position in long-song.mp3")).not_to_have_value("0")
        assert requests.get(status_url, params=options).json()["state"] == "processing"
        expect(card).to_have_attribute("data-state", "processing")
        screenshot("web-5-first-part")
    finally:
        for group in held:
            os.killpg(group, signal.SIGCONT)
    try:
        expect(card).to_have_attribute("data-state", "done", timeout=240 * SECONDS)
        expect(mixer.get_by_text("4 stems ready")).to_be_visible(timeout=60 * SECONDS)
    finally:
        worker.stop()
    durations = mixer.locator("audio").evaluate_all("elements => elements.map(e => e.duration)")
    assert all(abs(duration - 24) < 0.3 for duration in durations), durations
