"""Watch-fed in-memory stores: one list + watch per resource, relist on 410 Gone, bounded watches.

Reads never go to the apiserver. Writers feed their response back (`upsert`/`forget`) so a client
sees its own write at once; resourceVersions keep older watch events from undoing newer writes."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kms_crds.kube import Kube, KubeError

log = logging.getLogger("kms_api.cache")

Projection = Callable[[dict], Any]


def rv_newer(new: str | None, old: str | None) -> bool:
    """True when `new` is at least as recent as `old` (etcd resourceVersions are integers)."""
    if not old or not new:
        return True
    try:
        return int(new) >= int(old)
    except ValueError:
        return True


# What no route reads but every object carries: server-side apply bookkeeping and kubectl's copy of
# the last applied object. Dropping them roughly halves the memory of a cache of 10,000 datasets.
LIST_PAGE = 500
UNUSED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def release_memory() -> None:
    """Hand memory freed after a (re)list back to the OS: glibc keeps freed heap otherwise, and the
    peak of a LIST of 10,000 objects (parsed in full before they are slimmed) would stay resident."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to do
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def slim(obj: dict) -> dict:
    """The object as the cache keeps it: without managedFields and unused bulky annotations."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        notes = meta.get("annotations")
        if notes:
            for key in UNUSED_ANNOTATIONS:
                notes.pop(key, None)
    return obj


class Store:
    """Objects of one kind in one namespace (optionally one object, by field selector)."""

    def __init__(
        self,
        kube: Kube,
        path: str,
        what: str,
        field_selector: str | None = None,
        project: Projection | None = None,
        watch_timeout: int = 60,
        label_selector: str | None = None,
    ):
        self.kube, self.path, self.what = kube, path, what
        self.field_selector, self.project, self.watch_timeout = field_selector, project, watch_timeout
        self.label_selector = label_selector
        self._objects: dict[str, dict] = {}
        self._views: dict[str, Any] = {}
        self._gone: dict[str, str] = {}  # name -> resourceVersion of its deletion
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.synced = threading.Event()
        self.resource_version: str | None = None
        self.last_event = 0.0
        self.relists = 0
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- reads

    def get(self, name: str) -> dict | None:
        return self._objects.get(name)

    def items(self) -> list[dict]:
        with self._lock:
            return list(self._objects.values())

    def views(self) -> list[Any]:
        """The projections of all objects (computed once per object version)."""
        with self._lock:
            return list(self._views.values())

    def __len__(self) -> int:
        return len(self._objects)

    # -------------------------------------------------------------- writes seen by this process

    def upsert(self, obj: dict) -> None:
        obj = slim(obj)
        meta = obj.get("metadata") or {}
        name, rv = meta.get("name"), meta.get("resourceVersion")
        if not name:
            return
        with self._lock:
            gone = self._gone.get(name)
            if gone and not rv_newer(rv, gone):
                return
            self._gone.pop(name, None)
            cur = self._objects.get(name)
            if cur is not None and not rv_newer(rv, cur["metadata"].get("resourceVersion")):
                return
            self._objects[name] = obj
            if self.project:
                self._views[name] = self.project(obj)

    def forget(self, name: str, rv: str | None = None) -> None:
        with self._lock:
            cur = self._objects.get(name)
            if cur is not None and rv and not rv_newer(rv, cur["metadata"].get("resourceVersion")):
                return
            self._objects.pop(name, None)
            self._views.pop(name, None)
            self._gone[name] = rv or (cur or {}).get("metadata", {}).get("resourceVersion") or ""

    # -------------------------------------------------------------- list + watch

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.what}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def wait_synced(self, timeout: float) -> bool:
        return self.synced.wait(timeout)

    def _query(self) -> dict:
        query = {"fieldSelector": self.field_selector} if self.field_selector else {}
        return {**query, "labelSelector": self.label_selector} if self.label_selector else query

    def relist(self) -> None:
        """LIST in pages (as client-go's reflector does), each page slimmed as it arrives: memory
        stays near what the cache keeps instead of a whole 10,000-object response parsed at once."""
        objects: dict[str, dict] = {}
        views: dict[str, Any] = {}
        query = {**self._query(), "limit": str(LIST_PAGE)}
        while True:
            payload = self.kube.call("GET", self.path, query=query)
            kind = payload.get("kind", "").removesuffix("List")
            api_version = payload.get("apiVersion")
            for obj in map(slim, payload.get("items") or []):
                obj.setdefault("kind", kind)
                obj.setdefault("apiVersion", api_version)
                objects[obj["metadata"]["name"]] = obj
                if self.project:
                    views[obj["metadata"]["name"]] = self.project(obj)
            meta = payload.get("metadata") or {}
            if not meta.get("continue"):
                break
            query = {**query, "continue": meta["continue"]}
        with self._lock:
            self._objects, self._views, self._gone = objects, views, {}
            self.resource_version = meta.get("resourceVersion")
        del payload
        release_memory()
        self.relists += 1
        self.last_event = time.monotonic()
        self.synced.set()

    def _run(self) -> None:
        backoff = 0.5
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self.relist()
                    need_list = False
                self._watch_once()
                backoff = 0.5
            except KubeError as e:
                if e.status == 410:
                    log.info("%s: watch expired (410 Gone), relisting", self.what)
                    need_list = True
                    continue
                log.warning("%s: %s; retrying in %.1fs", self.what, e, backoff)
                if e.status not in (0, 429) and e.status < 500:
                    need_list = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)
            except Exception:  # a bug must not kill the cache silently
                log.exception("%s: unexpected error in the watch loop; relisting", self.what)
                need_list = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10)

    def _watch_once(self) -> None:
        query = {**self._query(), "resourceVersion": self.resource_version or ""}
        for event in self.kube.watch(self.path, query, self.watch_timeout):
            if self._stop.is_set():
                return
            etype, obj = event.get("type"), event.get("object") or {}
            if etype == "ERROR":
                raise KubeError(int(obj.get("code") or 500), obj.get("message") or "watch error")
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = rv
            self.last_event = time.monotonic()
            if etype in ("ADDED", "MODIFIED"):
                self.upsert(obj)
            elif etype == "DELETED":
                self.forget(obj["metadata"]["name"], rv)
