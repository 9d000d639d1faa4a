"""Small helpers shared by tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(probe: Callable[[], T], what: str, timeout: float = 60, interval: float = 0.25) -> T:
    """Poll probe() until it returns a truthy value; fail with `what` and the last value seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except Exception as e:
            last = e
        else:
            if last:
                return last  # type: ignore[return-value]
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


GROUP, VERSION = "maps.kube-mapserver.io", "v1alpha1"
PLURALS = {"MapDataset": "mapdatasets", "MapService": "mapservices", "MapJob": "mapjobs"}


def create_cr(api, namespace: str, body: dict) -> dict:
    from kubernetes import client

    return client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[body["kind"]], body
    )


def get_cr(api, namespace: str, kind: str, name: str) -> dict | None:
    from kubernetes import client

    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[kind], name
        )
    except client.ApiException as e:
        if e.status == 404:
            return None
        raise


def patch_cr(api, namespace: str, kind: str, name: str, patch: dict) -> dict:
    from kubernetes import client

    return client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name, patch
    )


def delete_cr(api, namespace: str, kind: str, name: str) -> None:
    from kubernetes import client

    client.CustomObjectsApi(api).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], name
    )


def condition(obj: dict | None, type_: str) -> dict:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return {}


def wait_condition(
    api,
    namespace: str,
    kind: str,
    name: str,
    type_: str = "Ready",
    status: str = "True",
    timeout: float = 60,
    reason: str | None = None,
) -> dict:
    def check():
        obj = get_cr(api, namespace, kind, name)
        c = condition(obj, type_)
        ok = c.get("status") == status and c.get("observedGeneration") == obj["metadata"]["generation"]
        return obj if ok and (reason is None or c.get("reason") == reason) else None

    return wait_until(
        check,
        f"{kind} {namespace}/{name} {type_}={status}" + (f" ({reason})" if reason else ""),
        timeout=timeout,
    )


def make_data_volume(api, namespace: str, data_root, name: str = "map-data") -> None:
    """A static hostPath PV bound to a PVC, like a provisioned data volume (pods never really run)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    pv = f"{namespace}-{name}"
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=pv, labels={"kms-test": namespace}),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteOnce"],
                storage_class_name="manual",
                host_path=client.V1HostPathVolumeSource(path=str(data_root)),
                persistent_volume_reclaim_policy="Retain",
            ),
        )
    )
    core.create_namespaced_persistent_volume_claim(
        namespace,
        client.V1PersistentVolumeClaim(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PersistentVolumeClaimSpec(
                access_modes=["ReadWriteOnce"],
                storage_class_name="manual",
                volume_name=pv,
                resources=client.V1VolumeResourceRequirements(requests={"storage": "1Gi"}),
            ),
        ),
    )


def load_yaml_docs(path) -> list[dict]:
    import yaml

    return [d for d in yaml.safe_load_all(open(path)) if d]
