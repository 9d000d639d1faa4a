"""What every reconciler shares: the API client, the settings, the dataset snapshots (our own
list+watch, informer.py) and the service snapshots (likewise), per-object locks, and the
threads API calls and GDAL run on. Made once at startup and kept in Kopf's memo (handlers.py)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from .handoff import Lane
from .kube import Kube
from .settings import Settings
from .snapshots import SnapshotStore

# GDAL/PROJ keep per-thread state (PROJ contexts, proj.db caches): one thread does all GDAL work.
GDAL = Lane("gdal")
# API calls of service reconciles get their own threads: during a bulk apply thousands of dataset
# status patches and Events wait for the default executor, and a service selecting them all would
# otherwise wait behind every one of them before it can roll out its new mapfile.
SERVICE_EXECUTOR = ThreadPoolExecutor(max_workers=4, thread_name_prefix="service-api")
_SERVICE_LANE: contextvars.ContextVar[bool] = contextvars.ContextVar("kms_service_lane", default=False)


@dataclass
class State:
    kube: Kube
    settings: Settings
    datasets: SnapshotStore = field(default_factory=SnapshotStore)  # ns -> snapshots (informer.py)
    services: SnapshotStore = field(default_factory=SnapshotStore)
    locks: dict[tuple, asyncio.Lock] = field(default_factory=dict)
    # set once the first LIST of every watched scope is in the store: nothing renders before
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    # hands a MapDataset returned by a write of ours to the dataset watch (set by runtime.py)
    dataset_written: Callable[[dict], None] = lambda obj: None

    def lock(self, key: tuple) -> asyncio.Lock:
        return self.locks.setdefault(key, asyncio.Lock())

    def datasets_in(self, namespace: str) -> list[dict]:
        return list(self.datasets.get(namespace, []))

    def services_in(self, namespace: str) -> list[dict]:
        return list(self.services.get(namespace, []))

    async def call(self, fn, *args, **kwargs):
        """Run a blocking API call in a thread (the service lane's own threads inside service_lane())."""
        if _SERVICE_LANE.get():
            return await asyncio.get_running_loop().run_in_executor(
                SERVICE_EXECUTOR, functools.partial(fn, *args, **kwargs)
            )
        return await asyncio.to_thread(fn, *args, **kwargs)


@contextlib.contextmanager
def service_lane() -> Iterator[None]:
    """API calls made inside (by this task) run on SERVICE_EXECUTOR."""
    token = _SERVICE_LANE.set(True)
    try:
        yield
    finally:
        _SERVICE_LANE.reset(token)
