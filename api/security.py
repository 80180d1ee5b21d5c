"""Security headers on every response, and the API docs page served from here, so it needs no CDN.

`install(app)` wraps the whole app, outside Starlette's ServerErrorMiddleware, so that 500s, CORS
refusals, 413s and 429s from the middleware, static files and the docs all carry the headers. A
response that sets one of these headers itself keeps its own.

Every answer but the UI's own files is also `Cache-Control: no-store`: answers carry photos, names,
ages, faces found and tokens, which no browser or proxy cache may keep (a route may say `private,
no-store` itself).

The Content-Security-Policy allows nothing but this origin: no inline script or style, no other
host. The UI (`frontend/`) is built for it; the docs page at `/docs` is Swagger UI served from the
`swagger-ui-bundle-v2` package with its start-up script in a file of its own, so it works offline
under the same policy. (FastAPI's own `/docs` loads Swagger UI from a CDN and starts it with an
inline script; ReDoc is not served.)
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response
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


DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/start.js"></script>
</body>
</html>
"""

DOCS_START_JS = """// Starts Swagger UI; a file of its own because the Content-Security-Policy allows no inline script.
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
});
"""


def swagger_ui_dir() -> Path:
    from swagger_ui_bundle import swagger_ui_path

    return Path(str(swagger_ui_path))


def add_docs(app: FastAPI) -> None:
    """`/docs`: Swagger UI from local files. Build the app with `docs_url=None, redoc_url=None`."""
    assets = swagger_ui_dir()
    html = DOCS_HTML.format(title=app.title, openapi_url=app.openapi_url)

    @app.get("/docs", include_in_schema=False)
    async def read_docs() -> HTMLResponse:
        return HTMLResponse(html)

    @app.get("/docs/start.js", include_in_schema=False)
    async def read_docs_script() -> Response:
        return Response(DOCS_START_JS, media_type="text/javascript")

    @app.get("/docs/swagger-ui-bundle.js", include_in_schema=False)
    async def read_swagger_ui_js() -> FileResponse:
        return FileResponse(assets / "swagger-ui-bundle.js", media_type="text/javascript")

    @app.get("/docs/swagger-ui.css", include_in_schema=False)
    async def read_swagger_ui_css() -> FileResponse:
        return FileResponse(assets / "swagger-ui.css", media_type="text/css")


def install(app: FastAPI) -> None:
    """The docs page, and the headers outside everything else (wrapping the built middleware stack)."""
    add_docs(app)
    build = app.build_middleware_stack

    def build_with_headers() -> ASGIApp:
        return SecurityHeaders(build())

    app.build_middleware_stack = build_with_headers  # type: ignore[method-assign]
