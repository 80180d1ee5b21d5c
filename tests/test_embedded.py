"""api/storage/embedded.py on a real embedded Postgres: after a SIGKILL of the postmaster while a backend is
busy in a long query (so that it outlives its postmaster, holding the shared memory a new server
refuses to share), `restart` clears what is left (that backend, the old segment, the stale
postmaster.pid) and starts the server again on the same socket, with what was committed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from api.storage.embedded import EmbeddedPostgres, binary

pytestmark = pytest.mark.slow


@pytest.fixture
def postgres() -> Iterator[EmbeddedPostgres]:
    folder = Path(tempfile.mkdtemp(prefix="whatsmyage-embedded-"))  # outside pytest's temp root (see tests/served.py)
    server = EmbeddedPostgres(folder / "pgdata", cleanup_mode="delete")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def psql(server: EmbeddedPostgres, sql: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "PGHOST": str(server.socket_dir), "PGUSER": "postgres", "PGDATABASE": "postgres"}
    return subprocess.Popen([str(binary("psql")), "--no-psqlrc", "-tAc", sql], env=env, text=True, **popen)


def shared_memory_ids() -> set[int]:
    return {int(line.split()[1]) for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]}


def of_pgdata(server: EmbeddedPostgres) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["name", "cwd", "status"]) if p.info["name"] == "postgres"
            and p.info["cwd"] == str(server.pgdata) and p.info["status"] != psutil.STATUS_ZOMBIE]


def test_a_killed_postmaster_is_cleared_away_and_its_server_started_again(postgres):
    assert psql(postgres, "CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)").wait(30) == 0
    old_pid = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
    old_segment = int((postgres.pgdata / "postmaster.pid").read_text().splitlines()[6].split()[1])
    busy = psql(postgres, "SELECT count(*) FROM generate_series(1, 10000000000)", stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # the query is running
    os.kill(old_pid, signal.SIGKILL)
    time.sleep(1.0)
    assert not postgres.running()
    assert of_pgdata(postgres), "no backend outlived its postmaster"  # the busy one did
    assert old_segment in shared_memory_ids()

    postgres.restart()
    assert postgres.running()
    new_pid = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
    assert new_pid != old_pid
    assert old_segment not in shared_memory_ids()
    assert all(p.pid == new_pid or p.ppid() == new_pid for p in of_pgdata(postgres))  # only the new server's
    kept = psql(postgres, "SELECT x FROM kept", stdout=subprocess.PIPE)
    assert kept.communicate(timeout=30)[0].strip() == "42"
    busy.wait(30)  # its connection went with the old server
