"""Health: `/healthz` (is the service up, and can it reach its database?) and the two probes an
orchestrator asks, `/livez` and `/readyz`, which never look at the database.

A database outage must not take a replica out of service: `/detect` and `/predict` never touch the
database, and `/submissions` answers 503 `database_unavailable` with Retry-After by itself. So the
probes say only what the process knows: it answers (`/livez`), and its model is loaded
(`/readyz`, which the app serves only once its lifespan has loaded the predictor).
"""

from __future__ import annotations

import contextlib
import logging

import anyio
from fastapi import APIRouter, Response
from sqlalchemy import text

from api.deps import DatabaseDep, PredictorDep, SessionDep
from api.http.schemas import Health

router = APIRouter(tags=["health"])
log = logging.getLogger("api")

DATABASE_TIMEOUT = 2.0  # seconds


@router.get("/healthz", summary="Liveness and database check", response_model_exclude_none=True,
            responses={503: {"model": Health, "description": "The database cannot be reached."}})
async def read_health(session: SessionDep, database: DatabaseDep, predictor: PredictorDep,
                      response: Response) -> Health:
    """200 when the database answers, 503 (with Retry-After) when it does not, with a `detail` when the
    embedded Postgres is being started again or cannot be; predictions keep working either way."""
    try:
        with anyio.fail_after(DATABASE_TIMEOUT):
            connection = await session.connection()
            await connection.execute(text("SELECT 1"))
    except Exception as exc:  # whatever the failure, the answer is the same: unavailable
        log.warning("health check: database unavailable (%s)", type(exc).__name__)
        # Dropped, not rolled back: a probe cut short by the timeout leaves its connection in the middle
        # of an operation, and a rollback on it would fail once the answer is sent.
        with contextlib.suppress(Exception):
            await session.invalidate()
        response.status_code = 503
        response.headers["Retry-After"] = "5"
        return Health(status="degraded", database="unavailable", model_version=predictor.version,
                      detail=database.problem)
    return Health(status="ok", database="ok", model_version=predictor.version)


@router.get("/livez", include_in_schema=False)
async def read_liveness() -> dict[str, str]:
    """Liveness: the event loop answers. Nothing else is asked, so that only a wedged process is restarted."""
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def read_readiness(predictor: PredictorDep) -> dict[str, str]:
    """Readiness: the model is loaded and `/predict` can be served, whatever the database's state."""
    return {"status": "ready", "model_version": predictor.version}
