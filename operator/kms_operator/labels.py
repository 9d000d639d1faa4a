"""Names, labels and owner references shared by every child object."""

from __future__ import annotations

from kms_crds import API_VERSION, GROUP

MANAGED_BY = "kube-mapserver-operator"
FIELD_MANAGER = "kube-mapserver"
FINALIZER = f"{GROUP}/cleanup"
HASH_ANNOTATION = f"{GROUP}/mapfile-hash"
RENDER_KEY_ANNOTATION = f"{GROUP}/render-key"  # what a mapfile ConfigMap was made from
SELECTOR_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/instance")


def labels(service: str, component: str) -> dict[str, str]:
    """The project's labels for a child of MapService `service`."""
    return {
        "app.kubernetes.io/name": "mapserver",
        "app.kubernetes.io/instance": service,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": "kube-mapserver",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def selector(service: str) -> dict[str, str]:
    """Pod selector of a MapService's Deployment (stable: never includes the component)."""
    return {k: v for k, v in labels(service, "mapserver").items() if k in SELECTOR_LABELS}


def tiles_selector(service: str) -> dict[str, str]:
    """Pod selector of a MapService's tile cache Deployment."""
    return {"app.kubernetes.io/name": "mapcache", "app.kubernetes.io/instance": service}


def owner_reference(kind: str, name: str, uid: str) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
