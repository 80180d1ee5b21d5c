"""Serve the app for the browser tests: `python -m tests.browser.serve --port N`.

The app as `make run` serves it (settings from the environment), on a port of the tests' choosing,
with its own Content-Security-Policy: a page that needed an inline script or style, or an outside
URL, fails its tests with a console error.
"""

from __future__ import annotations

import argparse

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    from api.core.settings import Settings
    from api.main import create_app

    # Settings from the environment (ADMIN_TOKEN, DATABASE_URL, ...), as `make run` reads them; the
    # tests' fixtures have migrated the database already.
    settings = Settings(host="127.0.0.1", port=args.port)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
