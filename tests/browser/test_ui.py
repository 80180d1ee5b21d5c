"""The bundled UI in a real chromium, against the real app (real predictor, real database)."""

from __future__ import annotations

import math
import re
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import BrowserType, Page, Request, expect

from tests.browser.server import FIXTURES, ConsoleErrors, LiveServer, chromium_missing

if reason := chromium_missing():  # one line in the summary rather than a failure per test
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.browser

ASTRONAUT = FIXTURES / "astronaut.png"
COFFEE = FIXTURES / "coffee.png"
EXAMPLE_ASTRONAUT = Path(__file__).parents[2] / "frontend" / "examples" / "astronaut.jpg"
API_PATHS = re.compile(r"^/(predict|detect|submissions)(/|$)")


def number(text: str) -> int:
    """The whole number in a label such as "42", "−3" (a minus sign), "+2" or "±0"."""
    return int(text.strip().replace("−", "-").replace("±", "").replace("+", ""))


def api_requests(page: Page) -> list[str]:
    """Every request the page makes to the API from now on, as "METHOD /path"."""
    seen: list[str] = []

    def record(request: Request) -> None:
        path = urlsplit(request.url).path
        if API_PATHS.match(path):
            seen.append(f"{request.method} {path}")

    page.on("request", record)
    return seen


def fill_form(
    page: Page, *, age: str = "45", name: str = "Eileen", photo: Path | None = ASTRONAUT, consent: bool = False
) -> None:
    page.get_by_label("Your age").fill(age)
    page.get_by_label("First name").fill(name)
    if photo is not None:
        page.locator("#photo").set_input_files(photo)
        expect(page.locator("[data-preview]")).to_be_visible()
    consent_box = page.get_by_label("Permission to save and retain the given data")
    if consent:
        consent_box.check()
    else:
        expect(consent_box).not_to_be_checked()


def open_home(page: Page, server: LiveServer) -> None:
    page.goto(server.url + "/")
    expect(page.locator("html[data-ready]")).to_be_attached()
    expect(page.get_by_role("heading", level=1, name="How old do you look?")).to_be_visible()


def test_form_shows_age_true_age_and_error_without_storing(
    page: Page, live_server: LiveServer, output_path: str
) -> None:
    open_home(page, live_server)
    requests = api_requests(page)
    fill_form(page)
    page.screenshot(path=Path(output_path) / "form.png", full_page=True)

    page.get_by_role("button", name="Estimate my age").click()

    expect(page).to_have_url(re.compile(r"#/result$"))
    expect(page.get_by_role("heading", level=1, name="Your result")).to_be_focused()
    boxes = page.locator("[data-result-figure] [data-face-box]")
    expect(boxes).to_have_count(1)
    predicted = number(page.locator("[data-predicted]").inner_text())
    assert 25 <= predicted <= 60
    expect(page.locator("[data-true-age]")).to_have_text("45")
    assert number(page.locator("[data-error]").inner_text()) == predicted - 45
    label = page.locator("[data-result-figure] [data-face-label]")
    expect(label).to_have_text(re.compile(rf"^{predicted} \(\d+–\d+\)$"))
    # Nothing stored: only /predict was called, and there is nothing to delete.
    assert requests == ["POST /predict"]
    expect(page.get_by_role("button", name="Delete my data")).to_have_count(0)
    page.screenshot(path=Path(output_path) / "result.png", full_page=True)


def test_consent_stores_the_submission_and_delete_my_data_removes_it(
    page: Page, live_server: LiveServer, output_path: str
) -> None:
    open_home(page, live_server)
    fill_form(page, age="45", name="Eileen", consent=True)
    with page.expect_response(lambda r: r.url.endswith("/submissions") and r.request.method == "POST") as info:
        page.get_by_role("button", name="Estimate my age and store it").click()
    assert info.value.status == 201
    submission_id = info.value.json()["id"]
    token = info.value.json()["deletion_token"]

    expect(page.get_by_role("heading", level=1, name="Your result")).to_be_visible()
    expect(page.locator("[data-result-figure] [data-face-box]")).to_have_count(1)
    expect(page.get_by_role("heading", name="Your data is stored")).to_be_visible()
    # The key is shown open: the submission's id and its deletion token.
    expect(page.get_by_role("textbox", name="Your key", exact=True)).to_have_value(f"{submission_id}.{token}")

    stored = live_server.admin_get(f"/submissions/{submission_id}")
    assert stored.status_code == 200
    assert stored.json()["first_name"] == "Eileen"
    assert stored.json()["true_age"] == 45
    page.screenshot(path=Path(output_path) / "result-stored.png", full_page=True)

    page.get_by_role("button", name="Delete my data").click()
    assert live_server.admin_get(f"/submissions/{submission_id}").status_code == 200  # asked first
    with page.expect_response(lambda r: f"/submissions/{submission_id}" in r.url) as deleted:
        page.get_by_role("button", name="Yes, delete my data").click()
    assert deleted.value.status == 204
    expect(page.get_by_role("heading", name="Your data was deleted")).to_be_focused()
    expect(page.get_by_role("button", name="Delete my data")).to_have_count(0)
    assert live_server.admin_get(f"/submissions/{submission_id}").status_code == 404


def test_see_what_is_stored_and_save_the_key_as_a_text_file(
    page: Page, live_server: LiveServer, output_path: str
) -> None:
    """The result page shows what the server keeps, fetched with the person's own key (not the admin's),
    and saves that key as a small text file, all under the app's own Content-Security-Policy."""
    open_home(page, live_server)
    fill_form(page, age="45", name="Eileen", consent=True)
    with page.expect_response(lambda r: r.url.endswith("/submissions") and r.request.method == "POST") as info:
        page.get_by_role("button", name="Estimate my age").click()
    created = info.value.json()
    submission_id, token = created["id"], created["deletion_token"]
    expect(page.get_by_role("heading", name="Your data is stored")).to_be_visible()
    sent: list[Request] = []
    page.on("request", lambda r: sent.append(r) if submission_id in r.url else None)

    show = page.get_by_role("button", name="See what is stored")
    expect(show).to_have_attribute("aria-expanded", "false")
    with page.expect_response(lambda r: r.url.endswith(f"/submissions/{submission_id}/image")) as image:
        show.click()
    assert image.value.status == 200 and image.value.headers["cache-control"] == "private, no-store"
    view = page.get_by_role("region", name="What is stored")
    expect(view).to_be_visible()
    expect(page.get_by_role("heading", name="What is stored")).to_be_focused()
    expect(page.get_by_role("button", name="Hide what is stored")).to_have_attribute("aria-expanded", "true")

    as_admin = live_server.admin_get(f"/submissions/{submission_id}").json()
    expect(view.locator('[data-stored-field="first_name"]')).to_have_text("Eileen")
    expect(view.locator('[data-stored-field="true_age"]')).to_have_text("45 years")
    shown_age = math.floor(as_admin["predicted_age"] + 0.5)  # whole years, halves up as the page rounds
    expect(view.locator('[data-stored-field="predicted_age"]')).to_have_text(f"about {shown_age} years")
    expect(view.locator('[data-stored-field="model_version"]')).to_have_text(as_admin["model_version"])
    expect(view.locator('[data-stored-field="id"]')).to_have_text(submission_id)
    expect(view.locator('[data-stored-field="image"]')).to_have_text(
        "a JPEG of 512 × 512 pixels, without the file's metadata (you sent astronaut.png)"
    )
    photo = view.get_by_role("img", name="Your photo as it is stored")
    expect(photo).to_have_attribute("src", re.compile("^blob:"))
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=photo.element_handle())
    assert photo.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [512, 512]
    # Both reads carried the person's key, and nothing of the admin's.
    reads = [r for r in sent if r.method == "GET"]
    assert sorted(urlsplit(r.url).path for r in reads) == [f"/submissions/{submission_id}",
                                                           f"/submissions/{submission_id}/image"]
    for request in reads:
        headers = request.all_headers()
        assert headers["x-deletion-token"] == token and "authorization" not in headers
    page.screenshot(path=Path(output_path) / "result-what-is-stored.png", full_page=True)

    with page.expect_download() as download_info:
        page.get_by_role("button", name="Save the key as a text file").click()
    download = download_info.value
    assert download.suggested_filename == f"whatsmyage-key-{submission_id[:8]}.txt"
    key_file = Path(download.path()).read_text()
    assert f"Key:        {submission_id}.{token}" in key_file and f"Submission:     {submission_id}" in key_file
    assert f"{live_server.url}/#/my-data" in key_file
    assert len(key_file) < 1500 and "Eileen" not in key_file
    # The commands in the file work as written: the key reads the submission.
    read = re.search(r'curl -H "X-Deletion-Token: (\S+)" (\S+)\n', key_file)
    assert read and read.group(2) == f"{live_server.url}/submissions/{submission_id}"
    with httpx.Client() as client:
        assert client.get(read.group(2), headers={"X-Deletion-Token": read.group(1)}).json() == as_admin

    page.get_by_role("button", name="Hide what is stored").click()
    expect(view).to_be_hidden()
    page.get_by_role("button", name="Delete my data").click()
    with page.expect_response(lambda r: r.request.method == "DELETE") as deleted:
        page.get_by_role("button", name="Yes, delete my data").click()
    assert deleted.value.status == 204
    expect(page.get_by_role("heading", name="Your data was deleted")).to_be_focused()
    expect(page.get_by_role("button", name="See what is stored")).to_have_count(0)
    assert live_server.admin_get(f"/submissions/{submission_id}").status_code == 404


@pytest.mark.parametrize(
    ("field", "values", "message"),
    [
        ("true_age", {"age": "121"}, "Enter an age from 0 to 120."),
        ("true_age", {"age": "-1"}, "Enter your age as a whole number from 0 to 120."),
        ("true_age", {"age": "12.5"}, "Enter your age as a whole number from 0 to 120."),
        ("true_age", {"age": ""}, "Enter your age."),
        ("first_name", {"name": "A"}, "Enter a first name of 2 characters or more."),
        ("image", {"photo": None}, "Choose a photo, drop one here or take one."),
    ],
    ids=["age-121", "age-minus-1", "age-12.5", "age-empty", "one-letter-name", "no-photo"],
)
def test_invalid_field_shows_its_message_and_sends_nothing(
    page: Page, live_server: LiveServer, field: str, values: dict, message: str
) -> None:
    open_home(page, live_server)
    requests = api_requests(page)
    fill_form(page, consent=True, **values)

    page.get_by_role("button", name="Estimate my age").click()

    error = page.locator(f'[data-error-for="{field}"]')
    expect(error).to_have_text(message)
    expect(error).to_be_visible()
    field_input = page.locator(f'[data-field="{field}"]')
    expect(field_input).to_have_attribute("aria-invalid", "true")
    expect(field_input).to_be_focused()
    # Only this field is flagged, and the message is tied to the input for screen readers.
    expect(page.locator("[data-error-for]:not(:empty)")).to_have_count(1)
    expect(page).to_have_url(re.compile(r"#/$"))
    page.wait_for_timeout(300)  # a request, had one started, would have been seen by now
    assert requests == []


def test_photo_without_a_face_says_so(page: Page, live_server: LiveServer) -> None:
    open_home(page, live_server)
    fill_form(page, photo=COFFEE)
    page.get_by_role("button", name="Estimate my age").click()

    expect(page.get_by_role("heading", level=1, name="No face found")).to_be_focused()
    expect(page.locator("[data-no-face]")).to_contain_text("could not find a face")
    expect(page.locator("[data-result-figure] [data-face-box]")).to_have_count(0)
    expect(page.locator("[data-numbers]")).to_be_hidden()
    expect(page).to_have_title(re.compile("No face found"))


def test_photo_without_a_face_with_consent_stores_nothing(
    page: Page, live_server: LiveServer, console_errors: ConsoleErrors
) -> None:
    console_errors.allow("status of 422")  # chromium logs every 4xx answer to fetch()
    open_home(page, live_server)
    fill_form(page, photo=COFFEE, consent=True)
    with page.expect_response(lambda r: r.url.endswith("/submissions")) as info:
        page.get_by_role("button", name="Estimate my age").click()
    assert info.value.status == 422
    assert info.value.json()["code"] == "no_face_detected"

    expect(page.get_by_role("heading", level=1, name="No face found")).to_be_visible()
    expect(page.locator("[data-no-face]")).to_contain_text("Nothing was stored.")
    expect(page.get_by_role("button", name="Delete my data")).to_have_count(0)


def test_server_refusal_is_shown_next_to_the_field_it_names(
    page: Page, live_server: LiveServer, console_errors: ConsoleErrors
) -> None:
    console_errors.allow("status of 415")  # chromium logs every 4xx answer to fetch()
    open_home(page, live_server)
    fill_form(page, photo=None)
    # Bytes that claim to be a PNG but are not an image: only the server can tell.
    page.locator("#photo").set_input_files({"name": "fake.png", "mimeType": "image/png", "buffer": b"not an image"})
    with page.expect_response(lambda r: r.url.endswith("/predict")) as info:
        page.get_by_role("button", name="Estimate my age").click()
    assert info.value.status == 415
    assert info.value.headers["content-type"].startswith("application/problem+json")

    # Next to the photo, in words that say what to do.
    error = page.locator('[data-error-for="image"]')
    expect(error).to_contain_text("Choose a JPEG, PNG or WebP photo")
    expect(page.get_by_role("button", name="Estimate my age")).to_be_enabled()
    expect(page).to_have_url(re.compile(r"#/$"))


def test_examples_view_draws_live_predictions(page: Page, live_server: LiveServer, output_path: str) -> None:
    open_home(page, live_server)
    with page.expect_response(lambda r: r.url.endswith("/predict")):
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Examples").click()
    expect(page.get_by_role("heading", level=1, name="Examples")).to_be_focused()
    cards = page.locator("[data-example]")
    expect(cards).to_have_count(3)
    expect(page.locator('[data-example][data-state="done"]')).to_have_count(3, timeout=30_000)

    astronaut = page.locator('[data-example="astronaut"]')
    expect(astronaut.locator("[data-face-box]")).to_have_count(1)
    expect(astronaut.locator("[data-face-label]")).to_have_text(re.compile(r"^\d+ \(\d+–\d+\)$"))
    expect(astronaut.locator("[data-example-faces] li")).to_have_count(1)
    expect(page.locator('[data-example="cameraman"] [data-face-box]')).to_have_count(1)
    coffee = page.locator('[data-example="coffee"]')
    expect(coffee.locator("[data-face-box]")).to_have_count(0)
    expect(coffee.locator("[data-example-status]")).to_have_text("No face found.")
    for img in page.locator("[data-example] img").all():
        assert img.get_attribute("alt")
    page.screenshot(path=Path(output_path) / "examples.png", full_page=True)

    # An example can be tried in the form.
    page.get_by_role("button", name="Use the astronaut photo in the form").click()
    expect(page).to_have_url(re.compile(r"#/$"))
    expect(page.locator("[data-preview]")).to_be_visible()
    expect(page.locator("[data-file-name]")).to_have_text("astronaut.jpg")


def test_face_box_stays_on_the_face_when_the_page_is_resized(
    page: Page, live_server: LiveServer, output_path: str
) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    open_home(page, live_server)
    fill_form(page)
    with page.expect_response(lambda r: r.url.endswith("/predict")) as info:
        page.get_by_role("button", name="Estimate my age").click()
    prediction = info.value.json()
    face = prediction["faces"][0]["box"]
    width, height = prediction["image"]["width"], prediction["image"]["height"]
    img = page.locator("[data-result-figure] img")
    box = page.locator("[data-result-figure] [data-face-box]")
    expect(box).to_have_count(1)

    viewports = [(1280, 900), (390, 844), (320, 640), (800, 600)]
    for viewport in ({"width": w, "height": h} for w, h in viewports):
        page.set_viewport_size(viewport)
        page.wait_for_timeout(100)
        shown, drawn = img.bounding_box(), box.bounding_box()
        assert shown and drawn
        scale = shown["width"] / width
        assert shown["height"] / height == pytest.approx(scale, rel=0.01)
        assert drawn["x"] - shown["x"] == pytest.approx(face["x"] * scale, abs=2)
        assert drawn["y"] - shown["y"] == pytest.approx(face["y"] * scale, abs=2)
        assert drawn["width"] == pytest.approx(face["width"] * scale, abs=2)
        assert drawn["height"] == pytest.approx(face["height"] * scale, abs=2)
        # Nothing sticks out sideways, down to a 320 px phone.
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        page.screenshot(path=Path(output_path) / f"result-{viewport['width']}px.png", full_page=True)


def test_views_have_their_own_urls_and_the_back_button_works(page: Page, live_server: LiveServer) -> None:
    open_home(page, live_server)
    expect(page).to_have_title(re.compile("whatsmyage"))
    # The first Tab reaches the skip link, which moves focus to the heading without leaving the view.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="How old do you look?")).to_be_focused()
    expect(page).to_have_url(re.compile(r"#/$"))
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Home")).to_have_attribute("aria-current", "page")
    expect(nav.get_by_role("link", name="API docs")).to_have_attribute("href", "/docs")

    nav.get_by_role("link", name="Examples").click()
    expect(page).to_have_url(re.compile(r"#/examples$"))
    expect(nav.get_by_role("link", name="Examples")).to_have_attribute("aria-current", "page")
    expect(page.get_by_role("heading", level=1, name="Examples")).to_be_focused()

    page.go_back()
    expect(page.get_by_role("heading", level=1, name="How old do you look?")).to_be_focused()
    expect(page.locator('[data-view="examples"]')).to_be_hidden()

    # Opened directly, the result view says there is nothing to show; an unknown route shows the form.
    page.goto(live_server.url + "/#/result")
    expect(page.get_by_text("There is no result to show yet")).to_be_visible()
    page.goto(live_server.url + "/#/nowhere")
    expect(page.get_by_role("heading", level=1, name="How old do you look?")).to_be_visible()
    expect(page).to_have_url(re.compile(r"#/$"))


def test_page_assets_are_served_by_the_app(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert "<title>whatsmyage</title>" in page.text
        for path in ("/styles.css", "/js/app.js", "/js/api.js", "/js/model.js", "/js/chart.js", "/js/mydata.js",
                     "/favicon.svg", "/examples/astronaut.jpg"):
            assert client.get(path).status_code == 200, path


def test_camera_photo_is_previewed_and_sent(
    browser_type: BrowserType, browser_type_launch_args: dict, live_server: LiveServer
) -> None:
    # Chromium's fake camera (a moving test pattern) stands in for a webcam.
    args = [*browser_type_launch_args["args"], "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
    browser = browser_type.launch(**{**browser_type_launch_args, "args": args})
    try:
        context = browser.new_context(permissions=["camera"])
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        open_home(page, live_server)
        fill_form(page, photo=None)

        page.get_by_role("button", name="Take a photo").click()
        expect(page.get_by_role("button", name="Capture")).to_be_focused()
        expect(page.locator("[data-camera-video]")).to_be_visible()
        page.get_by_role("button", name="Capture").click()
        expect(page.locator("[data-preview]")).to_be_visible()
        expect(page.locator("[data-file-name]")).to_have_text("camera.jpg")
        expect(page.locator("[data-camera]")).to_be_hidden()

        with page.expect_response(lambda r: r.url.endswith("/predict")) as info:
            page.get_by_role("button", name="Estimate my age").click()
        assert info.value.status == 200
        # The test pattern is read as a face in some frames and not in others: either result is fine.
        title = "Your result" if info.value.json()["faces"] else "No face found"
        expect(page.get_by_role("heading", level=1, name=title)).to_be_visible()
        expect(page.locator("[data-result-figure] img")).to_have_attribute("src", re.compile("^blob:"))
        assert errors == []
    finally:
        browser.close()


def drop_file(page: Page, name: str, mime_type: str, data: bytes) -> None:
    """Drop a file on the photo zone, as a drag from the desktop does."""
    transfer = page.evaluate_handle(
        "([name, type, bytes]) => { const t = new DataTransfer();"
        " t.items.add(new File([new Uint8Array(bytes)], name, { type })); return t; }",
        [name, mime_type, list(data)],
    )
    zone = page.locator("[data-dropzone]")
    zone.dispatch_event("dragenter", {"dataTransfer": transfer})
    zone.dispatch_event("dragover", {"dataTransfer": transfer})
    zone.dispatch_event("drop", {"dataTransfer": transfer})


def test_dropped_photo_is_previewed_and_a_dropped_non_image_is_refused(page: Page, live_server: LiveServer) -> None:
    open_home(page, live_server)
    requests = api_requests(page)
    fill_form(page, photo=None)

    drop_file(page, "notes.txt", "text/plain", b"hello")
    expect(page.locator('[data-error-for="image"]')).to_have_text(
        "This file is not an image: choose a JPEG, PNG or WebP photo."
    )
    expect(page.locator("[data-preview]")).to_be_hidden()

    drop_file(page, "astronaut.jpg", "image/jpeg", EXAMPLE_ASTRONAUT.read_bytes())
    expect(page.locator('[data-error-for="image"]')).to_be_hidden()
    expect(page.locator("[data-preview]")).to_be_visible()
    expect(page.locator("[data-file-name]")).to_have_text("astronaut.jpg")
    assert requests == []

    page.get_by_role("button", name="Estimate my age").click()
    expect(page.locator("[data-result-figure] [data-face-box]")).to_have_count(1)
    assert requests == ["POST /predict"]


def test_page_runs_under_the_apps_own_content_security_policy(page: Page, live_server: LiveServer) -> None:
    """No test-only wrapper: the policy is the app's, and the page works under it (any violation is a
    console error, which fails the test)."""
    response = page.goto(live_server.url + "/")
    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy and "'unsafe-inline'" not in policy
    expect(page.get_by_role("heading", level=1)).to_be_visible()
