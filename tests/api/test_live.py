"""The live stream (WebSocket /live) on the real app, served by uvicorn, through a real WebSocket
client: its protocol, every limit, a bad frame, ids that stay."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from api.core.settings import REPO_ROOT, Settings
from tests import badimages as b
from tests.browser.server import serve
from tests.served import ADMIN_TOKEN, served
from tests.video import camera_frames, jpeg

LIMITS = {"WMA_LIVE_CONNECTIONS": "2", "WMA_LIVE_MAX_FRAME_BYTES": "200000", "WMA_LIVE_FRAMES_PER_SECOND": "30",
          "WMA_LIVE_IDLE_SECONDS": "1.5"}


@pytest.fixture(scope="module")
def frames() -> list[bytes]:
    return [jpeg(f) for f in camera_frames(12)]


def serve_live(migrated_url: str, data: Path, **env: str) -> Iterator[str]:
    """The app as `make run` serves it, on the tests' database; yields its ws:// URL of /live."""
    with serve({"DATABASE_URL": migrated_url, "WMA_DATA_DIR": str(data), "WMA_RATE_LIMIT_PER_MINUTE": "0",
                "WMA_CORS_ORIGINS": "", **env}) as url:
        yield url


@pytest.fixture(scope="module")
def server(migrated_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve_live(migrated_url, tmp_path_factory.mktemp("live"), **LIMITS)


class Stream:
    """A WebSocket client of /live; `closed()` reads until the server closes it."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def receive_json(self) -> dict:
        return json.loads(self.ws.recv(timeout=60))

    def send_bytes(self, data: bytes) -> None:
        self.ws.send(data)

    def send_text(self, text: str) -> None:
        self.ws.send(text)

    def closed(self) -> tuple[int, str]:
        with pytest.raises(ConnectionClosed) as e:
            for _ in range(400):
                self.receive_json()
        assert e.value.rcvd is not None, "the server closed the stream without a close frame"
        return e.value.rcvd.code, e.value.rcvd.reason


@contextmanager
def stream(server: str, **options: object) -> Iterator[Stream]:
    with connect(server.replace("http://", "ws://") + "/live", open_timeout=30, **options) as ws:  # type: ignore[arg-type]
        yield Stream(ws)


def test_a_stream_says_hello_with_its_limits_then_answers_each_frame(server, frames, predictor):
    with stream(server) as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello"
        assert hello["limits"] == {"max_frame_bytes": 200_000, "frames_per_second": 30, "idle_seconds": 1.5}
        ws.send_bytes(frames[0])
        answer = ws.receive_json()
    assert answer["type"] == "faces" and answer["frame"] == 1
    assert answer["image"] == {"width": 480, "height": 360}
    assert answer["model_version"] == hello["model_version"]
    (face,) = answer["faces"]
    # The predictor decides: this frame's age and its calibrated interval as it gives them.
    (expected,) = predictor.predict(frames[0], video=True).faces
    assert face["frame_age"] == round(expected.age, 1)
    assert face["age_interval"] == [round(v, 1) for v in expected.age_interval]
    assert face["age"] == face["frame_age"]  # a face's first frame: nothing to smooth with yet
    assert face["id"] == 1 and face["steady"] is False
    assert 150 < face["box"]["x"] + face["box"]["width"] / 2 < 330  # her face, top middle
    assert answer["server_ms"] > 0


def test_a_still_face_keeps_its_id_and_its_shown_age_moves_less_than_its_frames_age(server, frames):
    with stream(server) as ws:
        ws.receive_json()
        answers = []
        for frame in frames:
            ws.send_bytes(frame)
            answers.append(ws.receive_json())
    assert {f["id"] for a in answers for f in a["faces"]} == {1}
    shown = [a["faces"][0]["age"] for a in answers]
    raw = [a["faces"][0]["frame_age"] for a in answers]
    assert max(shown) - min(shown) <= max(raw) - min(raw)
    # The age shown always sits inside the range shown beside it, though it lags the frame's own.
    assert all(low <= face["age"] <= high for a in answers for face in a["faces"]
               for low, high in [face["age_interval"]])


def test_each_stream_has_its_own_ids(server, frames):
    for _ in range(2):
        with stream(server) as ws:
            ws.receive_json()
            ws.send_bytes(frames[0])
            assert ws.receive_json()["faces"][0]["id"] == 1


@pytest.mark.parametrize(("frame", "code"), [(b"not an image at all", "unsupported_image"),
                                             (b.truncated_jpeg(), "corrupt_image"),
                                             (b"", "empty_file")], ids=["text", "truncated_jpeg", "empty"])
def test_a_bad_frame_gets_an_error_and_the_stream_goes_on(server, frames, frame, code):
    with stream(server) as ws:
        ws.receive_json()
        ws.send_bytes(frame)
        error = ws.receive_json()
        assert error["type"] == "error" and error["frame"] == 1
        assert error["code"] == code and error["detail"]
        ws.send_bytes(frames[0])
        answer = ws.receive_json()
    assert answer["type"] == "faces" and answer["frame"] == 2 and len(answer["faces"]) == 1


def test_a_text_message_gets_an_error_and_the_stream_goes_on(server, frames):
    with stream(server) as ws:
        ws.receive_json()
        ws.send_text("hello")
        assert ws.receive_json()["code"] == "binary_frames_only"
        ws.send_bytes(frames[0])
        assert ws.receive_json()["type"] == "faces"


def test_a_frame_over_the_limit_closes_the_stream_1009(server):
    with stream(server) as ws:
        ws.receive_json()
        ws.send_bytes(b"\xff\xd8" + b"\0" * 200_000)
        assert ws.closed() == (1009, "a frame larger than 200000 bytes")


def test_a_stream_sending_too_fast_is_closed_1008(server):
    with stream(server) as ws:
        ws.receive_json()
        # Five seconds' worth at once: bad frames, answered in a few ms each, so the limit is met within
        # the first couple of seconds even on a busy machine.
        for _ in range(150):
            ws.send_bytes(b"x")
        assert ws.closed() == (1008, "more than 30 frames a second")


def test_a_frame_rate_within_the_limit_is_served(server):
    with stream(server) as ws:
        ws.receive_json()
        for _ in range(45):  # 30 at once, then 15 more at the limit's pace
            ws.send_bytes(b"x")
            assert ws.receive_json()["type"] == "error"
            time.sleep(1 / 25)


def test_an_idle_stream_is_closed_4408(server):
    with stream(server) as ws:
        ws.receive_json()
        start = time.monotonic()
        assert ws.closed() == (4408, "no frame for 1.5 s")
    assert 1.4 < time.monotonic() - start < 10


def test_past_the_live_slots_a_stream_is_closed_1013_and_a_slot_comes_back(server, frames):
    with stream(server) as first, stream(server) as second:
        first.receive_json()
        second.receive_json()
        with stream(server) as third:
            assert third.closed() == (1013, "all 2 live slots are taken; try again later")
    # The two ended: their slots are free once the server has seen them go (a moment after the close).
    for _ in range(50):
        with stream(server) as again:
            try:
                assert again.receive_json()["type"] == "hello"
                break
            except ConnectionClosed:
                time.sleep(0.1)
    else:
        pytest.fail("no live slot came back")


def test_a_page_of_another_origin_is_refused_1008(server):
    with stream(server, origin="https://elsewhere.example") as ws:
        assert ws.closed() == (1008, "a page of another origin may not use this stream")
    with stream(server, origin=server) as ws:  # the page the service serves itself
        assert ws.receive_json()["type"] == "hello"


def test_live_frames_are_counted_and_timed_in_the_metrics(server, frames):
    with stream(server) as ws:
        ws.receive_json()
        ws.send_bytes(frames[0])
        ws.receive_json()
        ws.send_bytes(b"x")
        ws.receive_json()
    for _ in range(50):  # the server learns of the close a moment after the client sent it
        text = httpx.get(server + "/metrics").text
        if "whatsmyage_live_streams_open 0.0" in text:
            break
        time.sleep(0.1)
    assert 'whatsmyage_live_frames_total{outcome="answered"}' in text
    assert 'whatsmyage_live_frames_total{outcome="bad_frame"}' in text
    assert "whatsmyage_live_frame_seconds_count" in text
    assert 'whatsmyage_faces_per_photo_count{endpoint="live"}' in text
    assert 'whatsmyage_live_streams_total{end="client"}' in text
    assert "whatsmyage_live_streams_open 0.0" in text


def test_with_no_live_slots_live_mode_is_off(migrated_url, tmp_path):
    for server in serve_live(migrated_url, tmp_path, WMA_LIVE_CONNECTIONS="0"):
        with stream(server) as ws:
            assert ws.closed() == (1008, "live mode is off on this server")


def test_the_live_limits_are_settings_read_from_the_environment_and_documented(monkeypatch):
    env = {"WMA_LIVE_CONNECTIONS": "3", "WMA_LIVE_MAX_FRAME_BYTES": "500000", "WMA_LIVE_FRAMES_PER_SECOND": "12.5",
           "WMA_LIVE_IDLE_SECONDS": "9"}
    for name in env:
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert (s.live_connections, s.live_max_frame_bytes, s.live_frames_per_second, s.live_idle_seconds) == \
        (4, 1024 * 1024, 20.0, 30.0)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings(_env_file=None)
    assert (s.live_connections, s.live_max_frame_bytes, s.live_frames_per_second, s.live_idle_seconds) == \
        (3, 500_000, 12.5, 9.0)
    monkeypatch.setenv("WMA_LIVE_MAX_FRAME_BYTES", str(17 * 1024 * 1024))  # over uvicorn's own 16 MiB
    with pytest.raises(ValidationError):
        Settings(_env_file=None)
    config_page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    for name in env:
        assert f"`{name}`" in config_page, name


def test_frames_are_neither_stored_nor_logged():
    """The service as `python -m api serve` runs it, its log and data folder read afterwards: a stream's
    frames (good and bad) leave no trace but the counters."""
    marker = b"frame-that-must-not-be-logged-" + uuid.uuid4().hex.encode()
    with served() as app:
        with stream(app.url) as ws:
            ws.receive_json()
            for frame in [jpeg(f) for f in camera_frames(3)] + [marker]:
                ws.send_bytes(frame)
                ws.receive_json()
        time.sleep(0.5)
        submissions = httpx.get(app.url + "/submissions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        log = (app.data / "stdout").read_bytes()
        lines = app.log_lines()
        files = [p for p in app.data.rglob("*") if p.is_file() and "pgdata" not in p.parts]
        stored = [p for p in files if p.read_bytes()[:2] == b"\xff\xd8" or marker in p.read_bytes()]
    assert submissions.status_code == 200 and submissions.json()["total"] == 0
    assert marker not in log and marker.hex().encode() not in log
    assert any("serving model" in json.dumps(line) for line in lines)  # the log was read
    assert not [line for line in lines if "frame" in json.dumps(line).lower()], lines
    assert stored == []
