"""The web page in a real headless Chromium (Debian's `chromium`, driven by Playwright): songs uploaded through
the page, followed to the end by a real worker, mixed, downloaded and deleted; and a done song's mixes (its tracks
planted as a worker leaves them): waveforms, export through the mix route, shared links, the keyboard.

Screenshots of each state are taken every run; `UPDATE_SCREENSHOTS=1` writes them to docs/ for docs/api.md.
"""

from __future__ import annotations

import hashlib
import json
import math
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
from msaas.options import Options
from rest import create_app
from support import (
    ROOT,
    SHORT_SAMPLE,
    planted_audio,
    processes,
    serve,
    start_service,
    stored_result,
    stored_waveforms,
    wait_for,
    write_track,
)

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
PLANTED_HASH = hashlib.sha224(b"a song planted for the page").hexdigest()
PLANTED_NAME = "planted.mp3"
WAVEFORM_WIDTH, WAVEFORM_HEIGHT, WAVEFORM_SCALE = 800, 44, 127  # rest/static/waveforms.js, worker/mixdown.py


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
    expect(mixer.locator('.waveform-box[data-waveform="drawn"]')).to_have_count(4)  # the worker's own peaks

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
    assert unnamed_controls(page) == []


def unnamed_controls(page: Page) -> list[str]:
    return page.evaluate(
        """() => [...document.querySelectorAll('input, select, button, a')]
              .filter(control => !control.labels?.length && !control.getAttribute('aria-label')
                                 && !control.textContent.trim())
              .map(control => control.outerHTML)"""
    )


# --- a done song's mixes (rest/static/mix-tools.js; docs/mixes.md) ----------------------------------------------


@pytest.fixture
def planted(redis_client, store, tmp_path) -> dict:
    """A done song of the open tenant (MP3 tracks, the default result) with its waveforms, as a worker leaves it."""
    audio = planted_audio()
    options = Options.resolve({}, "demucs_unittest")
    paths = {name: write_track(samples, tmp_path / f"{name}.mp3", "mp3") for name, samples in audio.items()}
    stored_result(redis_client, store, PLANTED_HASH, paths, options=options)
    stored_waveforms(store, PLANTED_HASH, audio, options, tmp_path)
    return {"name": PLANTED_NAME, "hash": PLANTED_HASH, "query": "", "label": "planted"}


def open_mixer(page: Page, rest: str, planted: dict | None = None, address: str = "/"):
    """The page, following `planted` as if this browser had sent it (none: as the address says); its mixer once
    every stem is loaded."""
    if planted is not None:
        page.add_init_script(f"localStorage.setItem('msaas.songs', {json.dumps(json.dumps([planted]))})")
    page.goto(f"http://{rest}{address}")
    mixer = page.get_by_role("region", name=f"Mixer for {PLANTED_NAME}")
    expect(mixer.get_by_text("4 stems ready")).to_be_visible()
    return mixer


def server_mix(rest: str, recipe: dict) -> requests.Response:
    answer = requests.post(f"http://{rest}/apiv1/mix/{PLANTED_HASH}", json=recipe, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer


def drawn_columns(canvas) -> list[list[int]]:
    """Each pixel column of a canvas: the first and last row painted ([-1, -1]: none)."""
    return canvas.evaluate("""canvas => {
        const { width, height } = canvas;
        const pixels = canvas.getContext("2d").getImageData(0, 0, width, height).data;
        const columns = [];
        for (let x = 0; x < width; x++) {
            let first = -1, last = -1;
            for (let y = 0; y < height; y++) {
                if (pixels[4 * (y * width + x) + 3] > 0) { if (first < 0) first = y; last = y; }
            }
            columns.push([first, last]);
        }
        return columns;
    }""")


def expected_columns(waveform: dict) -> list[list[int]]:
    """What the page should paint of a waveform the server serves: each column, its buckets' extent, from the
    middle line (rest/static/waveforms.js draws it so; written again here, from the served JSON)."""
    buckets, middle, columns = waveform["buckets"], WAVEFORM_HEIGHT / 2, []
    for x in range(WAVEFORM_WIDTH):
        first = x * buckets // WAVEFORM_WIDTH
        end = max(first + 1, (x + 1) * buckets // WAVEFORM_WIDTH)
        low = min([0, *waveform["min"][first:end]])
        high = max([0, *waveform["max"][first:end]])
        top = math.floor(middle - high * middle / WAVEFORM_SCALE)
        bottom = max(top + 1, math.ceil(middle - low * middle / WAVEFORM_SCALE))
        columns.append([top, bottom - 1])
    return columns


def test_each_stem_shows_its_waveform_drawn_from_the_servers_peaks(rest, planted, page, screenshot):
    mixer = open_mixer(page, rest, planted)
    for track in FOUR_STEMS:
        served = requests.get(f"http://{rest}/apiv1/waveform/{PLANTED_HASH}/{track}", timeout=10)
        assert served.status_code == 200 and len(served.content) <= 20_000, served.text[:200]
        box = mixer.locator(f'.stem[data-track="{track}"] .waveform-box')
        expect(box).to_have_attribute("data-waveform", "drawn")
        canvas = mixer.get_by_role("img", name=f"{track} waveform")
        assert drawn_columns(canvas) == expected_columns(served.json()), track
    # The tracks differ, so the pictures do: the gated noise of the drums is silent in places, the tones never.
    drums = drawn_columns(mixer.get_by_role("img", name="drums waveform"))
    vocals = drawn_columns(mixer.get_by_role("img", name="vocals waveform"))
    assert min(last - first for first, last in drums) == 0  # a line where the drums are silent
    assert min(last - first for first, last in vocals) >= 8  # ±0.2 of full scale: ±4 of the 22 pixels each side
    screenshot("web-5-mixes")


def test_exporting_the_mixer_with_vocals_muted_downloads_the_servers_instrumental(rest, planted, page):
    mixer = open_mixer(page, rest, planted)
    mixer.get_by_role("button", name="Mute vocals").click()
    with page.expect_download() as download:
        mixer.get_by_role("button", name="Export mix").click()
    state = mixer.get_by_role("status").filter(has_text="Export")
    expect(state).to_have_text(re.compile(r"Exported planted-mix-[0-9a-f]{8}\.mp3 \(\d+\.\d MB\)"))
    instrumental = server_mix(rest, {"preset": "instrumental"})
    # The page's recipe is the instrumental written otherwise: one digest, the object its export stored, its bytes.
    assert instrumental.headers["X-Mix-Cache"] == "hit"
    assert download.value.suggested_filename == f"planted-mix-{instrumental.headers['X-Mix-Digest'][:8]}.mp3"
    assert Path(download.value.path()).read_bytes() == instrumental.content


def test_a_shared_link_restores_the_mixer_in_another_browser(rest, planted, browser, page):
    mixer = open_mixer(page, rest, planted)
    mixer.get_by_role("button", name="Mute vocals").click()
    mixer.get_by_role("button", name="Solo bass").click()
    mixer.get_by_role("button", name="Solo drums").click()
    mixer.get_by_role("slider", name="drums volume").fill("0.5")
    mixer.get_by_label("Export format").select_option("wav")
    link = mixer.get_by_role("textbox", name="Link to this mix").input_value()
    assert link.startswith(f"http://{rest}/#song={PLANTED_HASH}&name=planted.mp3&")
    recipe = json.loads(mixer.get_by_role("group", name=re.compile("Export or share")).get_attribute("data-recipe"))
    assert recipe == {"gains": {"drums": -6.02}, "mute": ["vocals", "other"], "format": "wav"}

    fresh = browser.new_context()  # nothing of the first browser's: no songs remembered
    try:
        shared = fresh.new_page()
        restored = open_mixer(shared, rest, address=link.removeprefix(f"http://{rest}"))
        expect(shared.get_by_role("heading", name=PLANTED_NAME)).to_be_visible()
        for track, muted, soloed, gain in (("vocals", "true", "false", "0"), ("drums", "false", "true", "0.5"),
                                          ("bass", "false", "true", "1"), ("other", "false", "false", "0")):
            expect(restored.get_by_role("button", name=f"Mute {track}")).to_have_attribute("aria-pressed", muted)
            expect(restored.get_by_role("button", name=f"Solo {track}")).to_have_attribute("aria-pressed", soloed)
            expect(restored.locator(f'.stem[data-track="{track}"]')).to_have_attribute("data-gain", gain)
        expect(restored.get_by_role("slider", name="drums volume")).to_have_value("0.5")
        expect(restored.get_by_label("Export format")).to_have_value("wav")
        expect(restored.get_by_role("textbox", name="Link to this mix")).to_have_value(link)
        # The song is followed from now on, as if sent from this browser.
        assert PLANTED_HASH in shared.evaluate("localStorage.getItem('msaas.songs')")
    finally:
        fresh.close()


def test_the_keyboard_alone_sets_a_gain_and_exports_and_every_control_is_named(rest, planted, page):
    mixer = open_mixer(page, rest, planted)
    mixer.get_by_role("button", name="Solo drums").focus()
    page.keyboard.press("Tab")
    drums = mixer.get_by_role("slider", name="drums volume")
    expect(drums).to_be_focused()
    for _ in range(50):
        page.keyboard.press("ArrowLeft")
    expect(drums).to_have_value("0.5")
    expect(drums).to_have_attribute("aria-valuetext", "-6.0 dB")
    expect(mixer.locator('.stem[data-track="drums"]')).to_have_attribute("data-gain", "0.5")

    # Focus goes down the stems, past the mixer's own buttons, to the export's controls, in that order.
    for role, name in (("link", "Download drums"), ("button", "Mute bass"), ("button", "Solo bass"),
                       ("slider", "bass volume"), ("link", "Download bass"), ("button", "Mute other"),
                       ("button", "Solo other"), ("slider", "other volume"), ("link", "Download other"),
                       ("button", "Download all stems"), ("combobox", "Export format"), ("button", "Export mix")):
        page.keyboard.press("Tab")
        expect(mixer.get_by_role(role, name=name, exact=True)).to_be_focused()
    with page.expect_download() as download:
        page.keyboard.press("Enter")
    assert Path(download.value.path()).read_bytes() == server_mix(rest, {"gains": {"drums": -6.02}}).content
    expect(mixer.get_by_role("status").filter(has_text="Export")).to_contain_text("Exported planted-mix-")

    # Every control of the mixer and its export has a name a screen reader says; the export's state is announced.
    for role, name in (("slider", "vocals volume"), ("button", "Mute vocals"), ("button", "Solo vocals"),
                       ("combobox", "Export format"), ("button", "Export mix"), ("textbox", "Link to this mix"),
                       ("button", "Copy link"), ("img", "bass waveform"), ("group", f"Export or share this mix of "
                                                                                   f"{PLANTED_NAME}")):
        expect(mixer.get_by_role(role, name=name, exact=True)).to_have_count(1)
    assert mixer.locator(".export-state").get_attribute("aria-live") == "polite"
    assert unnamed_controls(page) == []


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
