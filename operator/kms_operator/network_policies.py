"""NetworkPolicies of the pods the operator creates (pure; golden-tested).

- MapServer pods: connections in on their port only (from `spec.networkPolicy.allowFrom`, default
  anyone, and always from the service's tile cache and the facade); out: nothing, except DNS and
  HTTP(S) when a dataset of the mapfile reads a URL source (GDAL's /vsicurl/).
- Tile-cache pods: in on their port only (same peers); out: DNS and this service's MapServer pods.
- Job pods: nothing in; out: nothing, except DNS and the MapServer pods of the service a
  cache-seed job renders from.

They take effect where the cluster's network plugin enforces NetworkPolicy (Calico, Cilium, ...).
"""

from __future__ import annotations

from kms_crds.job_types import BY_NAME
from kms_crds.mapjob import MapJobSpec
from kms_crds.mapservice import MapServiceSpec

from .labels import owner_reference, selector

PORT = 8080
# the facade's pods (any namespace): its thumbnails and previews call MapServer and the tile cache
FACADE = {
    "namespaceSelector": {},
    "podSelector": {
        "matchLabels": {
            "app.kubernetes.io/component": "facade",
            "app.kubernetes.io/part-of": "kube-mapserver",
        }
    },
}
DNS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
WEB = [{"protocol": "TCP", "port": 80}, {"protocol": "TCP", "port": 443}]


def _policy(meta: dict, pods: dict[str, str], ingress: list[dict], egress: list[dict]) -> dict:
    """Both policy types are listed, so an absent rule list allows nothing in that direction. Empty
    lists are left out, as the apiserver stores them: a desired `[]` would never match the live
    object, and every pass would apply it again."""
    spec: dict = {"podSelector": {"matchLabels": pods}, "policyTypes": ["Ingress", "Egress"]}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": meta, "spec": spec}


def _port_rule(spec: MapServiceSpec, also: list[dict] | None = None) -> dict:
    """In on the http port from spec.networkPolicy.allowFrom (unset: from anywhere), and always from
    the facade and the `also` peers."""
    rule: dict = {"ports": [{"protocol": "TCP", "port": PORT}]}
    peers = spec.network_policy.allow_from
    if peers is not None:
        rule["from"] = [p.wire() for p in peers] + [FACADE] + (also or [])
    return rule


def _to_mapserver(service: str) -> dict:
    return {
        "to": [{"podSelector": {"matchLabels": selector(service)}}],
        "ports": [{"protocol": "TCP", "port": PORT}],
    }


REMOTE = "/vsicurl/"  # in a mapfile: a layer reads a URL source


def build_mapserver_policy(
    meta: dict, service: str, spec: MapServiceSpec, tiles_pods: dict[str, str], *, remote_sources: bool
) -> dict | None:
    """The MapServer pods' policy, or None when turned off (spec.networkPolicy.enabled).
    remote_sources: the mapfile reads URLs (REMOTE in it): DNS and web egress."""
    if not spec.network_policy.enabled:
        return None
    egress = [{"ports": DNS}, {"ports": WEB}] if remote_sources else []
    tiles = [{"podSelector": {"matchLabels": tiles_pods}}]
    return _policy(meta, selector(service), [_port_rule(spec, tiles)], egress)


def build_tiles_policy(
    meta: dict, service: str, spec: MapServiceSpec, tiles_pods: dict[str, str]
) -> dict | None:
    """The tile-cache pods' policy, or None when turned off."""
    if not spec.network_policy.enabled:
        return None
    return _policy(meta, tiles_pods, [_port_rule(spec)], [{"ports": DNS}, _to_mapserver(service)])


def build_job_policy(
    name: str, namespace: str, uid: str, pod_labels: dict[str, str], spec: MapJobSpec
) -> dict | None:
    """The policy of a MapJob's pod (owned by the MapJob), or None when turned off."""
    if not spec.network_policy.enabled:
        return None
    egress: list[dict] = []
    if BY_NAME[spec.type].mapserver_egress:  # cache-seed: DNS and the MapService's MapServer pods
        egress = [{"ports": DNS}, _to_mapserver(spec.params.service)]
    meta = {
        "name": name,
        "namespace": namespace,
        "labels": pod_labels,
        "ownerReferences": [owner_reference("MapJob", name, uid)],
    }
    pods = {k: pod_labels[k] for k in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    return _policy(meta, pods, [], egress)
