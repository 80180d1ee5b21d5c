"""Command line: `python -m api serve [--host H] [--port P] [--workers N]`, `python -m api migrate`,
`python -m api export-submissions --out DIR`, `python -m api purge [--days N]`, `python -m api backup --out FILE`,
`python -m api restore FILE`, `python -m api retrain [...]`."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from api.core.logs import configure_logging, log_config
from api.core.settings import Settings


def migrate(settings: Settings) -> None:
    """Apply every migration; with no DATABASE_URL, to the embedded Postgres (started, then stopped)."""
    from api.storage import db

    database = db.start_database(settings)
    try:
        db.migrate(database.url)
    finally:
        database.stop()


@contextmanager
def multiprocess_metrics() -> Iterator[None]:
    """prometheus_client's multiprocess mode for the worker processes about to start.

    `PROMETHEUS_MULTIPROC_DIR` is honoured when set (and emptied of a previous run's files, as the
    client's documentation asks); otherwise a fresh temporary folder is used and removed at the end.
    """
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.db"):
            stale.unlink()
        yield
        return
    folder = Path(tempfile.mkdtemp(prefix="whatsmyage-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    try:
        yield
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        shutil.rmtree(folder, ignore_errors=True)


def export(settings: Settings, out: Path) -> None:
    """Write consented submissions as a UTKFace-style folder (see api/learning/submission_export.py)."""
    import asyncio

    from sqlmodel.ext.asyncio.session import AsyncSession

    from api.learning.submission_export import export_submissions
    from api.storage import db

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


def backup(settings: Settings, out: Path) -> None:
    """Dump the whole database, photos included, while the service may run (see api/storage/backup.py)."""
    from api.storage import db
    from api.storage.backup import BackupError
    from api.storage.backup import backup as dump

    database = db.start_database(settings)  # the embedded server: attached to if running, else started
    try:
        made = dump(database.url, out)
    except BackupError as exc:
        raise SystemExit(f"backup failed: {exc}") from None
    finally:
        database.stop()
    print(f"{made.path}: {made.size} bytes in {made.seconds:.1f} s")


def restore(settings: Settings, file: Path, replace: bool) -> None:
    """Restore a backup into the (empty) database, then migrate it."""
    from api.storage import db
    from api.storage.backup import BackupError
    from api.storage.backup import restore as load

    database = db.start_database(settings)
    try:
        load(database.url, file, replace=replace)
    except BackupError as exc:
        raise SystemExit(f"restore failed: {exc}") from None
    finally:
        database.stop()
    print(f"{file}: restored")
def purge(settings: Settings, days: int | None) -> None:
    """One retention purge now (see api/privacy/retention.py), for cron; the service also runs one every hour."""
    import asyncio

    from sqlmodel.ext.asyncio.session import AsyncSession

    from api.privacy import retention
    from api.storage import db
    from api.storage.tables import utcnow

    days = days or settings.retention_days
    if days is None:
        print("whatsmyage: retention is off: set WMA_RETENTION_DAYS (or pass --days N) to purge", file=sys.stderr)
        sys.exit(2)

    async def run(url: str) -> retention.Purged:
        engine = db.create_engine(url)
        try:
            async with AsyncSession(engine) as session:
                return await retention.purge(session, retention_days=days, now=utcnow())
        finally:
            await engine.dispose()

    database = db.start_database(settings)
    try:
        purged = asyncio.run(run(database.url))
    finally:
        database.stop()
    if not purged.ran:
        print("another process is purging now: nothing done")
        return
    print(f"purged {purged.submissions} submissions stored more than {days} days ago, "
          f"{purged.idempotency_keys} expired idempotency keys, {purged.auth_throttle_rows} old failure counts")


def settings_or_exit(**overrides: object) -> Settings:
    """The settings, or one line per refused one (a weak token, say) and exit status 2."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        for error in exc.errors():
            message = str(error["msg"]).removeprefix("Value error, ")
            where = ".".join(str(part) for part in error["loc"])
            print(f"whatsmyage: {message}" if error["type"] == "value_error" else f"whatsmyage: {where}: {message}",
                  file=sys.stderr)
        sys.exit(2)


def serve(settings: Settings) -> None:
    import uvicorn

    # uvicorn turns SIGINT/SIGTERM into a graceful shutdown: the lifespan then stops the embedded Postgres.
    # Its access log is off: api.http.observe logs each request, as JSON, with its request id.
    options = {"host": settings.host, "port": settings.port, "log_config": log_config(), "access_log": False}
    if settings.workers == 1:
        from api.main import create_app

        uvicorn.run(create_app(settings), **options)
        return
    # Several processes, each importing the app and reading its settings from the environment (this
    # process loads no model). The embedded Postgres, when used, is shared: each worker attaches to it
    # and the last one out stops it.
    with multiprocess_metrics():
        uvicorn.run("api.main:create_app", factory=True, workers=settings.workers, **options)


def retrain(settings: Settings, args: argparse.Namespace) -> None:
    """One run of the learning loop (see api/learning/retrain.py): export, fine-tune, evaluate, promote or reject."""
    import asyncio

    from sqlmodel.ext.asyncio.session import AsyncSession

    from api.learning.retrain import RetrainError, RetrainOptions
    from api.learning.retrain import retrain as run_retrain
    from api.storage import db

    try:
        import torch  # noqa: F401
    except ImportError:
        raise SystemExit("retrain: training needs torch, the `train` extra (pip install -e '.[train]'); "
                         "the serving image has none: run it where `make install` ran") from None

    options = RetrainOptions.from_settings(
        settings, data=args.data, epochs=args.epochs, submission_weight=args.submission_weight,
        held_out_share=args.held_out_share, min_held_out=args.min_held_out, shared_images=args.shared_images,
        lr=args.lr, ema=args.ema, batch=args.batch, seed=args.seed, device=args.device, workers=args.workers)

    async def run(url: str):  # noqa: ANN202
        engine = db.create_engine(url)
        try:
            async with AsyncSession(engine, expire_on_commit=False) as session:
                return await run_retrain(session, settings, options)
        finally:
            await engine.dispose()

    database = db.start_database(settings)
    try:
        outcome = asyncio.run(run(database.url))
    except RetrainError as exc:
        raise SystemExit(f"retrain: {exc}") from None
    finally:
        database.stop()
    print(f"\n{outcome.version} (candidate) against the active model\n{outcome.table}\n")
    print(f"{'PROMOTED: now active' if outcome.promoted else 'REJECTED'}: {outcome.why}")
    if outcome.forgotten:
        print(f"retired, weights deleted (trained on submissions since deleted): {', '.join(outcome.forgotten)}")
    print(f"plots, split and summary: {outcome.run}")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m api", description="The whatsmyage service.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser("serve", help="serve the API and UI")
    serve_cmd.add_argument("--host", help="address to listen on (default: WMA_HOST or 127.0.0.1)")
    serve_cmd.add_argument("--port", type=int, help="port (default: WMA_PORT or 8000)")
    serve_cmd.add_argument("--workers", type=int, help="worker processes (default: WMA_WORKERS or 1)")
    commands.add_parser("migrate", help="apply database migrations")
    export_cmd = commands.add_parser("export-submissions", help="write stored submissions as a UTKFace-style folder")
    export_cmd.add_argument("--out", type=Path, required=True, help="folder to write (and keep in step)")
    backup_cmd = commands.add_parser("backup", help="back up the database, stored photos included")
    backup_cmd.add_argument("--out", type=Path, required=True, help="file to write (pg_dump's custom format)")
    restore_cmd = commands.add_parser("restore", help="restore a backup into an empty database")
    restore_cmd.add_argument("file", type=Path, help="a file written by `backup`")
    restore_cmd.add_argument("--replace", action="store_true", help="replace the tables the database holds")
    purge_cmd = commands.add_parser("purge", help="remove submissions older than WMA_RETENTION_DAYS (for cron)")
    purge_cmd.add_argument("--days", type=positive_int, help="retention in days (default: WMA_RETENTION_DAYS)")
    retrain_cmd = commands.add_parser(
        "retrain", help="fine-tune the active model with the submissions; promote it only by the README's rule")
    retrain_cmd.add_argument("--data", type=Path, action="append",
                             help="shared UTKFace-style folder; repeatable (default: WMA_RETRAIN_DATA)")
    retrain_cmd.add_argument("--epochs", type=positive_int, help="default: WMA_RETRAIN_EPOCHS or 1")
    retrain_cmd.add_argument("--submission-weight", type=float,
                             help="loss weight of a submission (default: WMA_RETRAIN_SUBMISSION_WEIGHT or 5)")
    retrain_cmd.add_argument("--held-out-share", type=float,
                             help="share of submissions kept for evaluation "
                                  "(default: WMA_RETRAIN_HELD_OUT_SHARE or 0.2)")
    retrain_cmd.add_argument("--min-held-out", type=positive_int,
                             help="held-out submissions needed to promote (default: WMA_RETRAIN_MIN_HELD_OUT or 5)")
    retrain_cmd.add_argument("--shared-images", type=positive_int,
                             help="train on a stable subset of this many shared training images (default: all)")
    retrain_cmd.add_argument("--lr", type=float, help="peak learning rate (default 3e-4)")
    retrain_cmd.add_argument("--ema", type=float,
                             help="weight EMA decay during the fine-tune, e.g. 0.998 (default off)")
    retrain_cmd.add_argument("--batch", type=positive_int, help="batch size (default 128)")
    retrain_cmd.add_argument("--seed", type=int)
    retrain_cmd.add_argument("--device", help="auto (default: cuda when present), cpu or cuda")
    retrain_cmd.add_argument("--workers", type=positive_int, help="processes for chip extraction (default 2)")
    args = parser.parse_args(argv)

    configure_logging()  # JSON lines on stdout
    overrides = {k: v for k in ("host", "port", "workers") if (v := getattr(args, k, None)) is not None}
    settings = settings_or_exit(**overrides)
    if args.command == "migrate":
        migrate(settings)
    elif args.command == "export-submissions":
        export(settings, args.out)
    elif args.command == "backup":
        backup(settings, args.out)
    elif args.command == "restore":
        restore(settings, args.file, args.replace)
    elif args.command == "purge":
        purge(settings, args.days)
    elif args.command == "retrain":
        retrain(settings, args)
    else:
        serve(settings)


if __name__ == "__main__":
    main()
