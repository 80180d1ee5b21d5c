"""The database: an external Postgres (`DATABASE_URL`) or an embedded one kept in `<data_dir>/pgdata`.

The embedded server (see api/storage/embedded.py) runs detached; each process that uses it registers, and the
last one to call `stop()` stops it. `python -m api migrate` starts it, migrates and stops it; the app's
lifespan starts it again, watches it (`Database.watch`: started again when it dies) and stops it on
shutdown (Ctrl-C or SIGTERM), since uvicorn's signal handling skips the package's own exit hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.core.settings import REPO_ROOT, Settings
from api.storage.embedded import EmbeddedPostgres, Watchdog


@dataclass
class Database:
    """Where the data lives; `stop()` lets go of the embedded server (stopping it if this process is last)."""

    url: str
    server: EmbeddedPostgres | None = None
    watchdog: Watchdog | None = None

    def watch(self) -> None:
        """Start the embedded server again whenever it dies, for as long as this process serves."""
        if self.server is not None and self.watchdog is None:
            self.watchdog = Watchdog(self.server)
            self.watchdog.start()

    @property
    def problem(self) -> str | None:
        """What the watchdog knows to be wrong with the embedded server; None when nothing is."""
        return self.watchdog.problem if self.watchdog is not None else None

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
            self.watchdog = None
        if self.server is not None:
            self.server.stop()
            self.server = None


def async_url(url: str) -> str:
    """Any Postgres URL in the form SQLAlchemy's asyncpg dialect takes."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def start_embedded(pgdata: Path, cleanup_mode: str | None = "stop") -> Database:
    """Start (or attach to) the embedded Postgres in `pgdata`; blocking, about 0.1 s once initialised."""
    server = EmbeddedPostgres(pgdata, cleanup_mode=cleanup_mode)
    return Database(url=async_url(server.uri), server=server)


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
