"""Save the README's picture of a result page: `python -m tests.browser.screenshot [--out FILE]`.

The app as `make run` serves it (an embedded Postgres in a scratch folder, migrated first), Debian's
chromium through Playwright (the README's picture is the first 1024x800 px of the page, in 256
colours), a real group photo (tests/fixtures/group.jpg, public domain: 16 faces worth an age, 3 set
aside) sent without consent (nothing stored), the pointer on the third face's label.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image
from playwright.sync_api import expect, sync_playwright

from tests.browser.server import CHROMIUM_PATH, FIXTURES, ROOT, serve

OUT = ROOT / "docs" / "img" / "result.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    os.environ.pop("DATABASE_URL", None)  # the embedded Postgres, in the scratch folder
    with tempfile.TemporaryDirectory(prefix="whatsmyage-shot-") as data_dir:
        env = {"WMA_DATA_DIR": data_dir, "WMA_CORS_ORIGINS": ""}
        subprocess.run([sys.executable, "-m", "api", "migrate"], cwd=ROOT, env={**os.environ, **env}, check=True)
        with serve(env) as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM_PATH, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
            )
            page = browser.new_page(viewport={"width": 1024, "height": 800})
            page.goto(url + "/")
            expect(page.locator("html[data-ready]")).to_be_attached()
            page.get_by_label("Your age").fill("45")
            page.get_by_label("First name").fill("Eileen")
            page.locator("#photo").set_input_files(FIXTURES / "group.jpg")
            page.get_by_role("button", name="Estimate my age", exact=True).click()
            expect(page.locator("[data-face-list] li").nth(15)).to_be_visible()
            page.locator(":focus").evaluate("element => element.blur()")
            page.locator('[data-result-figure] [data-face-label="3"]').hover()  # in view: nothing scrolls
            page.wait_for_timeout(300)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=args.out)
            browser.close()
    # A palette of 256 colours keeps the file small enough for the repository (about a third).
    shot = Image.open(args.out).convert("RGB")
    shot.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        args.out, optimize=True
    )
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
