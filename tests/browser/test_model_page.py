"""The Model page in a real chromium, against the real app: the figures it shows are the ones GET /model
serves for the model that answers /predict, under the app's own Content-Security-Policy."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Response, expect

from tests.browser.server import FIXTURES, ConsoleErrors, LiveServer, chromium_missing

if reason := chromium_missing():  # one line in the summary rather than a failure per test
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.browser

# Collects every Content-Security-Policy violation of the page, whatever the console says about it.
WATCH_CSP = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
"""


def bands(metrics: dict) -> list[tuple[str, float | None]]:
    """(band, MAE) in the served order: the contract's list, or the `ml evaluate --json` mapping."""
    by_band = metrics["by_band"]
    if isinstance(by_band, dict):
        return [(band, mae) for band, (_, mae) in by_band.items()]
    return [(entry["band"], entry["mae"]) for entry in by_band]


def answering_version(server: LiveServer) -> str:
    """The model version that answers a real photo now."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        answered = client.post("/predict", files={"image": ("a.png", (FIXTURES / "astronaut.png").read_bytes())})
    assert answered.status_code == 200
    return answered.json()["model_version"]


def wait_until_served(server: LiveServer, version: str, timeout: float = 20) -> None:
    """Wait for the hot swap: the workers poll the active version every few seconds."""
    deadline = time.monotonic() + timeout
    while (served := answering_version(server)) != version:
        assert time.monotonic() < deadline, f"{served} still answers, not {version}"
        time.sleep(0.5)


def open_model_page(page: Page, server: LiveServer) -> dict:
    """Open the page at home, follow the nav's Model link, and return the GET /model the page received."""
    page.add_init_script(WATCH_CSP)
    page.goto(server.url + "/")
    expect(page.locator("html[data-ready]")).to_be_attached()
    with page.expect_response(lambda r: r.url.endswith("/model")) as info:
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Model").click()
    response: Response = info.value
    assert response.status == 200
    return response.json()


def test_nav_opens_the_model_page_with_the_served_models_figures(
    page: Page, live_server: LiveServer, output_path: str
) -> None:
    page.set_viewport_size({"width": 1280, "height": 900})
    model = open_model_page(page, live_server)

    expect(page).to_have_url(re.compile(r"#/model$"))
    expect(page).to_have_title(re.compile("The model"))
    expect(page.get_by_role("heading", level=1, name="The model")).to_be_focused()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Model")).to_have_attribute("aria-current", "page")

    # The version named is the one that answers photos now.
    assert model["version"] == answering_version(live_server)
    # Named in plain words, with the technical name beside it.
    expect(page.locator("[data-model-version] .version")).to_have_text(model["version"])
    expect(page.locator("[data-model-version] .plain-name")).not_to_be_empty()

    # One bar per age band, in the served order, each labelled with the served MAE, and as tall as
    # its MAE says (the tallest bar fills the plot).
    validation = model["evaluation"]["validation"]
    served = bands(validation)
    assert len(served) >= 2
    chart = page.get_by_role("img", name=re.compile("^Average error by age band"))
    expect(chart).to_be_visible()
    # A value axis in years: round ticks from 0, the top one at or above the tallest bar.
    ticks = [float(t) for t in page.locator("[data-model-chart] .tick").all_text_contents()]
    assert ticks[0] == 0 and ticks == sorted(ticks) and len(ticks) >= 3
    assert ticks[-1] >= max(mae for _, mae in bands(model["evaluation"]["validation"]) if mae is not None)
    expect(page.locator("[data-model-chart] .axis-name")).to_have_text("years")
    bars = chart.locator("[data-bar]")
    expect(bars).to_have_count(len(served))
    heights = {}
    for bar, (band, mae) in zip(bars.all(), served, strict=True):
        label = band.replace("-", "–")
        expect(bar.locator(".label")).to_have_text(label)
        if mae is None:
            expect(bar.locator("rect")).to_have_count(0)
            continue
        expect(bar.locator(".value")).to_have_text(f"{mae:.1f}")
        box = bar.locator("rect").bounding_box()
        assert box
        heights[band] = (box["height"], mae)
    tallest_height, tallest_mae = max(heights.values(), key=lambda pair: pair[1])
    for height, mae in heights.values():
        assert height == pytest.approx(tallest_height * mae / tallest_mae, abs=1.5)
    level = chart.locator("[data-level]")
    assert float(level.get_attribute("data-level") or "nan") == pytest.approx(validation["mae"])

    # The same figures as a table, for anyone who cannot see the chart.
    table = page.get_by_role("table", name="Average error by age band")
    rows = table.locator("tbody tr")
    expect(rows).to_have_count(len(served))
    for row, (band, mae) in zip(rows.all(), served, strict=True):
        expect(row.get_by_role("rowheader")).to_have_text(band.replace("-", "–"))
        expect(row).to_contain_text("–" if mae is None else f"{mae:.1f} years")
    expect(page.locator("[data-model-overall]")).to_contain_text(f"off by {validation['mae']:.1f} years")

    # The interval's coverage, in words.
    tenths, percent = round(validation["coverage"] * 10), round(validation["coverage"] * 100)
    expect(page.locator("[data-model-coverage-words]")).to_contain_text(
        re.compile(rf"The likely range we give contains the true age for (about )?{tenths} in 10 people \({percent}%\)")
    )

    # What it learned from.
    trained = page.locator("[data-model-trained-on] li")
    if "utkface" in model["trained_on"]["data"]:
        expect(trained.first).to_contain_text("UTKFace")

    # The history lists every version, newest first, the answering one marked as such.
    history = page.get_by_role("table", name="Model versions, newest first").locator("tbody tr")
    expect(history).to_have_count(len(model["history"]))
    expect(history.locator("th .version")).to_have_text([entry["version"] for entry in model["history"]])
    active = page.locator('[data-model-history] tr[data-state="active"]')
    expect(active).to_have_count(1)
    expect(active.get_by_role("rowheader")).to_contain_text(model["version"])
    expect(active).to_contain_text("Answering now")
    # Coverage by age band, when the bands carry it, as a second chart beside the first.
    by_band = validation["by_band"] if isinstance(validation["by_band"], list) else []
    with_coverage = any(entry.get("coverage") is not None for entry in by_band)
    coverage_chart = page.get_by_role("img", name=re.compile("^How often the likely range holds the true age"))
    expect(coverage_chart).to_have_count(1 if with_coverage else 0)

    page.screenshot(path=Path(output_path) / "model.png", full_page=True)
    # On phones nothing sticks out sideways: the tables are read row by row, nothing cut at the edge.
    for width in (390, 320):
        page.set_viewport_size({"width": width, "height": 740})
        expect(bars).to_have_count(len(served))
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        for wrap in page.locator(".table-wrap").all():
            assert wrap.evaluate("node => node.scrollWidth <= node.clientWidth + 1"), "a table is cut at the edge"
    page.screenshot(path=Path(output_path) / "model-320px.png", full_page=True)
    assert page.evaluate("window.cspViolations") == []


def test_model_page_shows_the_version_an_administrator_activates_and_the_rollback(
    page: Page, live_server: LiveServer
) -> None:
    """Each visit asks GET /model again: after an activation the page names the new version, which is the
    one that answers /predict, and the history says the one before was retired and why."""
    before = httpx.get(live_server.url + "/model").json()
    first = before["version"]
    other = next(v["version"] for v in before["history"] if v["state"] in ("candidate", "retired"))
    try:
        activated = live_server.admin_post(f"/models/{other}/activate")
        assert activated.status_code == 200, activated.text
        wait_until_served(live_server, other)

        model = open_model_page(page, live_server)
        assert model["version"] == other
        expect(page.locator("[data-model-version] .version")).to_have_text(other)
        active = page.locator('[data-model-history] tr[data-state="active"]')
        expect(active.get_by_role("rowheader")).to_contain_text(other)
        retired = page.locator(f'[data-model-history] tr[data-version="{first}"]')
        expect(retired).to_have_attribute("data-state", "retired")
        expect(retired).to_contain_text("Used before, retired")
        expect(retired).to_contain_text(f"replaced by {other}")
        served = bands(model["evaluation"]["validation"])
        expect(page.locator("[data-model-chart] [data-bar] .value")).to_have_text(
            [f"{mae:.1f}" for _, mae in served if mae is not None]
        )
    finally:
        # Roll back, so that the other tests see the model they started with.
        assert live_server.admin_post(f"/models/{first}/activate").status_code == 200
        wait_until_served(live_server, first)

    # Back on the page, the rolled-back version is named again.
    with page.expect_response(lambda r: r.url.endswith("/model")):
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Home").click()
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Model").click()
    expect(page.locator("[data-model-version] .version")).to_have_text(first)


def test_model_page_is_reached_and_read_with_the_keyboard(page: Page, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/")
    expect(page.locator("html[data-ready]")).to_be_attached()
    link = page.get_by_role("navigation", name="Main").get_by_role("link", name="Model")
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="The model")).to_be_focused()
    expect(page.get_by_role("img", name=re.compile("^Average error by age band"))).to_be_visible()
    # The tables sit in named regions that take the focus, so that a wide one scrolls with the arrow keys.
    region = page.get_by_role("region", name="Average error by age band")
    region.focus()
    expect(region).to_be_focused()
    # The status line tells screen readers the description arrived.
    expect(page.locator("[data-status]")).to_contain_text("The model's description is loaded")


def test_model_page_says_so_when_the_description_cannot_be_loaded(
    page: Page, live_server: LiveServer, console_errors: ConsoleErrors
) -> None:
    console_errors.allow("status of 503")  # chromium logs every failed fetch()
    problem = {"type": "urn:whatsmyage:problem:overloaded", "title": "Service Unavailable", "status": 503,
               "detail": "The server is busy.", "code": "overloaded"}
    page.route(
        "**/model",
        lambda route: route.fulfill(status=503, content_type="application/problem+json",
                                    headers={"Retry-After": "5"}, body=json.dumps(problem)),
    )
    page.add_init_script(WATCH_CSP)
    page.goto(live_server.url + "/#/model")

    alert = page.get_by_role("alert").filter(has_text="could not be loaded")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("The server is busy. Try again in 5 seconds.")
    expect(page.locator("[data-model-body]")).to_be_hidden()
    expect(page.get_by_role("heading", level=1, name="The model")).to_be_visible()

    # Once the server answers again, "Try again" shows the description.
    page.unroute("**/model")
    with page.expect_response(lambda r: r.url.endswith("/model")) as info:
        page.get_by_role("button", name="Try again").click()
    assert info.value.status == 200
    expect(page.locator("[data-model-version] .version")).to_have_text(info.value.json()["version"])
    expect(alert).to_be_hidden()
    # The rest of the page still works.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Home").click()
    expect(page.get_by_role("heading", level=1, name="How old do you look?")).to_be_focused()
    assert page.evaluate("window.cspViolations") == []


def test_model_page_on_an_older_server_without_get_model(
    page: Page, live_server: LiveServer, console_errors: ConsoleErrors
) -> None:
    console_errors.allow("status of 404")
    # What a server from before GET /model answers: the app's own 404 for an unknown path.
    with httpx.Client(base_url=live_server.url) as client:
        unknown = client.get("/no-such-route")
    assert unknown.status_code == 404
    page.route(
        "**/model",
        lambda route: route.fulfill(status=404, content_type=unknown.headers["content-type"], body=unknown.content),
    )
    page.goto(live_server.url + "/#/model")

    alert = page.get_by_role("alert").filter(has_text="older version")
    expect(alert).to_be_visible()
    expect(alert).to_contain_text("Estimates still work as usual.")
    expect(page.get_by_role("button", name="Try again")).to_be_hidden()
    expect(page.locator("[data-model-body]")).to_be_hidden()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Examples").click()
    expect(page.get_by_role("heading", level=1, name="Examples")).to_be_focused()
