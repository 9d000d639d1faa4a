"""Small helpers shared by tests."""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
REPO = Path(__file__).resolve().parent.parent


def hack_module(name: str):
    """hack/<name>.py, loaded by path once per process as `kms_hack_<name>` (hack/ scripts are not
    a package; dataclasses and shared classes need one module object)."""
    mod_name = f"kms_hack_{name}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, REPO / "hack" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = mod
    spec.loader.exec_module(mod)
    return mod


def require_tool(path: Path, what: str, target: str) -> None:
    """Fail (not skip) when a tool the test needs is missing, naming the make target that installs
    it: a run without the tool must not look green."""
    import pytest

    if not Path(path).exists():
        pytest.fail(f"{what} is missing ({path}): run `make {target}`", pytrace=False)


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


POD_UID = 10001  # job pods and tile-cache pods write as this user; MapServer (uid 33) only reads


def share_with_pods(root, uid: int = POD_UID) -> None:
    """Make a hostPath folder usable by the product's non-root pods (hack/install.py's prepare_dir,
    the same as `make dev` and the e2e install do)."""
    hack_module("install").prepare_dir(Path(root), uid)


def make_data_volume(api, namespace: str, data_root, name: str = "map-data") -> None:
    """A static hostPath PV bound to a PVC, like a provisioned data volume. Pods really mount it
    (the node runs on this host), so the folder is made usable by the non-root pods first."""
    from kubernetes import client

    share_with_pods(data_root)
    core = client.CoreV1Api(api)
    pv = f"{namespace}-{name}"
    core.create_persistent_volume(
        client.V1PersistentVolume(
            metadata=client.V1ObjectMeta(name=pv, labels={"kms-test": namespace}),
            spec=client.V1PersistentVolumeSpec(
                capacity={"storage": "1Gi"},
                access_modes=["ReadWriteOnce"],
                storage_class_name="manual",
                host_path=client.V1HostPathVolumeSource(path=str(data_root), type="Directory"),
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


def delete_data_volumes(api, namespace: str) -> None:
    """The hostPath PVs make_data_volume made for a namespace (Retain: they outlive it)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    for pv in core.list_persistent_volume(label_selector=f"kms-test={namespace}").items:
        try:
            core.delete_persistent_volume(pv.metadata.name)
        except client.ApiException as e:
            if e.status != 404:
                raise


# ---------------------------------------------------------------------------------------------
# reaching real pods from this host: Service ClusterIPs are routed to the node's bridge (kube-proxy
# translates them), but cluster DNS names do not resolve here


def service_ip(api, namespace: str, name: str) -> str:
    from kubernetes import client

    return client.CoreV1Api(api).read_namespaced_service(name, namespace).spec.cluster_ip


def ready_endpoints(api, namespace: str, name: str) -> list[str]:
    """Addresses of the Service's ready endpoints (its EndpointSlices)."""
    from kubernetes import client

    slices = client.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={name}"
    )
    return [
        addr
        for s in slices.items
        for ep in s.endpoints or []
        if ep.conditions is None or ep.conditions.ready is not False
        for addr in ep.addresses or []
    ]


def answers(url: str) -> bool:
    """Something answers HTTP at url (any status)."""
    import httpx

    try:
        httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return False
    return True


def service_url(api, namespace: str, name: str, port: int = 8080, timeout: float = 180) -> str:
    """http://<ClusterIP>:<port>/ of a Service, once it has a ready endpoint and answers through
    its ClusterIP (kube-proxy programs a new endpoint a moment after it turns ready)."""
    wait_until(
        lambda: ready_endpoints(api, namespace, name),
        f"Service {namespace}/{name} with a ready endpoint",
        timeout=timeout,
        interval=0.5,
    )
    url = f"http://{service_ip(api, namespace, name)}:{port}/"
    wait_until(lambda: answers(url), f"Service {namespace}/{name} answering at {url}", timeout=30)
    return url


def host_url(api, url: str) -> str:
    """An in-cluster URL from a status (http://NAME.NS.svc.cluster.local:PORT/...) with the
    Service's ClusterIP in place of its DNS name, so that this host can open it. Other URLs
    (an ingress host, an IP) are returned as they are."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    labels = (parts.hostname or "").split(".")
    if len(labels) < 3 or labels[2] != "svc":
        return url
    ip = service_ip(api, labels[1], labels[0])
    return urlunsplit(parts._replace(netloc=f"{ip}:{parts.port or 80}"))


def deployment_rolled_out(api, namespace: str, name: str) -> bool:
    """Every replica of the Deployment is updated and ready, and no old pod is left."""
    from kubernetes import client

    d = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    st, want = d.status, d.spec.replicas
    return (
        (st.observed_generation or 0) >= d.metadata.generation
        and (st.updated_replicas or 0) == want
        and (st.ready_replicas or 0) == want
        and (st.replicas or 0) == want
    )


def deployment_logs(api, namespace: str, name: str, container: str | None = None) -> str:
    """The logs of every running pod of a Deployment (its pod selector), concatenated."""
    from kubernetes import client

    d = client.AppsV1Api(api).read_namespaced_deployment(name, namespace)
    selector = ",".join(f"{k}={v}" for k, v in sorted(d.spec.selector.match_labels.items()))
    core = client.CoreV1Api(api)
    out = []
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        if pod.status.phase != "Running":
            continue
        kw = {"container": container} if container else {}
        out.append(core.read_namespaced_pod_log(pod.metadata.name, namespace, **kw))
    return "".join(out)


def getmap_count(api, namespace: str, service: str) -> int:
    """GetMap requests the MapServer pods of a MapService answered so far (Apache's access log on
    their stdout): tells a tile rendered by MapServer from one served out of the cache. A marked
    request through the Service goes last and is waited for in the log, so every request answered
    before the call is counted (container logs reach the API with a delay)."""
    import uuid

    import httpx

    mark = f"kms-log-barrier-{uuid.uuid4().hex[:12]}"
    url = f"http://{service_ip(api, namespace, service)}:8080/"
    params = {"SERVICE": "WMS", "REQUEST": "GetCapabilities", "MARK": mark}
    wait_until(lambda: httpx.get(url, params=params, timeout=30), f"the marked request to {url}", 30)

    def log_with_mark() -> str | None:
        text = deployment_logs(api, namespace, service, container="mapserver")
        return text if mark in text else None

    text = wait_until(log_with_mark, f"the marked request in the logs of {namespace}/{service}", 60)
    return sum(1 for line in text.lower().splitlines() if "request=getmap" in line)


def load_yaml_docs(path) -> list[dict]:
    import yaml

    return [d for d in yaml.safe_load_all(open(path)) if d]


# Readiness probe timings for test MapServices whose probes are not what the test is about: the
# first check 1 s after the container starts, then every 2 s (the default waits 5 s, then every 10).
# (Not 0: the apiserver omits a zero, and the operator would see a difference on every pass.)
FAST_PROBES = {"readiness": {"initialDelaySeconds": 1, "periodSeconds": 2}}


class ClusterDNSProxy:
    """An HTTP forward proxy on 127.0.0.1 for processes this host runs against the cluster (the
    facade fetches thumbnails from a MapService's status URL, a cluster DNS name): it resolves
    NAME.NAMESPACE.svc[.cluster.local] to the Service's ClusterIP and forwards the request there.
    Anything else is refused (502): nothing leaves through it. Start it with start(); hand
    env() to the process."""

    def __init__(self, api):
        self.api = api
        self.server = None
        self.thread = None

    def resolve(self, host: str) -> str | None:
        labels = host.split(".")
        if (
            len(labels) >= 3
            and labels[2] == "svc"
            and (len(labels) == 3 or labels[3:] == ["cluster", "local"])
        ):
            return service_ip(self.api, labels[1], labels[0])
        return None

    def start(self) -> None:
        import http.client
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import urlsplit

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _forward(self) -> None:
                parts = urlsplit(self.path)
                try:
                    ip = proxy.resolve(parts.hostname or "") if parts.scheme == "http" else None
                except Exception:
                    ip = None
                if ip is None:
                    self.send_error(502, f"not a cluster Service: {parts.hostname}")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("proxy-connection", "connection", "keep-alive", "host")
                }
                headers["Host"] = parts.netloc
                path = parts.path or "/"
                if parts.query:
                    path += "?" + parts.query
                conn = http.client.HTTPConnection(ip, parts.port or 80, timeout=120)
                try:
                    conn.request(self.command, path, body=body, headers=headers)
                    r = conn.getresponse()
                    data = r.read()
                except OSError as e:
                    self.send_error(502, f"{type(e).__name__}: {e}")
                    return
                finally:
                    conn.close()
                self.send_response(r.status, r.reason)
                for k, v in r.getheaders():
                    if k.lower() not in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="cluster-dns-proxy", daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def env(self) -> dict[str, str]:
        """Proxy variables for plain-HTTP requests to the cluster (loopback stays direct)."""
        local = "127.0.0.1,localhost,::1"
        return {"http_proxy": self.url, "HTTP_PROXY": self.url, "no_proxy": local, "NO_PROXY": local}

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
