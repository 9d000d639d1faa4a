"""Thin Kubernetes access for the operator: get/list/apply/delete by apiVersion+kind, status patches
and Events. Server-side apply with one field manager; nothing is written when the live object
already holds every desired field."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from kms_crds import API_VERSION
from kms_crds.kube import Kube as Http
from kms_crds.kube import KubeError
from kms_crds.kube_async import AsyncKube

from .kinds import PLURALS
from .labels import FIELD_MANAGER
from .metrics import API_WRITES

log = logging.getLogger("kms_operator.kube")


MERGE_PATCH = "application/merge-patch+json"  # (our updates carry our field manager, whatever the transport)
ApiError = KubeError  # a failed call; `.transient` when retrying may help (5xx, 429, 409, unreachable)


def collection_path(api_version: str, kind: str, namespace: str | None) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    ns = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{ns}/{PLURALS[(api_version, kind)]}"


def is_subset(desired: Any, live: Any) -> bool:
    """True when every field of `desired` is present with the same value in `live`."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and is_subset(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(map(is_subset, desired, live))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return float(desired) == float(live)
    return desired == live


@dataclass
class Kube:
    """The operator's verbs on top of the shared client (kms_crds.kube): get/list/apply/delete by
    apiVersion+kind, merge patches, Events."""

    http: Http
    timeout: float = 30
    aio: AsyncKube = field(default=None)  # type: ignore[assignment]  # the same connection, from the loop

    def __post_init__(self) -> None:
        if self.aio is None:
            # (8 connections: every asyncio TLS connection keeps ~256 KiB of buffers)
            self.aio = AsyncKube(self.http.conn, self.timeout, limit=8)

    @classmethod
    def from_environment(cls, timeout: float = 30) -> Kube:
        # (no bound on pending calls: the worker pools and executors bound them)
        return cls(Http.from_environment(timeout=timeout, max_pending=1 << 16, pool=64), timeout)

    def _ok(self, method: str, path: str, status: int, payload: Any) -> Any:
        if status >= 400:
            msg = payload.get("message") if isinstance(payload, dict) else str(payload)[:300]
            raise ApiError(status, f"{method} {path}: {msg}")
        return payload

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict | None:
        path = f"{collection_path(api_version, kind, namespace)}/{quote(name)}"
        status, payload = self.http.request("GET", path)
        return None if status == 404 else self._ok("GET", path, status, payload)

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str = ""
    ) -> list[dict]:
        path = collection_path(api_version, kind, namespace)
        query = {"labelSelector": label_selector} if label_selector else None
        status, payload = self.http.request("GET", path, query=query)
        return self._ok("GET", path, status, payload).get("items", [])

    def apply_as(self, obj: dict, field_manager: str) -> tuple[bool, dict]:
        """Server-side apply under another field manager (objects we create but do not own)."""
        return self.apply(obj, field_manager=field_manager)

    def apply(
        self, obj: dict, live: dict | None = None, force: bool = True, field_manager: str = FIELD_MANAGER
    ) -> tuple[bool, dict]:
        """Server-side apply `obj` unless `live` (read if not given) already holds all of it."""
        meta = obj["metadata"]
        if live is None:
            live = self.get(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])
        if live is not None and is_subset(obj, live):
            return False, live
        path = (
            f"{collection_path(obj['apiVersion'], obj['kind'], meta.get('namespace'))}/{quote(meta['name'])}"
        )
        query = {"fieldManager": field_manager, "force": "true" if force else "false"}
        # JSON is YAML, but not with \\uXXXX surrogate pairs (emoji): send the characters as UTF-8
        body = json.dumps(obj, ensure_ascii=False).encode()
        status, payload = self.http.request("PATCH", path, body, query, "application/apply-patch+yaml")
        API_WRITES.labels(verb="apply", kind=obj["kind"]).inc()
        return True, self._ok("PATCH", path, status, payload)

    def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, propagation: str = "Background"
    ) -> bool:
        path = f"{collection_path(api_version, kind, namespace)}/{quote(name)}"
        status, payload = self.http.request("DELETE", path, {"propagationPolicy": propagation})
        API_WRITES.labels(verb="delete", kind=kind).inc()
        if status == 404:
            return False
        self._ok("DELETE", path, status, payload)
        return True

    def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, status_patch: dict
    ) -> dict:
        """Merge-patch the status subresource."""
        return self.patch(api_version, kind, namespace, name, {"status": status_patch}, "status")

    async def patch_status_async(
        self, api_version: str, kind: str, namespace: str, name: str, status_patch: dict
    ) -> dict:
        """patch_status from the event loop, without a thread: the hot path of a bulk apply (one
        status write per dataset; kms_crds/kube_async.py says what it saves)."""
        path = f"{collection_path(api_version, kind, namespace)}/{quote(name)}/status"
        status, payload = await self.aio.request(
            "PATCH", path, {"status": status_patch}, {"fieldManager": FIELD_MANAGER}, MERGE_PATCH
        )
        API_WRITES.labels(verb="patch-status", kind=kind).inc()
        return self._ok("PATCH", path, status, payload)

    def patch(
        self, api_version: str, kind: str, namespace: str, name: str, body: dict, subresource: str = ""
    ) -> dict:
        """Merge-patch an object (or a subresource). With metadata.resourceVersion in `body` it is
        conditional: 409 when the object changed since."""
        path = f"{collection_path(api_version, kind, namespace)}/{quote(name)}"
        path += f"/{subresource}" if subresource else ""
        status, payload = self.http.request("PATCH", path, body, {"fieldManager": FIELD_MANAGER}, MERGE_PATCH)
        API_WRITES.labels(verb=f"patch-{subresource}" if subresource else "patch", kind=kind).inc()
        return self._ok("PATCH", path, status, payload)

    def event(self, obj: dict, type_: str, reason: str, message: str) -> None:
        """Record a core/v1 Event on `obj` (best effort: an Event never fails a reconcile)."""
        meta = obj["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "kube-mapserver-operator"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": "kube-mapserver-operator",
            "reportingInstance": "kube-mapserver-operator",
        }
        try:
            status, payload = self.http.request(
                "POST", collection_path("v1", "Event", meta["namespace"]), body
            )
            API_WRITES.labels(verb="create", kind="Event").inc()
            if status >= 400:
                log.warning("could not record event %s on %s: %s", reason, meta["name"], payload)
        except ApiError as e:
            log.warning("could not record event %s on %s: %s", reason, meta["name"], e)


def event_ref(body: Mapping, kind: str) -> dict:
    """What event() needs of one of our resources (apiVersion, kind, name, namespace, uid)."""
    meta = body["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
    }


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
