"""The FastAPI app: `create_app(settings)` builds it; the lifespan owns every heavy object."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.formparsers import MultiPartParser

from api.core.errors import add_problem_schema, install_error_handlers
from api.core.metrics import Metrics
from api.core.settings import Settings
from api.deps import LiveSlots, Slots, State
from api.http.body_limits import BodySizeLimit, MultipartGuard
from api.http.docs_page import add_docs
from api.http.observe import RequestObserver
from api.http.request_rate_limit import RateLimit
from api.learning.swap import ModelFollower
from api.privacy import retention
from api.routes import audit, detect, health, live, metrics, model_registry, predict, submissions
from api.security.failed_auth_throttle import FailedAuthentications
from api.security.headers import install_security_headers
from api.storage.db import create_engine, start_database
from ml import Predictor, PredictorSettings
from ml.serving import runtime

log = logging.getLogger("api")

MULTIPART_OVERHEAD = 64 * 1024  # the form fields and part headers around the photo

DESCRIPTION = """Estimates a person's apparent age from a photo.

`/detect` and `/predict` store nothing. `/submissions` stores a photo only with explicit consent and
returns a one-time deletion token, with which its owner reads (`GET /submissions/{id}`, `/image`) and
deletes it. Admin reads and every deletion are recorded (`GET /audit`). `GET /model` describes the
model that answers (its training data and accuracy); admins list every version (`GET /models`) and
choose the one served (`POST /models/{version}/activate`). Every error is `application/problem+json`
with a stable `code`.

### Live stream: WebSocket `/live` (not listed below: OpenAPI has no WebSockets)

Faces and ages of a camera's frames, with an id per face that stays while the face stays in view.
Open `ws://<host>/live` (`wss://` behind HTTPS); the server sends
`{"type": "hello", "model_version", "limits": {"max_frame_bytes", "frames_per_second", "idle_seconds"}}`.
Send each frame as a binary message holding a JPEG (about 480 px wide), and wait for its answer:
`{"type": "faces", "frame", "model_version", "image": {"width", "height"}, "faces": [{"id", "box",
"score", "age", "frame_age", "age_interval", "steady"}], "server_ms"}`. `age` is smoothed over the
recent frames, `frame_age` is this frame's estimate, `age_interval` this frame's calibrated interval
as `/predict` gives it. A frame that cannot be read is answered `{"type": "error", "frame", "code",
"detail"}` (the codes of `/predict`) and the stream goes on. Limits close the stream with a code and a
reason: 1009 a frame too large, 1008 too many frames a second (or a page of another origin), 1013
every live slot taken (try again later), 4408 idle. Frames are never stored or logged. The whole
protocol: `docs/api.md` ("Live stream"); the page's Live view (`/#/live`) uses it.
"""


def load_predictor(settings: Settings) -> Predictor:
    # One slot per photo in flight; ml.serving.runtime spreads a photo's age step over the CPUs no other photo
    # holds, and keeps the allocator from holding on to what loading and each photo free.
    runtime.tune_allocator()
    ml_settings = PredictorSettings(max_faces=settings.max_faces, max_pixels=settings.max_image_pixels,
                                    parallel=settings.concurrency_slots)
    predictor = Predictor.load(settings.age_weights, settings=ml_settings)
    runtime.release_free_memory()
    return predictor


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    app_metrics = Metrics()
    # A photo stays in memory up to the upload limit: past 1 MiB Starlette would write it to a temporary
    # file (a thread hop for each 64 KiB written) only for read_upload to read it back at once.
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[State]:
        async with AsyncExitStack() as stack:  # undone in reverse: engine, Postgres, then the predictor
            stack.callback(log.info, "app stopped")
            # The model first: weights that cannot be served stop the start before a database is started.
            try:
                predictor = await anyio.to_thread.run_sync(load_predictor, settings)
            except runtime.NotExported as e:
                log.error("cannot serve the age model: %s", e)  # one plain line above the traceback
                raise
            stack.callback(predictor.close)
            database = await anyio.to_thread.run_sync(start_database, settings)
            stack.push_async_callback(anyio.to_thread.run_sync, database.stop)
            database.watch()  # an embedded Postgres that dies is started again
            engine = create_engine(database.url)
            stack.push_async_callback(engine.dispose)
            sessionmaker = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
            # The hourly purge (retention, expired keys and counts), cancelled first on the way out.
            background = await stack.enter_async_context(anyio.create_task_group())
            background.start_soon(retention.run_on_schedule, sessionmaker, settings.retention_days, app_metrics)
            stack.callback(background.cancel_scope.cancel)
            # The registry's active model (the shipped ones registered on a first start), then followed.
            follower = ModelFollower(sessionmaker, predictor, interval=settings.model_poll_seconds,
                                     default=settings.age_weights)
            await follower.start()
            background.start_soon(follower.run)
            log.info("serving model %s, %d slot(s)", predictor.version, settings.concurrency_slots)
            yield State(
                settings=settings,
                sessionmaker=sessionmaker,
                predictor=predictor,
                slots=Slots(settings.concurrency_slots, settings.slot_wait_seconds, settings.request_timeout_seconds),
                live_slots=LiveSlots(settings.live_connections),
                metrics=app_metrics,
                database=database,
                auth_throttle=FailedAuthentications(app_metrics, limit=settings.auth_failures_per_minute),
                model_follower=follower,
            )

    app = FastAPI(title="whatsmyage", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # /docs: api.http.docs_page, without a CDN
    install_error_handlers(app)
    add_docs(app)
    install_security_headers(app)  # security headers outside everything else
    # Middleware: the last added runs first (CORS outside the app's own layers, so that refusals carry
    # its headers too; the request observer outside CORS).
    app.add_middleware(MultipartGuard)
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes + MULTIPART_OVERHEAD)
    if settings.rate_limit_per_minute > 0:
        app.add_middleware(RateLimit, per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "X-Deletion-Token", "Idempotency-Key"],
                           expose_headers=["Retry-After", "Idempotent-Replayed"])
    # Outside the other layers: every answer, CORS refusals, 429s and 500s included, gets its request id,
    # log line and metrics.
    app.add_middleware(RequestObserver, metrics=app_metrics)

    for module in (detect, predict, live, submissions, audit, model_registry, health, metrics):
        app.include_router(module.router)
    if settings.frontend_dir.is_dir():  # the UI, same origin; API routes take precedence
        app.frontend("/", directory=settings.frontend_dir, fallback=None)

    build_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            add_problem_schema(build_openapi())
            submissions.document_consent(app.openapi_schema)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


app = create_app()
