"""The outermost middleware: a request id, one access log line and the request metrics per request.

The id is the caller's `X-Request-ID` when valid (`api.core.logs.valid_request_id`), else a new one; it is
returned in `X-Request-ID` on every response, errors included, and stamped on every log record made
while the request is served. An exception nothing else handled is answered here (the app's 500
problem+json), so that answer carries the id and is logged with it too.
"""

from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.errors import internal_error_handler
from api.core.logs import REQUEST_ID_HEADER, new_request_id, request_id, valid_request_id
from api.core.metrics import Metrics

access_log = logging.getLogger("api.access")

UNMATCHED = "unmatched"
FRONTEND = "frontend"


def route_template(scope: Scope) -> str:
    """What took the request, as a label with no id in it: never the raw path of a route with parameters.

    - an API route: its template (`/submissions/{submission_id}`), which routing leaves in `scope["route"]`;
    - a route without path parameters that routing matched without leaving itself (`/openapi.json`,
      `/docs`): its path, which is then its template;
    - a file of the UI, or a path that the UI answered 404: `frontend`;
    - a request answered before routing (a body refused for its declared size) or by no route: `unmatched`.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    if "endpoint" in scope and not scope.get("path_params"):
        return scope["path"]
    if isinstance(scope.get("fastapi"), dict) and "frontend_path" in scope["fastapi"]:
        return FRONTEND
    return UNMATCHED


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        rid = valid_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER)) or new_request_id()
        token = request_id.set(rid)
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = rid
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status is not None:  # the answer has begun: nothing left to do but let the server close it
                raise
            response = await internal_error_handler(Request(scope), exc)  # logs it, with the request id
            await response(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = route_template(scope)
            final = status if status is not None else 500
            self.metrics.observe_request(scope["method"], route, final, seconds)
            access_log.info("request", extra={"method": scope["method"], "route": route, "status": final,
                                              "duration_ms": round(seconds * 1000, 1)})
            request_id.reset(token)
