"""The result page as a person reads it, in a real chromium against the real app: crowded photos at
desktop and phone widths, consent given again for each photo, the key kept and used on the My data
page, and no accessibility violation (axe-core) on any view."""

from __future__ import annotations

import math
import re
from pathlib import Path

import httpx
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect

from tests.browser.crowd import crowd
from tests.browser.server import FIXTURES, LiveServer, chromium_missing

if reason := chromium_missing():  # one line in the summary rather than a failure per test
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.browser

ASTRONAUT = FIXTURES / "astronaut.png"
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
# Three crowds: 8 faces side by side in two rows, 15 smaller ones in three (collages of the fixtures'
# faces), and a real group photo: 16 faces worth an age 39-49 px wide, 4 half hidden at the back.
CROWDS = {"8-faces": (4, 2, 150, 4), "15-faces": (5, 3, 110, 3), "group-photo": None}


def crowd_photo(crowd_args: tuple | None) -> tuple[bytes, int, int]:
    """The photo's bytes, the marks (aged or set aside) it must at least get, the faces it must at least age."""
    if crowd_args is None:
        return (FIXTURES / "group.jpg").read_bytes(), 16, 14
    # Every tiled face gets a mark, aged or set aside: the gate sets aside some of the smaller gray
    # cameraman tiles as not a face (its classifier scores that fixture's face low; docs/model.md).
    return crowd(*crowd_args), crowd_args[0] * crowd_args[1] - 1, 3
CONSENT = "Permission to save and retain the given data"

# The labels' and the photo's rectangles, as drawn.
GEOMETRY = """() => {
  const rect = (node) => { const r = node.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; };
  const figure = document.querySelector("[data-result-figure]");
  return {
    photo: rect(figure.querySelector("img")),
    labels: [...figure.querySelectorAll("[data-face-label]")].map((node) => ({...rect(node), text: node.textContent})),
    scrollWidth: document.documentElement.scrollWidth,
  };
}"""


def open_home(page: Page, server: LiveServer) -> None:
    page.goto(server.url + "/")
    expect(page.locator("html[data-ready]")).to_be_attached()
    expect(page.get_by_role("heading", level=1, name="How old do you look?")).to_be_visible()


def fill_form(
    page: Page, photo: Path | dict = ASTRONAUT, *, age: str = "45", name: str = "Eileen", consent: bool = False
) -> None:
    page.get_by_label("Your age").fill(age)
    page.get_by_label("First name").fill(name)
    page.locator("#photo").set_input_files(photo)
    expect(page.locator("[data-preview]")).to_be_visible()
    if consent:
        page.get_by_label(CONSENT).check()


def send_stored(page: Page, server: LiveServer) -> dict:
    """Fill and send the form with consent; the 201's body."""
    fill_form(page, consent=True)
    with page.expect_response(lambda r: r.url.endswith("/submissions") and r.request.method == "POST") as info:
        page.get_by_role("button", name="Estimate my age and store it").click()
    assert info.value.status == 201
    expect(page.get_by_role("heading", name="Your data is stored")).to_be_visible()
    return info.value.json()


def stored_count(server: LiveServer) -> int:
    listing = server.admin_get("/submissions?limit=100")
    assert listing.status_code == 200
    body = listing.json()
    return body["total"] if isinstance(body, dict) and "total" in body else len(body.get("items", body))


def overlapping(a: dict, b: dict) -> bool:
    across = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"]
    return across and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]


@pytest.mark.parametrize("viewport", VIEWPORTS.values(), ids=VIEWPORTS.keys())
@pytest.mark.parametrize("crowd_args", CROWDS.values(), ids=CROWDS.keys())
def test_crowded_photo_labels_never_collide_nor_leave_the_photo(
    page: Page, live_server: LiveServer, viewport: dict, crowd_args: tuple, output_path: str
) -> None:
    page.set_viewport_size(viewport)
    open_home(page, live_server)
    photo_bytes, least_marks, least_aged = crowd_photo(crowd_args)
    fill_form(page, {"name": "crowd.jpg", "mimeType": "image/jpeg", "buffer": photo_bytes})
    with page.expect_response(lambda r: r.url.endswith("/predict")) as info:
        page.get_by_role("button", name="Estimate my age", exact=True).click()
    answer = info.value.json()
    marks = len(answer["faces"]) + len(answer["set_aside"])
    assert marks >= least_marks, "the detector should find (nearly) every face"
    assert len(answer["faces"]) >= least_aged
    expect(page.locator("[data-result-figure] [data-face-label]")).to_have_count(marks)
    page.wait_for_timeout(200)  # the labels are placed once the photo has its size

    drawn = page.evaluate(GEOMETRY)
    photo, labels = drawn["photo"], drawn["labels"]
    for label in labels:
        assert label["x"] >= photo["x"] - 0.5 and label["y"] >= photo["y"] - 0.5, label
        assert label["x"] + label["w"] <= photo["x"] + photo["w"] + 0.5, label
        assert label["y"] + label["h"] <= photo["y"] + photo["h"] + 0.5, label
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            assert not overlapping(a, b), (a, b)
    assert drawn["scrollWidth"] <= viewport["width"]
    # The photo uses its column: on a phone the page's width, on a desktop more than half of it.
    assert photo["w"] >= (viewport["width"] - 48 if viewport["width"] < 600 else viewport["width"] * 0.5)

    # The list beside the photo uses the labels' numbers, and pointing at an entry marks its box.
    entries = page.locator("[data-face-list] li")
    expect(entries).to_have_count(marks)
    expect(entries.first).to_contain_text(re.compile(r"^1 about \d+, likely \d+–\d+"))
    entries.nth(2).hover()
    expect(page.locator('[data-result-figure] [data-face-box="3"]')).to_have_class(re.compile(r"\bactive\b"))
    page.locator('[data-result-figure] [data-face-label="2"]').hover()
    expect(entries.nth(1)).to_have_class(re.compile(r"\bactive\b"))
    # Whole years, one name for the range.
    expect(page.locator("[data-predicted]")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("[data-interval]")).to_have_text(re.compile(r"^likely \d+–\d+$"))
    page.screenshot(path=Path(output_path) / "crowd.png", full_page=True)


def test_faces_set_aside_are_drawn_dashed_with_the_reason_in_words(page: Page, live_server: LiveServer) -> None:
    """The service's `set_aside` list, when it sends one, is drawn without an age; an answer without it
    changes nothing (the other tests). The answer here is the real one with a set-aside face added."""
    open_home(page, live_server)
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        real = client.post("/predict", files={"image": ("astronaut.png", ASTRONAUT.read_bytes(), "image/png")})
    assert real.status_code == 200
    answer = real.json()
    blurred = {"box": {"x": 10, "y": 10, "width": 40, "height": 40}, "reason": "too_blurred", "quality": 0.1}
    answer["set_aside"] = [blurred]

    def add_set_aside(route) -> None:
        route.fulfill(status=200, json=answer)

    page.route("**/predict", add_set_aside)
    fill_form(page)
    page.get_by_role("button", name="Estimate my age", exact=True).click()
    aside = page.locator("[data-result-figure] [data-set-aside]")
    expect(aside).to_have_count(1)
    expect(aside).to_have_class(re.compile(r"\baside\b"))
    assert aside.evaluate("box => getComputedStyle(box).borderTopStyle") == "dashed"
    expect(page.locator('[data-result-figure] [data-face-label="2"]')).to_contain_text("too blurred to judge")
    expect(page.locator("[data-face-list] li").nth(1)).to_have_text("2 set aside: too blurred to judge")


def test_a_range_widened_by_a_blurred_photo_says_why_and_a_sharp_one_does_not(
    page: Page, live_server: LiveServer, blurred_astronaut_png: bytes, output_path: str
) -> None:
    """The real answers for the astronaut photo blurred (its `range_note`) and sharp (none)."""
    note = page.locator("[data-range-note]")
    open_home(page, live_server)
    fill_form(page, {"name": "blurred.png", "mimeType": "image/png", "buffer": blurred_astronaut_png})
    page.get_by_role("button", name="Estimate my age", exact=True).click()
    expect(page.get_by_role("heading", level=1, name="Your result")).to_be_visible()
    expect(page.locator("[data-interval]")).to_have_text(re.compile(r"^likely \d+–\d+$"))
    expect(note).to_be_visible()
    expect(note).to_have_text("wider because the photo is blurred")
    # next to the range: in the same line of numbers, just under it
    interval_box, note_box = page.locator("[data-interval]").bounding_box(), note.bounding_box()
    assert 0 <= note_box["y"] - (interval_box["y"] + interval_box["height"]) < 8
    page.screenshot(path=Path(output_path) / "range-note.png", full_page=True)

    open_home(page, live_server)
    fill_form(page)
    with page.expect_response(lambda r: r.url.endswith("/predict")) as info:
        page.get_by_role("button", name="Estimate my age", exact=True).click()
    [face] = info.value.json()["faces"]
    assert face["range_note"] is None
    low, high = face["age_interval"]
    # the sharp photo's own range (not the blurred one's, 23–42 against 23–40), and no note beside it
    expect(page.locator("[data-interval]")).to_have_text(f"likely {math.floor(low)}–{math.ceil(high)}")
    expect(note).to_be_hidden()


@pytest.mark.parametrize("way_back", ["try-another", "examples", "navigation", "back-button"])
def test_consent_is_unticked_after_a_stored_submission_by_every_way_back(
    page: Page, live_server: LiveServer, way_back: str
) -> None:
    open_home(page, live_server)
    created = send_stored(page, live_server)
    before = stored_count(live_server)

    if way_back == "try-another":
        page.get_by_role("link", name="Try another photo").click()
    elif way_back == "examples":
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Examples").click()
        page.get_by_role("button", name="Use the astronaut photo in the form").click()
        expect(page.locator("[data-file-name]")).to_have_text("astronaut.jpg")
    elif way_back == "navigation":
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Model").click()
        expect(page.get_by_role("heading", level=1, name="The model")).to_be_visible()
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Home").click()
    else:
        page.go_back()
    expect(page.get_by_role("heading", level=1, name="How old do you look?")).to_be_visible()

    # A new form: unticked, and nothing of the stored submission kept in it.
    expect(page.get_by_label(CONSENT)).not_to_be_checked()
    expect(page.get_by_label("First name")).to_have_value("")
    expect(page.get_by_label("Your age")).to_have_value("")
    if way_back != "examples":
        expect(page.locator("[data-preview]")).to_be_hidden()
    expect(page.get_by_role("button", name="Estimate my age", exact=True)).to_be_visible()

    # Sending again without a new tick stores nothing: /predict, not /submissions.
    page.get_by_label("Your age").fill("45")
    page.get_by_label("First name").fill("Eileen")
    if way_back != "examples":
        page.locator("#photo").set_input_files(ASTRONAUT)
    with page.expect_response(lambda r: r.url.endswith(("/predict", "/submissions"))) as info:
        page.get_by_role("button", name="Estimate my age", exact=True).click()
    assert info.value.url.endswith("/predict")
    expect(page.get_by_role("heading", level=1, name="Your result")).to_be_visible()
    expect(page.get_by_role("heading", name="Your data is stored")).to_be_hidden()
    assert stored_count(live_server) == before
    live_server_delete(live_server, created)


def live_server_delete(server: LiveServer, created: dict) -> None:
    """Withdraw a submission a test stored (the database is shared by the whole run)."""
    with httpx.Client(base_url=server.url) as client:
        client.delete(f"/submissions/{created['id']}", headers={"X-Deletion-Token": created["deletion_token"]})


def test_a_gif_is_refused_before_sending_with_what_to_do(page: Page, live_server: LiveServer) -> None:
    """The picker offers only what the service reads; a GIF that comes anyway (dropped, or picked with
    "all files") is refused in the page, in words that say what to do, and nothing is sent."""
    open_home(page, live_server)
    expect(page.locator("#photo")).to_have_attribute("accept", "image/jpeg,image/png,image/webp")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
    page.locator("#photo").set_input_files({"name": "party.gif", "mimeType": "image/gif", "buffer": gif})
    error = page.locator('[data-error-for="image"]')
    expect(error).to_contain_text("This is a GIF image")
    expect(error).to_contain_text("choose a JPEG, PNG or WebP photo")
    page.get_by_label("Your age").fill("45")
    page.get_by_label("First name").fill("Eileen")
    page.get_by_role("button", name="Estimate my age", exact=True).click()
    expect(error).to_have_text("Choose a photo, drop one here or take one.")
    assert sent == []


def test_the_button_says_whether_it_stores(page: Page, live_server: LiveServer) -> None:
    open_home(page, live_server)
    button = page.locator("[data-submit]")
    expect(button).to_have_text("Estimate my age")
    page.get_by_label(CONSENT).check()
    expect(button).to_have_text("Estimate my age and store it")
    page.get_by_label(CONSENT).uncheck()
    expect(button).to_have_text("Estimate my age")


@pytest.mark.parametrize("how", ["paste", "key-file"])
def test_my_data_opens_with_the_key_shows_the_record_and_deletes_after_confirming(
    page: Page, live_server: LiveServer, how: str, tmp_path: Path
) -> None:
    open_home(page, live_server)
    created = send_stored(page, live_server)
    key = page.locator("[data-key]")
    expect(key).to_have_value(f"{created['id']}.{created['deletion_token']}")
    if how == "paste":
        page.get_by_role("button", name="Copy the key").click()
        text = key.input_value()
    else:
        with page.expect_download() as download:
            page.get_by_role("button", name="Save the key as a text file").click()
        key_file = tmp_path / download.value.suggested_filename
        download.value.save_as(key_file)
        assert created["deletion_token"] in key_file.read_text()
    expect(page.locator("[data-key-kept]")).to_be_visible()

    # Later, in a new tab: the result is gone, the key is all the person has.
    later = page.context.new_page()
    later.goto(live_server.url + "/#/my-data")
    expect(later.get_by_role("heading", level=1, name="My data")).to_be_visible()
    if how == "paste":
        later.locator("#my-data-key").fill(f"  {text}\n")
        later.get_by_role("button", name="Show my data").click()
    else:
        later.locator("#my-data-file").set_input_files(key_file)
    record = later.get_by_role("region", name="What is stored about you")
    expect(record).to_be_visible()
    expect(record.locator('[data-stored-field="first_name"]')).to_have_text("Eileen")
    expect(record.locator('[data-stored-field="true_age"]')).to_have_text("45 years")
    expect(record.locator('[data-stored-field="id"]')).to_have_text(created["id"])
    expect(record.locator('[data-stored-field="image"]')).to_contain_text("a JPEG of 512 × 512 pixels")
    expect(record.get_by_role("img", name="Your photo as it is stored")).to_be_visible()

    # Deleting asks first; "No" keeps it.
    record.get_by_role("button", name="Delete my data").click()
    expect(record.get_by_role("button", name="Yes, delete my data")).to_be_focused()
    record.get_by_role("button", name="No, keep it").click()
    assert live_server.admin_get(f"/submissions/{created['id']}").status_code == 200
    record.get_by_role("button", name="Delete my data").click()
    with later.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        record.get_by_role("button", name="Yes, delete my data").click()
    assert deleted.value.status == 204
    expect(later.get_by_role("heading", name="Your data was deleted")).to_be_focused()
    assert live_server.admin_get(f"/submissions/{created['id']}").status_code == 404

    # The same key again opens nothing, and says what to do.
    later.locator("#my-data-key").fill(f"{created['id']}.{created['deletion_token']}")
    later.get_by_role("button", name="Show my data").click()
    expect(later.locator("[data-my-data-error]")).to_contain_text("This key opens nothing here")


def test_my_data_says_what_to_do_with_something_that_is_not_a_key(page: Page, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/#/my-data")
    page.locator("#my-data-key").fill("hello")
    page.get_by_role("button", name="Show my data").click()
    expect(page.locator("[data-my-data-error]")).to_contain_text("This is not a whatsmyage key")
    expect(page.locator("#my-data-key")).to_be_focused()


def test_result_survives_a_reload_in_the_same_tab(page: Page, live_server: LiveServer) -> None:
    open_home(page, live_server)
    created = send_stored(page, live_server)
    predicted = page.locator("[data-predicted]").inner_text()
    page.get_by_role("button", name="Copy the key").click()  # kept: no warning on reload
    page.reload()
    expect(page.get_by_role("heading", level=1, name="Your result")).to_be_visible()
    expect(page.locator("[data-predicted]")).to_have_text(predicted)
    expect(page.locator("[data-key]")).to_have_value(f"{created['id']}.{created['deletion_token']}")
    expect(page.locator("[data-result-figure] [data-face-box]")).to_have_count(1)
    page.wait_for_function("() => document.querySelector('[data-result-figure] img').naturalWidth > 0")
    # ... and the form is a new one: consent not carried over.
    page.get_by_role("link", name="Try another photo").click()
    expect(page.get_by_label(CONSENT)).not_to_be_checked()
    live_server_delete(live_server, created)


def test_leaving_a_result_whose_key_was_never_kept_asks_first(page: Page, live_server: LiveServer) -> None:
    open_home(page, live_server)
    created = send_stored(page, live_server)
    dialogs: list[str] = []

    def dismiss(dialog) -> None:
        dialogs.append(dialog.type)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.close(run_before_unload=True)
    page.wait_for_timeout(300)
    assert dialogs == ["beforeunload"]
    live_server_delete(live_server, created)


def axe_violations(page: Page) -> list[str]:
    results = Axe().run(page)
    return [f"{v['id']}: {[n['target'] for n in v['nodes']]}" for v in results.response["violations"]]


@pytest.mark.parametrize("viewport", VIEWPORTS.values(), ids=VIEWPORTS.keys())
def test_every_view_has_no_accessibility_violation(
    page: Page, live_server: LiveServer, viewport: dict, output_path: str
) -> None:
    page.set_viewport_size(viewport)
    open_home(page, live_server)
    checked = {"form": axe_violations(page)}

    created = send_stored(page, live_server)
    page.get_by_role("button", name="See what is stored").click()
    expect(page.get_by_role("heading", name="What is stored", exact=True)).to_be_visible()
    page.get_by_role("button", name="Delete my data").click()
    expect(page.get_by_role("button", name="Yes, delete my data")).to_be_visible()
    checked["result, stored"] = axe_violations(page)
    page.screenshot(path=Path(output_path) / "result-stored.png", full_page=True)
    page.get_by_role("button", name="No, keep it").click()

    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Examples").click()
    expect(page.locator('[data-example][data-state="done"]')).to_have_count(3, timeout=30_000)
    checked["examples"] = axe_violations(page)
    page.screenshot(path=Path(output_path) / "examples.png", full_page=True)

    nav.get_by_role("link", name="Model").click()
    expect(page.locator("[data-model-body]")).to_be_visible()
    checked["model"] = axe_violations(page)

    nav.get_by_role("link", name="My data").click()
    page.locator("#my-data-key").fill(f"{created['id']}.{created['deletion_token']}")
    page.get_by_role("button", name="Show my data").click()
    expect(page.get_by_role("region", name="What is stored about you")).to_be_visible()
    checked["my data"] = axe_violations(page)
    page.screenshot(path=Path(output_path) / "my-data.png", full_page=True)

    page.get_by_role("link", name="Home").click()
    fill_form(page, {"name": "crowd.jpg", "mimeType": "image/jpeg", "buffer": crowd(*CROWDS["8-faces"])})
    page.get_by_role("button", name="Estimate my age", exact=True).click()
    expect(page.locator("[data-face-list] li")).not_to_have_count(0)
    checked["result, crowded"] = axe_violations(page)

    assert checked == {view: [] for view in checked}
    live_server_delete(live_server, created)
