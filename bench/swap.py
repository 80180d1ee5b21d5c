"""Hot swap under load: requests per second and failures while a model version is activated, and how
long until every worker answers with it.

Serves the app for real (`python -m api migrate`, then `python -m api serve --workers N`, embedded
Postgres), keeps C clients sending the same photo to /predict, then activates NEW (POST
/models/NEW/activate) and later the version active before it again (the roll-back), ROUNDS times.
For each swap it prints the requests per second before it and in the 3 seconds after it, the failed
requests, the answers that carry neither version or whose ages are not those of the version they
name (a mixed answer), how long after the activation the last answer of the previous version was
sent (from then on every answer carries the new one), and when each worker swapped (its log line);
then the medians.

    python -m bench.swap                                   # 2 workers, 4 clients, 3 rounds
    python -m bench.swap --workers 2 --clients 4 --rounds 3 --before 4 --after 8
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx

from bench.load import Server
from bench.machine import describe as describe_machine

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "tests" / "fixtures" / "astronaut.png"
NEW = "resnet10-utkface-v2"  # a shipped model that is not the default: a candidate on a first start
AGE_TOLERANCE = 1e-3  # years: the same photo and model give the same ages


@dataclass
class Answer:
    sent: float  # time.time()
    done: float
    status: int
    version: str | None = None
    ages: tuple[float, ...] = ()


@dataclass
class Swap:
    """One activation under load, from `previous` to `version`."""

    previous: str
    version: str
    activated: float  # when the activation's answer came back (time.time())
    answers: list[Answer]  # every answer of the run, sent before or after
    worker_swaps: list[float] = field(default_factory=list)  # seconds after `activated`, from the log
    until: float = float("inf")  # the next activation

    def window(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.sent < end]

    def rate(self, start: float, end: float) -> float:
        """Answers per second among the requests sent in [start, end)."""
        return len(self.window(start, end)) / (end - start)

    @property
    def failures(self) -> list[Answer]:
        return [a for a in self.answers if a.status != 200]

    def mixed(self, ages: dict[str, tuple[float, ...]]) -> list[Answer]:
        """Answers that name neither version, or whose ages are not those of the version they name."""
        return [a for a in self.answers if a.status == 200 and (
            a.version not in (self.previous, self.version) or len(a.ages) != len(ages[a.version])
            or any(abs(x - y) > AGE_TOLERANCE for x, y in zip(a.ages, ages[a.version], strict=True)))]

    @property
    def last_previous(self) -> float:
        """Seconds after the activation that the last answer of the previous version was sent (0: none)."""
        late = [a.sent - self.activated for a in self.answers if a.status == 200 and a.version == self.previous
                and self.activated < a.sent < self.until]
        return max(late, default=0.0)


def reference_ages(answers: list[Answer], version: str) -> tuple[float, ...]:
    """The ages `version` gives the photo: what most of its answers say."""
    ages = [a.ages for a in answers if a.status == 200 and a.version == version]
    return max(set(ages), key=ages.count) if ages else ()


class Clients:
    """C threads sending the photo to /predict, one after another each, until stopped."""

    def __init__(self, url: str, clients: int, photo: bytes) -> None:
        self.url, self.photo = url, photo
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, daemon=True) for _ in range(clients)]

    def _send(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                sent = time.time()
                try:
                    r = client.post("/predict", files={"image": ("photo.png", self.photo, "image/png")})
                    body = r.json() if r.status_code == 200 else {}
                    answer = Answer(sent, time.time(), r.status_code, body.get("model_version"),
                                    tuple(round(f["age"], 4) for f in body.get("faces", [])))
                except httpx.HTTPError:
                    answer = Answer(sent, time.time(), 0)  # no answer at all: a failure too
                with self._lock:
                    self.answers.append(answer)

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)


def activate(url: str, token: str, version: str) -> float:
    r = httpx.post(f"{url}/models/{version}/activate", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    if r.status_code != 200:
        raise SystemExit(f"activating {version}: {r.status_code} {r.text}")
    return time.time()


def swap_times(log: Path, after: float) -> list[float]:
    """When each worker logged "model swapped" after `after` (time.time()), in seconds after it."""
    times = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and '"model swapped' in line:
            entry = json.loads(line)
            at = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
            if at >= after - 0.5:  # the log's times are to the millisecond
                times.append(at - after)
    return sorted(times)


def wait_for_workers(log: Path, workers: int, timeout: float = 120) -> None:
    """Until every worker has started (each logs "serving model")."""
    end = time.monotonic() + timeout
    while log.read_text(errors="replace").count('"serving model') < workers:
        if time.monotonic() > end:
            raise SystemExit(f"fewer than {workers} workers started")
        time.sleep(0.2)


def active_version(url: str) -> str:
    return httpx.get(f"{url}/model", timeout=30).json()["version"]


def run(server: Server, log: Path, *, clients: int, rounds: int, before: float, after: float,
        new: str = NEW) -> list[Swap]:
    """`rounds` times: activate `new`, then the version active at first again, under load; every
    answer of the run kept."""
    old = active_version(server.url)
    activations: list[tuple[str, str, float]] = []
    with Clients(server.url, clients, PHOTO.read_bytes()) as load:
        for _ in range(rounds):
            for previous, version in ((old, new), (new, old)):
                time.sleep(before)
                activations.append((previous, version, activate(server.url, server.token, version)))
        time.sleep(after)
    answers = sorted(load.answers, key=lambda a: a.sent)
    swaps = []
    for i, (previous, version, activated) in enumerate(activations):
        until = activations[i + 1][2] if i + 1 < len(activations) else float("inf")
        swaps.append(Swap(previous, version, activated, answers,
                          [t for t in swap_times(log, activated) if activated + t < until], until))
    return swaps


def figures(swap: Swap, before: float, ages: dict[str, tuple[float, ...]]) -> dict[str, float]:
    """One swap's figures: rates before and after it; failures and mixed answers from `before` seconds
    before it to the next swap (or `before` seconds after it)."""
    around = Swap(swap.previous, swap.version, swap.activated,
                  swap.window(swap.activated - before, min(swap.until, swap.activated + before)))
    return {
        "req/s before": swap.rate(swap.activated - before + 0.5, swap.activated),  # the last swap's tail left out
        "req/s 3 s after": swap.rate(swap.activated, swap.activated + 3),
        "failed": len(around.failures),
        "mixed": len(around.mixed(ages)),
        "last old answer sent, s": swap.last_previous,
        "last worker swapped, s": max(swap.worker_swaps, default=float("nan")),
    }


def report(swaps: list[Swap], workers: int, clients: int, before: float) -> str:
    answers = swaps[0].answers
    ages = {v: reference_ages(answers, v) for s in swaps for v in (s.previous, s.version)}
    rows = [figures(s, before, ages) for s in swaps]
    names = list(rows[0])
    w = [len(n) + 2 for n in names]
    lines = [f"{len(answers)} requests to /predict from {clients} clients, {workers} workers, "
             f"{len(swaps)} swaps {before:g} s apart; times are after the activation's answer",
             f"{'swap':44}" + "".join(f"{n:>{wi}}" for n, wi in zip(names, w, strict=True))
             + "  each worker swapped after"]
    for s, row in zip(swaps, rows, strict=True):
        lines.append(f"{s.previous + ' -> ' + s.version:44}"
                     + "".join(f"{v:{wi}.2f}" for v, wi in zip(row.values(), w, strict=True))
                     + "  " + ", ".join(f"{t:.2f}s" for t in s.worker_swaps))
    lines.append(f"{'median':44}" + "".join(f"{statistics.median(r[n] for r in rows):{wi}.2f}"
                                            for n, wi in zip(names, w, strict=True)))
    lines.append(f"whole run: {len(swaps[0].failures)} failed requests, {len(swaps[0].mixed(ages))} mixed answers")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--rounds", type=int, default=3, help="activate NEW and roll back, this many times")
    parser.add_argument("--new", default=NEW, help="the version to activate (a registered one)")
    parser.add_argument("--before", type=float, default=4.0, help="seconds of load before each activation")
    parser.add_argument("--after", type=float, default=6.0, help="seconds of load after the last one")
    parser.add_argument("--poll", type=float, default=2.0, help="WMA_MODEL_POLL_SECONDS of the server")
    parser.add_argument("--slots", type=int, default=2, help="WMA_CONCURRENCY_SLOTS of each worker")
    args = parser.parse_args()
    print(describe_machine())
    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    server = Server(None, args.slots, workers=args.workers, extra_env={
        "WMA_MODEL_POLL_SECONDS": str(args.poll), "OMP_NUM_THREADS": "1"})
    log = server.tmp / "server.log"
    with server:
        wait_for_workers(log, args.workers)
        swaps = run(server, log, clients=args.clients, rounds=args.rounds, before=args.before, after=args.after,
                    new=args.new)
    print(report(swaps, args.workers, args.clients, args.before))


if __name__ == "__main__":
    main()
