"""Pure ASGI middleware. The stack is assembled in `api.main.create_app`."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import BodyTooLarge, app_error_handler


class BodySizeLimit:
    """Refuses request bodies over `limit` bytes with a problem+json 413.

    A declared Content-Length over the limit is answered at once, without reading the body; a body
    that grows past it while streaming raises `BodyTooLarge` from `receive`, which the app's error
    handlers turn into the same answer. (Starlette's own `max_body_size` answers in plain text.)
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = await app_error_handler(Request(scope), BodyTooLarge(self.limit))
            response.headers["Connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, limited_receive, send)
