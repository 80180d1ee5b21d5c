"""GET /metrics: the Prometheus text exposition (see `api.metrics` for what it holds)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import BearerDep, MetricsDep, SettingsDep, tokens_match
from api.errors import InvalidToken, NotAuthenticated
from api.metrics import CONTENT_TYPE

router = APIRouter(tags=["operations"])


# Plain `def`: in multiprocess mode rendering reads every worker's files, so it runs in a thread.
@router.get("/metrics", include_in_schema=False, response_class=Response)
def read_metrics(metrics: MetricsDep, settings: SettingsDep, credentials: BearerDep) -> Response:
    """Open unless WMA_METRICS_TOKEN is set; then `Authorization: Bearer <that token>` is needed
    (a token of its own, so that the scraper never holds the admin token)."""
    expected = settings.metrics_token_value
    if expected is not None:
        if credentials is None:
            raise NotAuthenticated("Send the metrics token as `Authorization: Bearer <token>`.")
        if not tokens_match(credentials.credentials, expected):
            raise InvalidToken("The metrics token is not valid.")
    return Response(metrics.render(), media_type=CONTENT_TYPE)
