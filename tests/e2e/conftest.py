"""The product as a platform team installs it: `helm install` of charts/kube-mapserver with the
images built here, on the real kubelet node, into a namespace enforcing the `restricted` Pod
Security level. The operator and the facade run as pods; MapServer, tile cache and job pods too.

Installed once for the e2e package (and removed after it), before the integration tests start
their own operator process: two operators must never reconcile the same namespace."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.helpers import hack_module, wait_until

REPO = Path(__file__).resolve().parents[2]
NAMESPACE = "kms-e2e"


install = hack_module("install")
sample_data = hack_module("sample_data")


@dataclass
class Product:
    """The installed product: where its facade answers, how to reach services from this host."""

    namespace: str
    kubeconfig: Path
    data_dir: Path
    tiles_dir: Path
    facade_url: str
    admin_password: str

    @property
    def k(self):
        return install.Kubectl(self.kubeconfig)

    def service_url(self, name: str, port: int = 8080) -> str:
        """A Service's ClusterIP URL (the host routes the Service CIDR to the node's bridge)."""
        return f"http://{install.service_ip(self.kubeconfig, self.namespace, name)}:{port}/"

    def host_url(self, url: str) -> str:
        """An in-cluster URL from a status (http://NAME.NS.svc.cluster.local:PORT/...) with the
        Service's ClusterIP in place of its DNS name, so this host can open it."""
        parts = urlsplit(url)
        name, ns = parts.hostname.split(".")[:2]
        ip = install.service_ip(self.kubeconfig, ns, name)
        return urlunsplit(parts._replace(netloc=f"{ip}:{parts.port or 80}"))

    def get(self, kind: str, name: str) -> dict:
        return self.k.json("get", kind, name, "-n", self.namespace)

    def pods(self, selector: str) -> list[dict]:
        return self.k.json("get", "pods", "-n", self.namespace, "-l", selector)["items"]

    def client(self) -> httpx.Client:
        """An httpx client logged in to the facade as the bootstrap admin."""
        r = httpx.post(
            f"{self.facade_url}/token",
            data={"username": "admin", "password": self.admin_password},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        return httpx.Client(
            base_url=self.facade_url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )


def condition(obj: dict, type_: str) -> dict:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def ready(obj: dict) -> bool:
    return condition(obj, "Ready").get("status") == "True"


@pytest.fixture(scope="package")
def product(cluster, crds, tmp_path_factory) -> Iterator[Product]:
    if not cluster.real_node:
        pytest.fail("the e2e tests need the real node (the local plane starts it; KMS_TEST_KUBECONFIG: kind)")
    # KMS_E2E_KEEP=1 keeps the install between runs: then its volumes need a stable folder
    root = REPO / ".kms" / "e2e" if os.environ.get("KMS_E2E_KEEP") else tmp_path_factory.mktemp("e2e")
    data, tiles = root / "data", root / "tiles"
    sample_data.write_samples(data)
    install.install(
        cluster.kubeconfig,
        cluster.images,
        NAMESPACE,
        data,
        tiles,
        extra=["--set", f"operator.watchNamespaces={{{NAMESPACE}}}"],
    )
    facade = f"http://{install.service_ip(cluster.kubeconfig, NAMESPACE, 'kube-mapserver-api')}:80"
    wait_until(lambda: httpx.get(f"{facade}/health", timeout=5).status_code == 200, "facade /health 200")
    try:
        yield Product(
            NAMESPACE,
            cluster.kubeconfig,
            data,
            tiles,
            facade,
            install.admin_password(cluster.kubeconfig, NAMESPACE),
        )
    finally:
        if not os.environ.get("KMS_E2E_KEEP"):  # KMS_E2E_KEEP=1 leaves it installed to look at
            install.uninstall(cluster.kubeconfig, NAMESPACE)


@pytest.fixture(scope="package")
def examples(product: Product) -> Product:
    """`kubectl apply -f examples/` (a raster, a vector, the `ocean` MapService with its tile
    cache), then everything Ready and served by the real MapServer pods."""
    product.k.run("apply", "-n", product.namespace, "-f", str(REPO / "examples"))
    for name in ("sst-sample", "zones-sample"):
        wait_until(
            lambda n=name: ready(product.get("mapdataset", n)), f"MapDataset {name} Ready", timeout=180
        )
    wait_until(
        lambda: (
            ready(svc := product.get("mapservice", "ocean"))
            and {"sst-sample", "zones-sample"} <= set(svc["status"].get("datasets") or [])
        ),
        "MapService ocean Ready, serving both datasets",
        timeout=300,
    )
    wait_until(lambda: only_current_pods(product, "ocean"), "no old MapServer pod of ocean left", timeout=120)
    return product


def only_current_pods(product: Product, deployment: str) -> bool:
    """Every pod of the Deployment is of its current template, Ready, and none is terminating.
    Ready on the MapService does not see an old pod that still drains (its preStop): until it is
    gone, a request may still reach the old mapfile, and a layer from the capabilities of a new
    pod may be unknown to the pod that answers the GetMap."""
    d = product.get("deployment", deployment)
    want = d["spec"].get("replicas", 1)
    labels = d["spec"]["selector"]["matchLabels"]
    pods = product.pods(",".join(f"{k}={v}" for k, v in labels.items()))
    return (
        (d.get("status") or {}).get("observedGeneration", 0) >= d["metadata"]["generation"]
        and (d.get("status") or {}).get("updatedReplicas", 0) == want
        and len(pods) == want
        and len({p["metadata"]["labels"].get("pod-template-hash") for p in pods}) == 1
        and not any(p["metadata"].get("deletionTimestamp") for p in pods)
        and all(
            any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (p.get("status") or {}).get("conditions") or []
            )
            for p in pods
        )
    )
