"""Security headers on every response.

`install_security_headers(app)` wraps the whole app, outside Starlette's ServerErrorMiddleware, so that 500s, CORS
refusals, 413s and 429s from the middleware, static files and the docs all carry the headers. A
response that sets one of these headers itself keeps its own.

Every answer but the UI's own files is also `Cache-Control: no-store`: answers carry photos, names,
ages, faces found and tokens, which no browser or proxy cache may keep (a route may say `private,
no-store` itself).

The Content-Security-Policy allows nothing but this origin: no inline script or style, no other
host. The UI (`frontend/`) is built for it, and so is the docs page
(`api.http.docs_page`).
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # The UI may use the camera, on this origin only; nothing else.
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=(), payment=(), usb=()",
}
NO_STORE = "no-store"
# Only over HTTPS (a TLS-terminating proxy with uvicorn's --proxy-headers makes the scheme https):
# over plain HTTP browsers ignore it, and it must not pin a development host on localhost.
HSTS = "max-age=31536000"


class SecurityHeaders:
    """ASGI middleware: adds `HEADERS` (and HSTS over HTTPS) to every HTTP response that lacks them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
                if not is_frontend_file(scope):
                    headers.setdefault("Cache-Control", NO_STORE)
                if scope.get("scheme") == "https":
                    headers.setdefault("Strict-Transport-Security", HSTS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def is_frontend_file(scope: Scope) -> bool:
    """Whether the UI's static files answered (routing marks the scope), rather than the API."""
    fastapi_scope = scope.get("fastapi")
    return isinstance(fastapi_scope, dict) and "frontend_path" in fastapi_scope


def install_security_headers(app: FastAPI) -> None:
    """The headers outside everything else (wrapping the built middleware stack)."""
    build = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return SecurityHeaders(build())

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]
