"""The Helm chart, rendered by the pinned helm: lint, golden output per profile, security defaults,
least-privilege RBAC (statically), schema rejections, CRDs identical to crds/, deploy/ up to date.

helm is built by `make helm` (hack/build-helm.sh); without it these tests are skipped.
UPDATE_GOLDEN=1 rewrites tests/golden/chart/*.yaml."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import hack_module, require_tool

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "tests" / "golden" / "chart"


chart = hack_module("chart")


@pytest.fixture
def _helm_built() -> None:
    require_tool(chart.helm_path(), "helm", "helm")


needs_helm = pytest.mark.usefixtures("_helm_built")

# golden variants: profile files + --set overrides
VARIANTS = {
    "default": ([], []),
    "local": (["values-local.yaml"], []),
    "production": (["values-production.yaml"], []),
    "namespaced": ([], ["operator.watchNamespaces={maps-a,maps-b}"]),
}
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}


def render(variant: str) -> str:
    values, sets = VARIANTS[variant]
    return chart.template(values=values, set_values=sets)


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def normalize(text: str) -> str:
    """Replace what is random on every render (generated credentials and their checksum)."""
    parts = text.split("\n---\n")
    generated = False
    for i, part in enumerate(parts):
        if 'maps.kube-mapserver.io/generated: "true"' in part:
            generated = True
            head, _, data = part.partition("\ndata:\n")
            data = re.sub(r'^(\s+(password|signing-key)): ".*"$', r'\1: "<generated>"', data, flags=re.M)
            parts[i] = f"{head}\ndata:\n{data}"
    text = "\n---\n".join(parts)
    if generated:
        text = re.sub(r"(checksum/auth): [0-9a-f]{64}", r"\1: <generated>", text)
    return text


def pod_specs(objs: list[dict]):
    for o in objs:
        if o["kind"] not in WORKLOAD_KINDS:
            continue
        spec = o["spec"]
        if o["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = spec if o["kind"] == "Pod" else spec["template"]["spec"]
        yield o, pod


# ------------------------------------------------------------------------------------ no helm needed


def test_chart_crds_are_the_generated_crds():
    """charts/kube-mapserver/crds/ and the CRD chart's files/ are byte copies of crds/*.yaml."""
    want = {p.name: p.read_bytes() for p in (REPO / "crds").glob("*.yaml")}
    assert want, "no CRDs in crds/"
    for target in chart.crd_targets():
        have = {p.name: p.read_bytes() for p in target.glob("*.yaml")}
        assert have.keys() == want.keys(), f"{target}: files differ from crds/; run `make manifests`"
        stale = [n for n in want if have[n] != want[n]]
        assert not stale, f"{target}: {stale} differ from crds/; run `make manifests`"


def test_values_schema_is_strict_json():
    import json

    schema = json.loads((chart.CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((chart.CHART / "values.yaml").read_text())
    assert set(values) <= set(schema["properties"]), "values.yaml keys missing from the schema"


# ------------------------------------------------------------------------------------ helm


@needs_helm
@pytest.mark.parametrize("profile", ["", "values-local.yaml", "values-production.yaml"])
def test_helm_lint(profile: str):
    args = ["lint", str(chart.CHART), "--strict", "--kube-version", chart.KUBE_VERSION]
    if profile:
        args += ["-f", str(chart.CHART / profile)]
    r = chart.helm(*args, check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_helm
def test_helm_lint_crd_chart():
    r = chart.helm("lint", str(chart.CRD_CHART), "--strict", check=False)
    assert r.returncode == 0, r.stdout + r.stderr


@needs_helm
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_golden(variant: str):
    """Every chart change shows up in review as a diff of tests/golden/chart/<variant>.yaml."""
    text = normalize(render(variant))
    path = GOLDEN / f"{variant}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(), f"{variant}: rendered chart differs from {path} (UPDATE_GOLDEN=1)"


@needs_helm
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_container_can_run_as_root(variant: str):
    """Every container (init ones too): non-root uid, no escalation, read-only root, no capabilities."""
    objs = docs(render(variant))
    seen = 0
    for o, pod in pod_specs(objs):
        psc = pod.get("securityContext") or {}
        assert psc.get("runAsNonRoot") is True, f"{o['metadata']['name']}: pod runAsNonRoot"
        assert psc.get("runAsUser", 1) != 0 and psc.get("runAsGroup", 1) != 0
        assert (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
        assert not pod.get("hostPID") and not pod.get("hostNetwork") and not pod.get("hostIPC")
        for c in pod.get("initContainers", []) + pod["containers"]:
            seen += 1
            where = f"{o['kind']} {o['metadata']['name']} container {c['name']}"
            sc = c.get("securityContext") or {}
            assert sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            assert isinstance(uid, int) and uid > 0, f"{where}: runAsUser {uid!r}"
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged", False) is False, where
            assert sc.get("readOnlyRootFilesystem") is True, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get(
                "type"
            ) == "RuntimeDefault"
            mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: a read-only root needs a writable /tmp"
    assert seen >= 3, "expected the operator, the facade and its init container"


@needs_helm
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_operator_is_one_replica_recreated(variant: str):
    (op,) = [
        o
        for o in docs(render(variant))
        if o["kind"] == "Deployment" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    assert op["spec"]["replicas"] == 1
    assert op["spec"]["strategy"] == {"type": "Recreate"}
    c = op["spec"]["template"]["spec"]["containers"][0]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "--liveness=http://0.0.0.0:8080/healthz" in c["args"]


@needs_helm
def test_facade_probes_and_settings():
    objs = docs(render("default"))
    (fc,) = [
        o
        for o in objs
        if o["kind"] == "Deployment" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "facade"
    ]
    c = fc["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["KMS_JOB_IMAGE"] == c["image"], "job pods must run the same image version as the chart"
    op_svc = [o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-operator")]
    assert op_svc and env["KMS_OPERATOR_HEALTH_URL"].startswith(f"http://{op_svc[0]['metadata']['name']}.")


# ------------------------------------------------------------------------------------ RBAC (static)


def _rules(objs: list[dict], kind: str, component: str) -> list[dict]:
    return [
        r
        for o in objs
        if o["kind"] == kind and o["metadata"]["labels"].get("app.kubernetes.io/component") == component
        for r in o.get("rules", [])
    ]


def _allows(rules: list[dict], group: str, resource: str, verb: str, name: str | None = None) -> bool:
    return any(
        group in r.get("apiGroups", [])
        and resource in r.get("resources", [])
        and verb in r.get("verbs", [])
        and (not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


@needs_helm
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rbac_has_no_wildcards_and_no_secrets_for_the_operator(variant: str):
    objs = docs(render(variant))
    for o in objs:
        for r in o.get("rules", []) if o["kind"] in ("Role", "ClusterRole") else []:
            for key in ("apiGroups", "resources", "verbs"):
                assert "*" not in r.get(key, []), f"{o['kind']} {o['metadata']['name']}: wildcard {key}"
            assert (
                "escalate" not in r["verbs"] and "bind" not in r["verbs"] and "impersonate" not in r["verbs"]
            )
            assert not any(res.endswith("/exec") or res.endswith("/attach") for res in r["resources"])
    op = _rules(objs, "ClusterRole", "operator") + _rules(objs, "Role", "operator")
    assert not any("secrets" in r["resources"] for r in op), "the operator needs no Secrets"
    # the operator only patches; its Lease is the one object it updates (optimistic concurrency)
    assert not any("update" in r["verbs"] and r["resources"] != ["leases"] for r in op), (
        "the operator only patches"
    )
    # the facade is namespaced: a Role, never a ClusterRole
    assert not _rules(objs, "ClusterRole", "facade")
    fc = _rules(objs, "Role", "facade")
    for r in fc:
        if "secrets" in r["resources"] and set(r["verbs"]) != {"create"}:
            assert r.get("resourceNames"), "facade Secret access must be limited to its own Secrets"


@needs_helm
def test_operator_rbac_covers_every_kind_the_operator_calls():
    """Every (apiVersion, kind) in kms_operator.kube.PLURALS has a rule: a new kind breaks this test."""
    from kms_operator.kube import PLURALS

    objs = docs(render("default"))
    rules = _rules(objs, "ClusterRole", "operator")
    for (api_version, _kind), plural in PLURALS.items():
        group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
        verbs = {v for r in rules if group in r["apiGroups"] and plural in r["resources"] for v in r["verbs"]}
        assert verbs, f"operator RBAC has no rule for {plural}.{group or 'core'}"
    for plural in ("mapdatasets", "mapservices", "mapjobs"):
        assert _allows(rules, "maps.kube-mapserver.io", f"{plural}/status", "patch")
        assert _allows(rules, "maps.kube-mapserver.io", plural, "watch")
    assert _allows(rules, "apiextensions.k8s.io", "customresourcedefinitions", "watch")


@needs_helm
def test_namespaced_operator_gets_roles_not_a_cluster_role():
    objs = docs(render("namespaced"))
    roles = [o for o in objs if o["kind"] == "Role" and o["metadata"]["name"].endswith("-operator")]
    assert sorted(o["metadata"]["namespace"] for o in roles) == ["maps-a", "maps-b"]
    cluster = _rules(objs, "ClusterRole", "operator")
    assert {p for r in cluster for p in r["resources"]} == {"customresourcedefinitions", "namespaces"}
    assert all(set(r["verbs"]) <= {"list", "watch"} for r in cluster)
    (op,) = [o for o in objs if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-operator")]
    args = op["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=maps-a" in args and "--namespace=maps-b" in args


# ------------------------------------------------------------------------------------ values


@needs_helm
@pytest.mark.parametrize(
    ("setting", "field"),
    [
        ("securityContext.runAsUser=0", "/securityContext/runAsUser"),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
        ("securityContext.allowPrivilegeEscalation=true", "/securityContext/allowPrivilegeEscalation"),
        ("operator.replicas=2", "/operator"),
        ("facade.replicas=-1", "/facade/replicas"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("image.digest=latest", "/image/digest"),
        ("auth.admin.password=short", "/auth/admin/password"),
        ("auth.admin.username=Admin User", "/auth/admin/username"),
        ("facade.ingress.enabled=true", "/facade/ingress/host"),
        ("data.create=true", "/data/persistentVolumeClaim"),
        ("operator.watchNamespaces={Bad_NS}", "/operator/watchNamespaces/0"),
        ("facade.servce.port=80", "/facade"),
    ],
)
def test_values_schema_rejects(setting: str, field: str):
    r = chart.helm(
        "template", "x", str(chart.CHART), "--kube-version", chart.KUBE_VERSION, "--set", setting, check=False
    )
    assert r.returncode != 0, f"--set {setting} was accepted"
    assert "values don't meet the specifications of the schema" in r.stderr, r.stderr
    assert f"'{field}'" in r.stderr, f"the error should name {field}:\n{r.stderr}"


@needs_helm
def test_generated_credentials_and_given_ones():
    objs = docs(render("default"))
    secrets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Secret"}
    import base64

    admin = secrets["kube-mapserver-admin"]
    password = base64.b64decode(admin["data"]["password"]).decode()
    assert len(password) == 24 and password.isalnum()
    assert admin["metadata"]["annotations"]["maps.kube-mapserver.io/generated"] == "true"
    assert len(base64.b64decode(secrets["kube-mapserver-jwt"]["data"]["signing-key"])) == 64
    given = docs(
        chart.template(set_values=["auth.admin.password=correct-horse", "auth.jwt.signingKey=" + "k" * 40])
    )
    secrets = {o["metadata"]["name"]: o for o in given if o["kind"] == "Secret"}
    assert base64.b64decode(secrets["kube-mapserver-admin"]["data"]["password"]) == b"correct-horse"
    assert "annotations" not in secrets["kube-mapserver-admin"]["metadata"]
    # existingSecret / jwt.create=false: nothing rendered, the init container reads the given Secret,
    # mounted read-only as a file (checkov CKV_K8S_35: no Secret in an environment variable)
    ext = docs(chart.template(set_values=["auth.admin.existingSecret=my-admin", "auth.jwt.create=false"]))
    assert not [o for o in ext if o["kind"] == "Secret"]
    (fc,) = [o for o in ext if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-api")]
    pod = fc["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in init["volumeMounts"] if "secret" in volumes[m["name"]]]
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "my-admin" and secret["items"] == [{"key": "password", "path": "password"}]
    assert mount["readOnly"] and secret["defaultMode"] == 0o440
    env = {e["name"]: e for e in init["env"]}
    assert env["KMS_ADMIN_PASSWORD_FILE"]["value"] == f"{mount['mountPath']}/password"
    assert "--password-file" in init["command"][-1]


@needs_helm
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_no_secret_reaches_a_container_through_its_environment(variant: str):
    """Secrets are mounted as files (checkov CKV_K8S_35), never env secretKeyRef or envFrom."""
    for o in docs(render(variant)):
        pod = (o.get("spec") or {}).get("template", {}).get("spec") or {}
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            assert not any("secretRef" in f for f in c.get("envFrom", [])), (o["metadata"]["name"], c["name"])
            for e in c.get("env", []):
                assert "secretKeyRef" not in (e.get("valueFrom") or {}), (o["metadata"]["name"], e["name"])


# ------------------------------------------------------------------------------------ CRD chart, deploy/


@needs_helm
def test_crd_chart_renders_the_crds_kept_on_uninstall():
    objs = docs(chart.template(chart=chart.CRD_CHART, release="kube-mapserver-crds"))
    want = {d["metadata"]["name"]: d for p in (REPO / "crds").glob("*.yaml") for d in docs(p.read_text())}
    have = {o["metadata"]["name"]: o for o in objs}
    assert have.keys() == want.keys()
    for name, crd in have.items():
        assert crd["spec"] == want[name]["spec"], f"{name}: the CRD chart's schema differs from crds/"
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["metadata"]["labels"]["app.kubernetes.io/part-of"] == "kube-mapserver"


@needs_helm
def test_deploy_manifests_are_up_to_date():
    """deploy/ is what `make manifests` renders now; fails with the diff otherwise."""
    r = subprocess.run(
        [sys.executable, str(REPO / "hack" / "chart.py"), "manifests", "--check"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, f"deploy/ is out of date, run `make manifests`:\n{r.stdout}{r.stderr}"
    objs = docs((chart.DEPLOY / "kube-mapserver.yaml").read_text())
    assert objs[0]["kind"] == "Namespace"
    assert not [o for o in objs if o["kind"] == "Secret"], "no credentials in Git"
    assert {d["kind"] for d in docs((chart.DEPLOY / "crds.yaml").read_text())} == {"CustomResourceDefinition"}
