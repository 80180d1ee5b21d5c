"""What authenticated requests cost with the throttle and the audit trail: this tree against a git ref,
both served at once and measured in alternate rounds.

    .venv/bin/python -m bench.auth_overhead [--against main] [--requests 300] [--rounds 3]

The ref's files are taken with `git archive` into a temporary folder (nothing in any checkout
changes). Each is served by `python -m api serve` (one worker, the POST rate limit off) on a free
port, with an embedded Postgres of its own, migrated; both get the same admin and metrics tokens and
one stored submission. Each round sends --requests sequential requests over one keep-alive
connection to each route below, first to one server then the other (the order swapped each round),
and the medians and 95th percentiles of all rounds are printed side by side, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.common import ROOT, free_port, server_env, start, stop, wait_healthy
from bench.machine import describe

ROUTES = ["GET /submissions/{id}", "GET /submissions/{id}/image", "GET /submissions?limit=20", "GET /metrics"]


@contextmanager
def served(root: Path, token: str, data: Path) -> Iterator[str]:
    """The app of the tree at `root`, migrated and served; yields its URL."""
    env = {k: v for k, v in server_env(data).items() if k != "PYTHONPATH"}
    env |= {"ADMIN_TOKEN": token, "WMA_METRICS_TOKEN": token[::-1], "PYTHONPATH": str(root)}
    port = free_port()
    log = open(data / "server.log", "wb")  # noqa: SIM115
    proc = start(env, port, log, root=root)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", 120, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)
        log.close()


def measure(client: httpx.Client, route: str, submission: str, token: str, n: int) -> list[float]:
    method, path = route.split(" ", 1)
    path = path.format(id=submission)
    headers = {"Authorization": f"Bearer {token[::-1] if path == '/metrics' else token}"}
    seconds = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.request(method, path, headers=headers)
        seconds.append(time.perf_counter() - started)
        assert response.status_code == 200, (route, response.status_code, response.text[:200])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", default="main", help="git ref to compare with (default: main)")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(describe())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    tmp = Path(tempfile.mkdtemp(prefix="whatsmyage-auth-overhead-"))
    try:
        old_root = tmp / "old"
        old_root.mkdir()
        archive = subprocess.run(["git", "archive", args.against], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old_root)], input=archive.stdout, check=True)
        token = secrets.token_hex(32)
        trees = {args.against: old_root, "this tree": ROOT}
        times: dict[str, dict[str, list[float]]] = {name: {r: [] for r in ROUTES} for name in trees}
        photo = (ROOT / "tests" / "fixtures" / "astronaut.png").read_bytes()
        with served(old_root, token, _mk(tmp / "old-data")) as old_url, \
                served(ROOT, token, _mk(tmp / "new-data")) as new_url:
            urls = {args.against: old_url, "this tree": new_url}
            clients = {name: httpx.Client(base_url=url, timeout=30) for name, url in urls.items()}
            ids = {}
            for name, client in clients.items():
                created = client.post("/submissions", files={"image": ("a.png", photo, "image/png")},
                                      data={"first_name": "Eileen", "true_age": "42", "consent": "true"})
                ids[name] = created.json()["id"]
            for name, client in clients.items():  # warm-up
                for route in ROUTES:
                    measure(client, route, ids[name], token, 20)
            for round_ in range(args.rounds):
                order = list(clients) if round_ % 2 == 0 else list(clients)[::-1]
                for route in ROUTES:
                    for name in order:
                        times[name][route] += measure(clients[name], route, ids[name], token, args.requests)
            for client in clients.values():
                client.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    names = list(trees)
    print(f"{args.rounds} rounds x {args.requests} sequential requests per route and server, milliseconds")
    print(f"{'route':32} " + " ".join(f"{n + ' p50':>14} {n + ' p95':>14}" for n in names))
    for route in ROUTES:
        cells = []
        for name in names:
            ms = sorted(t * 1000 for t in times[name][route])
            cells.append(f"{statistics.median(ms):14.2f} {ms[int(len(ms) * 0.95)]:14.2f}")
        print(f"{route:32} " + " ".join(cells))


def _mk(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
