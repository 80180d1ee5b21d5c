"""Limits as settings, each answered in the one error shape: faces per photo (a cap), processing
time (503 + Retry-After), POSTs per client address (429 + Retry-After). The body, file and pixel
limits and the slot wait are tested in test_errors.py, test_faces.py and test_hardening.py."""

from __future__ import annotations

import re

import httpx
import pytest

from api.core.settings import REPO_ROOT, Settings
from api.deps import Slots, get_predictor, get_slots
from api.http.request_rate_limit import TokenBuckets, client_key
from api.main import create_app
from ml import Predictor, PredictorSettings
from tests import badimages as b
from tests.api.conftest import assert_problem
from tests.api.test_faces import _three_faces

pytestmark = pytest.mark.anyio


def upload(data: bytes, name: str = "photo.png", ctype: str = "image/png") -> dict:
    return {"image": (name, data, ctype)}


async def test_faces_are_capped_at_the_setting_largest_first(client, app):
    group = upload(b.encode(_three_faces(), "JPEG"), "g.jpg", "image/jpeg")
    every = (await client.post("/predict", files=group)).json()["faces"]
    with Predictor.load(settings=PredictorSettings(max_faces=2, parallel=1)) as capped:
        app.dependency_overrides[get_predictor] = lambda: capped
        faces = (await client.post("/predict", files=group)).json()["faces"]
    assert len(every) == 3 and len(faces) == 2
    assert [f["box"] for f in faces] == [f["box"] for f in every[:2]]  # the two largest


async def test_work_over_the_time_limit_is_503_with_retry_after_and_keeps_its_slot(client, app):
    slots = Slots(1, wait=0.2, timeout=0.05)
    app.dependency_overrides[get_slots] = lambda: slots
    slow = b.png_tiny_file_large_area(6000)  # decoding 36 MP takes ~0.3-2 s here
    response = await client.post("/predict", files=upload(slow))
    body = assert_problem(response, 503, "processing_timeout")
    assert int(response.headers["retry-after"]) >= 1 and "too long" in body["detail"]
    # The thread cannot be stopped: it keeps the only slot until it is done, so the next photo
    # waits for it (503 overloaded after 0.2 s) rather than running beside it ...
    assert_problem(await client.post("/predict", files=upload(slow)), 503, "overloaded")
    # ... and then the thread gives the slot back: a request willing to wait gets it.
    slots.wait = slots.timeout = 30
    assert (await client.post("/predict", files=upload(b.encode(b.photo(), "PNG")))).status_code == 200
    assert slots._semaphore.value == 1


async def test_a_timeout_before_the_work_starts_gives_the_slot_back_at_once():
    slots = Slots(1, wait=1, timeout=0)  # times out before the thread can start
    with pytest.raises(Exception) as info:
        await slots.run(lambda: None)
    assert getattr(info.value, "code", None) == "processing_timeout"
    assert slots._semaphore.value == 1


@pytest.fixture
async def limited(settings: Settings):
    """A client of an app (no lifespan needed) that allows 2 POSTs at once, then 1 a minute."""
    app = create_app(settings.model_copy(update={"rate_limit_per_minute": 1, "rate_limit_burst": 2}))

    def client_from(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://test")

    return client_from


async def test_posts_over_the_rate_limit_are_429_with_retry_after(limited):
    async with limited("203.0.113.7") as client, limited("203.0.113.8") as other:
        for _ in range(2):  # the burst: refused for another reason (not multipart), but let through
            assert_problem(await client.post("/predict", json={}), 415, "unsupported_media_type")
        response = await client.post("/submissions", json={})
        body = assert_problem(response, 429, "rate_limited")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert "slow down" in body["detail"]
        assert response.headers["content-security-policy"]  # the one shape, headers and all
        assert (await client.get("/openapi.json")).status_code == 200  # GETs are not limited
        assert (await other.post("/predict", json={})).status_code == 415  # nor other addresses


def test_token_buckets_refill_at_the_rate():
    now = [0.0]
    buckets = TokenBuckets(per_minute=60, burst=3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]
    assert buckets.take("a") == pytest.approx(1.0)  # one a second
    now[0] += 0.5
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 10
    assert [buckets.take("a") for _ in range(3)] == [0, 0, 0]  # back to the burst, no more
    assert buckets.take("a") > 0
    assert buckets.take("b") == 0


def test_token_buckets_forget_the_least_recently_seen_past_their_size():
    buckets = TokenBuckets(per_minute=60, burst=1, max_keys=100, clock=lambda: 0.0)
    for i in range(1000):
        buckets.take(f"10.0.{i // 256}.{i % 256}")
    assert len(buckets._buckets) == 100


@pytest.mark.parametrize(("client", "key"), [
    (("203.0.113.7", 1), "203.0.113.7"),
    (("2001:db8:1:2:3:4:5:6", 1), "2001:db8:1:2::/64"),
    (("2001:db8:1:2:ffff::1", 1), "2001:db8:1:2::/64"),
    (("::ffff:198.51.100.1", 1), "198.51.100.1"),
    (("testclient", 1), "testclient"),
    (None, "unknown"),
])
def test_addresses_are_counted_by_host_and_ipv6_by_64(client, key):
    assert client_key({"client": client}) == key


def test_limit_settings_have_safe_defaults_and_documented_names(monkeypatch):
    for name in ("WMA_REQUEST_TIMEOUT_SECONDS", "WMA_RATE_LIMIT_PER_MINUTE", "WMA_RATE_LIMIT_BURST"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert (s.request_timeout_seconds, s.rate_limit_per_minute, s.rate_limit_burst) == (10.0, 60.0, 20)
    assert (s.max_faces, s.max_image_pixels, s.slot_wait_seconds) == (20, 40_000_000, 2.0)
    monkeypatch.setenv("WMA_REQUEST_TIMEOUT_SECONDS", "3.5")
    monkeypatch.setenv("WMA_RATE_LIMIT_PER_MINUTE", "0")
    monkeypatch.setenv("WMA_RATE_LIMIT_BURST", "5")
    s = Settings(_env_file=None)
    assert (s.request_timeout_seconds, s.rate_limit_per_minute, s.rate_limit_burst) == (3.5, 0, 5)
    config_page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    for name in ("WMA_REQUEST_TIMEOUT_SECONDS", "WMA_RATE_LIMIT_PER_MINUTE", "WMA_RATE_LIMIT_BURST"):
        assert re.search(rf"`{name}`", config_page), name
