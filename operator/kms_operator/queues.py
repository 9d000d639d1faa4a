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
    ):
        self.name, self.delay, self.run, self.retries = name, delay, run, retries
        self.backoff = backoff  # a retry waits backoff * 2**failures seconds, at most 30
        # A run may return the CPU seconds it spent on the event loop (not the time it waited for
        # the API); the next run of that key then waits at least pace times that. A key asked for
        # continuously (a service selecting thousands of datasets, during a bulk apply) then takes
        # at most 1 / (1 + pace) of the event loop instead of all of it.
        self.pace = pace
        self.tasks: dict[Key, asyncio.Task] = {}
        self.dirty: set[Key] = set()

    def request(self, key: Key) -> None:
        self.dirty.add(key)
        if key not in self.tasks:
            self.tasks[key] = asyncio.get_running_loop().create_task(self._loop(key))
            QUEUED.labels(queue=self.name, namespace=key[0]).inc()

    async def _loop(self, key: Key) -> None:
        try:
            failures, cost = 0, 0.0
            while key in self.dirty:
                await asyncio.sleep(max(self.delay, min(30.0, self.pace * cost)))
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
    ):
        self.name, self.delay, self.run, self.retries = name, delay, run, retries
        self.backoff = backoff  # a retry waits backoff * 2**failures seconds, at most 30
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
