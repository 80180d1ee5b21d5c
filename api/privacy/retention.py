"""Retention: the hourly purge, inside the service and as `python -m api purge` for cron.

With `WMA_RETENTION_DAYS` set, a purge removes every submission stored more than that many days ago:
its row and so its photo (stored in the row) and its idempotency key (deleted with it), each recorded
in the audit trail as `submission.purge` by `system`. The next export no longer writes their photos
and removes the files of earlier exports (`api.learning.submission_export`), so no retraining sees them again. Unset,
submissions are kept. Either way a purge also forgets idempotency keys past their 24 hours and the
failed-authentication counts whose minute has passed (they hold client addresses).

Each worker runs `run_on_schedule`: a purge at start-up, then one an hour. A purge holds a
transaction-level advisory lock (`pg_try_advisory_xact_lock`): while one worker or replica (or the
cron command) purges, the others find the lock taken and skip that round, and a purge that dies takes
its lock with it. Postgres frees the space of deleted rows at its next (auto)vacuum.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy import delete, func
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.metrics import Metrics
from api.privacy import audit, idempotency
from api.security import failed_auth_throttle
from api.storage.tables import AuthThrottle, IdempotencyKey, Submission, utcnow

log = logging.getLogger("api.retention")

INTERVAL_SECONDS = 3600.0
LOCK_ID = int.from_bytes(hashlib.sha256(b"whatsmyage purge").digest()[:8], "big", signed=True)


@dataclass(frozen=True, slots=True)
class Purged:
    ran: bool  # False: another process held the lock, and this one did nothing
    submissions: int = 0
    idempotency_keys: int = 0  # expired ones; those of purged submissions go with them
    auth_throttle_rows: int = 0


async def purge(session: AsyncSession, *, retention_days: int | None, now: datetime) -> Purged:
    """One purge, as of `now` (a parameter, so that tests control the clock), committed in one transaction."""
    if not (await session.exec(select(func.pg_try_advisory_xact_lock(LOCK_ID)))).one():
        await session.rollback()
        return Purged(ran=False)
    purged_ids: list = []
    if retention_days is not None:
        cutoff = now - timedelta(days=retention_days)
        purged_ids = list((await session.exec(
            delete(Submission).where(col(Submission.created_at) < cutoff).returning(col(Submission.id))
        )).scalars())
        for submission_id in purged_ids:
            audit.record(session, action=audit.SUBMISSION_PURGE, actor="system", submission_id=submission_id,
                         detail={"retention_days": retention_days})
    keys = await session.exec(
        delete(IdempotencyKey).where(col(IdempotencyKey.created_at) < now - idempotency.TTL))
    counts = await session.exec(
        delete(AuthThrottle).where(col(AuthThrottle.window_start) <= now - failed_auth_throttle.WINDOW))
    await session.commit()
    return Purged(True, len(purged_ids), keys.rowcount, counts.rowcount)  # type: ignore[attr-defined]


async def run_on_schedule(sessionmaker: async_sessionmaker[AsyncSession], retention_days: int | None,
                          metrics: Metrics, *, interval: float = INTERVAL_SECONDS,
                          clock: Callable[[], datetime] = utcnow) -> None:
    """Purge now and every `interval` seconds until cancelled; a failed round (say, the database is
    down) is logged and tried again at the next."""
    while True:
        try:
            async with sessionmaker() as session:
                purged = await purge(session, retention_days=retention_days, now=clock())
        except Exception as exc:
            log.warning("purge failed (%s); next in %.0f s", type(exc).__name__, interval)
        else:
            if purged.submissions:
                metrics.deleted.labels("retention").inc(purged.submissions)
            if purged.submissions or purged.idempotency_keys or purged.auth_throttle_rows:
                log.info("purge", extra={"submissions": purged.submissions,
                                         "idempotency_keys": purged.idempotency_keys,
                                         "auth_throttle_rows": purged.auth_throttle_rows})
        await anyio.sleep(interval)
