"""Failed-authentication throttling, with real requests against the real app and Postgres: 10 wrong
tokens a minute from one address (admin bearer, metrics token and deletion tokens together), then 429
`auth_rate_limited` with Retry-After on the authenticated routes until the window passes, for that
address only; shared by workers through the database; counted in /metrics; logged without the token."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import SecretStr
from sqlalchemy import text
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.logs import JsonFormatter
from api.core.metrics import Metrics
from api.core.settings import Settings
from api.deps import get_auth_throttle, get_settings
from api.main import create_app
from api.security.failed_auth_throttle import FailedAuthentications
from api.storage import db
from tests.api.conftest import ADMIN_TOKEN, assert_problem, create_submission

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "metrics-token-for-the-throttle-tests-0123456789"
WRONG = {"Authorization": "Bearer not-the-admin-token-but-quite-long-0123456789"}
_addresses = itertools.count(1)


def new_address() -> str:
    """A documentation address (TEST-NET-2) no other test uses: the app's memory outlives a test."""
    n = next(_addresses)
    return f"198.51.{100 + n // 250}.{n % 250 + 1}"


@pytest.fixture
def client_from(app, served) -> Callable[[str], httpx.AsyncClient]:
    """Clients of the shared app, each from the address given (as the server would put it in the scope)."""

    def make(address: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=served[1], client=(address, 50000)),
                                 base_url="http://test")

    return make


def assert_throttled(response: httpx.Response) -> int:
    body = assert_problem(response, 429, "auth_rate_limited")
    assert "failed authentication" in body["detail"]
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    return retry_after


async def test_ten_wrong_admin_tokens_then_429_for_that_address_only(client_from, admin):
    attacker, bystander = new_address(), new_address()
    async with client_from(attacker) as client, client_from(bystander) as other:
        for _ in range(10):
            assert_problem(await client.get("/submissions", headers=WRONG), 401, "invalid_token")
        # Blocked now, before any token is looked at: even the right one, on every authenticated route.
        assert_throttled(await client.get("/submissions", headers=admin))
        assert_throttled(await client.get("/audit", headers=admin))
        assert_throttled(await client.get("/submissions/00000000-0000-4000-8000-000000000000", headers=WRONG))
        response = await client.delete("/submissions/00000000-0000-4000-8000-000000000000",
                                       headers={"X-Deletion-Token": "x" * 43})
        assert_throttled(response)
        assert response.headers["content-security-policy"] and response.headers["x-request-id"]
        # Routes without authentication still answer it.
        assert (await client.get("/healthz")).status_code == 200
        assert_problem(await client.post("/predict", json={}), 415, "unsupported_media_type")
        # Another address: the right token works, and a wrong one is an ordinary 401.
        assert (await other.get("/submissions", headers=admin)).status_code == 200
        assert_problem(await other.get("/submissions", headers=WRONG), 401, "invalid_token")


async def test_a_missing_token_is_not_a_failure(client_from, admin):
    async with client_from(new_address()) as client:
        for _ in range(15):
            assert_problem(await client.get("/submissions"), 401, "not_authenticated")
        assert (await client.get("/submissions", headers=admin)).status_code == 200


async def test_admin_metrics_and_deletion_tokens_count_together(app, settings, client_from, face_png, admin):
    app.dependency_overrides[get_settings] = lambda: settings.model_copy(
        update={"metrics_token": SecretStr(METRICS_TOKEN)})
    async with client_from(new_address()) as client:
        sub = await create_submission(client, face_png)
        url = f"/submissions/{sub['id']}"
        for _ in range(4):
            assert_problem(await client.get("/metrics", headers=WRONG), 401, "invalid_token")
        for _ in range(3):
            assert_problem(await client.get(url, headers=WRONG), 401, "invalid_token")
        for _ in range(3):
            response = await client.delete(url, headers={"X-Deletion-Token": "wrong-guess"})
            assert_problem(response, 403, "invalid_deletion_token")
        # The eleventh: the owner's own token is refused too until the window passes ...
        assert_throttled(await client.delete(url, headers={"X-Deletion-Token": sub["deletion_token"]}))
        assert_throttled(await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}))
    # ... and nothing was deleted.
    async with client_from(new_address()) as elsewhere:
        assert (await elsewhere.get(url, headers=admin)).status_code == 200


async def test_guessing_deletion_tokens_is_throttled_and_deletes_nothing(client_from, face_png, admin):
    async with client_from(new_address()) as client:
        sub = await create_submission(client, face_png)
        url = f"/submissions/{sub['id']}"
        statuses = [(await client.get(f"{url}/image", headers={"X-Deletion-Token": f"guess-{i}"})).status_code
                    for i in range(12)]
        assert statuses == [403] * 10 + [429] * 2
    async with client_from(new_address()) as owner:
        assert (await owner.get(url, headers=admin)).status_code == 200


async def test_the_block_ends_when_the_window_passes(app, client_from, admin):
    now = [datetime(2026, 12, 1, 12, 0, tzinfo=UTC)]
    throttle = FailedAuthentications(Metrics(), clock=lambda: now[0])
    app.dependency_overrides[get_auth_throttle] = lambda: throttle
    async with client_from(new_address()) as client:
        for _ in range(9):
            assert (await client.get("/submissions", headers=WRONG)).status_code == 401
            now[0] += timedelta(seconds=5)  # the tenth comes 45 s after the first
        assert (await client.get("/submissions", headers=WRONG)).status_code == 401
        assert assert_throttled(await client.get("/submissions", headers=admin)) == 15  # until 60 s after the first
        now[0] += timedelta(seconds=14)
        assert assert_throttled(await client.get("/submissions", headers=admin)) == 1
        now[0] += timedelta(seconds=1)
        assert (await client.get("/submissions", headers=admin)).status_code == 200  # a new window
        for _ in range(9):  # it starts counting again from one
            assert (await client.get("/submissions", headers=WRONG)).status_code == 401
        assert (await client.get("/submissions", headers=admin)).status_code == 200


async def test_a_limit_of_zero_turns_the_throttle_off(app, client_from, admin):
    metrics = Metrics()
    app.dependency_overrides[get_auth_throttle] = lambda: FailedAuthentications(metrics, limit=0)
    async with client_from(new_address()) as client:
        for _ in range(25):
            assert_problem(await client.get("/submissions", headers=WRONG), 401, "invalid_token")
        assert (await client.get("/submissions", headers=admin)).status_code == 200
    assert metrics.auth_failures.labels("admin")._value.get() == 25  # still counted in /metrics


async def test_failures_and_blocks_are_counted_in_metrics_and_logged_without_the_token(client_from, served, admin):
    app, _ = served
    stream_lines: list[dict] = []
    handler = logging.Handler()
    handler.emit = lambda record: stream_lines.append(json.loads(JsonFormatter().format(record)))  # type: ignore
    logger = logging.getLogger("api.auth")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    address = new_address()
    try:
        async with client_from(address) as client:
            before = (await client.get("/metrics")).text
            for _ in range(10):
                await client.get("/submissions", headers=WRONG)
            assert_throttled(await client.get("/submissions", headers=admin))
            after = (await client.get("/metrics")).text
    finally:
        logger.removeHandler(handler)

    def value(text: str, series: str) -> float:
        line = next((li for li in text.splitlines() if li.startswith(series + " ")), None)
        return float(line.split()[-1]) if line else 0.0

    failures = 'whatsmyage_auth_failures_total{kind="admin"}'
    assert value(after, failures) - value(before, failures) == 10
    assert value(after, "whatsmyage_auth_throttled_total") - value(before, "whatsmyage_auth_throttled_total") == 1
    failed = [line for line in stream_lines if line["message"] == "authentication failed"]
    assert [line["failures"] for line in failed] == list(range(1, 11))
    assert all(line["kind"] == "admin" and "client" not in line for line in failed)
    (blocked,) = [line for line in stream_lines if line["message"] == "address throttled"]
    assert blocked["client"] == address and 0 < blocked["retry_after_s"] <= 60
    logged = json.dumps(stream_lines)
    assert "not-the-admin-token" not in logged and ADMIN_TOKEN not in logged and "Bearer" not in logged
    assert "not-the-admin-token" not in after and ADMIN_TOKEN not in after


async def test_ipv6_clients_of_one_64_share_their_count(client_from, admin):
    async with client_from("2001:db8:17:1::a") as one, client_from("2001:db8:17:1::b") as two, \
            client_from("2001:db8:17:2::a") as elsewhere:
        for _ in range(5):
            await one.get("/submissions", headers=WRONG)
            await two.get("/submissions", headers=WRONG)
        assert_throttled(await one.get("/submissions", headers=admin))
        assert_throttled(await two.get("/submissions", headers=admin))
        assert (await elsewhere.get("/submissions", headers=admin)).status_code == 200


async def test_behind_a_trusted_proxy_the_client_address_counts(served, app, admin):
    """As uvicorn serves it with --forwarded-allow-ips: the address is X-Forwarded-For's, not the proxy's."""
    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    proxied = ProxyHeadersMiddleware(served[1], trusted_hosts="127.0.0.1")
    transport = httpx.ASGITransport(app=proxied, client=("127.0.0.1", 50000))  # every request from the proxy
    attacker, someone = new_address(), new_address()
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as proxy:
        for _ in range(10):
            response = await proxy.get("/submissions", headers=WRONG | {"X-Forwarded-For": attacker})
            assert response.status_code == 401
        assert_throttled(await proxy.get("/submissions", headers=admin | {"X-Forwarded-For": attacker}))
        # A client that names another address before the attacker's: the proxy appended the real one.
        spoofed = await proxy.get("/submissions", headers=admin | {"X-Forwarded-For": f"{someone}, {attacker}"})
        assert_throttled(spoofed)
        assert (await proxy.get("/submissions", headers=admin | {"X-Forwarded-For": someone})).status_code == 200


# --- shared by workers ------------------------------------------------------------------------------


@asynccontextmanager
async def worker(settings: Settings, url: str) -> AsyncIterator[Callable[[str], httpx.AsyncClient]]:
    """One app with its own lifespan, memory and throttle, on the database at `url`: a worker process
    in all but the process (they share nothing but Postgres)."""
    app = create_app(settings.model_copy(update={"database_url": url}))
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager:
        yield lambda address: httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app, client=(address, 50000)), base_url="http://test")


@pytest.mark.slow
async def test_two_workers_share_the_count_through_postgres(settings, scratch_url, admin):
    address = new_address()
    async with worker(settings, scratch_url) as first, worker(settings, scratch_url) as second:
        async with first(address) as a, second(address) as b:
            for _ in range(5):  # five failures on each worker: ten for the address
                assert (await a.get("/submissions", headers=WRONG)).status_code == 401
                assert (await b.get("/submissions", headers=WRONG)).status_code == 401
            assert_throttled(await a.get("/submissions", headers=admin))
            assert_throttled(await b.get("/submissions", headers=admin))
        async with first(new_address()) as other:
            assert (await other.get("/submissions", headers=admin)).status_code == 200
    engine = db.create_engine(scratch_url)
    try:
        async with engine.connect() as connection:
            failures = (await connection.execute(text("SELECT failures FROM auth_throttle WHERE client = :c"),
                                                 {"c": address})).scalar_one()
    finally:
        await engine.dispose()
    assert failures == 10


@pytest.mark.slow
async def test_simultaneous_guesses_are_held_to_ten_in_one_worker(settings, scratch_url, face_png):
    """All sent at once (each request awaits the database between its check and its comparison): no
    more than ten are compared, whichever arrive first; the rest are 429."""
    async with worker(settings, scratch_url) as app:
        async with app(new_address()) as client:
            statuses = await asyncio.gather(*(client.get("/submissions", headers=WRONG) for _ in range(30)))
        assert sorted(r.status_code for r in statuses) == [401] * 10 + [429] * 20
        async with app(new_address()) as owner:
            sub = await create_submission(owner, face_png)
        async with app(new_address()) as client:
            statuses = await asyncio.gather(*(client.delete(f"/submissions/{sub['id']}",
                                                            headers={"X-Deletion-Token": f"guess-{i}"})
                                              for i in range(30)))
        assert sorted(r.status_code for r in statuses) == [403] * 10 + [429] * 20


# --- the database down ------------------------------------------------------------------------------


@pytest.fixture
def unreachable_session() -> Iterator[AsyncSession]:
    """A session on a Postgres that refuses connections (nothing listens on port 9 here)."""
    engine = db.create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none")
    yield AsyncSession(engine)


async def test_with_the_database_down_each_worker_counts_on_its_own(unreachable_session):
    throttle = FailedAuthentications(Metrics())
    for _ in range(10):
        await throttle.check(unreachable_session, "192.0.2.1")
        await throttle.failed(unreachable_session, "192.0.2.1", "metrics")
    with pytest.raises(Exception) as info:
        await throttle.check(unreachable_session, "192.0.2.1")
    assert getattr(info.value, "code", None) == "auth_rate_limited"
    await throttle.check(unreachable_session, "192.0.2.2")  # other addresses go on


async def test_metrics_with_a_token_still_answer_when_the_database_is_down(settings):
    """/metrics needs no database: the throttle falls back to the worker's own counts."""
    broken = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:9/none",
                                         "metrics_token": SecretStr(METRICS_TOKEN)})
    app = create_app(broken)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(new_address(), 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            ok = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert ok.status_code == 200 and "whatsmyage_http_requests_total" in ok.text
            for _ in range(10):
                assert_problem(await client.get("/metrics", headers=WRONG), 401, "invalid_token")
            assert_throttled(await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}))
            assert_problem(await client.get("/submissions", headers=admin_header()), 429, "auth_rate_limited")


def admin_header() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
