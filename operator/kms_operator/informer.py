"""LIST+WATCH of one kind into a SnapshotStore, the client-go informer pattern: a thread lists (in
pages) and then watches from the list's resourceVersion, lists again when the watch is too old
(410 Gone), and hands each object to the event loop as a compact snapshot (in batches:
handoff.py). The loop side keeps the store and calls `on_change(old, new, own)` for every
change (None for a new or a deleted object; `own`: the object came back from a write of ours,
not from the watch).

Why not Kopf for these: Kopf keeps a worker task, a queue and the decoded body of every object it
watches, and its index pre-population is quadratic in the number of objects (operator/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

from kms_crds.kube import KubeError

from .handoff import LoopInbox
from .kube import Kube, collection_path
from .metrics import MANAGED, WATCH_REQUESTS
from .snapshots import SnapshotStore, newer

log = logging.getLogger("kms_operator.informer")
PAGE = 500  # objects per LIST page: a list of 10,000 is never decoded at once

Change = Callable[[dict | None, dict | None, bool], None]


def _key(snap: dict | None) -> tuple[str, str]:
    return (snap["ns"], snap["name"]) if snap is not None else ("", "")


class Informer:
    """Keeps `store` equal to the cluster's objects of one kind (in `namespaces`, or all)."""

    def __init__(
        self,
        kube: Kube,
        api_version: str,
        kind: str,
        snapshot: Callable[[Mapping], dict],
        store: SnapshotStore,
        on_change: Change,
        namespaces: list[str] | None = None,
        watch_timeout: int = 300,
    ):
        self.kube, self.api_version, self.kind, self.snapshot = kube, api_version, kind, snapshot
        self.store, self.on_change, self.watch_timeout = store, on_change, watch_timeout
        self.scopes: list[str | None] = list(namespaces or []) or [None]
        self.listed: set[str | None] = set()
        self.synced = asyncio.Event()  # every scope listed once
        self.stopping = threading.Event()
        self.inbox = LoopInbox(f"{kind} watch")  # thread -> loop, in order, a wake-up per batch

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        for scope in self.scopes:
            name = f"watch-{self.kind}-{scope or 'all'}"
            threading.Thread(target=self._run, args=(scope, loop), daemon=True, name=name).start()

    def stop(self) -> None:
        self.stopping.set()

    # ------------------------------------------------------------------ the thread

    def _run(self, scope: str | None, loop: asyncio.AbstractEventLoop) -> None:
        path = collection_path(self.api_version, self.kind, scope)
        delay = 1.0
        while not self.stopping.is_set():
            try:
                rv = self._list(scope, path, loop)
                delay = 1.0
                while rv and not self.stopping.is_set():
                    rv = self._watch(path, rv, loop)
            except KubeError as e:
                if e.status != 410:  # too old: list again at once
                    log.warning("%s watch %s: %s; listing again in %.0fs", self.kind, scope or "*", e, delay)
                    self.stopping.wait(delay)
                    delay = min(30.0, delay * 2)
            except Exception:
                log.exception("%s watch %s failed; listing again in %.0fs", self.kind, scope or "*", delay)
                self.stopping.wait(delay)
                delay = min(30.0, delay * 2)

    def _list(self, scope: str | None, path: str, loop: asyncio.AbstractEventLoop) -> str:
        seen: set[tuple[str, str]] = set()
        rv = ""
        for page in self.kube.http.list_pages(path, limit=PAGE):
            snaps = [self.snapshot(obj) for obj in page.get("items") or []]
            seen.update((s["ns"], s["name"]) for s in snaps)
            self.inbox.put(loop, self._page, snaps)
            rv = (page.get("metadata") or {}).get("resourceVersion") or rv
        self.inbox.put(loop, self._listed, scope, seen)
        return rv

    def _watch(self, path: str, rv: str, loop: asyncio.AbstractEventLoop) -> str:
        """Deliver events until the server ends the watch; the resourceVersion to go on from
        ("" when the watch is too old and everything must be listed again)."""
        WATCH_REQUESTS.labels(resource=path.rsplit("/", 1)[-1]).inc()
        for event in self.kube.http.watch(path, {"resourceVersion": rv}, self.watch_timeout):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                if obj.get("code") == 410:
                    return ""
                raise KubeError(obj.get("code") or 0, obj.get("message") or "watch error")
            rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
            if kind == "DELETED" or (kind in ("ADDED", "MODIFIED") and not self._known(obj)):
                self.inbox.put(loop, self.observe, self.snapshot(obj), kind == "DELETED")
            if self.stopping.is_set():
                break
        return rv

    def _known(self, obj: Mapping) -> bool:
        """Is this version in the store already (the echo of a write of ours, whose response was
        stored)? Then no snapshot is made of it. (A read of the loop's store from this thread: a
        dict lookup, atomic; at worst a snapshot is made that observe() then drops.)"""
        meta = obj.get("metadata") or {}
        old = self.store.find(meta.get("namespace") or "", meta.get("name") or "")
        return old is not None and not newer(meta.get("resourceVersion"), old["rv"])

    # ------------------------------------------------------------------ the event loop side

    def _page(self, snaps: list[dict]) -> None:
        for snap in snaps:
            self.observe(snap)

    def _listed(self, scope: str | None, seen: set[tuple[str, str]]) -> None:
        for ns, name in self.store.keys(scope) - seen:  # deleted while nobody watched
            self._tell(self.store.remove(ns, name), None, False)
        self.listed.add(scope)
        if len(self.listed) == len(self.scopes):
            self.synced.set()
        MANAGED.labels(kind=self.kind).set(len(self.store))

    def observe(self, snap: dict, deleted: bool = False, own: bool = False) -> None:
        """Take a newer version of an object into the store (from the watch, or returned by a
        write of ours (`own`): the watch event of that write then changes nothing)."""
        old = self.store.find(snap["ns"], snap["name"])
        if deleted:
            if old is not None:
                self.store.remove(snap["ns"], snap["name"])
                self._tell(old, None, False)
            return
        if old is not None and not newer(snap["rv"], old["rv"]):
            return
        self.store.put(snap)
        self._tell(old, snap, own)

    def _tell(self, old: dict | None, new: dict | None, own: bool) -> None:
        """on_change, whose failure must not stop the store from taking the next objects."""
        try:
            self.on_change(old, new, own)
        except Exception:
            log.exception("%s %s/%s: handling the change failed", self.kind, *_key(old or new))
