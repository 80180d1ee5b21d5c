"""Backups of the whole database, the stored photos included: `python -m api backup --out FILE` and
`python -m api restore FILE`.

A backup is `pg_dump`'s custom format (compressed; `pg_restore --list FILE` shows what it holds) of
every table: the submissions with their photos (they live in the database, re-encoded), the
idempotency keys and the migration version. It is taken from one snapshot, so it is consistent while
the service runs and writes. The programs are the embedded package's (PostgreSQL 18), for the
embedded database and a configured one alike: pg_dump reads servers back to 9.2, so the machine
needs no Postgres client of its own. The file is written beside its final name and renamed when
complete, so a backup that fails leaves no file that looks whole.

A restore goes into an empty database (a new one, or a new embedded `pgdata`), in one transaction:
it stores everything or nothing. Over a database that holds tables already it refuses, unless told to
replace them (`--replace`: the schema `public` is dropped and made again first, in the same
transaction). Then the migrations run, so a backup made by an older release comes up to date.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url

from api.storage.embedded import binary


class BackupError(RuntimeError):
    """pg_dump or pg_restore failed, or the restore was refused; the message says why."""


def libpq_environment(url: str) -> dict[str, str]:
    """The connection as libpq's environment variables, so that no password shows in a process list."""
    parsed = make_url(url)
    env = {"PGDATABASE": parsed.database or "postgres", "PGUSER": parsed.username or "postgres"}
    host = parsed.query.get("host") or parsed.host  # a Unix socket folder comes as ?host=
    if isinstance(host, tuple):
        host = host[0]
    if host:
        env["PGHOST"] = host
    if parsed.port:
        env["PGPORT"] = str(parsed.port)
    if parsed.password:
        env["PGPASSWORD"] = parsed.password
    ssl = parsed.query.get("sslmode") or parsed.query.get("ssl")  # libpq's name, or asyncpg's
    if isinstance(ssl, str):
        env["PGSSLMODE"] = ssl
    return env


def _run(program: str, args: list[str], url: str, timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | libpq_environment(url)
    try:
        return subprocess.run([str(binary(program)), *args], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"{program} took longer than {timeout:.0f} s") from exc


def _errors(result: subprocess.CompletedProcess) -> str:
    return " | ".join(line.strip() for line in result.stderr.splitlines() if line.strip())[-2000:] or "no message"


@dataclass(frozen=True)
class BackupFile:
    path: Path
    size: int
    seconds: float


def backup(url: str, out: Path, timeout: float = 3600) -> BackupFile:
    """Dump the database at `url` into `out` (replaced if it exists); blocking."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    started = time.monotonic()
    # No owners or grants: the backup restores into a database owned by whoever restores it.
    result = _run("pg_dump", ["--format=custom", "--no-owner", "--no-privileges", f"--file={partial}"], url, timeout)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed: {_errors(result)}")
    os.replace(partial, out)
    return BackupFile(out, out.stat().st_size, time.monotonic() - started)


def restore(url: str, file: Path, *, replace: bool = False, timeout: float = 3600) -> None:
    """Restore `file` into the database at `url`, then migrate it; everything or nothing. Blocking."""
    from api.storage import db

    if not file.is_file():
        raise BackupError(f"{file}: no such file")
    listing = _run("pg_restore", ["--list", str(file)], url, 60)
    if listing.returncode != 0:
        raise BackupError(f"{file} is not a backup pg_restore can read: {_errors(listing)}")
    version, tables = _inspect(url)
    if tables and not replace:
        raise BackupError(f"the database is not empty (tables: {', '.join(tables)}): restore into an empty one "
                          "(a new database, or a new embedded pgdata), or pass --replace to replace its tables")
    _load(url, file, replace=replace, server_version=version, timeout=timeout)
    db.migrate(url)


def _inspect(url: str) -> tuple[int, list[str]]:
    """The server's version number (180006 for 18.6) and the tables in the database's public schema."""
    result = _run("psql", ["--no-psqlrc", "--tuples-only", "--no-align", "--command",
                           "SELECT current_setting('server_version_num') UNION ALL "
                           "(SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1)"], url, 60)
    if result.returncode != 0:
        raise BackupError(f"cannot read the database: {_errors(result)}")
    version, *tables = result.stdout.split()
    return int(version), tables


# pg_restore 18 sets a parameter that servers before 17 do not know, which would fail the restore.
_NEWER_THAN_16 = {b"SET transaction_timeout = 0;\n"}


def _load(url: str, file: Path, *, replace: bool, server_version: int, timeout: float) -> None:
    """pg_restore's SQL piped into psql, in one transaction that stops at the first error.

    (Rather than `pg_restore --dbname`, so that the script's header can be fitted to an older server.)
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | libpq_environment(url)
    script = [str(binary("pg_restore")), "--file=-", "--no-owner", "--no-privileges", str(file)]
    load = [str(binary("psql")), "--no-psqlrc", "--quiet", "--set=ON_ERROR_STOP=1", "--file=-"]
    skip = _NEWER_THAN_16 if server_version < 170000 else set()
    with tempfile.TemporaryFile() as dump_errors, tempfile.TemporaryFile() as load_errors:
        with subprocess.Popen(script, env=env, stdout=subprocess.PIPE, stderr=dump_errors) as dump, \
                subprocess.Popen(load, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                 stderr=load_errors) as psql:
            assert dump.stdout is not None and psql.stdin is not None
            try:
                # One transaction, committed only once pg_restore has read the whole file: a damaged
                # file ends the script early, and psql then leaves without committing anything.
                psql.stdin.write(b"BEGIN;\n")
                if replace:  # everything in the schema goes, tables the backup does not have included
                    psql.stdin.write(b"DROP SCHEMA public CASCADE;\nCREATE SCHEMA public;\n")
                for number, line in enumerate(dump.stdout):
                    if line not in skip:
                        psql.stdin.write(line)
                    if number == 100:  # past the header: the rest as it comes
                        shutil.copyfileobj(dump.stdout, psql.stdin, 1 << 20)
                        break
                if dump.wait(timeout) == 0:
                    psql.stdin.write(b"COMMIT;\n")
                psql.stdin.close()
            except BrokenPipeError:  # psql stopped at an error: its message says which
                dump.kill()
            try:
                psql.wait(timeout)
                dump.wait(60)
            except subprocess.TimeoutExpired as exc:
                psql.kill()
                dump.kill()
                raise BackupError(f"the restore took longer than {timeout:.0f} s; nothing was restored") from exc
        if psql.returncode != 0 or dump.returncode != 0:
            messages = []
            for errors in (dump_errors, load_errors):
                errors.seek(0)
                messages += [line.strip() for line in errors.read().decode("utf-8", "replace").splitlines()]
            said = " | ".join(m for m in messages if m)[-2000:] or "no message"
            raise BackupError(f"the restore failed, nothing was restored: {said}")
