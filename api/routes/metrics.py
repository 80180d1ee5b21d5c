"""GET /metrics: the Prometheus text exposition (see `api.core.metrics` for what it holds)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from api.core.errors import InvalidToken, NotAuthenticated
from api.core.metrics import CONTENT_TYPE
from api.deps import AuthGuardDep, MetricsDep, SettingsDep
from api.security.auth import BearerDep, tokens_match

router = APIRouter(tags=["operations"])


async def require_metrics_token(settings: SettingsDep, credentials: BearerDep, guard: AuthGuardDep) -> None:
    """Open unless WMA_METRICS_TOKEN is set; then `Authorization: Bearer <that token>` is needed (a token
    of its own, so that the scraper never holds the admin token), under the failed-authentication
    throttle. (The session behind `guard` connects only if it is used: an open /metrics needs no database.)"""
    expected = settings.metrics_token_value
    if expected is None:
        return
    await guard.check()
    if credentials is None:
        raise NotAuthenticated("Send the metrics token as `Authorization: Bearer <token>`.")
    guard.gate()  # no await from here to the comparison
    if not tokens_match(credentials.credentials, expected):
        await guard.failed("metrics")
        raise InvalidToken("The metrics token is not valid.")


# Plain `def`: in multiprocess mode rendering reads every worker's files, so it runs in a thread.
@router.get("/metrics", include_in_schema=False, response_class=Response,
            dependencies=[Depends(require_metrics_token)])
def read_metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=CONTENT_TYPE)
