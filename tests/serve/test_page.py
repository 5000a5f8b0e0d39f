"""The web page in a real browser: Debian's chromium driven by Playwright against the running app.

One generation end to end through the page: the form is filled from /v1/config, the page
follows its events until done, the MP4 decodes in the browser (H.264 yuv420p), the 3D view draws every
frame of motion.json and turns under a mouse drag; a bad upload shows the server's message.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # a clear failure, not a skip: the browser test is part of the suite
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
GENERATION_TIMEOUT_MS = 120_000
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        pytest.fail("Python Playwright is missing: `pip install -e .[dev]` (or `pip install "
                    "playwright`; no `playwright install`, the test uses the system chromium)")
    if not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: the browser test needs Debian's chromium, "
                    "`apt-get install chromium`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _text(page: Page, selector: str) -> str:
    return page.locator(selector).text_content() or ""


def _ends_done(page: Page) -> None:
    """Wait for the followed generation to end; it must end done."""
    page.wait_for_function(
        "['done', 'failed', 'lost'].some(s => document.querySelector('#status')"
        ".textContent.startsWith(s))", timeout=GENERATION_TIMEOUT_MS)
    status = _text(page, "#status")
    assert status.startswith("done"), f"status {status!r}, error {_text(page, '#error')!r}"


def _video_plays(page: Page, selector: str = "#video") -> None:
    page.wait_for_function(
        f"(v => v.readyState >= 2 && v.videoWidth > 0)(document.querySelector('{selector}'))")


def test_page_generates_and_shows_video_and_3d_motion(page: Page, svimo_url: str,
                                                      tmp_path: Path) -> None:
    # 0. The page and its static files are served (a missing one fails here, not as a timeout).
    for path in ("/", "/static/app.js", "/static/viewer.js", "/static/style.css"):
        code, body = _get(svimo_url + path)
        assert code == 200 and body, f"GET {path}: {code} {body[:200]!r}"
    code, body = _get(f"{svimo_url}/v1/config")
    assert code == 200, f"GET /v1/config: {code} {body[:200]!r}"
    config = json.loads(body)
    rng = np.random.default_rng(0)
    image = tmp_path / "first_frame.png"
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(image)
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("this is not an image\n")

    # 1. The form is filled from /v1/config.
    page.goto(f"{svimo_url}/")
    page.wait_for_function("document.querySelector('#mode').options.length > 0"
                           " || document.querySelector('#error').textContent !== ''")
    assert _text(page, "#error") == "", f"the page could not load /v1/config: {_text(page, '#error')}"
    modes = page.eval_on_selector_all("#mode option", "os => os.map(o => o.value)")
    assert modes == config["modes"]
    assert page.input_value("#steps") == str(config["default_steps"])
    assert f"{config['num_frames']} frames" in _text(page, "#config")
    assert _text(page, "#error") == ""

    # 2. A text file as the image: the server refuses it and the page shows why.
    page.set_input_files("#image", str(not_an_image))
    page.fill("#prompt", "stir the bowl with the spoon")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#error').textContent.trim().length > 0")
    assert "done" not in _text(page, "#status")

    # 3. A real submission clears the error, runs and ends done.
    page.set_input_files("#image", str(image))
    page.wait_for_function("document.querySelector('#thumb').naturalWidth === 96")
    page.fill("#steps", "2")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#error').textContent === ''")
    _ends_done(page)
    assert _text(page, "#error") == ""
    assert page.eval_on_selector("#progress", "p => p.value === p.max")

    # 4. The generated video decodes in chromium (H.264 yuv420p).
    _video_plays(page)
    assert page.eval_on_selector("#video", "v => v.currentSrc").endswith("video.mp4")
    hrefs = page.eval_on_selector_all("#downloads a", "as => as.map(a => a.href)")
    if any(h.endswith("/motion_video.mp4") for h in hrefs):
        _video_plays(page, "#motion-video")

    # 5. The 3D view drew motion.json, animates through its frames, and turns and zooms.
    canvas = page.locator("#view3d")
    page.wait_for_function("document.querySelector('#view3d').dataset.drawn === '1'")
    assert canvas.get_attribute("data-frames") == str(config["num_frames"])
    frames = set()
    for _ in range(30):
        frames.add(page.evaluate("window.svimoViewer.frame"))
        if len(frames) >= 3:
            break
        page.wait_for_timeout(100)
    assert len(frames) >= 3, f"the 3D view did not animate: frames seen {sorted(frames)}"

    box = canvas.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 100
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    azimuth = page.evaluate("window.svimoViewer.azimuth")
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 150, cy + 40, steps=8)
    page.mouse.up()
    turned = page.evaluate("[window.svimoViewer.azimuth, window.svimoViewer.elevation]")
    assert abs(turned[0] - azimuth) > 0.1, (azimuth, turned)
    zoom = page.evaluate("window.svimoViewer.zoom")
    page.mouse.wheel(0, -300)
    page.wait_for_function(f"window.svimoViewer.zoom > {zoom}")

    # 6. Downloads link every file the server made for the viewer and the previews.
    for name in ("preview.mp4", "preview.png", "motion.json", "motion.npz"):
        assert any(h.endswith(f"/{name}") for h in hrefs), (name, hrefs)

    # 7. A screenshot of the whole page is not blank.
    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float64)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.var() > 0


def test_the_page_asks_for_a_key_where_the_app_wants_one(page: Page, keyed,
                                                          tmp_path: Path) -> None:
    """The keyed app's page (under its route prefix): the key field shows; without a key the
    server's 401 is shown; with it the generation ends done and its video, fetched with the
    key, decodes."""
    url, issued = keyed
    image = tmp_path / "first_frame.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
                    ).save(image)
    page.goto(f"{url}/")
    page.wait_for_function("document.querySelector('#mode').options.length > 0")
    assert page.is_visible("#api-key")
    page.set_input_files("#image", str(image))
    page.fill("#prompt", "stir the bowl with the spoon")
    page.fill("#steps", "2")
    page.click("#generate")
    page.wait_for_function("document.querySelector('#error').textContent.includes('401')")
    assert "API key" in _text(page, "#error")
    page.fill("#api-key", issued["bob"])
    page.click("#generate")
    _ends_done(page)
    _video_plays(page)
    assert page.eval_on_selector("#video", "v => v.currentSrc").startswith("blob:")
    page.wait_for_function("document.querySelector('#view3d').dataset.drawn === '1'")


def test_the_page_feeds_a_motion_and_a_video_to_their_modes(page: Page, svimo_url: str,
                                                            tmp_path: Path) -> None:
    """motion_to_video and video_to_motion from the page: each upload field shows for its
    mode only; a generation's motion.json goes in and the drawn video comes out, then its
    video goes in and a 3D motion comes out."""
    import requests

    from tests.serve.test_app import submit, wait_done

    first = wait_done(svimo_url, submit(svimo_url, num_steps=2).json()["id"])
    motion = tmp_path / "motion.json"
    motion.write_bytes(requests.get(svimo_url + first["files"]["motion.json"], timeout=10).content)
    image = tmp_path / "first_frame.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 96, 3), dtype=np.uint8)
                    ).save(image)
    page.goto(f"{svimo_url}/")
    page.wait_for_function("document.querySelector('#mode').options.length > 0")
    assert not page.is_visible("#motion") and not page.is_visible("#video-in")
    page.select_option("#mode", "video_to_motion")
    assert page.is_visible("#video-in") and not page.is_visible("#motion")
    page.select_option("#mode", "motion_to_video")
    assert page.is_visible("#motion") and not page.is_visible("#video-in")
    page.set_input_files("#image", str(image))
    page.set_input_files("#motion", str(motion))
    page.fill("#intrinsics", "[[60, 0, 48], [0, 60, 32], [0, 0, 1]]")
    page.fill("#prompt", "stir the bowl with the spoon")
    page.fill("#steps", "2")
    page.click("#generate")
    _ends_done(page)
    _video_plays(page)

    # video_to_motion: the first generation's video in, a 3D motion out
    video = tmp_path / "clip.mp4"
    video.write_bytes(requests.get(svimo_url + first["files"]["video.mp4"], timeout=10).content)
    page.select_option("#mode", "video_to_motion")
    page.set_input_files("#video-in", str(video))
    page.evaluate("document.querySelector('#status').textContent = ''")  # the last 'done'
    page.click("#generate")
    _ends_done(page)
    page.wait_for_function("document.querySelector('#view3d').dataset.drawn === '1'")
