"""What routes depend on: the lifespan's `State` and what it holds (settings, sessions, the predictor, the
processing slots, ...), the failed-authentication guard and admin access (checked by `api.security.auth`),
and the upload checks."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypedDict, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from fastapi import Depends, Request, UploadFile
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import (
    FileTooLarge,
    MultipleFiles,
    Overloaded,
    ProcessingTimeout,
    UnsupportedMediaType,
)
from api.core.metrics import Metrics
from api.core.settings import Settings
from api.http.request_rate_limit import client_key
from api.learning.swap import ModelFollower
from api.security.auth import BearerDep, authenticate_admin
from api.security.failed_auth_throttle import AuthGuard, FailedAuthentications
from api.storage.db import Database
from ml import Predictor

T = TypeVar("T")


class Slots:
    """Bounds the CPU work (decode, detect, infer) and runs it off the event loop.

    At most `size` photos are processed at once; a request that cannot get a slot within `wait`
    seconds is answered 503 `overloaded`, and one whose work takes longer than `timeout` seconds
    503 `processing_timeout`, both with Retry-After, instead of queueing or hanging without end.
    A thread cannot be stopped: the work given up on runs to its end and keeps its slot until then,
    so the bound on CPU work holds even when requests time out.
    """

    def __init__(self, size: int, wait: float, timeout: float = 10.0) -> None:
        self.size = size
        self.wait = wait
        self.timeout = timeout
        self._semaphore = anyio.Semaphore(size)
        self._threads = anyio.CapacityLimiter(size)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        acquired = False
        with anyio.move_on_after(self.wait):
            await self._semaphore.acquire()
            acquired = True
        if not acquired:
            raise Overloaded(retry_after=self.wait)

        # Who gives the slot back: this coroutine, unless it gives up while the thread runs; then the
        # thread does, when it is done. The lock makes "given up" and "running" one decision.
        lock = threading.Lock()
        given_up = running = False
        token = anyio.lowlevel.current_token()

        def work() -> T | None:
            nonlocal running
            with lock:
                if given_up:  # timed out before the thread started: nothing to do
                    return None
                running = True
            try:
                return fn(*args)
            finally:
                with lock:
                    running = False
                    release = given_up
                if release:
                    with contextlib.suppress(RuntimeError):  # RuntimeError: the event loop is gone (shutdown)
                        anyio.from_thread.run_sync(self._semaphore.release, token=token)

        try:
            with anyio.move_on_after(self.timeout) as scope:
                result = await anyio.to_thread.run_sync(work, limiter=self._threads, abandon_on_cancel=True)
        finally:
            with lock:
                given_up = True
                thread_holds_slot = running
            if not thread_holds_slot:
                self._semaphore.release()
        if scope.cancelled_caught:
            raise ProcessingTimeout(retry_after=5)
        return result  # type: ignore[return-value]  # work() returns None only when given up


class LiveSlots:
    """Live streams of this worker: a slot each, taken when one opens and given back when it ends. Used on
    the event loop only; none free: the new stream is refused (closed 1013), never queued."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.taken = 0

    def take(self) -> bool:
        if self.taken >= self.size:
            return False
        self.taken += 1
        return True

    def give_back(self) -> None:
        self.taken -= 1


class State(TypedDict):
    """What the lifespan yields; Starlette hands a copy to every request as `request.state`."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    predictor: Predictor
    slots: Slots
    live_slots: LiveSlots
    metrics: Metrics
    database: Database
    auth_throttle: FailedAuthentications
    model_follower: ModelFollower


# `async def` even when they do not await: FastAPI would run a plain `def` in a worker thread.
async def get_settings(request: Request) -> Settings:
    return request.state.settings


async def get_predictor(request: Request) -> Predictor:
    return request.state.predictor


async def get_slots(request: Request) -> Slots:
    return request.state.slots


async def get_metrics(request: Request) -> Metrics:
    return request.state.metrics


async def get_database(request: Request) -> Database:
    return request.state.database


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; write routes commit it themselves, before answering."""
    async with request.state.sessionmaker() as session:
        yield session


async def get_auth_throttle(request: Request) -> FailedAuthentications:
    return request.state.auth_throttle


async def get_model_follower(request: Request) -> ModelFollower:
    return request.state.model_follower


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SlotsDep = Annotated[Slots, Depends(get_slots)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DatabaseDep = Annotated[Database, Depends(get_database)]
AuthThrottleDep = Annotated[FailedAuthentications, Depends(get_auth_throttle)]
ModelFollowerDep = Annotated[ModelFollower, Depends(get_model_follower)]


async def get_auth_guard(request: Request, throttle: AuthThrottleDep, session: SessionDep) -> AuthGuard:
    """The failed-authentication throttle for this request's client address
    (see `api.security.failed_auth_throttle`)."""
    return AuthGuard(throttle, session, client_key(request.scope)[:64])


AuthGuardDep = Annotated[AuthGuard, Depends(get_auth_guard)]

async def require_admin(settings: SettingsDep, credentials: BearerDep, guard: AuthGuardDep) -> None:
    await guard.check()
    await authenticate_admin(settings, credentials, guard)


AdminDep = Depends(require_admin)


async def multipart_form(request: Request) -> None:
    """Upload routes: 415 unless the body is multipart/form-data (whatever else it holds), 422
    `multiple_files` when more than one file comes under `image` (FastAPI would keep the last)."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType()
    form = await request.form()  # parsed already, before the dependencies run: this is the cached form
    if len(form.getlist("image")) > 1:
        raise MultipleFiles()


MultipartDep = Depends(multipart_form)


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The uploaded photo's bytes, refused with 413 above the upload limit (before reading them)."""
    limit = settings.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise FileTooLarge(f"The photo is larger than {limit} bytes.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"The photo is larger than {limit} bytes.")
    return data
