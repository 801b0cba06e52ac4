"""Concurrency and request-rate limits for the chat client, local or shared by a cluster.

A `Limit` hands out slots: `async with limit.slot():` holds one of the endpoint's
concurrent requests and spends one request-rate token; `limit.pause(s)` makes every
request wait (a 429 with Retry-After). `LocalLimit` is one event loop's semaphore and
token bucket. `SharedLimit` is the client side of one `LimiterState` held by a Ray actor
(curate.describe.ray_stage), so every client actor of a build stays inside the endpoint's
limits together: each client learns its fair share of the concurrency (max-min fair over
the clients that have work) in a sync every `SYNC_S` seconds while it is busy, and fetches
rate tokens only for requests that are waiting, so no saved-up tokens make a burst. The
state itself is plain Python, tested without Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

SYNC_S = 0.05  # how often a busy client re-reads its share
IDLE_S = 10.0  # a client silent this long (a dead actor) holds nothing


class TokenBucket:
    """Request-rate limit: `rate` tokens per second, at most `burst` saved up."""

    def __init__(self, rate: float | None, burst: float = 1.0):
        self.rate = rate if rate and rate > 0 else None
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.last = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * (self.rate or 0))
        self.last = now

    async def acquire(self, want: int = 1) -> int:
        """Wait for at least one token; take up to `want`; return how many were taken."""
        if self.rate is None:
            return want
        async with self._lock:  # waiters queue in order, so the pace holds under contention
            self._refill()
            if self.tokens < 1:
                await asyncio.sleep((1 - self.tokens) / self.rate)
                self._refill()
            got = max(1, min(want, int(self.tokens)))
            self.tokens -= got
            return got


class Limit(Protocol):
    def slot(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    def pause(self, seconds: float) -> None: ...


class LocalLimit:
    """One event loop's limits: a semaphore, a token bucket and a shared pause."""

    def __init__(self, concurrency: int, rps: float | None = None, burst: float = 1.0):
        self.sem = asyncio.Semaphore(concurrency)
        self.bucket = TokenBucket(rps, burst)
        self.pause_until = 0.0  # time.monotonic()

    def pause(self, seconds: float) -> None:
        self.pause_until = max(self.pause_until, time.monotonic() + seconds)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self.sem:
            while (wait := self.pause_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            await self.bucket.acquire()
            yield


class LimiterState:
    """The build-wide limits: concurrency shares per client, one token bucket, one pause.

    `sync(client, in_use, demand)` -> (allowed, pause_until): a client may run `allowed`
    requests at once. Shares are max-min fair over the demands; a client above its new
    share keeps what it runs until those requests end, and nobody is given slots that
    another client still uses, so the sum in use never exceeds `concurrency`.
    """

    def __init__(self, concurrency: int, rps: float | None = None, burst: float = 1.0):
        self.concurrency = max(1, int(concurrency))
        self.bucket = TokenBucket(rps, burst)
        self.pause_until = 0.0  # time.time(): comparable across processes on one cluster
        self.clients: dict[str, dict[str, float]] = {}
        self.calls = {"sync": 0, "tokens": 0}
        self.seen: set[str] = set()
        self.peak_in_use = 0

    def _shares(self) -> dict[str, int]:
        demand = {c: int(s["demand"]) for c, s in self.clients.items() if s["demand"] > 0}
        shares, left = dict.fromkeys(demand, 0), self.concurrency
        while left > 0 and any(shares[c] < d for c, d in demand.items()):
            hungry = sorted(c for c, d in demand.items() if shares[c] < d)
            each = max(1, left // len(hungry))
            for c in hungry:
                give = min(each, demand[c] - shares[c], left)
                shares[c] += give
                left -= give
                if left == 0:
                    break
        return shares

    def sync(self, client: str, in_use: int, demand: int) -> tuple[int, float]:
        now = time.time()
        self.calls["sync"] += 1
        self.seen.add(client)
        self.clients = {c: s for c, s in self.clients.items() if now - s["seen"] < IDLE_S}
        me = self.clients.setdefault(client, {"allowed": 0, "in_use": 0, "demand": 0,
                                              "seen": now})
        me.update(in_use=in_use, demand=demand, seen=now)
        share = self._shares().get(client, 0)
        others = sum(max(s["allowed"], s["in_use"]) for c, s in self.clients.items()
                     if c != client)
        me["allowed"] = max(0, min(share, self.concurrency - others))
        self.peak_in_use = max(self.peak_in_use,
                               int(sum(s["in_use"] for s in self.clients.values())))
        return int(me["allowed"]), self.pause_until

    async def tokens(self, want: int) -> int:
        self.calls["tokens"] += 1
        return await self.bucket.acquire(max(1, want))

    def pause(self, until: float) -> None:
        self.pause_until = max(self.pause_until, until)

    def stats(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "clients_seen": sorted(self.seen),
                "peak_in_use": self.peak_in_use, "concurrency": self.concurrency}


class LimiterHandle(Protocol):
    """What SharedLimit calls: awaitables (a Ray actor handle's `.remote()` calls, or a
    plain async wrapper of LimiterState in tests)."""

    async def sync(self, client: str, in_use: int, demand: int) -> tuple[int, float]: ...

    async def tokens(self, want: int) -> int: ...

    def pause(self, until: float) -> None: ...


class SharedLimit:
    """One client's view of the build-wide limits; lives in that client's event loop."""

    def __init__(self, handle: LimiterHandle, client: str, rate_limited: bool):
        self.handle = handle
        self.client = client
        self.rate_limited = rate_limited
        self.allowed = 0
        self.in_use = 0
        self.waiting = 0
        self.tokens = 0
        self.token_waiters = 0
        self.pause_until = 0.0  # time.time()
        self._cond = asyncio.Condition()
        self._syncer: asyncio.Task | None = None
        self._token_fetch: asyncio.Task | None = None
        self.syncs = 0

    def pause(self, seconds: float) -> None:
        self.pause_until = max(self.pause_until, time.time() + seconds)
        self.handle.pause(self.pause_until)

    async def _sync_loop(self) -> None:
        while True:
            demand = self.in_use + self.waiting
            allowed, pause_until = await self.handle.sync(self.client, self.in_use, demand)
            self.syncs += 1
            async with self._cond:
                self.allowed = allowed
                self.pause_until = max(self.pause_until, pause_until)
                self._cond.notify_all()
            if demand == 0:
                return  # told the limiter we hold nothing; the next request restarts us
            await asyncio.sleep(SYNC_S if allowed else SYNC_S / 5)

    def _ensure_syncing(self) -> None:
        if self._syncer is None or self._syncer.done():
            if self._syncer is not None and not self._syncer.cancelled() \
                    and self._syncer.exception() is not None:
                raise self._syncer.exception()
            self._syncer = asyncio.get_running_loop().create_task(self._sync_loop())

    async def _fetch_tokens(self, want: int) -> None:
        got = 0
        try:
            got = await self.handle.tokens(want)
        finally:  # wake the waiters even when the limiter failed: they ask again
            async with self._cond:
                self.tokens += got
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        async with self._cond:
            self.waiting += 1
            try:
                self._ensure_syncing()
                await self._cond.wait_for(lambda: self.in_use < self.allowed)
                self.in_use += 1
            finally:
                self.waiting -= 1
        try:
            while (wait := self.pause_until - time.time()) > 0:
                await asyncio.sleep(wait)
            if self.rate_limited:
                await self._take_token()
            yield
        finally:
            async with self._cond:
                self.in_use -= 1
                self._cond.notify_all()

    async def _take_token(self) -> None:
        async with self._cond:
            self.token_waiters += 1
            try:
                while self.tokens < 1:
                    if self._token_fetch is None or self._token_fetch.done():
                        self._token_fetch = asyncio.get_running_loop().create_task(
                            self._fetch_tokens(self.token_waiters))
                    await self._cond.wait()
                self.tokens -= 1
            finally:
                self.token_waiters -= 1
