"""The API docs page at `/docs`: Swagger UI from the `swagger-ui-bundle-v2` package, served from here so
that it needs no CDN and works under the Content-Security-Policy of `api.security.headers` (its start-up
script is a file of its own, since the policy allows no inline script). FastAPI's own `/docs` loads
Swagger UI from a CDN and starts it with an inline script; ReDoc is not served.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

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
