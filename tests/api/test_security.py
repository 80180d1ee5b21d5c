"""Security headers on every response, no internals in any, the docs page under its CSP, the admin
token compared in constant time."""

from __future__ import annotations

import re
import secrets

import httpx
import pytest

from api.core.settings import REPO_ROOT, Settings
from api.main import create_app
from api.security import auth, headers
from tests.api.conftest import assert_problem

pytestmark = pytest.mark.anyio

EXPECTED = {
    "content-security-policy": headers.CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (name, response.status_code, response.request.url)
    csp = response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp


def test_the_policy_allows_only_this_origin():
    directives = dict(d.strip().split(" ", 1) for d in headers.CONTENT_SECURITY_POLICY.split(";"))
    assert directives["default-src"] == directives["script-src"] == directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["base-uri"] == "'none'"
    assert not re.search(r"https?:|\*", headers.CONTENT_SECURITY_POLICY)


async def test_every_kind_of_answer_carries_the_security_headers(client, face_png, admin):
    answers = [
        await client.get("/healthz"),
        await client.get("/openapi.json"),
        await client.post("/predict", files={"image": ("a.png", face_png, "image/png")}),
        await client.get("/submissions", headers=admin),
        await client.get("/nope"),  # 404
        await client.put("/predict"),  # 405
        await client.post("/predict", json={}),  # 415
        await client.post("/predict", files={"image": ("a.png", b"", "image/png")}),  # 422
        await client.get("/submissions"),  # 401
        await client.post("/predict", content=b"x", headers={"content-length": str(10**9),
                                                             "content-type": "multipart/form-data; boundary=x"}),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 404, 405, 415, 422, 401, 413]
    for response in answers:
        assert_security_headers(response)


async def test_static_files_carry_the_security_headers(tmp_path):
    (tmp_path / "index.html").write_text('<!doctype html><script type="module" src="app.js"></script>')
    (tmp_path / "app.js").write_text("export {};")
    app = create_app(Settings(_env_file=None, frontend_dir=tmp_path, rate_limit_per_minute=0))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        for path in ("/", "/app.js"):
            response = await client.get(path)
            assert response.status_code == 200
            assert_security_headers(response)


async def test_hsts_only_over_https(client):
    assert "strict-transport-security" not in (await client.get("/healthz")).headers
    response = await client.get("https://test/healthz")
    assert response.headers["strict-transport-security"] == headers.HSTS


async def test_an_unexpected_error_is_a_generic_500_problem_with_the_headers(settings):
    app = create_app(settings)  # a test-only app: the real stack, with one route that fails

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internal detail at /srv/app/api/routes.py line 42")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)  # as a server would
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    body = assert_problem(response, 500, "internal_error")
    assert body["detail"] == "Something went wrong on our side."
    for leak in ("secret", "RuntimeError", "Traceback", "/srv/app", "line 42", ".py"):
        assert leak not in response.text
    assert_security_headers(response)


async def test_docs_are_served_from_here_under_the_same_policy(client):
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_security_headers(page)
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all('src="/' in attrs and not body.strip() for attrs, body in scripts)  # none inline
    assert "style=" not in page.text and "<style" not in page.text
    assert not re.search(r"(src|href)=\"(https?:)?//", page.text)  # nothing from another host
    for asset, kind in (("/docs/swagger-ui-bundle.js", "javascript"), ("/docs/swagger-ui.css", "css"),
                        ("/docs/start.js", "javascript")):
        response = await client.get(asset)
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
        assert_security_headers(response)
    assert "/openapi.json" in page.text
    assert (await client.get("/redoc")).status_code == 404


def test_admin_token_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = secrets.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.secrets, "compare_digest", spy)
    assert auth.tokens_match("right-token", "right-token")
    assert not auth.tokens_match("x", "right-token")
    assert calls == [(32, 32), (32, 32)]  # digests: the time does not even depend on the length


def test_no_route_compares_tokens_with_equality():
    """The deletion and admin tokens are compared with compare_digest only (a textual check)."""
    for path in (REPO_ROOT / "api").rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"(token|credentials)[\w.]*\s*[!=]=\s*", text), path
