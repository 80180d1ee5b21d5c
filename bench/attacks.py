"""Attacks on authentication and privacy, against the served app on loopback; prints what each got.

    .venv/bin/python -m bench.attacks [--workers 2] [--guesses 300]

It serves the app itself as `python -m api serve` does (`bench/load.py`'s server: an embedded
Postgres in a temporary folder, the POST rate limit off, a random 43-character admin token), and
tries:

- starting with a weak ADMIN_TOKEN (refused: exit 2, one line, the token not repeated);
- guessing the admin token: --guesses wrong tokens one after another on one connection, then the
  right one from the same address (throttled), and the right one from another address (answered);
- a burst of 50 wrong tokens at once, each on its own connection (spread over the workers);
- guessing a submission's deletion token (on its reads and its DELETE), and reading another
  person's submission with one's own token;
- rotating addresses inside one IPv6 /64;
- then it reads the server's whole log and /metrics for the tokens, the name and the photo.

Other client addresses are sent as `X-Forwarded-For`, which uvicorn trusts from 127.0.0.1 only
(`FORWARDED_ALLOW_IPS`): here this script is the trusted proxy. Exit status 1 if any attack got
what it should not.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.common import ROOT
from bench.load import Server

FIXTURES = ROOT / "tests" / "fixtures"
NAME = "Xanthippe"


def statuses(responses: list[httpx.Response]) -> str:
    return ", ".join(f"{n}x{s}" for s, n in sorted(Counter(r.status_code for r in responses).items()))


class Report:
    def __init__(self) -> None:
        self.failed = 0

    def line(self, attack: str, got: str, ok: bool) -> None:
        self.failed += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {attack}: {got}")


def weak_token_start(report: Report) -> None:
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "WMA_METRICS_TOKEN")}
        env |= {"ADMIN_TOKEN": "hunter2", "WMA_DATA_DIR": folder}
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "api", "serve"], cwd=folder, env=env, capture_output=True,
                                text=True, timeout=60)
        seconds = time.perf_counter() - started
    ok = result.returncode == 2 and result.stderr.count("\n") == 1 and "hunter2" not in result.stderr
    report.line("ADMIN_TOKEN=hunter2 python -m api serve",
                f"exit {result.returncode} after {seconds:.1f} s: {result.stderr.strip()!r}", ok)


def attack(url: str, token: str, guesses: int, report: Report) -> None:
    admin = {"Authorization": f"Bearer {token}"}
    wrong = {"Authorization": f"Bearer {'0' * 43}"}

    def via(address: str) -> dict[str, str]:
        return {"X-Forwarded-For": address}

    with httpx.Client(base_url=url, timeout=30) as client:
        photo = (FIXTURES / "astronaut.png").read_bytes()
        created = client.post("/submissions", files={"image": ("me.png", photo, "image/png")},
                              data={"first_name": NAME, "true_age": "42", "consent": "true"},
                              headers=via("198.51.100.1"))
        assert created.status_code == 201, created.text
        mine = created.json()
        theirs = client.post("/submissions", files={"image": ("me.png", photo, "image/png")},
                             data={"first_name": "Other", "true_age": "40", "consent": "true"},
                             headers=via("198.51.100.2")).json()

        # 1. Guessing the admin token from one address, one request after another.
        started = time.perf_counter()
        answers = [client.get("/submissions", headers=wrong | via("203.0.113.10")) for _ in range(guesses)]
        seconds = time.perf_counter() - started
        compared = sum(r.status_code == 401 for r in answers)
        right = client.get("/submissions", headers=admin | via("203.0.113.10"))
        report.line(f"{guesses} wrong admin tokens from one address",
                    f"{statuses(answers)} in {seconds:.2f} s ({guesses / seconds:.0f}/s); compared: {compared}; "
                    f"Retry-After {answers[-1].headers.get('retry-after')} s", compared == 10)
        report.line("then the right admin token from that address", f"{right.status_code} {right.json()['code']}",
                    right.status_code == 429)
        elsewhere = client.get("/submissions", headers=admin | via("203.0.113.11"))
        report.line("the right admin token from another address", str(elsewhere.status_code),
                    elsewhere.status_code == 200)

        # 2. A burst of wrong tokens at once, each on its own connection.
        def one(_: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=30) as c:
                return c.get("/submissions", headers=wrong | via("203.0.113.20"))

        with ThreadPoolExecutor(50) as pool:
            burst = list(pool.map(one, range(50)))
        compared = sum(r.status_code == 401 for r in burst)
        report.line("50 wrong admin tokens at once, one connection each", f"{statuses(burst)}; compared: {compared}",
                    compared <= 10 * WORKERS)

        # 3. Guessing a deletion token, on the reads and on DELETE; reading another's with one's own.
        url_mine = f"/submissions/{mine['id']}"
        guesses_d = [client.request(method, url_mine + path, headers={"X-Deletion-Token": f"guess-{i}"}
                                    | via("203.0.113.30"))
                     for i, (method, path) in enumerate([("GET", ""), ("GET", "/image"), ("DELETE", "")] * 10)]
        still = client.get(url_mine, headers=admin | via("203.0.113.31"))
        report.line("30 deletion-token guesses on one submission (GET, GET image, DELETE)",
                    f"{statuses(guesses_d)}; the submission afterwards: {still.status_code}",
                    sum(r.status_code == 403 for r in guesses_d) == 10 and still.status_code == 200)
        cross = client.get(f"/submissions/{theirs['id']}/image",
                           headers={"X-Deletion-Token": mine["deletion_token"]} | via("203.0.113.32"))
        report.line("reading another person's photo with one's own token", f"{cross.status_code} "
                    f"{cross.json()['code']}", cross.status_code == 403 and b"JFIF" not in cross.content)
        own = client.get(f"{url_mine}/image", headers={"X-Deletion-Token": mine["deletion_token"]}
                         | via("203.0.113.33"))
        report.line("reading one's own photo with one's token", f"{own.status_code}, "
                    f"Cache-Control: {own.headers.get('cache-control')}",
                    own.status_code == 200 and "no-store" in own.headers.get("cache-control", ""))

        # 4. Rotating addresses inside one IPv6 /64.
        rotated = [client.get("/submissions", headers=wrong | via(f"2001:db8:17::{i:x}")) for i in range(1, 21)]
        report.line("20 wrong tokens from 20 addresses of one IPv6 /64", statuses(rotated),
                    sum(r.status_code == 401 for r in rotated) == 10)

        # 5. What the logs and metrics hold.
        metrics = client.get("/metrics").text
        failures = [line for line in metrics.splitlines() if line.startswith("whatsmyage_auth_")
                    and "_created" not in line]
        print("     /metrics:", "; ".join(failures))
        secrets_seen = [s for s in (token, mine["deletion_token"], theirs["deletion_token"], NAME) if s in metrics]
        report.line("tokens or names in /metrics", str(secrets_seen or "none"), not secrets_seen)


WORKERS = 1


def main() -> None:
    global WORKERS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the served app")
    parser.add_argument("--guesses", type=int, default=300, help="wrong admin tokens sent one after another")
    args = parser.parse_args()
    WORKERS = args.workers
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.workers} worker(s)")
    report = Report()
    weak_token_start(report)
    log = Path(tempfile.mkdtemp(prefix="whatsmyage-attacks-")) / "server.log"
    server = Server(None, None, log=log)
    server.env["WMA_WORKERS"] = str(args.workers)
    with server:
        attack(server.url, server.token, args.guesses, report)
        time.sleep(0.5)  # the last log lines
        text = log.read_text(errors="replace")
    leaked = [s for s in (server.token, NAME, "0" * 43, "guess-", "JFIF", "IHDR") if s in text]
    report.line(f"tokens, guesses, names or photo bytes in the server's log ({len(text.splitlines())} lines)",
                str(leaked or "none"), not leaked)
    blocked = [line for line in text.splitlines() if '"address throttled"' in line]
    print(f"     log: {sum('authentication failed' in line for line in text.splitlines())} 'authentication failed' "
          f"lines, {len(blocked)} 'address throttled' lines, e.g. {blocked[0] if blocked else None}")
    print("all attacks refused" if not report.failed else f"{report.failed} attack(s) got through")
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()
