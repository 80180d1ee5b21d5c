"""What routes depend on: the lifespan's `State`, the processing slots, sessions, admin access."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Annotated, TypedDict, TypeVar

import anyio
import anyio.to_thread
from fastapi import Depends, Request, UploadFile
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.config import Settings
from api.errors import AdminDisabled, FileTooLarge, InvalidToken, NotAuthenticated, Overloaded
from ml import Predictor

T = TypeVar("T")


class Slots:
    """Bounds the CPU work (decode, detect, infer) and runs it off the event loop.

    At most `size` photos are processed at once; a request that cannot get a slot within `wait`
    seconds is answered 503 with Retry-After instead of joining an unbounded queue.
    """

    def __init__(self, size: int, wait: float) -> None:
        self.size = size
        self.wait = wait
        self._semaphore = anyio.Semaphore(size)
        self._threads = anyio.CapacityLimiter(size)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        acquired = False
        with anyio.move_on_after(self.wait):
            await self._semaphore.acquire()
            acquired = True
        if not acquired:
            raise Overloaded(retry_after=self.wait)
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._threads)
        finally:
            self._semaphore.release()


class State(TypedDict):
    """What the lifespan yields; Starlette hands a copy to every request as `request.state`."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    predictor: Predictor
    slots: Slots


# `async def` even when they do not await: FastAPI would run a plain `def` in a worker thread.
async def get_settings(request: Request) -> Settings:
    return request.state.settings


async def get_predictor(request: Request) -> Predictor:
    return request.state.predictor


async def get_slots(request: Request) -> Slots:
    return request.state.slots


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session per request; write routes commit it themselves, before answering."""
    async with request.state.sessionmaker() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated[Predictor, Depends(get_predictor)]
SlotsDep = Annotated[Slots, Depends(get_slots)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]

bearer = HTTPBearer(auto_error=False, description="The server's ADMIN_TOKEN.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def tokens_match(given: str, expected: str) -> bool:
    return secrets.compare_digest(given.encode(), expected.encode())


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_admin(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    """403 when no admin token is configured, 401 when none or a wrong one is given."""
    expected = settings.admin_token_value
    if expected is None:
        raise AdminDisabled()
    if credentials is None:
        raise NotAuthenticated()
    if not tokens_match(credentials.credentials, expected):
        raise InvalidToken()


async def require_admin(settings: SettingsDep, credentials: BearerDep) -> None:
    check_admin(settings, credentials)


AdminDep = Depends(require_admin)


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The uploaded photo's bytes, refused with 413 above the upload limit (before reading them)."""
    limit = settings.max_upload_bytes
    if upload.size is not None and upload.size > limit:
        raise FileTooLarge(f"The photo is larger than {limit} bytes.")
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"The photo is larger than {limit} bytes.")
    return data
