"""The operator's work queues: requests per object coalesced (a burst of events is one run), rerun
when asked again meanwhile, failures retried with capped exponential backoff."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from .metrics import QUEUED

log = logging.getLogger("kms_operator")
Key = tuple[str, str]  # (namespace, name)


class Debouncer:
    """Coalesce bursts of requests per key into one run; rerun when asked again meanwhile;
    retry failures with capped exponential backoff."""

    def __init__(
        self,
        name: str,
        delay: float,
        run: Callable[[Key], Awaitable[float | None]],
        retries: int = 8,
        pace: float = 0.0,
        backoff: float = 0.5,
        ready: asyncio.Event | None = None,
    ):
        self.name, self.delay, self.run, self.retries = name, delay, run, retries
        self.ready = ready  # runs wait for it (the operator's first LIST of everything)
        self.backoff = backoff  # a retry waits backoff * 2**failures seconds, at most 30
        # A run may return the CPU seconds it spent on the event loop (not the time it waited for
        # the API); the next run of that key then waits at least pace times that. A key asked for
        # continuously (a service selecting thousands of datasets, during a bulk apply) then takes
        # at most 1 / (1 + pace) of the event loop instead of all of it.
        self.pace = pace
        self.tasks: dict[Key, asyncio.Task] = {}
        self.dirty: set[Key] = set()
        self.napping: dict[Key, asyncio.Future] = {}  # keys waiting out their pace

    def request(self, key: Key, now: bool = False) -> None:
        """Run `key` (again) after `delay`; `now`: without waiting out the pace of its last run
        (what it waited for has happened), but still after `delay` (it coalesces bursts)."""
        self.dirty.add(key)
        if key not in self.tasks:
            self.tasks[key] = asyncio.get_running_loop().create_task(self._loop(key))
            QUEUED.labels(queue=self.name, namespace=key[0]).inc()
        elif now and (nap := self.napping.get(key)) is not None and not nap.done():
            nap.set_result(None)

    async def _nap(self, key: Key, seconds: float) -> None:
        """Sleep `seconds`, unless request(key, now=True) comes first."""
        loop = asyncio.get_running_loop()
        nap = self.napping[key] = loop.create_future()
        timer = loop.call_later(seconds, lambda: nap.done() or nap.set_result(None))
        try:
            await nap
        finally:
            timer.cancel()
            self.napping.pop(key, None)

    async def _loop(self, key: Key) -> None:
        try:
            failures, cost = 0, 0.0
            while key in self.dirty:
                # the pace of the last run (cut short by request(now=True)), then the debounce
                await self._nap(key, max(0.0, min(30.0, self.pace * cost) - self.delay))
                await asyncio.sleep(self.delay)
                if self.ready is not None:
                    await self.ready.wait()
                self.dirty.discard(key)
                try:
                    cost = await self.run(key) or 0.0
                    failures = 0
                except Exception as e:
                    failures += 1
                    log.warning("%s %s/%s failed (%d/%d): %s", self.name, *key, failures, self.retries, e)
                    if failures >= self.retries:
                        break
                    self.dirty.add(key)
                    await asyncio.sleep(min(30.0, self.backoff * 2**failures))
        finally:
            self.tasks.pop(key, None)
            QUEUED.labels(queue=self.name, namespace=key[0]).dec()

    async def idle(self, timeout: float = 30) -> None:
        """Wait until no request is pending (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


class BatchQueue:
    """Per-object requests coalesced into one batch per namespace: one task per namespace (not one
    per object), and the batch runner looks the namespace's objects up once per batch. Objects
    that failed are retried with capped exponential backoff."""

    def __init__(
        self,
        name: str,
        delay: float,
        run: Callable[[str, set[str]], Awaitable[dict[str, Exception]]],
        retries: int = 8,
        backoff: float = 0.5,
        ready: asyncio.Event | None = None,
    ):
        self.name, self.delay, self.run, self.retries = name, delay, run, retries
        self.backoff = backoff  # a retry waits backoff * 2**failures seconds, at most 30
        self.ready = ready  # runs wait for it (the operator's first LIST of everything)
        self.tasks: dict[str, asyncio.Task] = {}
        self.pending: dict[str, set[str]] = {}
        self.failures: dict[Key, int] = {}

    def request(self, key: Key) -> None:
        ns, name = key
        self.pending.setdefault(ns, set()).add(name)
        if ns not in self.tasks:
            self.tasks[ns] = asyncio.get_running_loop().create_task(self._loop(ns))
            QUEUED.labels(queue=self.name, namespace=ns).inc()

    async def _loop(self, ns: str) -> None:
        try:
            while self.pending.get(ns):
                await asyncio.sleep(self.delay)
                if self.ready is not None:
                    await self.ready.wait()
                names = self.pending.pop(ns, set())
                try:
                    failed = await self.run(ns, names)
                except Exception as e:  # the batch as a whole: retry all of it
                    failed = dict.fromkeys(names, e)
                for name in names - failed.keys():
                    self.failures.pop((ns, name), None)
                worst = 0
                for name, e in failed.items():
                    n = self.failures[(ns, name)] = self.failures.get((ns, name), 0) + 1
                    log.warning("%s %s/%s failed (%d/%d): %s", self.name, ns, name, n, self.retries, e)
                    if n >= self.retries:
                        self.failures.pop((ns, name), None)
                        continue
                    self.pending.setdefault(ns, set()).add(name)
                    worst = max(worst, n)
                if worst:
                    await asyncio.sleep(min(30.0, self.backoff * 2**worst))
        finally:
            self.tasks.pop(ns, None)
            QUEUED.labels(queue=self.name, namespace=ns).dec()

    async def idle(self, timeout: float = 30) -> None:
        """Wait until no request is pending (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


class WorkQueue:
    """A fixed pool of workers over per-object requests (the MapDataset controller's queue).

    A key waits at most once however often it is asked for; a key asked for while it runs runs
    once more afterwards (never twice at once); a failure is retried with capped exponential
    backoff, at most `retries` times. Memory is one entry per waiting key: no task per object."""

    def __init__(
        self,
        name: str,
        run: Callable[[Key], Awaitable[None]],
        workers: int = 8,
        retries: int = 8,
        backoff: float = 0.5,
    ):
        self.name, self.run, self.workers, self.retries, self.backoff = name, run, workers, retries, backoff
        self.queue: asyncio.Queue[Key] = asyncio.Queue()
        self.waiting: set[Key] = set()  # in self.queue
        self.running: set[Key] = set()
        self.again: set[Key] = set()  # asked for while running
        self.failures: dict[Key, int] = {}
        self.retrying: dict[Key, asyncio.TimerHandle] = {}
        self.tasks: list[asyncio.Task] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(self._worker()) for _ in range(self.workers)]

    def request(self, key: Key) -> None:
        if key in self.running:
            self.again.add(key)
        elif key not in self.waiting:
            self.waiting.add(key)
            self.queue.put_nowait(key)
            QUEUED.labels(queue=self.name, namespace=key[0]).inc()

    def _retry(self, key: Key) -> None:
        self.retrying.pop(key, None)
        QUEUED.labels(queue=self.name, namespace=key[0]).dec()
        self.request(key)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            self.waiting.discard(key)
            self.running.add(key)
            try:
                await self.run(key)
                self.failures.pop(key, None)
            except Exception as e:
                n = self.failures[key] = self.failures.get(key, 0) + 1
                log.warning("%s %s/%s failed (%d/%d): %s", self.name, *key, n, self.retries, e)
                if n < self.retries and key not in self.retrying:
                    delay = min(30.0, self.backoff * 2 ** (n - 1))
                    self.retrying[key] = asyncio.get_running_loop().call_later(delay, self._retry, key)
                    QUEUED.labels(queue=self.name, namespace=key[0]).inc()
                elif n >= self.retries:
                    self.failures.pop(key, None)
            finally:
                self.running.discard(key)
                QUEUED.labels(queue=self.name, namespace=key[0]).dec()
                if key in self.again:
                    self.again.discard(key)
                    self.request(key)

    def busy(self) -> bool:
        return bool(self.waiting or self.running or self.retrying)

    async def idle(self, timeout: float = 30) -> None:
        """Wait until nothing waits, runs or waits for a retry (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for handle in self.retrying.values():
            handle.cancel()


class TokenBucket:
    """At most `burst` at once, refilled at `rate` per second (a budget for optional writes)."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
