"""NetworkPolicies and default resources of the pods the operator creates (pure builders)."""

from __future__ import annotations

import pytest

from kms_crds.mapjob import DEFAULT_JOB_RESOURCES, MapJobSpec
from kms_crds.mapservice import DEFAULT_MAPSERVER_RESOURCES, DEFAULT_TILES_RESOURCES, MapServiceSpec
from kms_operator import builders, tilecache
from kms_operator.mapjob_builder import build_job, job_labels
from kms_operator.network_policies import DNS, FACADE, WEB, build_job_policy

OWNER = builders.Owner("ocean", "maps", "0000-uid")
TILES = {"tileCache": {"storage": {"persistentVolumeClaim": "tiles"}}}


def _children(network_policies: bool = True, mapfile: str = "MAP\nEND\n", **spec) -> dict:
    s = MapServiceSpec.model_validate(spec)
    return builders.build_children(
        OWNER, s, mapfile, "CONFIG\nEND\n", "abc", network_policies=network_policies
    )


def _pods_selected(policy: dict, pod_labels: dict[str, str]) -> bool:
    want = policy["spec"]["podSelector"]["matchLabels"]
    return all(pod_labels.get(k) == v for k, v in want.items())


def _container_ports(deployment: dict) -> set[int]:
    return {
        p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }


def test_mapserver_pods_accept_their_port_only_and_connect_nowhere():
    children = _children()
    policy, deployment = children["NetworkPolicy"], children["deployment"]
    assert _pods_selected(policy, deployment["spec"]["template"]["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [rule] = policy["spec"]["ingress"]
    assert {p["port"] for p in rule["ports"]} == _container_ports(deployment) == {8080}
    assert "from" not in rule  # anyone, on that port only
    assert "egress" not in policy["spec"]  # with policyTypes Egress: nothing out


def test_a_url_source_lets_mapserver_reach_dns_and_http():
    policy = _children(mapfile='MAP LAYER DATA "/vsicurl/https://example.org/a.tif" END END')["NetworkPolicy"]
    assert policy["spec"]["egress"] == [{"ports": DNS}, {"ports": WEB}]


def test_allow_from_restricts_callers_and_always_admits_the_tile_cache():
    peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    children = _children(networkPolicy={"allowFrom": peers}, **TILES)
    [rule] = children["NetworkPolicy"]["spec"]["ingress"]
    tiles = {"podSelector": {"matchLabels": tilecache.tiles_selector("ocean")}}
    assert rule["from"] == [*peers, FACADE, tiles]
    spec = MapServiceSpec.model_validate({"networkPolicy": {"allowFrom": peers}, **TILES})
    [tiles_rule] = tilecache.build_tiles_network_policy(OWNER, spec)["spec"]["ingress"]
    assert tiles_rule["from"] == [*peers, FACADE]


def test_tile_cache_pods_reach_only_their_mapserver():
    spec = MapServiceSpec.model_validate(TILES)
    policy = tilecache.build_tiles_network_policy(OWNER, spec)
    deployment = tilecache.build_tiles_deployment(OWNER, spec.tile_cache, "cm", "digest")
    assert policy["metadata"]["name"] == deployment["metadata"]["name"] == "ocean-tiles"
    assert _pods_selected(policy, deployment["spec"]["template"]["metadata"]["labels"])
    assert {p["port"] for p in policy["spec"]["ingress"][0]["ports"]} == _container_ports(deployment)
    mapserver_pods = _children(**TILES)["deployment"]["spec"]["template"]["metadata"]["labels"]
    dns, to_mapserver = policy["spec"]["egress"]
    assert dns == {"ports": DNS}
    assert all(
        mapserver_pods.get(k) == v for k, v in to_mapserver["to"][0]["podSelector"]["matchLabels"].items()
    )
    assert to_mapserver["ports"] == [{"protocol": "TCP", "port": 8080}]


@pytest.mark.parametrize("off", ["spec", "operator"])
def test_policies_can_be_turned_off(off):
    if off == "spec":
        children = _children(networkPolicy={"enabled": False}, **TILES)
        spec = MapServiceSpec.model_validate({"networkPolicy": {"enabled": False}, **TILES})
        assert tilecache.build_tiles_network_policy(OWNER, spec) is None
    else:
        children = _children(network_policies=False, **TILES)
    assert children["NetworkPolicy"] is None


def _job(type_: str, params: dict, **spec) -> tuple[dict, dict | None]:
    s = MapJobSpec.model_validate({"type": type_, **params, **spec})
    job = build_job("j1", "maps", "uid-1", s, {})
    return job, build_job_policy("j1", "maps", "uid-1", job_labels("j1", s.type), s)


def test_job_pods_get_no_connection_in_and_only_what_their_type_needs_out():
    job, policy = _job("rehash", {"rehash": {"datasets": ["a"]}})
    assert _pods_selected(policy, job["spec"]["template"]["metadata"]["labels"])
    assert "ingress" not in policy["spec"] and "egress" not in policy["spec"]
    assert policy["metadata"]["ownerReferences"][0]["kind"] == "MapJob"
    job, policy = _job("cache-seed", {"cacheSeed": {"service": "ocean", "maxZoom": 2}})
    assert "ingress" not in policy["spec"]
    dns, to_mapserver = policy["spec"]["egress"]
    assert dns == {"ports": DNS}
    assert to_mapserver["to"] == [{"podSelector": {"matchLabels": builders.selector("ocean")}}]
    _, policy = _job("rehash", {"rehash": {"datasets": ["a"]}}, networkPolicy={"enabled": False})
    assert policy is None


def test_default_resources_apply_when_the_spec_names_none():
    deployment = _children()["deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert (
        pod["containers"][0]["resources"]
        == pod["initContainers"][0]["resources"]
        == (DEFAULT_MAPSERVER_RESOURCES.wire())
    )
    assert builders.process_count(MapServiceSpec()) == 4  # as before the default CPU limit of 2
    own = {"requests": {"cpu": "1"}, "limits": {"memory": "4Gi"}}
    deployment = _children(resources=own)["deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"] == own
    spec = MapServiceSpec.model_validate(TILES)
    tiles = tilecache.build_tiles_deployment(OWNER, spec.tile_cache, "cm", "digest")
    assert tiles["spec"]["template"]["spec"]["containers"][0]["resources"] == DEFAULT_TILES_RESOURCES.wire()
    job, _ = _job("rehash", {"rehash": {"datasets": ["a"]}})
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"] == DEFAULT_JOB_RESOURCES.wire()


def test_every_child_kind_is_known_to_the_api_client_and_watched():
    """The operator's API client maps each kind it applies to its resource (a missing one fails
    every reconcile), and drift in each is watched (a deleted child is restored)."""
    from kms_operator.kinds import CHILD_RESOURCES, OPTIONAL_KINDS
    from kms_operator.kube import PLURALS

    kinds = [("v1", "ConfigMap"), ("apps/v1", "Deployment"), ("v1", "Service"), *OPTIONAL_KINDS]
    assert all(k in PLURALS for k in kinds), [k for k in kinds if k not in PLURALS]
    watched = {PLURALS[k] for k in kinds}
    assert watched <= {r[-1] for r in CHILD_RESOURCES}
