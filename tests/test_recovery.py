"""The embedded Postgres dies under the served app (`python -m api serve`, one worker or two sharing
it) and the service brings it back by itself (api/storage/embedded.py's watchdog), on the real thing:

- SIGKILL of the postmaster while four clients submit photos: /healthz is 200 again within 10 s, with
  no restart of the service and one server for the workers; submissions are accepted again; every
  answer was 201 or 503 with Retry-After; /predict never failed; and, once each client retried its
  503s with the same Idempotency-Key, the stored rows are exactly the 201s answered (nothing committed
  was lost: crash recovery replayed the write-ahead log);
- a server that cannot start again (here a broken postgresql.conf): /healthz says so in its `detail`,
  the log says why, /predict and /detect go on, and it comes back once it can start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.served import ADMIN_TOKEN, Served, run_async, served

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
PHOTO = (FIXTURES / "astronaut.png").read_bytes()
FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}
RECOVERY_LIMIT = 10.0  # seconds from the kill to /healthz 200


async def health(url: str) -> httpx.Response:
    """On a connection of its own, so that with two workers either may answer."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        return await client.get("/healthz")


async def wait_for(url: str, ok, within: float) -> tuple[float, httpx.Response]:
    """Poll /healthz every 50 ms until `ok(response)`; the seconds it took and that response."""
    start = time.monotonic()
    while True:
        response = await health(url)
        if ok(response):
            return time.monotonic() - start, response
        assert time.monotonic() - start < within, response.json()
        await asyncio.sleep(0.05)


class Uploads:
    """Clients that submit the same photo again and again, each retrying a 503 with the same key."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[tuple[int, str | None]] = []  # status, Retry-After
        self.created: dict[str, str] = {}  # Idempotency-Key -> the id its 201 answered
        self.stopping = asyncio.Event()
        self._stored = asyncio.Event()

    async def stored(self, count: int) -> None:
        """Until `count` submissions were answered 201."""
        while len(self.created) < count:
            self._stored.clear()
            await self._stored.wait()

    async def client(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as client:
            key = str(uuid.uuid4())
            while True:
                response = await client.post("/submissions", data=FORM, headers={"Idempotency-Key": key},
                                             files={"image": ("me.png", PHOTO, "image/png")})
                self.answers.append((response.status_code, response.headers.get("retry-after")))
                if response.status_code == 201:
                    self.created[key] = response.json()["id"]
                    self._stored.set()
                    if self.stopping.is_set():
                        return
                    key = str(uuid.uuid4())
                else:  # a 503: the same request again, with the same key, after a pause
                    await asyncio.sleep(0.2)


async def predictions(url: str, stopping: asyncio.Event) -> list[int]:
    statuses = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while not stopping.is_set():
            response = await client.post("/predict", files={"image": ("me.png", PHOTO, "image/png")})
            statuses.append(response.status_code)
            await asyncio.sleep(0.1)
    return statuses


async def stored_ids(app: Served) -> set[str]:
    async with httpx.AsyncClient(base_url=app.url, timeout=30,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        ids: set[str] = set()
        while True:
            page = (await client.get("/submissions", params={"limit": 100, "offset": len(ids)})).json()
            ids |= {item["id"] for item in page["items"]}
            if len(ids) >= page["total"]:
                return ids


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_embedded_postgres_is_started_again_under_load_and_loses_nothing(workers):
    with served(workers=workers) as app:
        first = app.postmaster_pid()

        async def scenario() -> float:
            uploads = Uploads(app.url)
            stop_predicting = asyncio.Event()
            clients = [asyncio.create_task(uploads.client()) for _ in range(4)]
            predicting = asyncio.create_task(predictions(app.url, stop_predicting))
            await uploads.stored(4)  # under load: the clients are storing
            os.kill(first, signal.SIGKILL)
            recovered, _ = await wait_for(app.url, lambda r: r.status_code == 200, RECOVERY_LIMIT)
            for _ in range(8):  # and from whichever worker answers
                assert (await health(app.url)).status_code == 200
            await asyncio.wait_for(uploads.stored(len(uploads.created) + 8), 30)  # accepted again
            uploads.stopping.set()
            stop_predicting.set()
            await asyncio.wait_for(asyncio.gather(*clients), 60)
            assert set(await predicting) == {200}, "/predict failed while the database was down"
            assert {status for status, _ in uploads.answers} <= {201, 503}
            assert all(int(retry) > 0 for status, retry in uploads.answers if status == 503)
            assert await stored_ids(app) == set(uploads.created.values())  # every 201 has its row, nothing more
            return recovered

        recovered = run_async(scenario)
        print(f"\n{workers} worker(s): /healthz 200 again {recovered:.2f} s after SIGKILL of the postmaster")
        servers = app.postmasters()
        assert len(servers) == 1 and servers[0].pid != first  # one new server, shared by the workers
        assert app.stop() == (0 if workers > 1 else -signal.SIGTERM)
        assert not (app.pgdata / "postmaster.pid").exists()  # and stopped with the service
    assert recovered < RECOVERY_LIMIT


def test_an_embedded_postgres_that_cannot_start_is_reported_and_tried_again():
    with served(workers=1) as app:
        config = app.pgdata / "postgresql.conf"
        original = config.read_text()
        config.write_text(original + "\nshared_buffers = 'plenty'\n")  # read again only when it starts
        os.kill(app.postmaster_pid(), signal.SIGKILL)

        async def scenario() -> None:
            _, down = await wait_for(app.url, lambda r: "cannot be started again" in r.json().get("detail", ""), 20)
            assert down.status_code == 503 and down.headers["retry-after"]
            assert down.json()["database"] == "unavailable"
            async with httpx.AsyncClient(base_url=app.url, timeout=30) as client:
                for path in ("/predict", "/detect"):
                    response = await client.post(path, files={"image": ("me.png", PHOTO, "image/png")})
                    assert response.status_code == 200 and len(response.json()["faces"]) == 1
                refused = await client.post("/submissions", data=FORM, files={"image": ("me.png", PHOTO, "image/png")})
                assert refused.status_code == 503 and refused.json()["code"] == "database_unavailable"
            config.write_text(original)  # it can start again: the next attempt (10 s apart at most) does
            await wait_for(app.url, lambda r: r.status_code == 200, 20)

        try:
            run_async(scenario)
        finally:
            config.write_text(original)  # so that the server can be stopped, whatever happened
        errors = [line for line in app.log_lines() if line["message"].startswith("embedded Postgres cannot start")]
        assert errors and all(line["level"] == "ERROR" for line in errors)
        assert 'invalid value for parameter "shared_buffers"' in errors[0]["message"]
        # /healthz can answer 200 as soon as the server accepts connections, a moment before the
        # watchdog that started it writes its line
        deadline = time.monotonic() + 10
        while not any(line["message"].startswith("embedded Postgres running again") for line in app.log_lines()):
            assert time.monotonic() < deadline, "no 'embedded Postgres running again' line in the service log"
            time.sleep(0.2)
