"""Rate limiting of POST requests per client address: a token bucket each, in this process's memory.

Each address may send `burst` requests at once and `per_minute` a minute after that; beyond, the
answer is 429 `rate_limited` with Retry-After (when the next token comes), before the body is read.
The buckets live in one worker process: with N workers an address gets up to N times the rate,
which is enough to stop one client from taking every slot but not a shared quota (that needs a
store shared by the workers, e.g. the database or a proxy in front).

The address is the one the server puts in the ASGI scope: behind a reverse proxy, run uvicorn with
`--forwarded-allow-ips` set to the proxy's address so that it is the client's, not the proxy's.
IPv6 clients are counted by /64 network, since one host usually holds a whole /64.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from api.core.errors import RateLimited, app_error_handler


class TokenBuckets:
    """One bucket per key, `burst` tokens each, refilled at `per_minute` a minute.

    Memory is bounded: past `max_keys` keys, the least recently seen is forgotten (it has had the
    longest to refill, so forgetting it gives away the least).
    """

    def __init__(self, per_minute: float, burst: int, *, max_keys: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, time)

    def take(self, key: str) -> float:
        """Take a token for `key`: 0 when there was one, else the seconds until there is one."""
        now = self.clock()
        tokens, then = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


def client_key(scope: Scope) -> str:
    """The client's address; an IPv6 address as its /64 network."""
    client = scope.get("client")
    host = str(client[0]) if client else "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


class RateLimit:
    """ASGI middleware: POST requests beyond an address's bucket get 429, unread."""

    def __init__(self, app: ASGIApp, per_minute: float, burst: int) -> None:
        self.app = app
        self.buckets = TokenBuckets(per_minute, burst)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            wait = self.buckets.take(client_key(scope))
            if wait > 0:
                response = await app_error_handler(Request(scope), RateLimited(wait))
                response.headers["Connection"] = "close"  # its body is not read
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
