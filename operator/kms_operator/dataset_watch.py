"""The MapDataset controller, outside Kopf: an Informer keeps the dataset snapshots, a fixed pool of
workers (queues.WorkQueue) reconciles the datasets that need it. A second Informer keeps the
MapService snapshots that datasets are matched against (Kopf still runs the MapService handlers).
Nothing reconciles before both are listed.

    watch event ─► Informer.observe ─► store ─► on_change ─┬─► WorkQueue ─► Datasets.reconcile
                                                           └─► services that select it (their queue)

MapDatasets carry no finalizer: a deleted dataset leaves its services' mapfiles on their next
(level-based) render, like any other change, and nothing waits for the operator to delete one.
A finalizer would cost one more API write per dataset, the apiserver's scarcest resource in a bulk
apply (operator/README.md, "Scale"). Datasets that still carry the finalizer of an earlier version
are released as before when deleted."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from kms_crds import API_VERSION

from .datasets import Datasets
from .informer import Informer
from .kube import ApiError
from .labels import FINALIZER
from .queues import Key, WorkQueue
from .snapshots import body_of, dataset_snapshot, is_pending, service_snapshot
from .state import State

log = logging.getLogger("kms_operator.datasets")


def needs_reconcile(old: dict | None, new: dict) -> bool:
    """Does this change of a MapDataset call for work? It is new to this process (a restart
    re-checks every source), its spec or labels changed, or it is being deleted with the
    finalizer of an earlier version on. Status changes (our own writes among them) do not."""
    if new["deleting"]:
        return FINALIZER in new["finalizers"]
    if old is None:
        return True
    return new["generation"] != old["generation"] or new["labels"] != old["labels"]


def _ignore(old: dict | None, new: dict | None, own: bool) -> None:
    """MapService changes: Kopf's handlers act on them."""


class DatasetWatch:
    def __init__(self, state: State, datasets: Datasets, namespaces: Sequence[str] = ()):
        self.state, self.datasets = state, datasets
        settings = state.settings
        timeout = settings.watch_server_timeout
        args = (state.kube, API_VERSION)
        self.informer = Informer(
            *args, "MapDataset", dataset_snapshot, state.datasets, self._changed, list(namespaces), timeout
        )
        self.services = Informer(
            *args,
            "MapService",
            service_snapshot,
            state.services,
            _ignore,
            list(namespaces),
            timeout,
        )
        self.queue = WorkQueue("dataset reconcile", self._work, workers=settings.dataset_workers)
        self.pending: dict[str, int] = {}  # per namespace: datasets awaiting inspection
        state.dataset_written = lambda obj: self.informer.observe(dataset_snapshot(obj), own=True)

    async def run(self) -> None:
        """Start both informers; set state.synced once both have listed everything."""
        self.services.start()
        self.informer.start()
        await self.services.synced.wait()
        await self.informer.synced.wait()
        self.queue.start()
        self.state.synced.set()
        log.info("listed %d datasets and %d services", len(self.state.datasets), len(self.state.services))

    def _changed(self, old: dict | None, new: dict | None, own: bool) -> None:
        """A new version in the store: queue the work it calls for (not for what our own writes
        return: the worker that wrote it is running), and tell the services that select it, or
        selected it, as Kopf's event handler did: besides its layer, a service's tile cache and
        seeding follow the dataset's status (a seeded version, a checksum). Their queues coalesce
        the requests of a burst."""
        if new is not None and not own and needs_reconcile(old, new):
            self.queue.request((new["ns"], new["name"]))
        notify, settled = self.datasets.notify_services, self._settled(old, new)
        if new is not None:
            notify(new["ns"], new["name"], new["labels"], settled)
        if old is not None and (new is None or old["labels"] != new["labels"]):
            notify(old["ns"], old["name"], old["labels"], settled)

    def _settled(self, old: dict | None, new: dict | None) -> bool:
        """Keep the count of datasets awaiting inspection per namespace; True when this change
        took it to 0 (a bulk apply is inspected: the services waiting for it can render now)."""
        was, now = old is not None and is_pending(old), new is not None and is_pending(new)
        if was == now:
            return False
        ns = (new or old)["ns"]  # type: ignore[index]
        left = self.pending[ns] = self.pending.get(ns, 0) + (1 if now else -1)
        if left <= 0:
            del self.pending[ns]
        return left <= 0

    async def _work(self, key: Key) -> None:
        snap = self.state.datasets.find(*key)
        if snap is None:
            return
        if snap["deleting"]:
            if FINALIZER in snap["finalizers"]:  # an earlier version's: release, then let it go
                await self.datasets.release(body_of(snap))
                await self._drop_finalizer(snap)
            return
        await self.datasets.reconcile(body_of(snap))

    async def _drop_finalizer(self, snap: dict) -> None:
        """Remove our finalizer, only if the object has not changed since the snapshot (a
        conflict is retried once the watch has brought the new version)."""
        finalizers = [f for f in snap["finalizers"] if f != FINALIZER]
        patch = {"metadata": {"finalizers": finalizers, "resourceVersion": snap["rv"]}}
        state = self.state
        try:
            obj = await state.call(
                state.kube.patch, API_VERSION, "MapDataset", snap["ns"], snap["name"], patch
            )
        except ApiError as e:
            if e.status == 404:  # gone already
                return
            raise
        state.dataset_written(obj)
