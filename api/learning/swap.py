"""Hot swap: every worker serves the registry's active model, within a poll of its activation.

Each worker (process) has a `ModelFollower`. Every `WMA_MODEL_POLL_SECONDS` (and at once when this
worker activated a version itself) it asks the registry which version is active; when that is not
the one it serves, it loads the file off the event loop (checking its SHA-256 and version first) and
assigns `predictor.age_model`. That one assignment is the swap: a photo in flight finishes with the
model it started with (`ml.serving.predictor`), so no request fails or mixes two models, and every answer
carries the version that made it.

A file that cannot be loaded is logged once and the worker keeps serving what it has; so does a
worker whose database cannot be reached (predictions never need the database).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import anyio
import anyio.to_thread
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import ModelFileInvalid
from api.learning import registry
from ml import Predictor
from ml.serving import runtime

log = logging.getLogger("api")

FIRST_SYNC_SECONDS = 10.0  # at start-up; past it the worker serves the file it loaded and keeps asking


class ModelFollower:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], predictor: Predictor, *,
                 interval: float, default: Path | None = None) -> None:
        self.sessionmaker = sessionmaker
        self.predictor = predictor
        self.interval = interval
        self.default = default  # WMA_AGE_WEIGHTS: the version made active on a first start
        self.serving = predictor.version
        self.registered = False  # the shipped models, once per process
        self._wake = anyio.Event()
        self._failed_version: str | None = None  # a file that could not be loaded, logged once
        self._unreachable = False  # the database, logged once per outage

    def wake(self) -> None:
        """Ask the registry now rather than at the next poll (this worker just activated a version)."""
        self._wake.set()

    async def sync(self) -> None:
        """Serve the active version, if it is not the one served already. Raises what the database raises."""
        async with self.sessionmaker() as session:
            if not self.registered:
                await registry.ensure_shipped(session, self.default)
                await session.commit()
                self.registered = True
            row = await registry.active_or_none(session)
        if row is None or row.version == self.serving:
            return
        try:
            model = await anyio.to_thread.run_sync(registry.load_checked, row, self.predictor.cpus)
        except ModelFileInvalid as e:
            if self._failed_version != row.version:
                log.error("cannot serve model %s, still serving %s: %s", row.version, self.serving, e.detail)
                self._failed_version = row.version
            return
        previous, self.serving = self.serving, row.version
        self.predictor.age_model = model  # the swap (see the module's docstring)
        log.info("model swapped: now serving %s (was %s)", row.version, previous,
                 extra={"model_version": row.version, "previous": previous, "worker_pid": os.getpid()})
        del model
        runtime.release_free_memory()  # what the previous model held, once no photo uses it

    async def start(self) -> None:
        """The first sync, at start-up: bounded, and never fatal (the poll keeps trying)."""
        with anyio.move_on_after(FIRST_SYNC_SECONDS):
            await self._sync_logged()

    async def run(self) -> None:
        """Follow the registry until cancelled."""
        while True:
            with anyio.move_on_after(self.interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            await self._sync_logged()

    async def _sync_logged(self) -> None:
        try:
            await self.sync()
        except Exception as e:  # the database, mostly: keep serving the model loaded
            if not self._unreachable:
                log.warning("model registry unreachable, still serving %s: %s", self.serving, type(e).__name__)
                self._unreachable = True
            return
        if self._unreachable:
            log.info("model registry reachable again")
            self._unreachable = False
