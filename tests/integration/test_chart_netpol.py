"""The chart's NetworkPolicies against the real kube-apiserver: every profile's (and the narrowed
variants') policies pass server-side validation (a server-side dry-run apply); applied for real,
each policy's podSelector, evaluated by the apiserver, selects exactly the pods its Deployment
created.

What this does not show: enforcement. The test node runs the plain CNI bridge plugin without a
policy controller, which accepts NetworkPolicies and ignores them (chart README, NetworkPolicies).
"""

from __future__ import annotations

import pytest
import yaml
from kubernetes import client

from tests.helpers import hack_module, require_tool, wait_until
from tests.integration.test_chart import PARKED, applied, chart, docs, kubectl, render

__all__ = ["applied"]  # the fixture, shared with test_chart.py

VARIANTS = {
    "default": [],
    "local": ["values-local.yaml"],
    "production": ["values-production.yaml"],
}
NARROWED = [
    "networkPolicy.apiServer.cidrs={10.88.0.1/32,fd00::1/128}",
    "networkPolicy.apiServer.ports={6443}",
    "networkPolicy.facade.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress-nginx",
    "networkPolicy.operator.metricsFrom[0].podSelector.matchLabels.app=prometheus",
    "operator.allowedUrlHosts={data.example.org}",
    "networkPolicy.operator.urlSources.cidrs={192.0.2.0/24}",
]


@pytest.fixture(autouse=True)
def _helm_built() -> None:
    require_tool(chart.helm_path(), "helm", "helm")


def selector_string(sel: dict) -> str:
    parts = [f"{k}={v}" for k, v in (sel.get("matchLabels") or {}).items()]
    for e in sel.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin"}[e["operator"]]
        parts.append(f"{e['key']} {op} ({','.join(e['values'])})")
    return ",".join(parts)


def netpols(text: str) -> list[dict]:
    return [d for d in docs(text) if d["kind"] == "NetworkPolicy"]


def node_sets(cluster) -> list[str]:
    """What hack/install.py (make dev, the e2e install) sets for this node: the real apiserver's
    endpoint address and port, DNS on 53 and 1053."""
    install = hack_module("install")
    flags = install.network_policy_sets(install.Kubectl(cluster.kubeconfig))
    sets = flags[1::2]
    assert any(s.startswith("networkPolicy.apiServer.cidrs={") for s in sets), flags
    return sets


@pytest.mark.parametrize("variant", [*sorted(VARIANTS), "narrowed", "this-node"])
def test_policies_pass_server_side_validation(cluster, namespace, variant: str):
    values = VARIANTS.get(variant, [])
    sets = {"narrowed": lambda: NARROWED, "this-node": lambda: node_sets(cluster)}.get(variant, list)()
    text = chart.template(release=namespace, namespace=namespace, values=values, set_values=sets)
    pols = netpols(text)
    assert {p["metadata"]["labels"]["app.kubernetes.io/component"] for p in pols} == {"operator", "facade"}
    body = "\n---\n".join(yaml.safe_dump(p) for p in pols)
    r = kubectl(
        cluster,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=kms-chart-test",
        "-n",
        namespace,
        "-f",
        "-",
        input=body,
    )
    assert r.stdout.count("(server dry run)") == 2, r.stdout
    # the dry run really validates: the same policies with a port out of range are refused
    bad = body.replace("port: 53", "port: 0", 1)
    r = kubectl(
        cluster,
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=bad,
        check=False,
    )
    assert r.returncode != 0 and "Invalid" in r.stderr, r.stdout + r.stderr


def test_applied_policies_select_exactly_their_pods(cluster, crds, namespace, applied):
    """The chart applied with its pods parked (never scheduled, but created with their real labels):
    the apiserver's answer to each policy's podSelector is exactly that component's pods."""
    text = render(namespace, *PARKED)
    applied(text)
    core = client.CoreV1Api(cluster.api)
    net = client.NetworkingV1Api(cluster.api)

    def pods(selector: str) -> set[str]:
        return {p.metadata.name for p in core.list_namespaced_pod(namespace, label_selector=selector).items}

    for component in ("operator", "facade"):
        wait_until(lambda c=component: pods(f"app.kubernetes.io/component={c}"), f"a {component} pod", 60)
    live = {
        p.metadata.labels["app.kubernetes.io/component"]: p
        for p in net.list_namespaced_network_policy(namespace).items
    }
    assert set(live) == {"operator", "facade"}
    for component, pol in live.items():
        sel = client.ApiClient().sanitize_for_serialization(pol.spec.pod_selector)
        chosen = pods(selector_string(sel))
        assert chosen == pods(f"app.kubernetes.io/component={component}"), component
        assert chosen, component
        ports = {p.port for r in pol.spec.ingress for p in r.ports}
        want = {
            p.container_port
            for pod in core.list_namespaced_pod(namespace, label_selector=selector_string(sel)).items
            for c in pod.spec.containers
            for p in c.ports or []
        }
        assert ports == want, component
