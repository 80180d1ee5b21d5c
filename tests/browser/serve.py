"""Serve the app for the browser tests: `python -m tests.browser.serve --port N`.

The app as `make run` serves it (settings from the environment), on a port of the tests' choosing.

The app is wrapped in the Content-Security-Policy that production will send (issue 6), so a page
that needed an inline script or style, or an outside URL, fails its tests with a console error.
"""

from __future__ import annotations

import argparse

import uvicorn

CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; media-src 'self' blob:; frame-ancestors 'none'"
)


class WithCSP:
    """ASGI middleware: add the policy to every HTTP response that has none."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_csp(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_csp)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()

    from api.config import Settings
    from api.main import create_app

    # Settings from the environment (ADMIN_TOKEN, DATABASE_URL, ...), as `make run` reads them; the
    # tests' fixtures have migrated the database already.
    settings = Settings(host="127.0.0.1", port=args.port)
    uvicorn.run(WithCSP(create_app(settings)), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
