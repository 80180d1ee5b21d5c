"""Every error the API answers, as `application/problem+json` (RFC 9457) with a stable `code`.

    AppError                      status, code, title; handled in one place
    ├── UnterminatedMultipart     400 bad_request: the multipart body has no closing boundary
    ├── NotAuthenticated          401 not_authenticated: no `Authorization: Bearer` given
    ├── InvalidToken              401 invalid_token: the bearer token is wrong
    ├── AdminDisabled             403 admin_disabled: no ADMIN_TOKEN is configured
    ├── InvalidDeletionToken      403 invalid_deletion_token
    ├── NotFound                  404 not_found
    ├── ModelNotFound             404 model_not_found: no such model version in the registry
    ├── IdempotencyInProgress     409 idempotency_in_progress, with Retry-After: that key's first request runs
    ├── ModelRejected             409 model_rejected: the version failed its checks (activate with force)
    ├── ModelFileInvalid          409 model_file_invalid: its weights file is missing or not the one registered
    ├── ModelIsActive             409 model_active: the active version cannot be rejected or retired
    ├── ModelExists               409 model_exists: a version of that name is already registered
    ├── BodyTooLarge              413 body_too_large: the request body is over the limit
    ├── FileTooLarge              413 file_too_large: the photo is over the upload limit
    ├── ImageRejected             413/415/422 with the `ml.serving.images` error's code (empty_file, corrupt_image,
    │                             unsupported_image, image_too_many_pixels)
    ├── UnsupportedMediaType      415 unsupported_media_type: the body is not multipart/form-data
    ├── FieldNotUtf8              422 validation_error: a form field that is not UTF-8
    ├── ConsentRequired           422 consent_required
    ├── MultipleFiles             422 multiple_files: more than one file under `image`
    ├── IdempotencyKeyReused      422 idempotency_key_reused: the same key came with another request
    ├── RateLimited               429 rate_limited, with Retry-After
    ├── AuthRateLimited           429 auth_rate_limited, with Retry-After: too many failed authentications
    ├── NoFaceDetected            422 no_face_detected
    ├── Overloaded                503 overloaded, with Retry-After: every processing slot is busy
    ├── ProcessingTimeout         503 processing_timeout, with Retry-After: the photo took too long
    └── DatabaseUnavailable       503 database_unavailable, with Retry-After

Errors raised by the framework get the same shape: `HTTPException` (404 not_found, 405
method_not_allowed, 400 bad_request for malformed multipart, ...), `RequestValidationError` (422
validation_error, with `errors` naming each field and never echoing its value) and anything
unexpected (500 internal_error, with no detail).
"""

from __future__ import annotations

import errno
import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from ml.serving.images import ImageError

log = logging.getLogger("api")

PROBLEM_TYPE = "urn:whatsmyage:problem:"
MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    field: str = Field(description="The field's name, e.g. `true_age`.")
    code: str
    message: str


class Problem(BaseModel):
    """The body of every error answer."""

    type: str = Field(description=f"`{PROBLEM_TYPE}<code>`")
    title: str
    status: int
    detail: str
    code: str = Field(description="Stable, machine-readable; what clients should branch on.")
    errors: list[FieldError] | None = Field(None, description="Validation errors only: one per field.")


class AppError(Exception):
    status: int = 500
    code: str = "internal_error"
    title: str = "Internal error"
    detail: str = "Something went wrong on our side."
    headers: dict[str, str] | None = None

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.detail)
        if detail:
            self.detail = detail
        if headers:
            self.headers = headers


class RetryLater(AppError):
    """An error the client may retry: Retry-After says after how many whole seconds (at least 1)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(headers={"Retry-After": str(max(1, math.ceil(retry_after)))})


class NotAuthenticated(AppError):
    status, code, title = 401, "not_authenticated", "Not authenticated"
    detail = "Send the admin token as `Authorization: Bearer <token>`."
    headers = {"WWW-Authenticate": "Bearer"}


class InvalidToken(AppError):
    status, code, title = 401, "invalid_token", "Invalid token"
    detail = "The admin token is not valid."
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class AdminDisabled(AppError):
    status, code, title = 403, "admin_disabled", "Admin access disabled"
    detail = "No admin token is configured on this server."


class InvalidDeletionToken(AppError):
    status, code, title = 403, "invalid_deletion_token", "Invalid deletion token"
    detail = "The deletion token does not match this submission."


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"
    detail = "Nothing is here."


class ModelNotFound(AppError):
    status, code, title = 404, "model_not_found", "Model not found"
    detail = "No model version of that name is registered."


class ModelRejected(AppError):
    status, code, title = 409, "model_rejected", "Model rejected"
    detail = "This model version failed its checks; activate it with `force=true` to serve it anyway."


class ModelFileInvalid(AppError):
    status, code, title = 409, "model_file_invalid", "Model file invalid"
    detail = "The model's weights file is missing or differs from the one registered (SHA-256)."


class ModelIsActive(AppError):
    status, code, title = 409, "model_active", "Model is active"
    detail = "The active model version cannot be rejected or retired: activate another one first."


class ModelExists(AppError):
    status, code, title = 409, "model_exists", "Model exists"
    detail = "A model version of that name is already registered."


class BodyTooLarge(AppError, StarletteHTTPException):
    """Also an `HTTPException`: FastAPI passes those through from body parsing instead of answering 400."""

    status, code, title = 413, "body_too_large", "Request body too large"

    def __init__(self, limit: int) -> None:
        AppError.__init__(self, f"The request body is larger than {limit} bytes.")
        StarletteHTTPException.__init__(self, 413, self.detail)


class UnterminatedMultipart(AppError, StarletteHTTPException):
    """Also an `HTTPException`, for the same reason as `BodyTooLarge`."""

    status, code, title = 400, "bad_request", "Bad Request"
    detail = "Invalid multipart data: the body ends without its closing boundary."

    def __init__(self) -> None:
        AppError.__init__(self, type(self).detail)
        StarletteHTTPException.__init__(self, 400, self.detail)


class FieldNotUtf8(AppError, StarletteHTTPException):
    """A form field that is not UTF-8: a validation error like the others (also an `HTTPException`)."""

    status, code, title = 422, "validation_error", "Invalid request"

    def __init__(self, field: str) -> None:
        AppError.__init__(self, f"Invalid field(s): {field}.")
        StarletteHTTPException.__init__(self, 422, self.detail)
        self.errors = [FieldError(field=field, code="unicode_decode_error", message="Text should be UTF-8")]


class FileTooLarge(AppError):
    status, code, title = 413, "file_too_large", "File too large"


class UnsupportedMediaType(AppError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"
    detail = "Send the photo as `multipart/form-data`."


class MultipleFiles(AppError):
    status, code, title = 422, "multiple_files", "More than one photo"
    detail = "Send exactly one file under `image`."


class IdempotencyKeyReused(AppError):
    status, code, title = 422, "idempotency_key_reused", "Idempotency key reused"
    detail = "This Idempotency-Key was already used with a different request; use a new key."


class IdempotencyInProgress(AppError):
    status, code, title = 409, "idempotency_in_progress", "Request in progress"
    detail = "A request with this Idempotency-Key is still being processed; retry shortly."
    headers = {"Retry-After": "1"}


class RateLimited(RetryLater):
    status, code, title = 429, "rate_limited", "Too many requests"
    detail = "Too many requests from this address; slow down."


class AuthRateLimited(RetryLater):
    status, code, title = 429, "auth_rate_limited", "Too many failed authentications"
    detail = "Too many failed authentication attempts from this address; try again after Retry-After seconds."


class ImageRejected(AppError):
    """An `ml.serving.images.ImageError`, with its code and an HTTP status chosen by that code."""

    STATUS = {"empty_file": 422, "corrupt_image": 422, "unsupported_image": 415, "image_too_many_pixels": 413}
    TITLES = {"empty_file": "Empty file", "corrupt_image": "Corrupt image",
              "unsupported_image": "Unsupported image", "image_too_many_pixels": "Image too large"}

    def __init__(self, error: ImageError) -> None:
        super().__init__(str(error) or "The image cannot be used.")
        self.code = error.code
        self.status = self.STATUS.get(error.code, 422)
        self.title = self.TITLES.get(error.code, "Invalid image")


class ConsentRequired(AppError):
    status, code, title = 422, "consent_required", "Consent required"
    detail = "A photo is stored only with explicit consent: send `consent=true`."


class NoFaceDetected(AppError):
    status, code, title = 422, "no_face_detected", "No face detected"
    detail = "No face was found in the photo, so nothing was stored."


class Overloaded(RetryLater):
    status, code, title = 503, "overloaded", "Service overloaded"
    detail = "Every processing slot is busy; try again shortly."


class ProcessingTimeout(RetryLater):
    status, code, title = 503, "processing_timeout", "Processing took too long"
    detail = "The photo took too long to process; try again shortly, or with a smaller photo."


class DatabaseUnavailable(AppError):
    status, code, title = 503, "database_unavailable", "Database unavailable"
    detail = "The database cannot be reached; try again shortly."
    headers = {"Retry-After": "5"}


def problem(status: int, code: str, title: str, detail: str, *, headers: dict[str, str] | None = None,
            errors: list[FieldError] | None = None) -> JSONResponse:
    body = Problem(type=PROBLEM_TYPE + code, title=title, status=status, detail=detail, code=code, errors=errors)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers,
                        media_type=MEDIA_TYPE)


HTTP_CODES = {400: "bad_request", 401: "not_authenticated", 403: "forbidden", 404: "not_found",
              405: "method_not_allowed", 413: "body_too_large", 415: "unsupported_media_type"}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def app_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem(exc.status, exc.code, exc.title, exc.detail, headers=exc.headers,
                   errors=getattr(exc, "errors", None))


async def image_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ImageError)
    return await app_error_handler(request, ImageRejected(exc))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    phrase = _phrase(status)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != phrase else f"{phrase}."
    if status == 404:
        detail = "No such resource."
    headers = exc.headers
    if status == 405:
        headers = {**(exc.headers or {}), "Allow": allowed_methods(request)}
    return problem(status, HTTP_CODES.get(status, f"http_{status}"), phrase, detail, headers=headers)


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> str:
    """Every method some route answers at this path: Starlette's 405 names only the first route's
    (`OPTIONS /submissions` said `Allow: POST`, where GET is served too)."""
    allowed = [method for method in METHODS
               if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                      for route in request.app.router.routes)]
    return ", ".join(allowed) or "GET, HEAD"  # no route: the UI's static files, which answer GET and HEAD


# Pydantic messages that quote part of the input (uuid_parsing names the first bad character).
_SAFE_MESSAGES = {"uuid_parsing": "Input should be a valid UUID", "uuid_type": "Input should be a valid UUID"}


def field_errors(exc: RequestValidationError) -> list[FieldError]:
    """One entry per failed field: where, which rule, and pydantic's message, but never the input."""
    out = []
    for err in exc.errors():
        loc = [str(part) for part in err.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header", "cookie"):
            loc = loc[1:]
        code = str(err.get("type", "invalid"))
        message = _SAFE_MESSAGES.get(code) or str(err.get("msg", "Invalid value."))
        value = err.get("input")
        if isinstance(value, str | int | float) and len(str(value)) >= 1 and str(value) in message:
            message = "Invalid value."  # the message would repeat what was sent
        out.append(FieldError(field=".".join(loc) or "body", code=code, message=message))
    return out


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = field_errors(exc)
    fields = ", ".join(dict.fromkeys(e.field for e in errors))
    return problem(422, "validation_error", "Invalid request", f"Invalid field(s): {fields}.", errors=errors)


_UNREACHABLE = {errno.ENOENT, errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH}


# SQLSTATE classes that mean the connection, not the query, failed: 08 connection exception,
# 57P01-57P03 the server shutting down, crashed, or not accepting connections yet.
_UNREACHABLE_SQLSTATES = ("08", "57P")


def _causes(exc: BaseException) -> list[BaseException]:
    """`exc`, the driver error SQLAlchemy wraps, and what caused each, without repeats."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return seen


def database_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached (rather than that a query is wrong).

    asyncpg's connect errors reach us unwrapped: `ConnectionRefusedError` over TCP, `FileNotFoundError`
    when the Unix socket of a stopped (embedded) server is gone. A connection dropped in the middle of
    an operation arrives as a bare `DBAPIError` around asyncpg's `ConnectionDoesNotExistError`.
    """
    import asyncpg

    for e in _causes(exc):
        if isinstance(e, DBAPIError) and (e.connection_invalidated or isinstance(e, OperationalError | InterfaceError)):
            return True
        if isinstance(e, PoolTimeout | ConnectionError | TimeoutError | asyncpg.exceptions.InterfaceError):
            return True
        if isinstance(e, OSError) and e.errno in _UNREACHABLE:
            return True
        if str(getattr(e, "sqlstate", None) or getattr(e, "pgcode", None) or "").startswith(_UNREACHABLE_SQLSTATES):
            return True
    return False


async def database_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Lost or refused connections become 503 + Retry-After; anything else stays a 500."""
    if not database_unreachable(exc):
        return await internal_error_handler(request, exc)
    log.warning("database unavailable: %s", type(exc).__name__)
    return await app_error_handler(request, DatabaseUnavailable())


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "internal_error", "Internal error", AppError.detail)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, app_error_handler)
    app.add_exception_handler(ImageError, image_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(SQLAlchemyError, database_error_handler)
    app.add_exception_handler(OSError, database_error_handler)  # asyncpg's connect errors come unwrapped
    app.add_exception_handler(Exception, internal_error_handler)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for error answers: the Problem schema under application/problem+json."""
    descriptions = {
        400: "Malformed request (e.g. broken multipart body).",
        401: "No or wrong admin token (`not_authenticated`, `invalid_token`).",
        403: "Admin access disabled, or wrong deletion token (`admin_disabled`, `invalid_deletion_token`).",
        404: "No such submission (`not_found`).",
        409: "A request with the same Idempotency-Key is still running (`idempotency_in_progress`).",
        413: "Body, file or image too large (`body_too_large`, `file_too_large`, `image_too_many_pixels`).",
        415: "Not multipart/form-data (`unsupported_media_type`), or not a JPEG, PNG or WebP photo "
             "(`unsupported_image`).",
        422: "Invalid field (`validation_error`), unusable photo (`empty_file`, `corrupt_image`, "
             "`multiple_files`) or Idempotency-Key reused with another request (`idempotency_key_reused`).",
        429: "Too many requests (`rate_limited`), or too many failed authentications (`auth_rate_limited`), "
             "from this address; see Retry-After.",
        503: "Overloaded, too slow or database unavailable (`overloaded`, `processing_timeout`, "
             "`database_unavailable`); see Retry-After.",
    }
    examples = {
        400: ("bad_request", "Bad Request", "Invalid multipart data."),
        401: ("not_authenticated", "Not authenticated", NotAuthenticated.detail),
        403: ("admin_disabled", "Admin access disabled", AdminDisabled.detail),
        404: ("not_found", "Not found", "No such submission."),
        409: ("idempotency_in_progress", IdempotencyInProgress.title, IdempotencyInProgress.detail),
        413: ("image_too_many_pixels", "Image too large", "The image has more than 40000000 pixels."),
        415: ("unsupported_image", "Unsupported image", "Not a JPEG, PNG or WebP image."),
        422: ("validation_error", "Invalid request", "Invalid field(s): true_age."),
        429: ("rate_limited", RateLimited.title, RateLimited.detail),
        503: ("overloaded", "Service overloaded", Overloaded.detail),
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        code, title, detail = examples[status]
        example: dict[str, Any] = {"type": PROBLEM_TYPE + code, "title": title, "status": status,
                                   "detail": detail, "code": code}
        if status == 422:
            example["errors"] = [{"field": "true_age", "code": "less_than_equal",
                                  "message": "Input should be less than or equal to 120"}]
        out[status] = {
            "description": descriptions[status],
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}, "example": example}},
        }
    return out


def problem_response(description: str, *errors: type[AppError]) -> dict[str, Any]:
    """One OpenAPI entry for a route's own error answer, with `errors`' codes; the first is the example."""
    first = errors[0]
    example = {"type": PROBLEM_TYPE + first.code, "title": first.title, "status": first.status,
               "detail": first.detail, "code": first.code}
    codes = ", ".join(f"`{e.code}`" for e in errors)
    return {"description": f"{description} ({codes}).",
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}, "example": example}}}


def add_problem_schema(openapi: dict[str, Any]) -> None:
    """Put `Problem` (and what it refers to) into the OpenAPI components, for `problem_responses`."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas["Problem"] = schema
    # FastAPI's own 422 entries (routes that did not list 422) describe a shape we never send.
    problem_422 = problem_responses(422)[422]
    for operations in openapi.get("paths", {}).values():
        for operation in operations.values():
            response = operation.get("responses", {}).get("422")
            if response and "HTTPValidationError" in str(response.get("content")):
                operation["responses"]["422"] = problem_422
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
