"""GET /live (WebSocket): faces and ages of a camera's frames, followed from frame to frame.

The protocol (also in docs/api.md and the app's description, since OpenAPI has no WebSockets):

- The client opens `ws(s)://<host>/live`. The server answers `{"type": "hello", "model_version",
  "limits": {"max_frame_bytes", "frames_per_second", "idle_seconds"}}`.
- The client sends frames, each a binary message holding a JPEG (PNG and WebP are read too), and
  best waits for each answer before sending the next.
- Each frame is answered `{"type": "faces", "frame": n, "model_version", "image": {"width", "height"},
  "faces": [{"id", "box", "score", "age", "frame_age", "age_interval", "steady"}], "server_ms"}`:
  `id` stays the same while the face stays in view (or is out of it for up to a second), `age` is
  smoothed over the recent frames, `frame_age` is this frame's own estimate and `age_interval` this
  frame's calibrated interval, widened only to hold `age` (`ml.serving.tracking`).
- A frame that cannot be used is answered `{"type": "error", "frame": n, "code", "detail"}` with the
  codes of POST /predict (`corrupt_image`, `unsupported_image`, `empty_file`, `image_too_many_pixels`,
  `overloaded`, `processing_timeout`, `binary_frames_only`), and the stream goes on.
- The server closes the stream, with a reason in words, when a limit is met: 1009 a frame larger
  than `max_frame_bytes`; 1008 more than `frames_per_second` frames a second (a second's worth may
  come at once), or a page of another origin (one not in `WMA_CORS_ORIGINS`); 1013 every live slot
  of this worker is taken (try again later); 4408 no frame for `idle_seconds`. With
  `WMA_LIVE_CONNECTIONS=0` every stream is closed 1008 at once (live mode off).

Frames are searched as video frames (`Predictor.predict(video=True)`: a portrait skips the detector's
pass for small turned faces beside it, as `ml.serving.faces.FaceDetector.detect` says). Frames are never
stored or logged: each lives in memory until it is answered. The work on a frame
takes a processing slot like a photo sent to POST /predict, so live streams and uploads share the
same bound on CPU work.
"""

from __future__ import annotations

import contextlib
import json
import time
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import anyio
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from api.core.errors import Overloaded, ProcessingTimeout
from api.core.metrics import Metrics
from api.core.settings import Settings
from api.deps import LiveSlots, Slots
from ml import ImageError, Predictor
from ml.serving.tracking import FaceTracker, TrackedFace

router = APIRouter(tags=["faces"])

# Close codes: RFC 6455's where one fits, 4408 (the private range, after HTTP's 408) for idle.
CLOSE_POLICY = 1008
CLOSE_TOO_LARGE = 1009
CLOSE_TRY_LATER = 1013
CLOSE_IDLE = 4408


class Closed(Exception):
    """Ends a stream: the close code, its reason (at most 123 bytes, the protocol's limit) and the metric's label."""

    def __init__(self, code: int, reason: str, end: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.end = code, reason, end


def origin_allowed(websocket: WebSocket, settings: Settings) -> bool:
    """A browser says which page opened the stream: this origin's, or one in `cors_origins`. Other clients
    send no Origin. (A WebSocket is not held back by CORS: without this check any site could use a
    visitor's browser to stream to this service.)"""
    origin = websocket.headers.get("origin")
    if origin is None:
        return True
    return origin in settings.cors_origins or urlsplit(origin).netloc == websocket.headers.get("host")


class FrameRate:
    """A token bucket: `per_second` frames a second, a second's worth at once."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.capacity = max(1.0, per_second)
        self.tokens = self.capacity
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.per_second)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _r(value: float) -> float:
    return round(value, 1)


def face_message(face: TrackedFace) -> dict[str, Any]:
    box = face.face.face.box
    low, high = face.age_interval
    return {"id": face.id, "box": {"x": _r(box.x), "y": _r(box.y), "width": _r(box.width), "height": _r(box.height)},
            "score": round(face.face.face.score, 3), "age": _r(face.age), "frame_age": _r(face.face.age),
            "age_interval": [_r(low), _r(high)], "steady": face.steady}


@router.websocket("/live")
async def live_stream(websocket: WebSocket) -> None:
    settings: Settings = websocket.state.settings
    live_slots: LiveSlots = websocket.state.live_slots
    metrics: Metrics = websocket.state.metrics
    # Accepted before any refusal, so that the client gets a close code and a reason (a refusal before
    # accepting is an HTTP 403 without either).
    await websocket.accept()
    if not origin_allowed(websocket, settings):
        await _close(websocket, metrics, Closed(CLOSE_POLICY, "a page of another origin may not use this stream",
                                                "origin"))
        return
    if live_slots.size == 0:
        await _close(websocket, metrics, Closed(CLOSE_POLICY, "live mode is off on this server", "off"))
        return
    if not live_slots.take():
        await _close(websocket, metrics, Closed(CLOSE_TRY_LATER,
                                                f"all {live_slots.size} live slots are taken; try again later",
                                                "no_slot"))
        return
    metrics.live_open.inc()
    try:
        await _serve(websocket, settings, websocket.state.predictor, websocket.state.slots, metrics)
    except Closed as closed:
        await _close(websocket, metrics, closed)
    except WebSocketDisconnect:
        metrics.live_streams.labels("client").inc()
    finally:
        metrics.live_open.dec()
        live_slots.give_back()


async def _close(websocket: WebSocket, metrics: Metrics, closed: Closed) -> None:
    metrics.live_streams.labels(closed.end).inc()
    with contextlib.suppress(WebSocketDisconnect):  # gone already
        await websocket.close(closed.code, closed.reason)


async def _serve(websocket: WebSocket, settings: Settings, predictor: Predictor, slots: Slots,
                 metrics: Metrics) -> None:
    await websocket.send_text(json.dumps({
        "type": "hello", "model_version": predictor.version,
        "limits": {"max_frame_bytes": settings.live_max_frame_bytes,
                   "frames_per_second": settings.live_frames_per_second,
                   "idle_seconds": settings.live_idle_seconds}}))
    rate = FrameRate(settings.live_frames_per_second)
    tracker = FaceTracker()
    frame = 0
    while True:
        message: dict[str, Any] | None = None
        with anyio.move_on_after(settings.live_idle_seconds):
            message = await websocket.receive()
        if message is None:
            raise Closed(CLOSE_IDLE, f"no frame for {settings.live_idle_seconds:g} s", "idle")
        if message["type"] == "websocket.disconnect":
            metrics.live_streams.labels("client").inc()
            return
        received = time.perf_counter()
        frame += 1
        if not rate.take():
            raise Closed(CLOSE_POLICY, f"more than {settings.live_frames_per_second:g} frames a second",
                         "too_many_frames")
        data = message.get("bytes")
        if data is None:
            await _error(websocket, frame, "binary_frames_only", "Send each frame as a binary message (a JPEG).")
            metrics.live_frames.labels("bad_frame").inc()
            continue
        if len(data) > settings.live_max_frame_bytes:
            raise Closed(CLOSE_TOO_LARGE, f"a frame larger than {settings.live_max_frame_bytes} bytes",
                         "frame_too_large")
        try:
            result = await slots.run(partial(predictor.predict, video=True), data)
        except ImageError as e:
            await _error(websocket, frame, e.code, str(e) or "The frame cannot be read as an image.")
            metrics.live_frames.labels("bad_frame").inc()
            continue
        except (Overloaded, ProcessingTimeout) as e:
            await _error(websocket, frame, e.code, e.detail)
            metrics.live_frames.labels("overloaded").inc()
            continue
        del data  # the frame itself is not kept
        faces = tracker.update(result, time.monotonic())
        seconds = time.perf_counter() - received
        await websocket.send_text(json.dumps({
            "type": "faces", "frame": frame, "model_version": result.model_version,
            "image": {"width": result.width, "height": result.height},
            "faces": [face_message(f) for f in faces], "server_ms": round(seconds * 1000, 1)}))
        metrics.live_frames.labels("answered").inc()
        metrics.live_frame_time.observe(seconds)
        metrics.observe_photo("live", result)


async def _error(websocket: WebSocket, frame: int, code: str, detail: str) -> None:
    await websocket.send_text(json.dumps({"type": "error", "frame": frame, "code": code, "detail": detail}))
