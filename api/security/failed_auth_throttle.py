"""Failed-authentication throttling: 10 wrong tokens a minute per client address, then 429.

A wrong admin bearer token, a wrong `/metrics` token or a wrong `X-Deletion-Token` is a failure of
the address that sent it (the address as the rate limit counts it: `api.http.request_rate_limit.client_key`, the
client's behind a trusted proxy, IPv6 by /64). Once an address has failed `LIMIT` times in a window
of `WINDOW` that began with its first failure, every request it makes to an authenticated route is
answered 429 `auth_rate_limited` with Retry-After, before its token is even looked at, until that
window has passed. A missing token is not a failure (there is nothing to guess with); other
addresses are not affected.

The counts are shared by every worker and replica through Postgres: table `auth_throttle`, one row
per address (its window's start and its failures), updated by one atomic upsert per failure and
read before each authenticated request. Each worker also remembers what it last saw of an address,
so that an address it knows to be blocked is answered without a query. If the database cannot be
reached, each worker goes on with its own counts (so `/metrics` keeps answering). Rows are removed
by the hourly purge (`api.privacy.retention`) once their window has passed.

Simultaneous guesses: right before a token is compared, `gate()` looks at this worker's count again,
and a failure is added to it before anything is awaited, so within one worker no more than `LIMIT`
wrong tokens are ever compared in a window, however many arrive at once. Guesses sent at the same
moment to W workers or replicas can get up to `LIMIT` compared on each before all of them know.

Counted in `/metrics` (`whatsmyage_auth_failures_total{kind}`, `whatsmyage_auth_throttled_total`);
each failure is logged with its kind and count, and the moment an address is blocked with the
address, never with the token.
"""

from __future__ import annotations

import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import case, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import AuthRateLimited, database_unreachable
from api.core.metrics import Metrics
from api.storage.tables import AuthThrottle, utcnow

log = logging.getLogger("api.auth")

LIMIT = 10
WINDOW = timedelta(seconds=60)

Kind = Literal["admin", "metrics", "deletion"]


class FailedAuthentications:
    """The throttle of one worker process: the shared counts in Postgres, and what it last saw of them."""

    def __init__(self, metrics: Metrics, *, limit: int = LIMIT, window: timedelta = WINDOW,
                 clock: Callable[[], datetime] = utcnow, max_clients: int = 100_000) -> None:
        self.metrics = metrics
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_clients = max_clients
        self._seen: OrderedDict[str, tuple[datetime, int]] = OrderedDict()  # client -> (window start, failures)

    def _remember(self, client: str, start: datetime, failures: int) -> None:
        self._seen[client] = (start, failures)
        self._seen.move_to_end(client)
        while len(self._seen) > self.max_clients:
            self._seen.popitem(last=False)

    def _merge(self, client: str, start: datetime, failures: int) -> tuple[datetime, int]:
        """What the database says, without losing this worker's failures that it has not counted yet."""
        seen_start, seen_failures = self._seen.get(client, (start, 0))
        if seen_start == start:
            failures = max(failures, seen_failures)
        self._remember(client, start, failures)
        return start, failures

    def _blocked_for(self, client: str, now: datetime) -> float:
        """Seconds until `client` may try again, as far as this worker knows; 0 when it may now."""
        if not self.limit:  # throttling off (a contract test that guesses tokens on purpose)
            return 0.0
        start, failures = self._seen.get(client, (now, 0))
        left = (start + self.window - now).total_seconds()
        return left if failures >= self.limit and left > 0 else 0.0

    def _refuse(self, left: float) -> AuthRateLimited:
        self.metrics.auth_throttled.inc()
        return AuthRateLimited(left)

    async def check(self, session: AsyncSession, client: str) -> None:
        """Before any token is looked at: 429 if `client` is blocked."""
        now = self.clock()
        if not self.limit:
            return
        if left := self._blocked_for(client, now):
            raise self._refuse(left)
        query = select(AuthThrottle.window_start, AuthThrottle.failures).where(AuthThrottle.client == client)
        async with _database_or_local(session, "check"):
            row = (await session.exec(query)).first()  # type: ignore[call-overload]
            if row is not None:
                self._merge(client, row.window_start, row.failures)
        self.gate(client)

    def gate(self, client: str) -> None:
        """Right before a token is compared, with no await in between: 429 if this worker's count, which
        includes the failures of requests still in flight, has reached the limit meanwhile."""
        if left := self._blocked_for(client, self.clock()):
            raise self._refuse(left)

    async def failed(self, session: AsyncSession, client: str, kind: Kind) -> None:
        """Count a wrong token from `client` (committed at once); the caller then answers 401 or 403."""
        now = self.clock()
        self.metrics.auth_failures.labels(kind).inc()
        if not self.limit:
            log.warning("authentication failed", extra={"kind": kind})
            return
        # In this worker's count first, before any await: a request comparing its token next sees it.
        start, failures = self._seen.get(client, (now, 0))
        start, failures = (start, failures + 1) if start > now - self.window else (now, 1)
        self._remember(client, start, failures)
        table = AuthThrottle.__table__
        expired = table.c.window_start <= now - self.window  # in DO UPDATE, the row already there
        # A new row starts the window this worker counts in, so that its requests in flight agree on it.
        upsert = insert(table).values(client=client, window_start=start, failures=1).on_conflict_do_update(
            index_elements=[table.c.client],
            set_={"failures": case((expired, 1), else_=table.c.failures + 1),
                  "window_start": case((expired, now), else_=table.c.window_start)},
        ).returning(table.c.window_start, table.c.failures)
        count = failures  # this failure's number in its window: the database's, unless it is down
        async with _database_or_local(session, "count"):
            start, count = (await session.exec(upsert)).one()  # one atomic increment: each number once
            await session.commit()
            self._merge(client, start, count)
        log.warning("authentication failed", extra={"kind": kind, "failures": count})
        if count == self.limit:
            left = (start + self.window - now).total_seconds()
            log.warning("address throttled", extra={"client": client, "retry_after_s": round(left, 1)})


@contextlib.asynccontextmanager
async def _database_or_local(session: AsyncSession, what: str):  # type: ignore[no-untyped-def]
    """Lets an unreachable database pass (the caller goes on with its own counts); other errors raise."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:
        if not database_unreachable(exc):
            raise
        with contextlib.suppress(Exception):
            await session.rollback()
        log.warning("auth throttle: database unavailable, counting in this worker (%s)", what)


@dataclass(frozen=True, slots=True)
class AuthGuard:
    """One request's throttle: its session and its client address."""

    throttle: FailedAuthentications
    session: AsyncSession
    client: str

    async def check(self) -> None:
        await self.throttle.check(self.session, self.client)

    def gate(self) -> None:
        self.throttle.gate(self.client)

    async def failed(self, kind: Kind) -> None:
        await self.throttle.failed(self.session, self.client, kind)
