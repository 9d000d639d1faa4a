"""The one client layer routers use: custom resources, Secrets and ConfigMaps of the facade's
namespace. Reads come from the watch-fed stores; every write goes to the apiserver and its
response is fed back into the store (read-your-writes)."""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from kms_crds import API_VERSION
from kms_crds.kube import Kube, KubeError, cr_path, error_from, ns_path

from . import views
from .cache import Store
from .settings import Settings

log = logging.getLogger("kms_api.crclient")

USERS_SECRET = "kube-mapserver-users"
JWT_SECRET = "kube-mapserver-jwt"
CONFIG_MAP = "kube-mapserver-config"
TOMBSTONES_MAP = "kube-mapserver-tombstones"
FIELD_MANAGER = "kube-mapserver-api"
LABELS = {"app.kubernetes.io/part-of": "kube-mapserver", "app.kubernetes.io/managed-by": FIELD_MANAGER}


def decode_secret(obj: dict | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in ((obj or {}).get("data") or {}).items()}


def encode(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def deleting(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


class CRClient:
    """MapDatasets, MapJobs, MapServices and the facade's own Secrets/ConfigMaps in one namespace."""

    def __init__(self, kube: Kube, settings: Settings):
        self.kube, self.settings = kube, settings
        kube.limit_pending(settings.kube_max_pending)
        ns, wt = settings.namespace, settings.watch_timeout

        def single(plural: str, name: str) -> Store:
            return Store(kube, ns_path(ns, plural), name, f"metadata.name={name}", watch_timeout=wt)

        self.datasets = Store(kube, cr_path(ns, "mapdatasets"), "mapdatasets", None, views.dataset_item, wt)
        self.jobs = Store(kube, cr_path(ns, "mapjobs"), "mapjobs", None, None, wt)
        self.services = Store(kube, cr_path(ns, "mapservices"), "mapservices", None, None, wt)
        self.users = single("secrets", USERS_SECRET)
        self.jwt = single("secrets", JWT_SECRET)
        self.config = single("configmaps", CONFIG_MAP)
        self.tombstones = single("configmaps", TOMBSTONES_MAP)
        self.stores = [
            self.datasets,
            self.jobs,
            self.services,
            self.users,
            self.jwt,
            self.config,
            self.tombstones,
        ]

    @property
    def namespace(self) -> str:
        return self.settings.namespace

    def start(self) -> None:
        for s in self.stores:
            s.start()

    def stop(self) -> None:
        for s in self.stores:
            s.stop()

    def synced(self) -> bool:
        return all(s.synced.is_set() for s in self.stores)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(s.wait_synced(max(0.0, deadline - time.monotonic())) for s in self.stores)

    # -------------------------------------------------------------- custom resources

    def _create_cr(self, store: Store, plural: str, kind: str, body: dict) -> dict:
        body = {"apiVersion": API_VERSION, "kind": kind, **body}
        obj = self.kube.call(
            "POST", cr_path(self.namespace, plural), body, query={"fieldManager": FIELD_MANAGER}
        )
        store.upsert(obj)
        return obj

    def _delete_cr(self, store: Store, plural: str, name: str, uid: str | None = None) -> dict | None:
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        status, payload = self.kube.request("DELETE", cr_path(self.namespace, plural, name), body)
        if status == 404:
            store.forget(name)
            return None
        if status >= 400:
            raise error_from(status, payload, f"DELETE {plural}/{name}")
        if isinstance(payload, dict) and payload.get("kind") != "Status" and deleting(payload):
            store.upsert(payload)  # finalizers pending: hidden from reads while it terminates
        else:
            rv = (
                (payload or {}).get("metadata", {}).get("resourceVersion")
                if isinstance(payload, dict)
                else None
            )
            store.forget(name, rv if isinstance(payload, dict) and payload.get("kind") != "Status" else None)
        return payload if isinstance(payload, dict) else None

    def live(self, store: Store) -> list[dict]:
        """Objects not being deleted."""
        return [o for o in store.items() if not deleting(o)]

    def get_live(self, store: Store, name: str) -> dict | None:
        obj = store.get(name)
        return None if obj is None or deleting(obj) else obj

    # datasets
    def dataset(self, name: str) -> dict | None:
        return self.get_live(self.datasets, name)

    def dataset_items(self) -> list[dict]:
        return [v for v in self.datasets.views() if not v["_deleting"]]

    def create_dataset(self, name: str, spec: dict, labels: dict[str, str] | None = None) -> dict:
        meta: dict[str, Any] = {"name": name}
        if labels:
            meta["labels"] = labels
        return self._create_cr(self.datasets, "mapdatasets", "MapDataset", {"metadata": meta, "spec": spec})

    def delete_dataset(self, name: str, uid: str | None = None) -> dict | None:
        return self._delete_cr(self.datasets, "mapdatasets", name, uid)

    def validate_dataset(self, spec: dict, labels: dict[str, str] | None = None) -> None:
        """A dry-run create: the apiserver checks the spec (schema, CEL rules) and stores nothing."""
        meta: dict[str, Any] = {"generateName": "preview-"}
        if labels:
            meta["labels"] = labels
        body = {"apiVersion": API_VERSION, "kind": "MapDataset", "metadata": meta, "spec": spec}
        self.kube.call(
            "POST",
            cr_path(self.namespace, "mapdatasets"),
            body,
            query={"fieldManager": FIELD_MANAGER, "dryRun": "All"},
        )

    def dataset_live(self, name: str) -> dict | None:
        """Straight from the apiserver (the cache may be behind a client's If-Match)."""
        obj = self.kube.get(cr_path(self.namespace, "mapdatasets", name))
        if obj is not None:
            self.datasets.upsert(obj)
        return obj

    def _merge_patch(self, store: Store, plural: str, name: str, patch: dict) -> dict:
        """A JSON merge patch of one of our resources, kept in its watch-cache store; with
        metadata.resourceVersion in it the apiserver answers 409 when the object changed since
        (optimistic concurrency)."""
        obj = self.kube.call(
            "PATCH",
            cr_path(self.namespace, plural, name),
            patch,
            query={"fieldManager": FIELD_MANAGER},
            content_type="application/merge-patch+json",
        )
        store.upsert(obj)
        return obj

    def patch_dataset(self, name: str, patch: dict) -> dict:
        return self._merge_patch(self.datasets, "mapdatasets", name, patch)

    # services (read only)
    def service(self, name: str) -> dict | None:
        return self.get_live(self.services, name)

    def configmap(self, name: str) -> dict | None:
        """One ConfigMap by name, from the apiserver (a MapService's mapfile; `get` only, no watch)."""
        return self.kube.get(ns_path(self.namespace, "configmaps", name))

    # jobs
    def job(self, name: str) -> dict | None:
        return self.get_live(self.jobs, name)

    def create_job(self, spec: dict, name: str | None = None, generate_name: str | None = None) -> dict:
        meta = {"name": name} if name else {"generateName": generate_name or f"{spec['type']}-"}
        return self._create_cr(self.jobs, "mapjobs", "MapJob", {"metadata": meta, "spec": spec})

    def patch_job(self, name: str, patch: dict) -> dict:
        return self._merge_patch(self.jobs, "mapjobs", name, patch)

    def delete_job(self, name: str, uid: str | None = None) -> dict | None:
        return self._delete_cr(self.jobs, "mapjobs", name, uid)

    # -------------------------------------------------------------- Secrets and ConfigMaps

    def secret_data(self, store: Store) -> dict[str, str]:
        objs = store.items()
        return decode_secret(objs[0]) if objs else {}

    def configmap_data(self, store: Store) -> tuple[dict[str, str], str | None]:
        objs = store.items()
        if not objs:
            return {}, None
        return dict(objs[0].get("data") or {}), objs[0]["metadata"].get("resourceVersion")

    def write_configmap(self, store: Store, name: str, data: dict[str, str], rv: str | None) -> dict:
        """Create the ConfigMap (rv None) or replace it at resourceVersion rv (409 when it changed)."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {**LABELS, "app.kubernetes.io/component": "facade"}},
            "data": data,
        }
        if rv is None:
            obj = self.kube.call("POST", ns_path(self.namespace, "configmaps"), body)
        else:
            body["metadata"]["resourceVersion"] = rv
            obj = self.kube.call("PUT", ns_path(self.namespace, "configmaps", name), body)
        store.upsert(obj)
        return obj

    def read_configmap_live(self, store: Store, name: str) -> tuple[dict[str, str], str | None]:
        """Straight from the apiserver (used to retry after a write conflict)."""
        obj = self.kube.get(ns_path(self.namespace, "configmaps", name))
        if obj is None:
            return {}, None
        store.upsert(obj)
        return dict(obj.get("data") or {}), obj["metadata"]["resourceVersion"]

    def delete_configmap(self, store: Store, name: str) -> None:
        status, payload = self.kube.request("DELETE", ns_path(self.namespace, "configmaps", name))
        if status >= 400 and status != 404:
            raise error_from(status, payload, f"DELETE configmaps/{name}")
        store.forget(name)

    def ensure_jwt_key(self) -> str:
        """The signing key from the Secret, creating it with a random key when it is missing."""
        import secrets

        data = self.secret_data(self.jwt)
        if data.get("signing-key"):
            return data["signing-key"]
        obj = self.kube.get(ns_path(self.namespace, "secrets", JWT_SECRET))
        if obj is None:
            body = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": JWT_SECRET,
                    "labels": {**LABELS, "app.kubernetes.io/component": "facade"},
                },
                "type": "Opaque",
                "data": {"signing-key": encode(secrets.token_urlsafe(48))},
            }
            try:
                obj = self.kube.call("POST", ns_path(self.namespace, "secrets"), body)
                log.info("created Secret %s with a new random signing key", JWT_SECRET)
            except KubeError as e:
                if e.status != 409:
                    raise
                obj = self.kube.get(ns_path(self.namespace, "secrets", JWT_SECRET))
        self.jwt.upsert(obj)
        key = decode_secret(obj).get("signing-key")
        if not key:
            raise KubeError(409, f"Secret {JWT_SECRET} has no signing-key")
        return key
