"""Shared fixtures: a real control plane per test session and a fresh namespace per test.

The plane is the local one from hack/cluster.py, started once per session in a temp dir, unless
KMS_TEST_KUBECONFIG points at an existing cluster (e.g. kind in GitHub Actions).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.helpers import ClusterDNSProxy, delete_data_volumes, hack_module, share_with_pods, wait_until

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.suite_policy"]  # unexpected skips and empty markers fail the run


cluster_mod = hack_module("cluster")


@dataclass
class Cluster:
    """A reachable kube-apiserver: its kubeconfig and an API client for it."""

    kubeconfig: Path
    api: client.ApiClient
    local: bool  # started by this session (hack/cluster.py), as opposed to an existing cluster
    real_node: bool = False  # pods really run (hack/node.py locally; any node of an existing cluster)
    images: dict | None = None  # hack/images.py manifest: name -> {ref, archive, ...}

    @property
    def kubectl(self) -> list[str]:
        binary = cluster_mod.binaries()["kubectl"] if self.local else "kubectl"
        return [str(binary), f"--kubeconfig={self.kubeconfig}"]


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM and SIGHUP (a CI timeout, a closed terminal) and SIGINT (even where a background
    shell ignores it) stop the run like Ctrl-C: fixtures tear down, so the session's plane and node
    are stopped, not left holding the machine's bridge."""

    def interrupt(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, interrupt)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/unit are `unit`, under tests/integration `integration`, tests/e2e `e2e`."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts[0] in ("unit", "integration", "smoke", "e2e"):
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The local plane with a real kubelet node running the images built here (kwok's fake node
    is tainted: only tests that tolerate it put pods there)."""
    node_mod, images_mod = hack_module("node"), hack_module("images")
    manifest = images_mod.build()
    existing = os.environ.get("KMS_TEST_KUBECONFIG")
    if existing:
        # a hack/node.py node of this machine (KMS_TEST_NODE_DIR, or `node/` beside the kubeconfig)
        # gets the images built for this run
        node_dir = Path(os.environ.get("KMS_TEST_NODE_DIR") or Path(existing).resolve().parent / "node")
        if (node_dir / "state.json").exists():
            node_mod.import_images(node_mod.Node(node_dir), manifest)
        api = config.new_client_from_config(config_file=existing)
        yield Cluster(Path(existing), api, local=False, real_node=True, images=manifest)
        return
    base = tmp_path_factory.mktemp("plane")
    plane = cluster_mod.Plane(base / "plane")
    node = node_mod.Node(base / "node")
    cluster_mod.up(plane, port=None, timeout=120, real_node=True)
    pids = dict(plane.load()["pids"])
    try:
        node_mod.up(node, plane, manifest)
    except BaseException:
        node_mod.down(node)
        cluster_mod.down(plane)
        raise
    api = config.new_client_from_config(config_file=str(plane.kubeconfig))
    try:
        yield Cluster(plane.kubeconfig, api, local=True, real_node=True, images=manifest)
    finally:
        api.close()
        node_left = node_mod.down(node)
        left = cluster_mod.down(plane)
        # teardown proves the plane and the node leave no process behind
        still = {name: pid for name, pid in pids.items() if cluster_mod.alive(pid)}
        assert not left and not still, f"control-plane processes survived shutdown: {still or left}"
        assert not node_left, f"the node left something behind: {node_left}"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace, deleted after the test (without waiting for it to finish terminating)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(cluster.api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name, propagation_policy="Background")
        delete_data_volumes(cluster.api, name)


# ---------------------------------------------------------------------------------------------
# the product under test: CRDs, sample data, the operator as a real process


@pytest.fixture(scope="session")
def crds(cluster: Cluster) -> list[str]:
    """Install (or update) the generated CRDs and wait until they are Established."""
    import yaml

    ext = client.ApiextensionsV1Api(cluster.api)
    names = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        names.append(name)
        try:
            live = ext.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = live.metadata.resource_version
            ext.replace_custom_resource_definition(name, body)
        except client.ApiException as e:
            if e.status != 404:
                raise
            ext.create_custom_resource_definition(body)
    for name in names:
        wait_until(
            lambda n=name: any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition(n).status.conditions or []
            ),
            f"CRD {name} Established",
        )
    return names


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's view of the data volume, with the example datasets' files."""
    root = tmp_path_factory.mktemp("data")
    hack_module("sample_data").write_samples(root)
    share_with_pods(root)  # job pods (uid 10001) write here, MapServer pods (uid 33) read
    return root


class OperatorProcess:
    """`python -m kms_operator` against the test cluster; restartable, killable."""

    def __init__(self, kubeconfig: Path, data_root: Path, log_path: Path, **env: str):
        self.kubeconfig, self.data_root, self.log_path, self.extra_env = kubeconfig, data_root, log_path, env
        self.proc: subprocess.Popen | None = None
        self.liveness_port = self.metrics_port = 0

    def start(self) -> None:
        self.liveness_port = cluster_mod.free_port()
        self.metrics_port = cluster_mod.free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KMS_DATA_ROOT": str(self.data_root),
            "KMS_METRICS_PORT": str(self.metrics_port),
            "KMS_METRICS_ADDR": "127.0.0.1",
            **self.extra_env,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [
                str(REPO / ".venv" / "bin" / "python"),
                "-m",
                "kms_operator",
                "--liveness",
                f"http://127.0.0.1:{self.liveness_port}/healthz",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        wait_until(self.alive, "operator liveness endpoint", timeout=60)

    def alive(self) -> bool:
        import urllib.request

        assert self.proc and self.proc.poll() is None, f"operator exited; log:\n{self.log_tail()}"
        with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=2) as r:
            return r.status == 200

    def stop(self, kill: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self, kill: bool = False) -> None:
        self.stop(kill)
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def foreign_operators(cluster: Cluster) -> list[str]:
    """namespace/name of the chart-installed operator Deployments of the cluster."""
    deployments = client.AppsV1Api(cluster.api).list_deployment_for_all_namespaces(
        label_selector="app.kubernetes.io/component=operator,app.kubernetes.io/part-of=kube-mapserver"
    )
    return [f"{d.metadata.namespace}/{d.metadata.name}" for d in deployments.items]


def image_env(cluster: Cluster) -> dict[str, str]:
    """The operator's default images: the ones built here (hack/images.py) and on the node."""
    images = cluster.images or {}
    refs = {
        "KMS_MAPSERVER_IMAGE": "mapserver",
        "KMS_TILES_IMAGE": "mapcache",
        "KMS_JOB_IMAGE": "kube-mapserver",
    }
    return {var: images[name]["ref"] for var, name in refs.items() if name in images}


@pytest.fixture(scope="session")
def operator_process(cluster: Cluster, crds, data_root: Path, tmp_path_factory) -> Iterator[OperatorProcess]:
    """One operator for the session, watching all namespaces. Its watches are closed by the
    apiserver every few seconds on purpose, so every test also exercises the reconnect. The pods it
    creates really run (MapServer, tile cache, job pods) from the images built here; status URLs
    are the in-cluster defaults (helpers.host_url opens them from this host).

    It reconciles every namespace, so it starts only once no installed operator runs (e.g. the
    end-to-end suite's chart in a shared cluster): two operators must never share a namespace."""
    wait_until(
        lambda: not foreign_operators(cluster),
        "no other kube-mapserver operator in the cluster (an installed chart)",
        timeout=1800,
        interval=5,
    )
    proc = OperatorProcess(
        cluster.kubeconfig,
        data_root,
        tmp_path_factory.mktemp("operator") / "operator.log",
        KMS_WATCH_SERVER_TIMEOUT="5",
        KMS_DEBOUNCE_SECONDS="0.2",
        KMS_LEASE_SECONDS="4",
        **image_env(cluster),
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def cluster_dns_proxy(cluster: Cluster) -> Iterator[ClusterDNSProxy]:
    """An HTTP proxy that resolves cluster DNS names (Service.namespace.svc.cluster.local) for the
    processes this host runs (the facade renders thumbnails through a MapService's status URL)."""
    proxy = ClusterDNSProxy(cluster.api)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


# ---------------------------------------------------------------------------------------------
# the facade (kms_api) as a real process, one namespace each, users made with its CLI


class FacadeProcess:
    """`python -m kms_api --port P` serving one namespace; users (random passwords) made by its CLI."""

    ROLES = (("admin", "admin"), ("editor", "editor"), ("viewer", "viewer"))

    def __init__(self, kubeconfig: Path, namespace: str, data_root: Path, log_path: Path, **env: str):
        self.kubeconfig, self.namespace, self.data_root, self.log_path = (
            kubeconfig,
            namespace,
            data_root,
            log_path,
        )
        self.extra_env = env
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.passwords: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "KMS_NAMESPACE": self.namespace,
            "KMS_DATA_ROOT": str(self.data_root),
            **self.extra_env,
        }

    def cli(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
        """`python -m kms_api user ...` (the password goes through stdin, never argv)."""
        return subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "kms_api", "user", *args]
            + (["--password-stdin"] if password is not None else []),
            input=(password + "\n") if password is not None else None,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )

    def add_user(self, name: str, role: str) -> str:
        import secrets

        password = secrets.token_urlsafe(18)
        done = self.cli("add", name, "--role", role, password=password)
        assert done.returncode == 0, done.stderr
        self.passwords[name] = password
        return password

    def start(self, wait_ready: bool = True) -> None:
        """Start on port 0 (no port picked and released first) and read the bound port from
        uvicorn's "running on" log line."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "python"), "-m", "kms_api", "--port", "0"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.port = wait_until(lambda: self._bound_port(offset), "facade listening (uvicorn's log)", 60)
        wait_until(self.ready if wait_ready else self.answers, "facade /health", timeout=60)

    def _bound_port(self, offset: int) -> int | None:
        assert self.proc and self.proc.poll() is None, f"facade exited; log:\n{self.log_tail()}"
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            m = re.search(rb"Uvicorn running on https?://[^\s:]+:(\d+)", f.read())
        return int(m.group(1)) if m else None

    def answers(self) -> bool:
        import httpx

        assert self.proc and self.proc.poll() is None, f"facade exited; log:\n{self.log_tail()}"
        return httpx.get(f"{self.url}/health", timeout=5).status_code in (200, 503)

    def ready(self) -> bool:
        """Listening, caches listed and the apiserver reachable."""
        import httpx

        assert self.proc and self.proc.poll() is None, f"facade exited; log:\n{self.log_tail()}"
        r = httpx.get(f"{self.url}/health", timeout=5)
        comps = {c["name"]: c["status"] for c in r.json().get("components", [])}
        return r.status_code == 200 and comps.get("cache") == "ok" and comps.get("kubernetes") == "ok"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def token(self, user: str) -> str:
        import httpx

        r = httpx.post(
            f"{self.url}/token", data={"username": user, "password": self.passwords[user]}, timeout=10
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def client(self, user: str | None = None):
        """An httpx.Client on the facade, logged in as `user` (anonymous when None)."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


@pytest.fixture(scope="session")
def facade_factory(cluster: Cluster, crds, data_root: Path, tmp_path_factory, cluster_dns_proxy):
    """start(**env) → a FacadeProcess on a fresh namespace (with the map-data volume and users
    admin/editor/viewer); everything started is stopped at the end of the session. Its plain-HTTP
    requests to cluster DNS names (a MapService's status URL) go through cluster_dns_proxy."""
    import contextlib

    from tests.helpers import make_data_volume

    started: list[FacadeProcess] = []
    core = client.CoreV1Api(cluster.api)

    def start(root: Path | None = None, wait_ready: bool = True, users: bool = True, **env: str):
        ns = f"api-{uuid.uuid4().hex[:8]}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        make_data_volume(cluster.api, ns, root or data_root)
        kubeconfig = Path(env.pop("KUBECONFIG", cluster.kubeconfig))
        log_path = tmp_path_factory.mktemp("facade") / "facade.log"
        proc = FacadeProcess(
            kubeconfig, ns, root or data_root, log_path, **{**cluster_dns_proxy.env(), **env}
        )
        started.append(proc)
        if users:
            for name, role in FacadeProcess.ROLES:
                proc.add_user(name, role)
        proc.start(wait_ready=wait_ready)
        return proc

    yield start
    for proc in started:
        proc.stop()
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(proc.namespace, propagation_policy="Background")
        delete_data_volumes(cluster.api, proc.namespace)


@pytest.fixture(scope="session")
def facade(facade_factory, operator_process) -> FacadeProcess:
    """The shared facade of the API tests, with the real operator behind it (job pods run)."""
    return facade_factory(
        KMS_OPERATOR_HEALTH_URL=f"http://127.0.0.1:{operator_process.liveness_port}/healthz",
        KMS_WATCH_TIMEOUT="5",
    )
