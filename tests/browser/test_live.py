"""The live view in chromium, with a fake camera playing a video made here from the astronaut photo."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, WebSocket, expect

from tests.browser.server import chromium_missing
from tests.video import camera_frames, write_y4m

pytestmark = pytest.mark.skipif(chromium_missing() is not None, reason=chromium_missing() or "")

LABEL = re.compile(r"^\d+ \(\d+–\d+\)$")  # "34 (27–43)": the shown age and the range


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two seconds of a still face at 15 frames a second, with a little noise: chromium plays it in a loop."""
    return write_y4m(tmp_path_factory.mktemp("camera") / "astronaut.y4m", camera_frames(30, noise=3, shake=1))


@pytest.fixture(scope="module")
def camera_browser(playwright: Playwright, browser_type_launch_args: dict, fake_camera: Path) -> Iterator[Browser]:
    """Chromium whose camera is the video, granted without asking (the launch arguments are fixed per browser)."""
    args = [*browser_type_launch_args["args"], "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream", f"--use-file-for-fake-video-capture={fake_camera}"]
    browser = playwright.chromium.launch(**{**browser_type_launch_args, "args": args})
    yield browser
    browser.close()


@pytest.fixture
def page(camera_browser: Browser, base_url: str) -> Iterator[Page]:
    context = camera_browser.new_context(base_url=base_url, permissions=["camera"])
    page = context.new_page()
    yield page
    context.close()


class Sockets:
    """The page's WebSockets and the answers that came over them."""

    def __init__(self, page: Page) -> None:
        self.opened: list[WebSocket] = []
        self.answers: list[float] = []
        self.closed = 0
        page.on("websocket", self._on_socket)

    def _on_socket(self, ws: WebSocket) -> None:
        self.opened.append(ws)
        ws.on("framereceived", lambda payload: self.answers.append(time.monotonic()))
        ws.on("close", lambda _: setattr(self, "closed", self.closed + 1))


def eventually(page: Page, check: Callable[[], bool], timeout: float = 10) -> None:
    """Until `check()` holds (the page's events come in on its own time, slower on a busy machine)."""
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, "not within the time allowed"
        page.wait_for_timeout(100)


def video_playing(page: Page) -> bool:
    return page.evaluate("() => document.querySelector('[data-live-video]').srcObject !== null")


def test_nothing_runs_before_start_then_faces_are_boxed_with_ages_at_a_frame_rate(page: Page):
    sockets = Sockets(page)
    page.goto("/#/live")
    expect(page.get_by_role("heading", name="Live camera")).to_be_visible()
    page.wait_for_timeout(500)
    assert sockets.opened == [] and not video_playing(page)  # no camera, no stream before Start

    # Started from the keyboard.
    start = page.get_by_role("button", name="Start the camera")
    start.focus()
    page.keyboard.press("Enter")
    box = page.locator("[data-live-overlay] .face-box")
    expect(box).to_have_count(1, timeout=30_000)
    expect(page.get_by_role("button", name="Stop the camera")).to_be_focused()
    expect(box.locator(".live-label")).to_have_text(LABEL)

    # The box is over her face: the top middle of the picture.
    video = page.locator("[data-live-video]").bounding_box()
    face = box.bounding_box()
    assert video and face
    centre = (face["x"] + face["width"] / 2 - video["x"]) / video["width"]
    assert 0.3 < centre < 0.7 and face["y"] - video["y"] < video["height"] / 2

    # Answers keep coming, one frame in flight at a time: counted over three seconds.
    page.wait_for_timeout(1000)
    before = len(sockets.answers)
    page.wait_for_timeout(3000)
    per_second = (len(sockets.answers) - before) / 3
    assert per_second > 2, f"{per_second:.1f} answers a second"
    expect(page.locator("[data-live-fps]")).to_have_text(re.compile(r"^[1-9]\d*$"))
    expect(page.locator("[data-live-delay]")).to_have_text(re.compile(r"^\d+ ms$"))
    assert len(sockets.opened) == 1

    # A steady estimate is said once in the polite region, not every frame.
    announce = page.locator("[data-live-announce]")
    expect(announce).to_have_text(re.compile(r"^Face 1: about \d+ years, probably between \d+ and \d+\.$"),
                                  timeout=15_000)
    said = announce.text_content()
    page.wait_for_timeout(1500)
    assert announce.text_content() == said

    page.get_by_role("button", name="Stop the camera").click()
    expect(box).to_have_count(0)
    expect(start).to_be_focused()
    assert not video_playing(page)
    eventually(page, lambda: sockets.closed == 1)
    settled = len(sockets.answers)
    page.wait_for_timeout(700)
    assert len(sockets.answers) == settled  # no frame goes out after Stop


def test_leaving_the_view_releases_the_camera(page: Page):
    sockets = Sockets(page)
    page.goto("/#/live")
    page.get_by_role("button", name="Start the camera").click()
    expect(page.locator("[data-live-overlay] .face-box")).to_have_count(1, timeout=30_000)
    page.get_by_role("link", name="Examples").click()
    expect(page.get_by_role("heading", name="Examples")).to_be_visible()
    assert not video_playing(page)
    eventually(page, lambda: sockets.closed == 1)


def test_at_phone_width_the_picture_fits_and_the_boxes_follow(page: Page):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto("/#/live")
    page.get_by_role("button", name="Start the camera").click()
    box = page.locator("[data-live-overlay] .face-box")
    expect(box).to_have_count(1, timeout=30_000)
    video = page.locator("[data-live-video]").bounding_box()
    face = box.bounding_box()
    assert video and face
    assert video["x"] >= 0 and video["x"] + video["width"] <= 360
    assert video["x"] <= face["x"] and face["x"] + face["width"] <= video["x"] + video["width"] + 1
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    page.get_by_role("button", name="Stop the camera").click()
