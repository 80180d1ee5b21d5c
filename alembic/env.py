"""Alembic environment: the URL comes from `api.core.settings.Settings`, or from the caller.

`python -m api migrate` (and the tests) pass the URL in `config.attributes["database_url"]`. Run as
the `alembic` command, this starts the embedded Postgres itself when no DATABASE_URL is set, and
stops it afterwards.
"""

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import api.storage.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from api.core.settings import Settings
from api.storage.db import Database, async_url, start_database

config = context.config

# Called from our code (`api.storage.db.migrate`, with a URL), logging is the caller's; as `alembic`, it is ours.
if config.config_file_name is not None and "database_url" not in config.attributes:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = SQLModel.metadata


def run_migrations_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`); needs no database."""
    url = config.attributes.get("database_url") or Settings().database_url or "postgresql+asyncpg://"
    context.configure(url=async_url(url), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_server_default=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations(url: str) -> None:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    url = config.attributes.get("database_url")
    database = Database(url=async_url(url)) if url else start_database(Settings())
    try:
        asyncio.run(run_async_migrations(database.url))
    finally:
        database.stop()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
