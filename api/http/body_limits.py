"""Checks on request bodies, as pure ASGI middleware: their size (`BodySizeLimit`) and what a multipart
body may hold (`MultipartGuard`). The stack is assembled in `api.main.create_app`."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.core.errors import BodyTooLarge, FieldNotUtf8, UnterminatedMultipart, app_error_handler


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


def multipart_params(content_type: str | None) -> dict[bytes, bytes] | None:
    """The parameters of a multipart/form-data Content-Type (boundary, charset), or None."""
    from python_multipart.multipart import parse_options_header

    if not content_type or not content_type.lower().lstrip().startswith("multipart/form-data"):
        return None
    return parse_options_header(content_type)[1]


class _FormCheck:
    """Follows a multipart body with python-multipart's parser (the one Starlette uses), for what
    Starlette lets through: a missing closing boundary, and text fields that are not UTF-8 (which
    Starlette decodes as Latin-1 instead). Malformed bodies are left to Starlette, which answers 400."""

    TEXT_LIMIT = 1024 * 1024  # Starlette refuses bigger text parts itself

    def __init__(self, boundary: bytes, check_utf8: bool) -> None:
        from python_multipart.multipart import MultipartParser

        self.check_utf8 = check_utf8
        self.ended = self.broken = False
        self.not_utf8: str | None = None  # the first text field that is not UTF-8
        self._header = self._value = self._disposition = b""
        self._name = ""
        self._text: bytearray | None = None
        self._parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end, "on_end": self._end,
        })

    def feed(self, data: bytes) -> None:
        if data and not self.broken:
            try:
                self._parser.write(data)
            except Exception:
                self.broken = True

    def _part_begin(self) -> None:
        self._disposition, self._text = b"", None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.strip().lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        options = parse_options_header(self._disposition)[1]
        if self.check_utf8 and b"filename" not in options:
            self._name = options.get(b"name", b"").decode("latin-1")
            self._text = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._text is not None and len(self._text) <= self.TEXT_LIMIT:
            self._text += data[start:end]

    def _part_end(self) -> None:
        if self._text is not None and self.not_utf8 is None:
            try:
                self._text.decode("utf-8")
            except UnicodeDecodeError:
                self.not_utf8 = self._name
        self._text = None

    def _end(self) -> None:
        self.ended = True


class MultipartGuard:
    """Refuses what Starlette's form parsing would let through in a multipart/form-data body:

    - a body that ends without its closing boundary (`--<boundary>--`): 400. python-multipart drops
      an unterminated last part without a word, so a truncated upload would be answered as if a
      field had not been sent (422);
    - a text field that is not valid UTF-8: 422 `validation_error` naming the field. Starlette would
      decode it as Latin-1, and store mojibake (unless the request declares another charset).

    It follows the body as it streams past and raises from `receive` at its end; the form parsing
    passes these errors through to the error handlers.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        params = multipart_params(Headers(scope=scope).get("content-type")) if scope["type"] == "http" else None
        boundary = (params or {}).get(b"boundary")
        if params is None or not boundary or len(boundary) > 200:  # no usable boundary: Starlette says 400
            await self.app(scope, receive, send)
            return
        charset = params.get(b"charset", b"utf-8").lower()
        check = _FormCheck(boundary, check_utf8=charset in (b"utf-8", b"utf8"))

        async def checked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                check.feed(message.get("body", b""))
                if not message.get("more_body", False) and not check.broken:
                    if not check.ended:
                        raise UnterminatedMultipart()
                    if check.not_utf8 is not None:
                        raise FieldNotUtf8(check.not_utf8)
            return message

        await self.app(scope, checked_receive, send)
