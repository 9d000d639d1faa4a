"""The Helm chart against a real kube-apiserver and the real kubelet node:

- the rendered chart applied server-side gets Running operator and facade pods (the images built
  here); deleting what was rendered leaves nothing behind but the CRDs;
- a real `helm install --wait` / `upgrade` / `uninstall`: generated credentials survive the upgrade;
- least privilege: what the chart's ServiceAccounts may and may not do (`kubectl auth can-i --as`,
  plus real calls under impersonation);
- the CRD chart upgrades a CRD (a new field) and keeps the CRDs on uninstall.

A chart operator pod that runs is confined to the test's namespace (operator.watchNamespaces): the
session's operator process reconciles every other namespace, and two operators must never share
one. Where only the manifests and RBAC matter, the chart's pods are parked (a nodeSelector no
node has): they never start, and nothing is pulled from a registry."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from tests.helpers import create_cr, hack_module, require_tool, wait_until

REPO = Path(__file__).resolve().parents[2]


chart = hack_module("chart")


@pytest.fixture
def _helm_built() -> None:
    require_tool(chart.helm_path(), "helm", "helm")


pytestmark = pytest.mark.usefixtures("_helm_built")

NAMESPACED_KINDS = [
    ("v1", "pods"),
    ("v1", "services"),
    ("v1", "secrets"),
    ("v1", "configmaps"),
    ("v1", "serviceaccounts"),
    ("v1", "persistentvolumeclaims"),
    ("apps/v1", "deployments"),
    ("apps/v1", "replicasets"),
    ("rbac.authorization.k8s.io/v1", "roles"),
    ("rbac.authorization.k8s.io/v1", "rolebindings"),
    ("networking.k8s.io/v1", "ingresses"),
    ("networking.k8s.io/v1", "networkpolicies"),
    ("policy/v1", "poddisruptionbudgets"),
]
CLUSTER_KINDS = [
    ("rbac.authorization.k8s.io/v1", "clusterroles"),
    ("rbac.authorization.k8s.io/v1", "clusterrolebindings"),
]


def kubectl(cluster, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(
        [*cluster.kubectl, *args], input=input, capture_output=True, text=True, timeout=120, check=False
    )
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def helm(cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = chart.helm(*args, f"--kubeconfig={cluster.kubeconfig}", check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def render(namespace: str, *sets: str) -> str:
    """The chart as `helm template` renders it, released as the namespace's name (unique names for
    the cluster-scoped RBAC objects)."""
    return chart.template(release=namespace, namespace=namespace, set_values=list(sets))


def local_images(cluster) -> list[str]:
    """--set values for the images built here (on the node: never pulled)."""
    sets = []
    for key, name in (
        ("image", "kube-mapserver"),
        ("mapserverImage", "mapserver"),
        ("mapcacheImage", "mapcache"),
    ):
        repo, _, tag = cluster.images[name]["ref"].rpartition(":")
        sets += [f"{key}.repository={repo}", f"{key}.tag={tag}"]
    return sets


def running_here(cluster, namespace: str) -> list[str]:
    """--set values for chart pods that really run: local images, the operator watching only the
    test's namespace."""
    return [*local_images(cluster), f"operator.watchNamespaces={{{namespace}}}"]


# chart pods that are not the subject of the test never start (and never pull an image)
PARKED = ["operator.nodeSelector.kms-test-parked=nowhere", "facade.nodeSelector.kms-test-parked=nowhere"]


def as_flags(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def instance_objects(cluster, namespace: str, release: str) -> list[str]:
    """Everything labelled with the release, in its namespace and cluster-wide."""
    sel = f"app.kubernetes.io/instance={release}"
    found = []
    for _api_version, plural in NAMESPACED_KINDS:
        r = kubectl(cluster, "get", plural, "-n", namespace, "-l", sel, "-o", "name", check=False)
        found += [line for line in r.stdout.split() if line]
    for _api_version, plural in CLUSTER_KINDS:
        r = kubectl(cluster, "get", plural, "-l", sel, "-o", "name", check=False)
        found += [line for line in r.stdout.split() if line]
    return found


def running_pods(cluster, namespace: str, component: str) -> list[dict]:
    pods = client.CoreV1Api(cluster.api).list_namespaced_pod(
        namespace, label_selector=f"app.kubernetes.io/component={component}"
    )
    return [p for p in pods.items if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def wait_running(cluster, namespace: str) -> None:
    for component in ("operator", "facade"):
        wait_until(
            lambda c=component: running_pods(cluster, namespace, c),
            f"a Running {component} pod in {namespace}",
            timeout=90,
        )


def crd_names() -> list[str]:
    return sorted(d["metadata"]["name"] for p in (REPO / "crds").glob("*.yaml") for d in docs(p.read_text()))


@pytest.fixture
def applied(cluster, namespace):
    """apply(text): server-side apply rendered manifests; all of them are deleted after the test
    (the namespace goes anyway, but ClusterRoles and bindings would outlive it)."""
    texts: list[str] = []

    def apply(text: str) -> None:
        texts.append(text)
        kubectl(cluster, "apply", "--server-side", "--field-manager=kms-chart-test", "-f", "-", input=text)

    yield apply
    for text in reversed(texts):
        kubectl(cluster, "delete", "--ignore-not-found", "--wait=false", "-f", "-", input=text, check=False)


# ------------------------------------------------------------------------------------ install


def test_rendered_chart_applies_server_side_and_deletes_cleanly(cluster, crds, namespace):
    text = render(namespace, *running_here(cluster, namespace))
    rendered = docs(text)
    # the pods must pass the restricted Pod Security Standard (admission rejects them otherwise)
    kubectl(cluster, "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    kubectl(cluster, "apply", "--server-side", "--field-manager=kms-chart-test", "-f", "-", input=text)
    wait_running(cluster, namespace)
    op = running_pods(cluster, namespace, "operator")
    assert len(op) == 1, "exactly one operator pod"
    spec = op[0].spec
    assert spec.service_account_name == f"{namespace}-kube-mapserver-operator"
    assert spec.security_context.run_as_non_root is True
    deploy = client.AppsV1Api(cluster.api).read_namespaced_deployment(
        f"{namespace}-kube-mapserver-operator", namespace
    )
    assert deploy.spec.strategy.type == "Recreate"

    # uninstall = delete exactly what was rendered
    kubectl(cluster, "delete", "--wait=true", "--timeout=90s", "-f", "-", input=text)
    for o in rendered:
        ns = ["-n", o["metadata"]["namespace"]] if o["metadata"].get("namespace") else []
        r = kubectl(cluster, "get", o["kind"], o["metadata"]["name"], *ns, check=False)
        assert r.returncode != 0 and "NotFound" in r.stderr, f"{o['kind']} {o['metadata']['name']} survived"
    wait_until(
        lambda: not instance_objects(cluster, namespace, namespace),
        f"nothing labelled app.kubernetes.io/instance={namespace} left",
        timeout=90,
    )
    ext = client.ApiextensionsV1Api(cluster.api)
    for name in crd_names():
        assert ext.read_custom_resource_definition(name).metadata.name == name, "CRDs stay"


def test_helm_install_upgrade_keeps_generated_secrets_and_uninstall_leaves_nothing(cluster, crds, namespace):
    release = namespace
    args = [
        str(chart.CHART),
        "-n",
        namespace,
        "--skip-crds",
        "--wait",
        "--timeout=180s",
        *as_flags(running_here(cluster, namespace)),
    ]
    helm(cluster, "install", release, *args)
    wait_running(cluster, namespace)
    core = client.CoreV1Api(cluster.api)

    def secret(name: str) -> dict[str, bytes]:
        return {k: base64.b64decode(v) for k, v in core.read_namespaced_secret(name, namespace).data.items()}

    admin, jwt = secret(f"{release}-kube-mapserver-admin"), secret("kube-mapserver-jwt")
    assert len(admin["password"]) == 24 and len(jwt["signing-key"]) == 64
    facade = client.AppsV1Api(cluster.api).read_namespaced_deployment(
        f"{release}-kube-mapserver-api", namespace
    )
    checksum = facade.spec.template.metadata.annotations["checksum/auth"]

    # an upgrade that changes something else: the credentials are looked up, not regenerated
    helm(cluster, "upgrade", release, *args, "--set", "facade.tokenTTL=7200")
    assert secret(f"{release}-kube-mapserver-admin") == admin
    assert secret("kube-mapserver-jwt") == jwt
    facade = client.AppsV1Api(cluster.api).read_namespaced_deployment(
        f"{release}-kube-mapserver-api", namespace
    )
    assert facade.spec.template.metadata.annotations["checksum/auth"] == checksum, "no restart for nothing"
    env = {e.name: e.value for e in facade.spec.template.spec.containers[0].env}
    assert env["KMS_TOKEN_TTL"] == "7200"
    status = json.loads(helm(cluster, "status", release, "-n", namespace, "-o", "json").stdout)
    assert status["version"] == 2 and status["info"]["status"] == "deployed"
    assert "kubectl -n" in status["info"]["notes"] and "/token" in status["info"]["notes"]

    helm(cluster, "uninstall", release, "-n", namespace, "--wait", "--timeout=180s")
    wait_until(
        lambda: not instance_objects(cluster, namespace, release),
        f"nothing of release {release} left",
        timeout=90,
    )
    left = core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
    assert not left, "helm's release records are gone"
    ext = client.ApiextensionsV1Api(cluster.api)
    assert all(ext.read_custom_resource_definition(n) for n in crd_names()), "CRDs stay"


# ------------------------------------------------------------------------------------ RBAC


def can_i(cluster, sa: str, namespace: str, verb: str, resource: str, *extra: str) -> bool:
    r = kubectl(
        cluster,
        "auth",
        "can-i",
        verb,
        resource,
        f"--as=system:serviceaccount:{namespace}:{sa}",
        *extra,
        check=False,
    )
    assert r.stdout.strip() in ("yes", "no"), r.stdout + r.stderr
    return r.stdout.strip() == "yes"


def test_rbac_is_least_privilege(cluster, crds, namespace, applied):
    applied(render(namespace, *PARKED))  # the cluster-wide operator's RBAC, no pod running it
    op, fc = f"{namespace}-kube-mapserver-operator", f"{namespace}-kube-mapserver-api"
    other = "default"  # the operator is cluster-wide: any namespace
    operator_allowed = [
        ("patch", "mapservices.maps.kube-mapserver.io", "--subresource=status", "-n", other),
        ("patch", "mapjobs.maps.kube-mapserver.io", "--subresource=status", "-n", other),
        ("watch", "mapdatasets.maps.kube-mapserver.io", "-A"),
        ("create", "mapdatasets.maps.kube-mapserver.io", "-n", other),
        ("create", "deployments.apps", "-n", other),
        ("patch", "configmaps", "-n", other),
        ("delete", "services", "-n", other),
        ("list", "replicasets.apps", "-n", other),
        ("create", "jobs.batch", "-n", other),
        ("delete", "pods", "-n", other),
        ("create", "events", "-n", other),
        ("create", "ingresses.networking.k8s.io", "-n", other),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ]
    operator_denied = [
        ("list", "secrets", "-A"),
        ("get", "secrets", "-n", namespace),
        ("create", "pods", "--subresource=exec", "-n", other),
        ("create", "pods", "-n", other),
        ("update", "deployments.apps", "-n", other),
        ("delete", "mapservices.maps.kube-mapserver.io", "-n", other),
        ("create", "clusterroles.rbac.authorization.k8s.io"),
        ("create", "rolebindings.rbac.authorization.k8s.io", "-n", other),
        ("list", "nodes"),
        ("delete", "namespaces"),
    ]
    facade_allowed = [
        ("create", "mapdatasets.maps.kube-mapserver.io"),
        ("delete", "mapdatasets.maps.kube-mapserver.io"),
        ("patch", "mapjobs.maps.kube-mapserver.io"),
        ("watch", "mapservices.maps.kube-mapserver.io"),
        ("get", "secrets/kube-mapserver-users"),
        ("watch", "secrets/kube-mapserver-jwt"),
        ("patch", "secrets/kube-mapserver-users"),
        ("create", "secrets"),
        ("get", "configmaps/kube-mapserver-config"),
        ("update", "configmaps/kube-mapserver-tombstones"),
        ("get", "configmaps/ocean-mapfile-0123456789"),  # GET /services/{name}/mapfile
        ("watch", "leases.coordination.k8s.io"),  # the login throttle shared by the replicas
        ("create", "leases.coordination.k8s.io"),
        ("update", "leases.coordination.k8s.io"),
        ("delete", "leases.coordination.k8s.io"),
    ]
    facade_denied = [
        ("list", "secrets"),
        ("patch", "secrets/kube-mapserver-jwt"),
        ("delete", "configmaps/kube-mapserver-tombstones"),
        ("get", "secrets/other-app-credentials"),
        ("get", f"secrets/{namespace}-kube-mapserver-admin"),
        ("list", "configmaps"),
        ("watch", "configmaps"),
        ("patch", "configmaps/other"),
        ("delete", "configmaps/other"),
        ("list", "secrets", "-A"),
        ("create", "mapdatasets.maps.kube-mapserver.io", "-n", other),
        ("patch", "mapservices.maps.kube-mapserver.io"),
        ("patch", "mapdatasets.maps.kube-mapserver.io", "--subresource=status"),
        ("delete", "deployments.apps"),
        ("create", "pods", "--subresource=exec"),
        ("create", "jobs.batch"),
        ("create", "leases.coordination.k8s.io", "-n", other),
        ("patch", "leases.coordination.k8s.io"),
    ]
    wrong = []
    for sa, checks, want, default_ns in (
        (op, operator_allowed, True, other),
        (op, operator_denied, False, other),
        (fc, facade_allowed, True, namespace),
        (fc, facade_denied, False, namespace),
    ):
        for verb, resource, *extra in checks:
            scoped = extra if any(e in ("-n", "-A") for e in extra) else [*extra, "-n", default_ns]
            if can_i(cluster, sa, namespace, verb, resource, *scoped) != want:
                wrong.append(f"{sa} {verb} {resource} {' '.join(scoped)}: expected {'yes' if want else 'no'}")
    assert not wrong, "RBAC differs from least privilege:\n" + "\n".join(wrong)

    # real calls under impersonation, the way the components make them
    as_op = [f"--as=system:serviceaccount:{namespace}:{op}"]
    as_fc = [f"--as=system:serviceaccount:{namespace}:{fc}"]
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa-probe", "namespace": namespace}}
    kubectl(
        cluster,
        "apply",
        "--server-side",
        "--field-manager=kube-mapserver",
        *as_op,
        "-f",
        "-",
        input=json.dumps(cm),
    )
    r = kubectl(cluster, "get", "secrets", "-A", *as_op, check=False)
    assert r.returncode != 0 and "Forbidden" in r.stderr
    # the facade's single-object watch (fieldSelector metadata.name) is authorized by resourceNames
    core = client.CoreV1Api(cluster.api)
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="kube-mapserver-users"), string_data={})
    )
    r = kubectl(
        cluster,
        "get",
        "secrets",
        "-n",
        namespace,
        "--field-selector=metadata.name=kube-mapserver-users",
        *as_fc,
    )
    assert "kube-mapserver-users" in r.stdout
    r = kubectl(cluster, "get", "secrets", "-n", namespace, *as_fc, check=False)
    assert r.returncode != 0 and "Forbidden" in r.stderr


def test_namespaced_operator_is_confined_to_its_namespaces(cluster, crds, namespace):
    text = render(namespace, *running_here(cluster, namespace))
    kubectl(cluster, "apply", "--server-side", "--field-manager=kms-chart-test", "-f", "-", input=text)
    op = f"{namespace}-kube-mapserver-operator"
    assert can_i(cluster, op, namespace, "create", "deployments.apps", "-n", namespace)
    assert can_i(
        cluster,
        op,
        namespace,
        "patch",
        "mapservices.maps.kube-mapserver.io",
        "--subresource=status",
        "-n",
        namespace,
    )
    assert not can_i(cluster, op, namespace, "create", "deployments.apps", "-n", "default")
    assert not can_i(cluster, op, namespace, "list", "mapdatasets.maps.kube-mapserver.io", "-A")
    assert can_i(cluster, op, namespace, "watch", "namespaces")
    assert not can_i(cluster, op, namespace, "get", "secrets", "-n", namespace)
    wait_running(cluster, namespace)
    kubectl(cluster, "delete", "--wait=true", "--timeout=90s", "-f", "-", input=text)
    wait_until(lambda: not instance_objects(cluster, namespace, namespace), "nothing left", timeout=90)


# ------------------------------------------------------------------------------------ CRD upgrades


def test_crd_chart_upgrade_adds_a_field_and_uninstall_keeps_the_crds(cluster, namespace, tmp_path):
    """helm install the CRD chart, upgrade it with a new spec field, see the field stored; uninstall
    keeps the CRDs. Run on a copy of the chart whose API group is unique to this test."""
    group = f"{namespace}.test.kube-mapserver.io"
    work = tmp_path / "kube-mapserver-crds"
    shutil.copytree(chart.CRD_CHART, work)
    for f in (work / "files").glob("*.yaml"):
        f.write_text(f.read_text().replace("maps.kube-mapserver.io", group))
    names = sorted(f"{p}.{group}" for p in ("mapdatasets", "mapservices", "mapjobs"))
    ext = client.ApiextensionsV1Api(cluster.api)
    co = client.CustomObjectsApi(cluster.api)
    release = f"{namespace}-crds"
    try:
        helm(cluster, "install", release, str(work), "-n", namespace, "--wait", "--timeout=60s")
        for n in names:
            wait_until(
                lambda n=n: any(
                    c.type == "Established" and c.status == "True"
                    for c in ext.read_custom_resource_definition(n).status.conditions or []
                ),
                f"CRD {n} Established",
            )
        example = yaml.safe_load((REPO / "examples" / "raster-dataset.yaml").read_text())
        body = {
            "apiVersion": f"{group}/v1alpha1",
            "kind": "MapDataset",
            "metadata": {"name": "upgraded"},
            "spec": {**example["spec"], "futureField": "v2"},
        }
        co.create_namespaced_custom_object(group, "v1alpha1", namespace, "mapdatasets", body)
        got = co.get_namespaced_custom_object(group, "v1alpha1", namespace, "mapdatasets", "upgraded")
        assert "futureField" not in got["spec"], "before the upgrade an unknown field is pruned"

        # the next chart version: MapDataset gets spec.futureField
        path = work / "files" / "maps.kube-mapserver.io_mapdatasets.yaml"
        crd = yaml.safe_load(path.read_text())
        props = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
        props["futureField"] = {"type": "string", "description": "A field added by the upgrade."}
        path.write_text(yaml.safe_dump(crd, sort_keys=False))
        meta = yaml.safe_load((work / "Chart.yaml").read_text())
        meta["version"] = "0.1.1"
        (work / "Chart.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        helm(cluster, "upgrade", release, str(work), "-n", namespace, "--wait", "--timeout=60s")

        def stored() -> bool:
            co.patch_namespaced_custom_object(
                group, "v1alpha1", namespace, "mapdatasets", "upgraded", {"spec": {"futureField": "v2"}}
            )
            obj = co.get_namespaced_custom_object(group, "v1alpha1", namespace, "mapdatasets", "upgraded")
            return obj["spec"].get("futureField") == "v2"

        wait_until(stored, "spec.futureField stored after the CRD upgrade", timeout=30)

        helm(cluster, "uninstall", release, "-n", namespace, "--wait")
        for n in names:
            crd = ext.read_custom_resource_definition(n)
            assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
        got = co.get_namespaced_custom_object(group, "v1alpha1", namespace, "mapdatasets", "upgraded")
        assert got["spec"]["futureField"] == "v2", "the custom resources survive the uninstall"
    finally:
        for n in names:
            try:
                ext.delete_custom_resource_definition(n)
            except client.ApiException as e:
                if e.status != 404:
                    raise


# ------------------------------------------------------------------------------------ RBAC suffices


def sa_kubeconfig(cluster, namespace: str, sa: str, path: Path) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token), like in a pod."""
    token = kubectl(cluster, "create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    entry = admin["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [entry],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [
                    {"name": sa, "context": {"cluster": entry["name"], "user": sa, "namespace": namespace}}
                ],
                "current-context": sa,
            }
        )
    )
    return path


FORBIDDEN = ("Forbidden", "forbidden", " 403", "Not enough permissions")


def test_chart_rbac_suffices_for_the_real_operator_and_facade(
    cluster, crds, namespace, data_root, tmp_path, applied
):
    """The operator and the facade run as the chart's ServiceAccounts (their tokens, nothing else)
    and hack/smoke.sh walks login, dataset, Ready, list, cog-convert job, WMS, a tile from the
    tile cache, a seeding job, cleanup (the operator also creates an automatic seeding job): every
    API call they make is allowed by the chart's RBAC, and none is refused along the way. The
    MapServer, tile-cache and job pods they create run on the node; the chart's own operator and
    facade pods are parked (this test runs those two as processes, with the chart's tokens)."""
    from tests.conftest import OperatorProcess, cluster_mod, delete_data_volumes, image_env
    from tests.helpers import FAST_PROBES, make_data_volume, service_ip

    applied(render(namespace, *PARKED))
    make_data_volume(cluster.api, namespace, data_root)
    make_data_volume(cluster.api, namespace, tmp_path / "tiles", name="tile-cache")
    create_cr(
        cluster.api,
        namespace,
        {
            "apiVersion": "maps.kube-mapserver.io/v1alpha1",
            "kind": "MapService",
            "metadata": {"name": "rbac"},
            "spec": {
                "datasetSelector": {"matchLabels": {"rbac": "chart"}},
                "data": {"persistentVolumeClaim": "map-data"},
                "tileCache": {"storage": {"persistentVolumeClaim": "tile-cache"}, "seed": {"maxZoom": 1}},
                "probes": FAST_PROBES,
            },
        },
    )
    op_cfg = sa_kubeconfig(
        cluster, namespace, f"{namespace}-kube-mapserver-operator", tmp_path / "op.kubeconfig"
    )
    fc_cfg = sa_kubeconfig(cluster, namespace, f"{namespace}-kube-mapserver-api", tmp_path / "fc.kubeconfig")

    # the chart sets the Lease namespace from the downward API: the release namespace
    operator = OperatorProcess(
        op_cfg,
        data_root,
        tmp_path / "operator.log",
        KMS_DEBOUNCE_SECONDS="0.2",
        KMS_LEASE_NAMESPACE=namespace,
        **image_env(cluster),
    )
    operator.start()
    facade_log = tmp_path / "facade.log"
    facade = None
    try:
        port = cluster_mod.free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(fc_cfg),
            "KMS_NAMESPACE": namespace,
            "KMS_DATA_ROOT": str(data_root),
            "KMS_DATA_PVC": "map-data",
            "KMS_OPERATOR_HEALTH_URL": f"http://127.0.0.1:{operator.liveness_port}/healthz",
        }
        py = str(REPO / ".venv" / "bin" / "python")
        # what the chart's init container does, as the facade's ServiceAccount
        password = "rbac-smoke-password"
        password_file = tmp_path / "admin-password"  # the chart mounts the admin Secret as a file
        password_file.write_text(password)
        password_file.chmod(0o400)
        subprocess.run(
            [
                py,
                "-m",
                "kms_api",
                "user",
                "add",
                "admin",
                "--role",
                "admin",
                "--password-file",
                str(password_file),
            ],
            text=True,
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
            timeout=60,
        )
        with open(facade_log, "ab") as out:
            facade = subprocess.Popen(
                [py, "-m", "kms_api", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # status URLs name the in-cluster Services: the walk opens them through their ClusterIPs
        for svc in ("rbac", "rbac-tiles"):
            wait_until(lambda s=svc: service_ip(cluster.api, namespace, s), f"Service {svc}", 90)
        smoke = subprocess.run(
            [str(REPO / "hack" / "smoke.sh")],
            env={
                **os.environ,
                "KMS_URL": f"http://127.0.0.1:{port}",
                "KMS_PASSWORD": password,
                "SMOKE_LABELS": "rbac=chart",
                "SMOKE_REQUIRE_WMS": "1",
                "SMOKE_TIMEOUT": "180",
                "SMOKE_WMS_BASE": f"http://{service_ip(cluster.api, namespace, 'rbac')}:8080",
                "SMOKE_TILES_BASE": f"http://{service_ip(cluster.api, namespace, 'rbac-tiles')}:8080",
                "PYTHON": py,
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
        logs = (
            f"--- smoke\n{smoke.stderr[-3000:]}\n--- operator\n{operator.log_tail(60)}\n--- facade\n"
            + "\n".join(facade_log.read_text(errors="replace").splitlines()[-40:])
        )
        assert smoke.returncode == 0, logs
        assert "SMOKE PASSED" in smoke.stderr and "tile from the tile cache" in smoke.stderr, logs
        auto = "maps.kube-mapserver.io/automatic=true"
        wait_until(
            lambda: any(
                (j.get("status") or {}).get("phase") == "Succeeded"
                for j in client.CustomObjectsApi(cluster.api).list_namespaced_custom_object(
                    "maps.kube-mapserver.io", "v1alpha1", namespace, "mapjobs", label_selector=auto
                )["items"]
            ),
            "an automatic cache job of the operator succeeded",
            180,
        )
        for name, text in (("operator", operator.log_path.read_text()), ("facade", facade_log.read_text())):
            refused = [line for line in text.splitlines() if any(f in line for f in FORBIDDEN)]
            assert not refused, f"the {name} was refused by RBAC:\n" + "\n".join(refused[:20])
    finally:
        if facade is not None:
            facade.terminate()
            try:
                facade.wait(timeout=20)
            except subprocess.TimeoutExpired:
                facade.kill()
        operator.stop()
        delete_data_volumes(cluster.api, namespace)
