"""The chart's NetworkPolicies, read from `helm template`: each selects exactly the pods it is for
(their real labels), opens exactly the ports those containers listen on, lets egress out only to
the apiserver, DNS and the peers the code calls (the operator's liveness endpoint, the MapServer
and tile-cache pods the operator builds), and every piece is switchable by values."""

from __future__ import annotations

import pytest
import yaml

from kms_crds.mapservice import MapServiceSpec
from kms_operator import builders, tilecache
from tests.helpers import hack_module, require_tool
from tests.unit.test_chart import VARIANTS, docs, render

chart = hack_module("chart")


@pytest.fixture(autouse=True)
def _helm_built() -> None:
    require_tool(chart.helm_path(), "helm", "helm")


def matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels + matchExpressions) against a label set."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        have, op, values = labels.get(e["key"]), e["operator"], e.get("values", [])
        ok = {
            "In": have in values,
            "NotIn": have not in values,
            "Exists": e["key"] in labels,
            "DoesNotExist": e["key"] not in labels,
        }[op]
        if not ok:
            return False
    return True


def policies(objs: list[dict]) -> dict[str, dict]:
    """{component: NetworkPolicy}."""
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o
        for o in objs
        if o["kind"] == "NetworkPolicy"
    }


def deployments(objs: list[dict]) -> dict[str, dict]:
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in objs if o["kind"] == "Deployment"
    }


def container_ports(deploy: dict) -> set[int]:
    return {
        p["containerPort"]
        for c in deploy["spec"]["template"]["spec"]["containers"]
        for p in c.get("ports", [])
    }


def rule_ports(rule: dict) -> set[int]:
    return {p["port"] for p in rule.get("ports", [])}


def template(*sets: str) -> list[dict]:
    return docs(chart.template(set_values=list(sets)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_policy_selects_its_pods_and_opens_their_ports_only(variant: str):
    objs = docs(render(variant))
    pols, deps = policies(objs), deployments(objs)
    assert set(pols) == {"operator", "facade"}
    for component, pol in pols.items():
        spec = pol["spec"]
        assert pol["metadata"]["namespace"] == deps[component]["metadata"]["namespace"]
        assert set(spec["policyTypes"]) == {"Ingress", "Egress"}
        selected = [
            c
            for c, d in deps.items()
            if matches(spec["podSelector"], d["spec"]["template"]["metadata"]["labels"])
        ]
        assert selected == [component], f"{component} policy selects {selected}"
        opened = {p for r in spec["ingress"] for p in rule_ports(r)}
        assert all(r.get("ports") for r in spec["ingress"]), "an ingress rule without ports opens all"
        assert opened == container_ports(deps[component]), component
    # the facade's Service sends to the port its policy opens
    (svc,) = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-api")]
    (port,) = [
        p["containerPort"]
        for c in deps["facade"]["spec"]["template"]["spec"]["containers"]
        for p in c["ports"]
        if p["name"] == svc["spec"]["ports"][0]["targetPort"]
    ]
    assert rule_ports(pols["facade"]["spec"]["ingress"][0]) == {port}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_egress_goes_to_the_apiserver_dns_and_the_peers_the_code_calls(variant: str):
    objs = docs(render(variant))
    pols, deps = policies(objs), deployments(objs)
    for component, pol in pols.items():
        egress = pol["spec"]["egress"]
        assert all(r.get("ports") for r in egress), f"{component}: an egress rule without ports opens all"
        protocols = {(p["port"], p["protocol"]) for r in egress for p in r["ports"]}
        assert {(53, "UDP"), (53, "TCP"), (443, "TCP"), (6443, "TCP")} <= protocols
        dns = [r for r in egress if rule_ports(r) == {53}]
        assert dns and dns[0]["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    # the operator has nothing else by default
    assert {p for r in pols["operator"]["spec"]["egress"] for p in rule_ports(r)} == {53, 443, 6443}

    # the facade -> the operator's liveness port (KMS_OPERATOR_HEALTH_URL), selected by its labels
    env = {
        e["name"]: e.get("value") for e in deps["facade"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    health_port = int(env["KMS_OPERATOR_HEALTH_URL"].split(":")[2].split("/")[0])
    op_labels = deps["operator"]["spec"]["template"]["metadata"]["labels"]
    to_operator = [
        r
        for r in pols["facade"]["spec"]["egress"]
        if any(
            matches(t.get("podSelector", {}), op_labels) and "namespaceSelector" not in t
            for t in r.get("to", [])
        )
        and r.get("to")
    ]
    assert len(to_operator) == 1 and rule_ports(to_operator[0]) == {health_port}
    assert health_port in container_ports(deps["operator"])

    # the facade -> MapServer and tile-cache pods (thumbnails), in any namespace, on their port
    spec = MapServiceSpec.model_validate({"tileCache": {}})
    owner = builders.Owner("ocean", "maps", "uid")
    built = {
        "mapserver": builders.build_deployment(owner, spec, "cm", "h"),
        "tilecache": tilecache.build_tiles_deployment(owner, spec.tile_cache, "cm", "h"),
    }
    for kind, dep in built.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        rules = [
            r
            for r in pols["facade"]["spec"]["egress"]
            for t in r.get("to", [])
            if t.get("namespaceSelector") == {} and matches(t["podSelector"], labels)
        ]
        assert len(rules) == 1, f"the facade cannot reach the {kind} pods"
        assert rule_ports(rules[0]) == container_ports(dep), kind
    # but not the chart's own pods through that rule, nor job pods
    job_labels = {
        "app.kubernetes.io/managed-by": "kube-mapserver-operator",
        "app.kubernetes.io/component": "job",
    }
    assert not any(
        matches(t["podSelector"], job_labels)
        for r in pols["facade"]["spec"]["egress"]
        for t in r.get("to", [])
        if "podSelector" in t
    )


def test_everything_is_switchable():
    assert not policies(template("networkPolicy.enabled=false"))
    assert set(policies(template("networkPolicy.operator.enabled=false"))) == {"facade"}
    assert set(policies(template("networkPolicy.facade.enabled=false"))) == {"operator"}
    assert set(policies(template("facade.enabled=false"))) == {"operator"}
    fc = policies(template("networkPolicy.facade.mapServerEgress=false"))["facade"]
    assert not [r for r in fc["spec"]["egress"] for t in r.get("to", []) if t.get("namespaceSelector") == {}]
    fc = policies(template("metrics.service.enabled=false"))["facade"]
    assert {p for r in fc["spec"]["egress"] for p in rule_ports(r)} == {53, 443, 6443, 8080}
    nodns = policies(template("networkPolicy.dns.enabled=false"))["operator"]
    assert 53 not in {p for r in nodns["spec"]["egress"] for p in rule_ports(r)}


def test_narrowing_by_values():
    pols = policies(
        template(
            "networkPolicy.apiServer.cidrs={10.0.0.10/32}",
            "networkPolicy.apiServer.ports={6443}",
            "networkPolicy.facade.from[0].namespaceSelector.matchLabels.kubernetes\\.io/metadata\\.name=ingress-nginx",
            "networkPolicy.operator.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
        )
    )
    for pol in pols.values():
        api = [r for r in pol["spec"]["egress"] if rule_ports(r) == {6443}]
        assert api and api[0]["to"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
        assert 443 not in {p for r in pol["spec"]["egress"] for p in rule_ports(r)}
    (rule,) = pols["facade"]["spec"]["ingress"]
    assert rule["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]
    op_ingress = pols["operator"]["spec"]["ingress"]
    assert op_ingress[0]["from"] == [{"namespaceSelector": {"matchLabels": {"team": "monitoring"}}}]
    # the facade keeps its way to the liveness port when scraping is narrowed
    assert rule_ports(op_ingress[1]) == {8080}
    assert op_ingress[1]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "facade"


def test_url_sources_open_egress_only_when_hosts_are_allowed():
    def extra_ports(*sets: str) -> set[int]:
        op = policies(template(*sets))["operator"]
        return {p for r in op["spec"]["egress"] for p in rule_ports(r)} - {53, 443, 6443}

    assert not extra_ports()
    op = policies(template("operator.allowedUrlHosts={data.example.org}"))["operator"]
    assert [r for r in op["spec"]["egress"] if rule_ports(r) == {443, 80}]
    assert not extra_ports(
        "operator.allowedUrlHosts={data.example.org}", "networkPolicy.operator.urlSources.ports={8443}"
    ) - {8443}
    op = policies(
        template("operator.allowedUrlHosts={x.org}", "networkPolicy.operator.urlSources.cidrs={192.0.2.0/24}")
    )["operator"]
    assert [r for r in op["spec"]["egress"] if r.get("to") == [{"ipBlock": {"cidr": "192.0.2.0/24"}}]]
    assert [
        r
        for r in policies(
            template("operator.allowedUrlHosts={x.org}", "networkPolicy.operator.urlSources.enabled=false")
        )["operator"]["spec"]["egress"]
        if rule_ports(r) == {443, 80}
    ] == []


@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("networkPolicy.apiServer.cidrs={not-a-cidr}", "/networkPolicy/apiServer/cidrs/0"),
        ("networkPolicy.apiServer.ports={0}", "/networkPolicy/apiServer/ports/0"),
        ("networkPolicy.enabled=yes", "/networkPolicy/enabled"),
        ("networkPolicy.facade.form[0].podSelector.x=y", "/networkPolicy/facade"),
    ],
)
def test_schema_rejects(setting: str, field: str):
    r = chart.helm(
        "template", "x", str(chart.CHART), "--kube-version", chart.KUBE_VERSION, "--set", setting, check=False
    )
    assert r.returncode != 0, f"--set {setting} was accepted"
    assert f"'{field}'" in r.stderr, r.stderr


def leaf_paths(values: dict, prefix: str) -> list[str]:
    out = []
    for k, v in values.items():
        path = f"{prefix}.{k}"
        out += (
            leaf_paths(v, path)
            if isinstance(v, dict) and k not in ("namespaceSelector", "podSelector")
            else [path]
        )
    return out


def test_every_network_policy_value_is_documented():
    """Every networkPolicy key has a `# --` comment block above it or its section in values.yaml, and a
    row in the chart README."""
    text = (chart.CHART / "values.yaml").read_text()
    values = yaml.safe_load(text)["networkPolicy"]
    assert values["enabled"] is True, "NetworkPolicies are on by default"
    lines = text[text.index("\n# -- NetworkPolicies") :].splitlines()
    sections = ("networkPolicy:", "  enabled:", "  apiServer:", "  dns:", "    metricsFrom:", "    from:")
    for section in sections:
        at = [i for i, line in enumerate(lines) if line == section or line.startswith(section + " ")]
        assert at and lines[at[0] - 1].lstrip().startswith("#"), f"{section} has no comment"
    readme = (chart.CHART / "README.md").read_text()
    missing = [p for p in leaf_paths(values, "networkPolicy") if f"`{p}`" not in readme]
    assert not missing, f"chart README does not document {missing}"
