"""A MapService's children in the cluster: pruning ConfigMaps no pod needs any more, and deleting
every child when the service goes (the kinds come from kinds.SERVICE_CHILDREN)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .kinds import CONFIG_MAP, REPLICA_SET, SERVICE_CHILDREN
from .kube import ApiError
from .labels import MANAGED_BY
from .state import State


def config_map_of(deployment: dict | None) -> str | None:
    """The ConfigMap the Deployment's pods mount as `config` (the tile cache's configuration)."""
    if not deployment:
        return None
    for v in deployment["spec"]["template"]["spec"].get("volumes") or []:
        if v.get("name") == "config" and v.get("configMap"):
            return v["configMap"]["name"]
    return None


def mounted_config_maps(replica_sets: list[dict]) -> set[str]:
    """ConfigMaps mounted by ReplicaSets that have (or want) pods: a stuck rollout keeps old pods."""
    in_use = set()
    for rs in replica_sets:
        if (rs.get("spec") or {}).get("replicas", 0) or (rs.get("status") or {}).get("replicas", 0):
            for v in rs["spec"]["template"]["spec"].get("volumes") or []:
                if v.get("configMap"):
                    in_use.add(v["configMap"]["name"])
    return in_use


async def prune_configmaps(
    state: State,
    ns: str,
    name: str,
    keep: str,
    component: str = "mapfile",
    retired: Callable[[dict], Awaitable[None]] | None = None,
) -> None:
    """Delete mapfile (or tile cache) ConfigMaps no pod can need any more: not the current one,
    and not one a ReplicaSet with pods still mounts (a stuck rollout keeps old pods serving).
    `retired(configmap)` runs first for each (a failure keeps the ConfigMap for the next pass)."""
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/component={component}"
    selector += f",app.kubernetes.io/managed-by={MANAGED_BY}"
    stale = {
        cm["metadata"]["name"]: cm
        for cm in await state.call(state.kube.list, *CONFIG_MAP, ns, selector)
        if cm["metadata"]["name"] != keep
    }
    if not stale:
        return
    replica_sets = await state.call(state.kube.list, *REPLICA_SET, ns, f"app.kubernetes.io/instance={name}")
    in_use = mounted_config_maps(replica_sets)
    for cm_name, cm in stale.items():
        if cm_name not in in_use:
            if retired is not None:
                await retired(cm)
            await state.call(state.kube.delete, *CONFIG_MAP, ns, cm_name)


async def delete_children(state: State, ns: str, name: str) -> None:
    """Delete every child of the service; ApiError(409) while any is still there (not terminating)."""
    selector = f"app.kubernetes.io/instance={name},app.kubernetes.io/managed-by={MANAGED_BY}"
    for api_version, kind in SERVICE_CHILDREN:
        for child in await state.call(state.kube.list, api_version, kind, ns, selector):
            await state.call(state.kube.delete, api_version, kind, ns, child["metadata"]["name"])
    for api_version, kind in SERVICE_CHILDREN:
        left = await state.call(state.kube.list, api_version, kind, ns, selector)
        if any(not c["metadata"].get("deletionTimestamp") for c in left):
            raise ApiError(409, f"{kind} children of {name} still present")
